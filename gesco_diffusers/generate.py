"""``gesco generate``: a folder of label maps in, a folder of generated images out (same stems).

Each map (a PNG of class ids, read in sorted order) goes sender -> channel -> FDS -> sampler exactly as in
``gesco evaluate``: map ``i`` (its row in the sorted folder) gets its channel noise from ``derive_seed(seed + i, 1)``
and its sampler noise from ``seed + i``, so an image depends on its map, the settings and ``i`` only, not on the
batch or the number of processes. Images are written atomically as ``<out>/<stem>.png``; a rerun skips those already
there (the folder's ``settings.json`` must match, else the run is refused). Under ``torchrun`` / ``accelerate
launch`` the batches are dealt to the processes round-robin (:mod:`gesco_diffusers.evaluation.distributed`), each
writes its own images, and a second launch into the same folder is refused while one runs.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["add_arguments", "generate", "read_maps", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from .channel import CHANNEL_REGISTRY
    from .diffusion import SAMPLERS
    from .receiver import FDS_METHODS

    parser.add_argument("maps", help="folder of label maps (PNG files of class ids)")
    parser.add_argument("out", help="folder of generated images (<stem>.png; reruns resume)")
    parser.add_argument("--model", help="GescoPipeline folder, Hub id, or a shipped model: demo or fast "
                                        "(default: the shipped CamVid demo model)")
    parser.add_argument("--channel", default="awgn", choices=("none",) + tuple(sorted(CHANNEL_REGISTRY)),
                        help="channel of the map (default awgn; none: the clean map)")
    parser.add_argument("--psnr", type=float, default=10.0, help="PSNR in dB (Eq. 15; the digital link: Eb/N0)")
    parser.add_argument("--psnr-convention", choices=("paper", "official_table"), default=None,
                        help="PSNR -> noise level (default: the one stored with the model)")
    parser.add_argument("--fds", default="paper", choices=FDS_METHODS, help="FDS at the receiver (default paper)")
    parser.add_argument("--sampler", default="default", choices=("default",) + tuple(SAMPLERS))
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's own)")
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale s (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="map i (sorted) is sampled with seed + i")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def read_maps(folder: Path) -> tuple[list[str], list[np.ndarray]]:
    """The stems and ``(H, W)`` int64 maps of ``folder/*.png`` in sorted order, read with the package's one label-map
    reader, :func:`gesco_diffusers.chain.read_label_map` (one-line errors naming the file). Their ids are checked
    against the model's preset once it has loaded (:func:`gesco_diffusers.chain.check_label_ids`)."""
    from .chain import read_label_map  # (here, not at the top: `gesco generate --help` imports no torch)

    if folder.is_file():
        raise NotADirectoryError(f"map folder {folder} is a file; give the folder of label maps")
    if not folder.is_dir():
        raise FileNotFoundError(f"map folder not found: {folder}")
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise ValueError(f"{folder} holds no .png label maps")
    return [p.stem for p in paths], [read_label_map(p) for p in paths]


def _batches(shapes: Sequence[tuple], todo: Sequence[int], batch_size: int) -> list[list[int]]:
    """``todo`` cut into batches of at most ``batch_size`` maps of one size (the same for any process count)."""
    batches: list[list[int]] = []
    for i in todo:
        if batches and len(batches[-1]) < batch_size and shapes[batches[-1][0]] == shapes[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def generate(maps_dir, out_dir, *, model=None, channel: Optional[str] = "awgn", level_db: float = 10.0,
             fds: str = "paper", sampler: Optional[str] = None, num_inference_steps: Optional[int] = None,
             guidance_scale: Optional[float] = None, seed: int = 0, batch_size: int = 4, device=None,
             psnr_convention: Optional[str] = None, progress: bool = True) -> dict:
    """Generate ``out_dir/<stem>.png`` for every map of ``maps_dir`` not done yet; return a summary (every rank).

    Everything that can be checked is checked before the model loads (the arguments, every map file, the output
    folder), and the rest (ids against the model's classes, map sizes, steps against its schedule) before anything is
    written."""
    import torch

    from .chain import check_label_ids
    from .channel import channel_for
    from .evaluation.distributed import Processes
    from .evaluation.data import EvaluationItem
    from .evaluation.protocol import ChannelCondition
    from .evaluation.sources import (
        GenerationSettings, PipelineImages, check_generation_arguments, load_pipeline, sampling,
    )
    from .evaluation.store import check_folder, model_fingerprint, remove_stale_temporaries, save_png, write_settings
    from .shipped import required_model
    from .utils.files import check_writable_dir

    check_generation_arguments(seed, batch_size, 1 if num_inference_steps is None else num_inference_steps, [fds])
    if guidance_scale is not None and not (math.isfinite(guidance_scale) and guidance_scale >= 0):
        raise ValueError(f"guidance_scale must be a finite number >= 0 (<= 1: no guidance), got {guidance_scale!r}")
    maps_dir, out = Path(maps_dir), Path(out_dir)
    stems, maps = read_maps(maps_dir)
    if out.resolve() == maps_dir.resolve():
        raise ValueError(f"the output folder {out} is the map folder: the images (<stem>.png) would land among the "
                         "maps; choose another folder")
    check_writable_dir(out)
    condition = ChannelCondition(None if channel in (None, "none") else channel,
                                 None if channel in (None, "none") else level_db)
    processes = Processes(device)
    pipe = load_pipeline(required_model(model), processes.device)
    factor = pipe.unet.downsampling_factor
    for stem, labels in zip(stems, maps):
        check_label_ids(labels, pipe.dataset_preset, str(maps_dir / f"{stem}.png"))
        if labels.shape[0] % factor or labels.shape[1] % factor:
            raise ValueError(f"{maps_dir / (stem + '.png')} is {labels.shape[0]}x{labels.shape[1]}, not divisible by "
                             f"the U-Net's downsampling factor {factor}")
    if not condition.is_clean:
        channel_for(pipe, condition.channel, condition.level_db, psnr_convention)  # a bad level fails now
    steps = pipe.default_num_inference_steps if num_inference_steps is None else num_inference_steps
    guidance = pipe.default_guidance_scale if guidance_scale is None else float(guidance_scale)
    pipe.check_inputs(steps, None, guidance, "pil", [])  # e.g. more steps than the schedule: refused before writing
    maps = [torch.from_numpy(labels) for labels in maps]
    with processes.lock(out, "generate"), sampling([pipe], sampler):
        settings = {"model": model_fingerprint(pipe), "channel": condition.describe(), "fds": fds,
                    "sampler": type(pipe.scheduler).__name__, "steps": steps, "guidance_scale": guidance,
                    "seed": seed, "psnr_convention": psnr_convention,
                    "seeding": "sampler: seed + map index; channel: derive_seed(seed + map index, 1)"}
        error, unwritten = None, False
        try:
            unwritten = check_folder(out, settings)
        except ValueError as err:
            error = err
        processes.check(error if processes.is_main else None)
        if error is not None:
            raise error
        todo = None
        if processes.is_main:
            remove_stale_temporaries(out)
            if unwritten:
                write_settings(out, settings)
            todo = [i for i, stem in enumerate(stems) if not (out / f"{stem}.png").is_file()]
        todo = processes.broadcast(todo)
        batches = _batches([tuple(m.shape) for m in maps], todo, batch_size)
        mine = processes.shard(batches)
        make = PipelineImages(pipe, fds, condition, GenerationSettings(steps, guidance, seed, psnr_convention))
        bar = None
        if progress and processes.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(len(b) for b in mine), unit="image",
                       desc=f"generate (rank 0 of {processes.num_processes})")
        for batch in mine:
            items = [EvaluationItem(i, stems[i], None, maps[i]) for i in batch]
            for item, picture in zip(items, make(items)):
                save_png(picture, out / f"{item.stem}.png")
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        processes.wait()
    return {"maps": len(stems), "made": len(todo), "skipped": len(stems) - len(todo),
            "num_processes": processes.num_processes, "is_main": processes.is_main}


def run(args: argparse.Namespace) -> int:
    summary = generate(
        args.maps, args.out, model=args.model, channel=args.channel, level_db=args.psnr, fds=args.fds,
        sampler=None if args.sampler == "default" else args.sampler, num_inference_steps=args.steps,
        guidance_scale=args.guidance, seed=args.seed, batch_size=args.batch_size, device=args.device,
        psnr_convention=args.psnr_convention, progress=not args.quiet,
    )
    if summary["is_main"]:
        print(f"{summary['made']} images written to {args.out} ({summary['skipped']} already there, "
              f"{summary['num_processes']} processes)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(add_arguments(argparse.ArgumentParser(prog="gesco generate", description=__doc__.split("\n\n")[0]))
               .parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
