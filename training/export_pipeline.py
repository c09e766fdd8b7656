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
import sys
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gesco_diffusers.diffusion import SAMPLERS, build_scheduler  # noqa: E402
from gesco_diffusers.hub import write_model_card  # noqa: E402
from gesco_diffusers.pipelines import GescoPipeline  # noqa: E402
from gesco_diffusers.training.config import OneLineArgumentParser, run_script  # noqa: E402
from gesco_diffusers.utils.files import check_writable_dir, read_json_file, staged_directory  # noqa: E402


def _check_paths(source: Path, destination: Path) -> None:
    """Before the pipeline loads: ``source`` is a pipeline folder; ``destination`` can be written and replacing it
    deletes neither the source nor a folder that holds it."""
    if not (source / "model_index.json").is_file():
        raise FileNotFoundError(f"{source} is not a pipeline folder (no model_index.json)")
    if destination.resolve() == source.resolve() or destination.resolve() in source.resolve().parents:
        raise ValueError(f"destination {destination} holds the source {source}: replacing it would delete the run")
    if destination.exists() and not destination.is_dir():
        raise FileExistsError(f"destination {destination} exists and is not a folder")
    check_writable_dir(destination.resolve().parent, "the destination's parent folder")  # written beside it


def export_pipeline(source: Path, destination: Path, dtype: torch.dtype = torch.float16,
                    training_args: Optional[dict] = None, kpis: Optional[dict] = None,
                    sampler: Optional[str] = None, description: Optional[str] = None,
                    model_name: Optional[str] = None, kpi_source: Optional[str] = None) -> Path:
    """Write ``destination`` from the pipeline folder ``source``; ``sampler`` (a name of ``SAMPLERS``) replaces the
    stored scheduler, sharing its noise schedule (e.g. the one chosen by ``benchmarks/sampler_quality.py``)."""
    _check_paths(source, destination)
    pipe = GescoPipeline.from_pretrained(source)
    pipe.unet.to(dtype)
    if sampler is not None:
        pipe.scheduler = build_scheduler(sampler, pipe.scheduler.config)
    # Written beside the destination and renamed into place, entries with the umask's modes (utils.files).
    with staged_directory(destination) as staging:
        pipe.save_pretrained(staging, safe_serialization=True)
        # The card's usage lines name a placeholder repository after the destination (gesco-camvid-fast, ...).
        write_model_card(staging, training_args=training_args, kpis=kpis, description=description,
                         repo_id=f"your-namespace/gesco-{destination.name}", model_name=model_name,
                         kpi_source=kpi_source)
    return destination


def _read_json(path: Optional[Path], flag: str) -> Optional[dict]:
    """The JSON object of ``--flag`` (``None`` when not given); a one-line error naming the file otherwise."""
    if path is None:
        return None
    data = read_json_file(path, flag)
    if not isinstance(data, dict):
        raise ValueError(f"{flag} {path} must hold a JSON object, got {type(data).__name__}")
    return data


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The arguments, checked before the pipeline loads: the source is a pipeline folder, the destination neither it
    nor inside it and creatable, the JSON and Markdown files readable (``args.training_args``, ``args.kpis`` and
    ``args.description`` hold their contents)."""
    parser = OneLineArgumentParser(prog="export_pipeline.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--training-args", type=Path, help="JSON dict shown in the card's training table")
    parser.add_argument("--kpis", type=Path, help="JSON {condition: {kpi: value}} shown in the card")
    parser.add_argument("--sampler", choices=SAMPLERS, default=None, help="store this scheduler (default: keep)")
    parser.add_argument("--description", type=Path, help="Markdown file shown at the top of the card")
    parser.add_argument("--model-name", default=None, help="the card's title (default: 'GESCO <dataset>')")
    parser.add_argument("--kpi-source", default=None,
                        help="how the --kpis were measured, shown under them (default: gesco evaluate on the val maps)")
    args = parser.parse_args(argv)
    _check_paths(args.source, args.destination)
    args.training_args = _read_json(args.training_args, "--training-args")
    args.kpis = _read_json(args.kpis, "--kpis")
    if args.description is not None:
        if not args.description.is_file():
            raise FileNotFoundError(f"--description {args.description}: "
                                    f"{'a folder, not a file' if args.description.is_dir() else 'not found'}")
        try:
            args.description = args.description.read_text()
        except UnicodeDecodeError as err:
            raise ValueError(f"--description {args.description} is not a text file ({err})") from None
    return args


def run(args: argparse.Namespace) -> Path:
    out = export_pipeline(args.source, args.destination, torch.float16 if args.dtype == "fp16" else torch.float32,
                          args.training_args, args.kpis, args.sampler, args.description, args.model_name,
                          args.kpi_source)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"exported {args.source} -> {out} ({size / 2**20:.1f} MiB)")
    return out


def main(argv: Optional[list[str]] = None) -> Path:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(run_script("export_pipeline.py", parse_args, run))
