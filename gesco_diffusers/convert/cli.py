"""``python -m gesco_diffusers.convert`` / ``gesco convert``: official checkpoint -> GescoPipeline folder."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..presets import DATASET_PRESETS


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The converter's arguments (on ``parser`` if given, so a ``gesco convert`` subcommand can reuse them)."""
    parser = parser or argparse.ArgumentParser(
        prog="python -m gesco_diffusers.convert",
        description="Convert the authors' GESCO / SDM checkpoint (ema_0.9999_*.pt, model*.pt or .safetensors) into a "
                    "GescoPipeline folder (safetensors fp32 + fp16 U-Net, official DDPM scheduler, dataset preset, "
                    "model card).",
    )
    parser.add_argument("checkpoint",
                        help="official state dict (.pt/.pth, read with weights_only=True, or .safetensors)")
    parser.add_argument("output_dir", help="pipeline folder to write (atomically)")
    parser.add_argument("--dataset", choices=sorted(DATASET_PRESETS),
                        help="dataset preset (default: inferred from the map channels; required for 2-channel "
                             "one_hot_label=False checkpoints)")
    parser.add_argument("--classes", metavar="CLASSES_JSON",
                        help="instead of --dataset: a classes.json file defining the dataset (names, colours, "
                             "unlabelled id, instance edges), for checkpoints trained on any other class count")
    parser.add_argument("--num-head-channels", type=int, default=64,
                        help="channels per attention head (--num_head_channels of the authors' run; default 64)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance stored with the pipeline (default: the dataset's: 2 for "
                             "Cityscapes, 2.5 for COCO-Stuff/ADE20K)")
    parser.add_argument("--sample-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), default=None,
                        help="default output size (default: the dataset's resolution)")
    parser.add_argument("--no-fp16", action="store_true", help="do not write the fp16 variant of the U-Net")
    parser.add_argument("--repo-id", default=None, help="Hub repository id shown in the model card's usage example")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--verbose", action="store_true", help="print one line per mapped tensor")
    return parser


def run(args: argparse.Namespace) -> int:
    from .checkpoint import convert_official_checkpoint

    if args.classes is not None and args.dataset is not None:
        raise ValueError("give --dataset (a preset) or --classes (a classes.json file), not both")
    convert_official_checkpoint(
        args.checkpoint, args.output_dir, dataset=args.classes or args.dataset, num_head_channels=args.num_head_channels,
        guidance_scale=args.guidance_scale, sample_size=args.sample_size, fp16_variant=not args.no_fp16,
        overwrite=args.overwrite, repo_id=args.repo_id, verbose=args.verbose,
    )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status."""
    return run(build_parser().parse_args(argv))
