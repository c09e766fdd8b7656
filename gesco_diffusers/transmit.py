"""``gesco transmit``: the whole chain on one label map, end to end (paper Fig. 1).

sender (one-hot encoding, codec -> BPP) -> channel -> receiver (FDS) -> semantic diffusion model -> image, with the
map mIoU before and after FDS, timings and a PNG panel. With no arguments it runs on a shipped CamVid sample with the
shipped demo model, offline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import PIL.Image

# Only light modules here (names, no models): `gesco transmit --help` imports no torch. The chain (.chain) loads when
# the command runs.
from .chain_figures import ChainFigures
from .channel import CHANNEL_REGISTRY, MODULATIONS, PSNR_CONVENTIONS
from .diffusion import SAMPLERS
from .presets import check_image_size
from .receiver import FDS_METHODS
from .sender.codecs import available_codecs
from .shipped import DEFAULT_MODEL, SHIPPED_MODELS, sample_maps, sample_photo
from .utils.files import atomic_save, check_writable_dir, existing_file
from .visualize import colorize, make_panel

__all__ = ["TransmitReport", "add_arguments", "check_arguments", "format_report", "run", "transmit"]


def __getattr__(name: str):
    # read_label_map and resize_labels moved to the library module .chain; tests/test_demo_kpis.py still imports them
    # from here. Forwarded on use, so importing this command stays light.
    if name in ("read_label_map", "resize_labels"):
        from . import chain

        return getattr(chain, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class TransmitReport(ChainFigures):
    """The chain's figures of the run, with what was sent and where the panel went."""

    model: str
    map: str
    resolution: tuple[int, int]
    channel: str
    panel: str
    extra: dict = field(default_factory=dict)


