#!/usr/bin/env python
"""Export a trained pipeline folder for shipping: fp16 U-Net weights (safetensors), scheduler, config and model card,
without the training state.

    python training/export_pipeline.py runs/demo-camvid gesco_diffusers/assets/demo/camvid \
        --training-args runs/demo-camvid/export_args.json --kpis outputs/evaluate/kpis.json

The destination is written to a temporary folder beside it and renamed into place, so an existing export is either
replaced whole or left untouched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gesco_diffusers.diffusion import SAMPLERS, build_scheduler  # noqa: E402
from gesco_diffusers.hub import write_model_card  # noqa: E402
from gesco_diffusers.pipelines import GescoPipeline  # noqa: E402
from gesco_diffusers.utils.files import staged_directory  # noqa: E402


def export_pipeline(source: Path, destination: Path, dtype: torch.dtype = torch.float16,
                    training_args: Optional[dict] = None, kpis: Optional[dict] = None,
                    sampler: Optional[str] = None, description: Optional[str] = None) -> Path:
    """Write ``destination`` from the pipeline folder ``source``; ``sampler`` (a name of ``SAMPLERS``) replaces the
    stored scheduler, sharing its noise schedule (e.g. the one chosen by ``benchmarks/sampler_quality.py``)."""
    if not (source / "model_index.json").is_file():
        raise FileNotFoundError(f"{source} is not a pipeline folder (no model_index.json)")
    if destination.resolve() == source.resolve() or destination.resolve() in source.resolve().parents:
        raise ValueError(f"destination {destination} holds the source {source}: replacing it would delete the run")
    pipe = GescoPipeline.from_pretrained(source)
    pipe.unet.to(dtype)
    if sampler is not None:
        pipe.scheduler = build_scheduler(sampler, pipe.scheduler.config)
    # Written beside the destination and renamed into place, entries with the umask's modes (utils.files).
    with staged_directory(destination) as staging:
        pipe.save_pretrained(staging, safe_serialization=True)
        write_model_card(staging, training_args=training_args, kpis=kpis, description=description)
    return destination


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--training-args", type=Path, help="JSON dict shown in the card's training table")
    parser.add_argument("--kpis", type=Path, help="JSON {condition: {kpi: value}} shown in the card")
    parser.add_argument("--sampler", choices=SAMPLERS, default=None, help="store this scheduler (default: keep)")
    parser.add_argument("--description", type=Path, help="Markdown file shown at the top of the card")
    args = parser.parse_args(argv)
    read = lambda path: json.loads(path.read_text()) if path else None  # noqa: E731
    out = export_pipeline(args.source, args.destination, torch.float16 if args.dtype == "fp16" else torch.float32,
                          read(args.training_args), read(args.kpis), args.sampler,
                          args.description.read_text() if args.description else None)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"exported {args.source} -> {out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
