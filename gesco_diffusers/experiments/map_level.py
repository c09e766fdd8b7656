"""Map-level channel experiment: how much of a semantic map survives each channel, without and with FDS.

No trained model is needed. For every label map of a dataset: one-hot encode it (Sec. III-A), send the transmitted
channels through a channel model (AWGN, Poisson, Poisson + Gaussian, Rayleigh fading at a PSNR, Eq. 15; or the
digital OFDM link at an Eb/N0, Sec. IV-C), take the argmax over the class channels of the received map, without
FDS, with the paper's FDS (Eq. 1) and with the adaptive FDS (:mod:`gesco_diffusers.receiver.adaptive_fds`), and
score it against the clean labels with the mIoU of Eq. 16 (unlabelled id ignored). All arms see the *same* channel
realisation, so the FDS gains are paired comparisons.

    python -m gesco_diffusers.experiments.map_level --dataset camvid --out outputs/map_level

writes ``<out>/<dataset>/results.json``, ``results.csv``, ``tables.md`` and ``miou_vs_snr.png``, and prints the
markdown tables. ``--quick`` runs a few maps at a few SNRs (a smoke test).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

# Light imports only (names, presets): the channel models, the data readers, the encoder and torch load where they
# are used, so `gesco map-level --help` imports no torch.
from ..presets import DatasetPreset, get_dataset_preset
from ..receiver import build_fds
from ..utils.files import check_writable_dir

if TYPE_CHECKING:
    import torch

    from ..channel import SemanticChannel
    from ..sender import SemanticEncoder

__all__ = [
    "ChannelSetting",
    "DEFAULT_EBN0S",
    "DEFAULT_PSNRS",
    "FDS_ARMS",
    "default_settings",
    "encode_label_maps",
    "dataset_folder",
    "load_label_maps",
    "build_parser",
    "main",
    "run",
    "run_map_level",
    "score_channel",
]

DEFAULT_PSNRS: tuple[float, ...] = (100, 30, 20, 15, 10, 5, 1)  # the paper's grid (Tables I-III)
DEFAULT_EBN0S: tuple[float, ...] = (0, 5, 10, 20)
QUICK_PSNRS: tuple[float, ...] = (100, 10, 1)
QUICK_EBN0S: tuple[float, ...] = (0, 10)
QUICK_MAPS = 4

#: The receiver arms: result-column suffix -> :func:`~gesco_diffusers.receiver.build_fds` name (also the table label).
FDS_ARMS: dict[str, str] = {"no_fds": "none", "fds": "paper", "adaptive_fds": "adaptive"}

# Analog channels (PSNR) and digital links (Eb/N0): label -> (factory name, fixed keyword arguments).
ANALOG_CHANNELS: dict[str, tuple[str, dict[str, Any]]] = {
    "awgn": ("awgn", {}),
    "poisson": ("poisson", {}),
    "mixture": ("mixture", {"poisson_fraction": 0.5}),
    "rayleigh": ("rayleigh", {"equalize": True}),
    "rayleigh-noeq": ("rayleigh", {"equalize": False}),
}
DIGITAL_LINKS: dict[str, tuple[str, dict[str, Any]]] = {
    f"digital-{link}": ("digital", {"channel": link}) for link in ("awgn", "rayleigh_flat", "multipath")
}

# Where each dataset lives under the data root, its default split and its default map size.
_DATASET_DIRS = {"camvid": "camvid", "coco-stuff": "coco_stuff_samples"}
_DEFAULT_SPLIT = {"camvid": "val", "coco-stuff": "all"}
# COCO-Stuff maps are up to 640x640 with 184 channels; the paper's models see them at 256x256 (Sec. IV-A), so they
# are resized there by default. CamVid keeps its 180x240 maps.
_DEFAULT_RESIZE = {"camvid": "native", "coco-stuff": "preset"}


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def default_data_root() -> Path:
    """``../shared/data`` next to the repository (the project's shared data folder)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _read_ids(path: Path, size: Optional[tuple[int, int]]) -> np.ndarray:
    """An id map (label or instance PNG) as int64, resized with nearest neighbour (ids must stay ids)."""
    from ..data import load_label_array

    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file is named here, not deep in a resize
            if size is not None and image.size != (size[1], size[0]):
                return load_label_array(image.resize((size[1], size[0]), Image.NEAREST), str(path))
            return load_label_array(image, str(path))
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not a readable image file (empty, or another kind of file)") from None
    except (OSError, SyntaxError, EOFError) as err:
        raise ValueError(f"{path} cannot be decoded (truncated or corrupt file: {err})") from None


def dataset_folder(dataset: Union[str, DatasetPreset], data_root: Optional[Union[str, Path]] = None) -> Path:
    """The folder the maps of ``dataset`` are read from: ``<data_root>/camvid`` or ``<data_root>/coco_stuff_samples``
    (``data_root`` default: :func:`default_data_root`)."""
    preset = get_dataset_preset(dataset)
    if preset.name not in _DATASET_DIRS:
        raise ValueError(f"map-level data are available for {sorted(_DATASET_DIRS)}, not {preset.name!r}")
    root = Path(data_root) if data_root is not None else default_data_root()
    if root.is_file():
        raise NotADirectoryError(f"--data-root {str(root)!r} is a file; give the folder holding "
                                 f"{' and '.join(sorted(_DATASET_DIRS.values()))}/")
    return root / _DATASET_DIRS[preset.name]


def load_label_maps(
    dataset: Union[str, DatasetPreset],
    data_root: Optional[Union[str, Path]] = None,
    split: Optional[str] = None,
    limit: Optional[int] = None,
    size: Optional[tuple[int, int]] = None,
) -> list[tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """Label maps (and instance maps where the preset uses edges) as ``[(labels (H, W), instances or None)]``.

    Supported: ``camvid`` (``<root>/camvid/<split>/labels``) and ``coco-stuff``
    (``<root>/coco_stuff_samples/<split>/{labels,instances}``, ``split="all"`` for train + val; the unlabelled
    255 is remapped to the preset's unlabelled id 182). ``size=(H, W)`` resizes with nearest neighbour.
    """
    import torch

    from ..data import get_layout

    preset = get_dataset_preset(dataset)
    base = dataset_folder(preset, data_root)
    split = split or _DEFAULT_SPLIT[preset.name]
    splits = ("train", "val") if split == "all" else (split,)
    files = sorted(p for s in splits for p in (base / s / "labels").glob("*.png"))
    if not files:
        folders = " and ".join(f"{name}/" for name in sorted(_DATASET_DIRS.values()))
        where = "" if data_root is not None else f" (the default data root; pass --data-root: the folder of {folders})"
        raise FileNotFoundError(f"no label maps found under {base} for split {split!r}{where}")
    remap = get_layout(preset.name).remap_labels  # e.g. COCO-Stuff's unlabelled 255 -> 182
    maps = []
    for path in files[:limit]:
        labels = remap(_read_ids(path, size))
        instances = None
        if preset.use_instance_edges:
            instance_path = path.parent.parent / "instances" / path.name
            if not instance_path.is_file():
                raise FileNotFoundError(f"instance map missing for {path.name}: {instance_path}")
            instances = torch.from_numpy(_read_ids(instance_path, size))
        maps.append((torch.from_numpy(labels), instances))
    return maps


def _batches(maps: list, batch_size: int):
    """Stack maps of equal size into batches of at most ``batch_size`` (sizes differ across COCO maps)."""
    import torch

    by_shape: dict[tuple[int, ...], list] = {}
    for labels, instances in maps:
        by_shape.setdefault(tuple(labels.shape), []).append((labels, instances))
    for group in by_shape.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            labels = torch.stack([item[0] for item in chunk])
            instances = None if chunk[0][1] is None else torch.stack([item[1] for item in chunk])
            yield labels, instances


# ----------------------------------------------------------------------------------------------------------------
# Experiment
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ChannelSetting:
    """One channel model at one SNR: ``build_channel(factory, **kwargs, <snr_name>=snr_db)``."""

    label: str
    factory: str
    snr_name: str  # "psnr_db" or "ebn0_db"
    snr_db: float
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> SemanticChannel:
        from ..channel import build_channel

        return build_channel(self.factory, **self.kwargs, **{self.snr_name: self.snr_db})


def default_settings(
    psnrs: Sequence[float] = DEFAULT_PSNRS,
    ebn0s: Sequence[float] = DEFAULT_EBN0S,
    channels: Optional[Sequence[str]] = None,
) -> list[ChannelSetting]:
    """Every analog channel at every PSNR and every digital link at every Eb/N0 (``channels`` filters labels)."""
    known = {**ANALOG_CHANNELS, **DIGITAL_LINKS}
    unknown = sorted(set(channels or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown channel labels {unknown}; choose from {sorted(known)}")
    settings = [
        ChannelSetting(label, factory, snr_name, float(snr), dict(kwargs))
        for table, snr_name, snrs in ((ANALOG_CHANNELS, "psnr_db", psnrs), (DIGITAL_LINKS, "ebn0_db", ebn0s))
        for label, (factory, kwargs) in table.items()
        for snr in snrs
    ]
    return [s for s in settings if channels is None or s.label in channels]


def _encode_batches(maps: list, encoder: SemanticEncoder, batch_size: int) -> list[tuple[torch.Tensor, ...]]:
    """Encode every batch once: ``(labels, one_hot as bool, transmitted)``; bool keeps the cache 4x smaller."""
    encoded = []
    for labels, instances in _batches(maps, batch_size):
        sent = encoder.encode(labels, instances)
        encoded.append((labels, sent.one_hot.bool(), sent.transmitted))
    return encoded


def encode_label_maps(maps: list, preset: DatasetPreset, batch_size: int = 8) -> list[tuple[torch.Tensor, ...]]:
    """The sender's one-hot maps of ``maps`` (a list of ``(labels, instances or None)`` ``(H, W)`` int64 tensors, as
    :func:`load_label_maps` returns), encoded once for :func:`score_channel`."""
    from ..sender import SemanticEncoder

    return _encode_batches(maps, SemanticEncoder.from_preset(preset), batch_size)


def score_channel(channel: SemanticChannel, batches: list, preset: DatasetPreset, seed: int,
                  receivers: Optional[dict[str, torch.nn.Module]] = None) -> dict[str, Any]:
    """Send the encoded maps (:func:`encode_label_maps`) through ``channel`` and score every receiver arm of
    :data:`FDS_ARMS` (and of ``receivers``, e.g. a trained denoiser, by name) on the same realisation: ``miou_<arm>``
    (Eq. 16, pooled over the maps) and the received MSE and PSNR on the transmitted elements. The channel noise comes
    from a fresh generator seeded with ``seed``."""
    import torch

    from ..evaluation.metrics.miou import ConfusionMatrix

    generator = torch.Generator().manual_seed(seed)  # fresh per setting: results do not depend on the run order
    n = preset.num_classes
    arms = {arm: build_fds(method, num_classes=n) for arm, method in FDS_ARMS.items()}
    arms.update(receivers or {})
    matrices = {arm: ConfusionMatrix(n, preset.ignore_ids) for arm in arms}
    squared_error, elements = 0.0, 0
    for labels, one_hot, transmitted in batches:
        x = one_hot.float()
        received = channel(x, transmitted, generator)
        # Absent channels are zero both in x (class absent) and in the received map (padded), so the error summed
        # over the whole map is the error over the transmitted elements.
        squared_error += float((received - x).square_().sum(dtype=torch.float64))
        elements += int(transmitted.sum()) * labels[0].numel()
        for arm, fds in arms.items():
            with torch.no_grad():
                y = received if fds is None else fds(received, transmitted)
            # argmax over the class channels only: the edge channel is not a class.
            matrices[arm].update(y[:, :n].argmax(1), labels)
    mse = squared_error / max(elements, 1)
    return {
        **{f"miou_{arm}": matrix.compute().miou for arm, matrix in matrices.items()},
        "received_mse": mse,
        "received_psnr_db": math.inf if mse == 0 else 10 * math.log10(1.0 / mse),
    }


def _evaluate_setting(
    setting: ChannelSetting, batches: list, preset: DatasetPreset, seed: int
) -> dict[str, Any]:
    """mIoU of every FDS arm and the received MSE on transmitted elements, for one setting over all batches."""
    channel = setting.build()
    return {
        "channel": setting.label,
        "snr_name": setting.snr_name,
        "snr_db": setting.snr_db,
        **score_channel(channel, batches, preset, seed),
        "params": channel.describe(),
    }


def _fmt(value: float) -> str:
    return "inf" if value == math.inf else f"{value:g}"


def markdown_tables(rows: list[dict[str, Any]], dataset: str) -> str:
    """One table per SNR kind: a row per channel and FDS arm (none / paper / adaptive), a column per SNR (mIoU)."""
    parts = []
    for snr_name, title in (("psnr_db", "PSNR (dB)"), ("ebn0_db", "Eb/N0 (dB)")):
        subset = [r for r in rows if r["snr_name"] == snr_name]
        if not subset:
            continue
        snrs = sorted({r["snr_db"] for r in subset}, reverse=True)
        labels = list(dict.fromkeys(r["channel"] for r in subset))
        lookup = {(r["channel"], r["snr_db"]): r for r in subset}
        lines = [
            f"**{dataset}: map mIoU vs {title}** (argmax of the received class channels vs clean labels)",
            "",
            "| channel | FDS | " + " | ".join(_fmt(s) for s in snrs) + " |",
            "|---|---|" + "---|" * len(snrs),
        ]
        for label in labels:
            for arm, arm_label in FDS_ARMS.items():
                key = f"miou_{arm}"
                cells = [f"{lookup[label, s][key]:.4f}" if (label, s) in lookup else "" for s in snrs]
                lines.append(f"| {label} | {arm_label} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _plot(rows: list[dict[str, Any]], dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [(n, t) for n, t in (("psnr_db", "PSNR (dB)"), ("ebn0_db", "Eb/N0 (dB)")) if any(r["snr_name"] == n
                                                                                             for r in rows)]
    figure, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.5), squeeze=False)
    for axis, (snr_name, title) in zip(axes[0], kinds):
        subset = [r for r in rows if r["snr_name"] == snr_name]
        # Evenly spaced SNR ticks: the grid is uneven (1 ... 30, then 100 for "clean") and a linear axis would
        # squeeze the informative low-SNR points together.
        grid = sorted({r["snr_db"] for r in subset})
        for index, label in enumerate(dict.fromkeys(r["channel"] for r in subset)):
            points = sorted((r for r in subset if r["channel"] == label), key=lambda r: r["snr_db"])
            where = [grid.index(r["snr_db"]) for r in points]
            colour = f"C{index}"
            for (arm, arm_label), style in zip(FDS_ARMS.items(), (":o", "--s", "-^")):
                axis.plot(where, [r[f"miou_{arm}"] for r in points], style, color=colour,
                          label=f"{label}, FDS {arm_label}")
        axis.set_xticks(range(len(grid)), [_fmt(snr) for snr in grid])
        axis.set_xlabel(title)
        axis.set_ylabel("map mIoU")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
        axis.set_title(f"{dataset}: received-map mIoU")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _write_outputs(result: dict[str, Any], markdown: str, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=2, default=str))
    columns = ["dataset", "channel", "snr_name", "snr_db", *(f"miou_{arm}" for arm in FDS_ARMS), "received_mse",
               "received_psnr_db", "params"]
    with open(out_dir / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in result["rows"]:
            writer.writerow({**{c: row.get(c) for c in columns}, "dataset": result["dataset"],
                             "params": json.dumps(row["params"])})
    (out_dir / "tables.md").write_text(markdown + "\n")
    _plot(result["rows"], result["dataset"], out_dir / "miou_vs_snr.png")


def run_map_level(
    dataset: str = "camvid",
    out_dir: Optional[Union[str, Path]] = None,
    psnrs: Sequence[float] = DEFAULT_PSNRS,
    ebn0s: Sequence[float] = DEFAULT_EBN0S,
    channels: Optional[Sequence[str]] = None,
    seed: int = 0,
    data_root: Optional[Union[str, Path]] = None,
    split: Optional[str] = None,
    limit: Optional[int] = None,
    resize: Optional[str] = None,
    batch_size: int = 8,
    codec_table_fn: Optional[Callable[[list[torch.Tensor], DatasetPreset], str]] = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the map-level experiment on one dataset; write the outputs to ``out_dir`` if given.

    Args:
        dataset: ``"camvid"`` or ``"coco-stuff"``.
        psnrs, ebn0s: the SNR grids of the analog channels and of the digital links.
        channels: labels to run (default all): ``awgn``, ``poisson``, ``mixture``, ``rayleigh``, ``rayleigh-noeq``,
            ``digital-awgn``, ``digital-rayleigh_flat``, ``digital-multipath``.
        seed: every setting uses a fresh ``torch.Generator`` seeded with it.
        split, limit, resize: which maps (``resize``: ``"native"`` or ``"preset"``, the preset's resolution).
        codec_table_fn: hook for the codec bit-rate table, called as ``codec_table_fn(labels, preset)`` with the
            list of ``(H, W)`` int64 label maps used here; the markdown it returns is appended to the tables.

    Returns:
        A dict with the run's configuration and one row per setting (``miou_no_fds``, ``miou_fds`` (paper),
        ``miou_adaptive_fds``, ``received_mse``, ``received_psnr_db``, ``params``) and the ``markdown`` tables.
    """
    preset = get_dataset_preset(dataset)
    resize = resize or _DEFAULT_RESIZE.get(preset.name, "native")
    if resize not in ("native", "preset"):
        raise ValueError(f"resize must be 'native' or 'preset', got {resize!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of maps, got {limit!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:  # (torch's seed range)
        raise ValueError(f"seed must be an integer in 0..2**63-1, got {seed!r}")
    if out_dir is not None:  # before the work: a bad output folder costs nothing
        data = dataset_folder(preset, data_root).resolve()
        if data == Path(out_dir).resolve() or data in Path(out_dir).resolve().parents:
            raise ValueError(f"output folder {str(out_dir)!r} is inside the dataset folder {str(data)!r}: the results "
                             "would be written among the data; choose another --out")
        check_writable_dir(out_dir, "output folder")
    settings = default_settings(psnrs, ebn0s, channels)
    for setting in settings:  # every channel built once now: a bad SNR (NaN, -inf) fails before any map is read
        setting.build()
    maps = load_label_maps(preset, data_root, split, limit, preset.resolution if resize == "preset" else None)
    rows, start = [], time.perf_counter()
    batches = encode_label_maps(maps, preset, batch_size)
    for setting in settings:
        rows.append(_evaluate_setting(setting, batches, preset, seed))
        if verbose:
            r = rows[-1]
            print(f"[{time.perf_counter() - start:7.1f}s] {r['channel']:>22} {r['snr_name']}={_fmt(r['snr_db']):>4}: "
                  f"mIoU {r['miou_no_fds']:.4f} -> FDS {r['miou_fds']:.4f}, adaptive {r['miou_adaptive_fds']:.4f}",
                  flush=True)
    markdown = markdown_tables(rows, preset.name)
    if codec_table_fn is not None:
        markdown += "\n\n" + codec_table_fn([labels for labels, _ in maps], preset)
    result = {
        "dataset": preset.name,
        "split": split or _DEFAULT_SPLIT[preset.name],
        "num_maps": len(maps),
        "map_sizes": sorted({tuple(labels.shape) for labels, _ in maps}),
        "resize": resize,
        "seed": seed,
        "ignore_ids": list(preset.ignore_ids),
        "settings": [asdict(s) for s in settings],
        "rows": rows,
        "markdown": markdown,
        "seconds": time.perf_counter() - start,
    }
    if out_dir is not None:
        _write_outputs(result, markdown, Path(out_dir))
    return result


def codec_table_from_files(dataset: str, data_root, split: Optional[str], limit: Optional[int]) -> Callable:
    """The codec hook of :func:`run_map_level` for the shared data: the BPP of the dataset's label PNGs with every
    available lossless codec (one-hot and label-id representations) and, where photos exist (CamVid), the lossy
    photo codec at several qualities (paper Fig. 7 / Fig. 8)."""
    from .codec_bpp import codec_bpp_table

    preset = get_dataset_preset(dataset)
    root = Path(data_root) if data_root else default_data_root()
    folder = root / ("camvid" if preset.name == "camvid" else "coco_stuff_samples") / (split or _DEFAULT_SPLIT[preset.name])
    label_paths = sorted((folder / "labels").glob("*.png"))[:limit]
    image_paths = [folder / "images" / p.name for p in label_paths if (folder / "images" / p.name).is_file()]
    remap = {255: preset.unlabelled_id} if preset.name == "coco-stuff" else None

    def table(labels, preset_):
        return "### Bits per pixel of the codecs\n\n" + codec_bpp_table(
            label_paths, image_paths if len(image_paths) == len(label_paths) else (),
            num_classes=preset.num_classes, label_remap=remap)

    return table


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The experiment's arguments (on ``parser`` if given: the ``gesco map-level`` subcommand reuses them)."""
    parser = parser or argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="camvid", choices=["camvid", "coco-stuff", "all"])
    parser.add_argument("--out", default="outputs/map_level", help="output folder (one subfolder per dataset)")
    parser.add_argument("--data-root", default=None, help="folder holding camvid/ and coco_stuff_samples/")
    parser.add_argument("--split", default=None, help="camvid: train/val (default val); coco-stuff: train/val/all")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N maps")
    parser.add_argument("--resize", choices=["native", "preset"], default=None,
                        help="map size (default: native for camvid, the preset's 256x256 for coco-stuff)")
    parser.add_argument("--psnrs", type=float, nargs="+", default=None)
    parser.add_argument("--ebn0s", type=float, nargs="+", default=None)
    parser.add_argument("--channels", nargs="+", default=None, help="channel labels to run (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK_MAPS} maps, PSNR {QUICK_PSNRS}, Eb/N0 {QUICK_EBN0S}")
    parser.add_argument("--codecs", action="store_true",
                        help="also tabulate the BPP of each lossless map codec next to the lossy photo codec")
    return parser


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the experiment for parsed arguments; return one result per dataset."""
    datasets = ["camvid", "coco-stuff"] if args.dataset == "all" else [args.dataset]
    psnrs = args.psnrs or (QUICK_PSNRS if args.quick else DEFAULT_PSNRS)
    ebn0s = args.ebn0s or (QUICK_EBN0S if args.quick else DEFAULT_EBN0S)
    limit = args.limit if args.limit is not None else (QUICK_MAPS if args.quick else None)
    results = []
    for name in datasets:
        codec_fn = codec_table_from_files(name, args.data_root, args.split, limit) if args.codecs else None
        result = run_map_level(
            name, Path(args.out) / name, psnrs, ebn0s, args.channels, args.seed, args.data_root, args.split, limit,
            args.resize, args.batch_size, codec_table_fn=codec_fn,
        )
        print(f"\n{result['markdown']}\n\n({result['num_maps']} maps, {result['seconds']:.1f}s; outputs in "
              f"{Path(args.out) / name})")
        results.append(result)
    return results


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