def _save_atomically(image: PIL.Image.Image, path: Path) -> None:
    """Write next to the target, then rename: an existing file is replaced whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda tmp: image.save(tmp, format="PNG"))


def output_paths(out_dir: Path, map_path: Path) -> dict[str, Path]:
    """The files one run writes: named after the map, so a second run on the same map targets the same names."""
    return {kind: out_dir / f"{map_path.stem}_{kind}.png" for kind in ("panel", "generated")}


def check_outputs(out_dir: Path, map_path: Path, overwrite: bool) -> None:
    """Before the model loads: the folder must be writable, and earlier outputs are replaced only when asked."""
    check_writable_dir(out_dir, "--output folder")
    existing = [path for path in output_paths(out_dir, map_path).values() if os.path.lexists(path)]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists (an earlier run on this map); pass --overwrite to replace it, "
                              "or choose another --output folder")


def read_photo(path: Path) -> PIL.Image.Image:
    """The ``--photo`` of the panel as RGB, decoded now (a bad file is a one-line error naming it, before the model
    loads, not after the generation)."""
    existing_file(path, "--photo", "the photo's image file")
    try:
        with PIL.Image.open(path) as photo:
            return photo.convert("RGB")
    except PIL.UnidentifiedImageError:
        raise ValueError(f"--photo {path} is not a readable image file (empty, or another kind of file)") from None
    except (OSError, SyntaxError, EOFError) as err:
        raise ValueError(f"--photo {path} cannot be decoded (truncated or corrupt file: {err})") from None


def transmit(args: argparse.Namespace) -> TransmitReport:
    import torch

    from .chain import build_link, check_label_ids, load_pipeline, read_label_map, resize_labels, run_chain
    from .channel import describe_channel
    from .diffusion import build_scheduler

    torch.manual_seed(args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    map_path = Path(args.map) if args.map else sample_maps()[0]
    existing_file(map_path, "--map", "one label map PNG")  # before the model loads: a typo must not cost loading time
    # Every file is read and checked before the model loads (the ids once its preset is known).
    labels_full = read_label_map(map_path)
    photo_path = Path(args.photo) if args.photo else sample_photo(map_path)
    photo = read_photo(photo_path) if photo_path is not None else None
    out_dir = Path(args.output)
    check_outputs(out_dir, map_path, args.overwrite)
    pipe, model_desc = load_pipeline(args.model, device)
    pipe.set_progress_bar_config(disable=not args.progress)
    if args.sampler != "default":
        pipe.scheduler = build_scheduler(args.sampler, pipe.scheduler.config)
    preset = pipe.dataset_preset

    check_label_ids(labels_full, preset, str(map_path))
    size = tuple(args.size) if args.size else tuple(pipe.unet.config.sample_size)
    labels = resize_labels(labels_full, size)

    # Channel (the PSNR convention stored with the model, or --psnr-convention), then the chain: sender (one-hot map,
    # coded losslessly for the BPP), channel, FDS, generation.
    channel, channel_desc = build_link(
        pipe, args.channel, psnr_db=args.psnr, ebn0_db=args.ebn0,
        modulation=args.modulation, rician_k=args.rician_k, psnr_convention=args.psnr_convention)
    result = run_chain(pipe, labels, channel=channel, fds=args.fds, num_inference_steps=args.steps,
                       guidance_scale=args.guidance, seed=args.seed, codec=args.codec)

    tiles = [] if photo is None else [("photo", photo)]
    tiles += [
        ("sent map", colorize(labels, preset.palette)),
        ("received", colorize(result.received, preset.palette)),
        (f"FDS ({args.fds})", colorize(result.denoised, preset.palette)),
        ("generated", result.image),
    ]
    scale = max(1, 180 // size[0])
    panel = make_panel(tiles, size=(size[1] * scale, size[0] * scale))
    paths = output_paths(out_dir, map_path)
    panel_path = paths["panel"]
    _save_atomically(panel, panel_path)
    _save_atomically(result.image, paths["generated"])

    figures = {f.name: getattr(result, f.name) for f in fields(ChainFigures)}
    if args.sampler != "default":
        figures["sampler"] = args.sampler
    return TransmitReport(**figures, model=model_desc, map=str(map_path), resolution=size, channel=channel_desc,
                          panel=str(panel_path), extra={"channel": describe_channel(channel)})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map", help="label map PNG of class ids (default: a shipped CamVid sample)")
    parser.add_argument("--photo", help="the original photo, for the panel (default: found next to the map)")
    parser.add_argument("--model", help=f"GescoPipeline folder, Hub repo id, or a shipped model: {sorted(SHIPPED_MODELS)} "
                                        f"(default: {DEFAULT_MODEL}; fast = the distilled 4-call student)")
    parser.add_argument("--channel", default="awgn", choices=sorted(CHANNEL_REGISTRY))
    parser.add_argument("--psnr", type=float, default=10.0, help="channel PSNR in dB (Eq. 15); inf = noiseless")
    parser.add_argument("--psnr-convention", choices=PSNR_CONVENTIONS, default=None,
                        help="PSNR -> noise level: paper (Eq. 15) or official_table (the authors' table, AWGN only); "
                             "default: the one stored with the model (official_table for converted checkpoints)")
    parser.add_argument("--ebn0", type=float, default=6.0, help="Eb/N0 in dB for --channel digital")
    parser.add_argument("--modulation", choices=sorted(MODULATIONS), default=None,
                        help="Gray QAM of --channel digital (default: qpsk, the paper's)")
    parser.add_argument("--rician-k", type=float, default=None,
                        help="--channel digital over flat Rician fading with this K factor (linear; 0 = Rayleigh) "
                             "instead of the default multipath channel")
    parser.add_argument("--codec", default="png", help="lossless map codec for the BPP figure")
    parser.add_argument("--fds", default="paper", choices=FDS_METHODS)
    parser.add_argument("--sampler", default="default", choices=("default",) + SAMPLERS)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's own)")
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale s (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="generation size (default: model's)")
    parser.add_argument("--output", default="outputs/transmit", help="output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the panel and image of an earlier run on the same map in --output")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--progress", action="store_true", help="show the sampling progress bar")


def check_arguments(args: argparse.Namespace) -> None:
    for flag, value in (("--modulation", args.modulation), ("--rician-k", args.rician_k)):
        if value is not None and args.channel != "digital":
            raise ValueError(f"{flag} applies to --channel digital only, got --channel {args.channel}")
    if args.rician_k is not None and not args.rician_k >= 0:  # NaN too, before the model loads
        raise ValueError(f"--rician-k must be >= 0 (0: Rayleigh, inf: no fading), got {args.rician_k}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps}")
    for flag, value in (("--psnr", args.psnr), ("--ebn0", args.ebn0)):  # inf: noiseless; NaN and -inf mean nothing
        if math.isnan(value) or value == -math.inf:
            raise ValueError(f"{flag} must be a number of dB (inf: noiseless), got {value}")
    if args.guidance is not None and not (math.isfinite(args.guidance) and args.guidance >= 0):
        raise ValueError(f"--guidance must be a finite number >= 0 (<= 1: no guidance), got {args.guidance}")
    if not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be an integer in 0..2**63-1, got {args.seed}")
    if args.codec not in available_codecs(lossless=True):
        raise ValueError(f"--codec {args.codec!r} is not an available lossless codec: {available_codecs(lossless=True)}")
    if args.size:
        check_image_size(args.size, "--size")


def format_report(report: TransmitReport) -> str:
    lines = [
        f"model:       {report.model}",
        f"map:         {report.map} at {report.resolution[0]}x{report.resolution[1]}",
        f"sender:      one-hot + {report.codec}: {report.bpp:.4f} bpp ({report.bits_per_element:.5f} bits/element)",
        f"channel:     {report.channel}",
        f"map mIoU:    received {report.map_miou_received:.3f} -> after FDS ({report.fds}) {report.map_miou_fds:.3f}",
        f"generation:  {report.sampler}, {report.steps} steps, guidance {report.guidance_scale}, seed {report.seed}",
        f"time:        preprocessing {report.seconds_preprocessing * 1000:.1f} ms, "
        f"generation {report.seconds_generation:.2f} s",
        f"panel:       {report.panel}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    report = transmit(args)
    print(json.dumps(asdict(report), indent=2) if args.json else format_report(report))
    return 0
