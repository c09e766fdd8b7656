#!/usr/bin/env python
"""Quality against steps: which sampler, and how few steps, keep the semantics of the 1000-step DDPM output.

    python benchmarks/sampler_quality.py                  # demo model, first 8 CamVid val maps (clean), CPU
    python benchmarks/sampler_quality.py --num-maps 101 --device cuda
    python benchmarks/sampler_quality.py --quick          # smoke test: tiny random U-Net, 2 maps, 2-3 steps

The reference is the authors' sampler: 1000 ancestral DDPM steps with the learned-range variance and x0 clipping
(reference doc section 5). Every sampler then runs at each step count on the same maps with the same seeds
(``seed + map index``), and the script prints, side by side:

* the judge's mIoU (Eq. 16: the shipped CamVid SegFormer on the generated image against the clean labels; the
  reference's own mIoU is the target, issue #8 asks for at most 2 points below it);
* the distance to the reference image of the same map and seed: LPIPS where the AlexNet backbone weights are on
  disk (``--lpips-weights``; nothing is downloaded), and always the PSNR in dB (images in [0, 1]);
* seconds per image, measured in the same run.

Sampler names are those of :func:`gesco_diffusers.diffusion.build_scheduler`; ``NAME+threshold`` adds the dynamic
thresholding of Imagen / DeepFloyd IF (``thresholding=True, sample_max_value=1``: the predicted x0 is clipped to
its 99.5th percentile of |x0|, at least 1), the multistep solvers' counterpart of DDPM's ``clip_sample``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.sampling_cost import load_pipeline  # noqa: E402
from gesco_diffusers.diffusion import build_scheduler  # noqa: E402
from gesco_diffusers.evaluation.evaluator import EvaluationData  # noqa: E402
from gesco_diffusers.evaluation.metrics.segmentation_judge import SegmentationJudge, default_camvid_judge_path  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "camvid"
DEFAULT_SAMPLERS = ("ddpm", "ddpm+trailing", "ddim+trailing", "dpmsolver++", "dpmsolver++ +threshold",
                    "unipc+threshold")
THRESHOLDING = dict(thresholding=True, sample_max_value=1.0, dynamic_thresholding_ratio=0.995)


#: Sampler options, written ``NAME+OPTION[+OPTION]``.
SAMPLER_OPTIONS = {
    "threshold": THRESHOLDING,
    # Timesteps counted back from T - 1 (the first step starts from pure noise, as the authors' respacing does);
    # diffusers' DDPM default "leading" starts at (N - 1) * (T // N), which leaves signal in x_T at few steps.
    "trailing": dict(timestep_spacing="trailing"),
}


def make_scheduler(spec: str, config) -> object:
    """``"dpmsolver++"`` -> its scheduler; ``"dpmsolver++ +threshold"`` -> the same with dynamic thresholding."""
    text = spec.replace(" ", "")
    name = "dpmsolver++" if text.startswith("dpmsolver++") else text.split("+")[0]  # that name ends in "++"
    options = [option for option in text[len(name):].split("+") if option]
    unknown = [o for o in options if o not in SAMPLER_OPTIONS]
    if unknown:
        raise ValueError(f"unknown sampler option(s) {unknown} in {spec!r}; options: {sorted(SAMPLER_OPTIONS)}")
    overrides = {key: value for option in options for key, value in SAMPLER_OPTIONS[option].items()}
    return build_scheduler(name, config, **overrides)


def generate(pipe, cond: torch.Tensor, scheduler, steps: int, guidance: float, seed: int, batch_size: int):
    """Images ``(N, 3, H, W)`` in [0, 1], map ``i`` seeded with ``seed + i``; and seconds per image."""
    pipe.scheduler = scheduler
    images = []
    start = time.perf_counter()
    for first in range(0, cond.shape[0], batch_size):
        chunk = cond[first:first + batch_size]
        generators = [torch.Generator().manual_seed(seed + first + i) for i in range(chunk.shape[0])]
        images.append(pipe(chunk, fds=False, num_inference_steps=steps, guidance_scale=guidance,
                           generator=generators, output_type="pt").images.float().cpu())
    return torch.cat(images), (time.perf_counter() - start) / cond.shape[0]


def psnr_db(images: torch.Tensor, references: torch.Tensor) -> float:
    mse = ((images - references) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return float((10 * torch.log10(1 / mse)).mean())


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped demo model)")
    parser.add_argument("--unet-config", default=None, help="a random pipeline of this U-Net config instead")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="CamVid folder with val/{images,labels}")
    parser.add_argument("--num-maps", type=int, default=8, help="the first N val maps")
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="generation size (default: the U-Net's sample size)")
    parser.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS))
    parser.add_argument("--steps", nargs="+", type=int, default=[10, 15, 25, 50, 100])
    parser.add_argument("--reference-steps", type=int, default=1000)
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--judge", default=None, help="segmentation judge folder (default: the shipped one)")
    parser.add_argument("--lpips-weights", default=None, help="torchvision AlexNet weights for LPIPS (optional)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny random U-Net, 2 maps, 2-3 steps")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.unet_config = args.unet_config or "tiny"
        args.num_maps, args.steps, args.reference_steps, args.size = 2, [2, 3], 4, args.size or [32, 40]
        args.samplers = ["ddpm", "dpmsolver++ +threshold"]
    torch.set_num_threads(args.threads)

    pipe = load_pipeline(args.model, args.device, torch.float32, args.unet_config)
    guidance = args.guidance if args.guidance is not None else pipe.dataset_preset.guidance_scale
    size = tuple(args.size or pipe.unet.config.sample_size)
    data = EvaluationData("camvid", "val", size, data_dir=args.data_dir, limit=args.num_maps)
    items = [data.item(i) for i in range(len(data))]
    labels = torch.stack([item.labels for item in items])
    cond = pipe.prepare_semantic_map(labels, fds=False, device=args.device).conditioning
    judge = SegmentationJudge.from_pretrained(args.judge or default_camvid_judge_path(), device=args.device)
    lpips_metric = None
    if args.lpips_weights:
        from gesco_diffusers.evaluation.metrics.lpips_metric import LPIPSMetric
        lpips_metric = LPIPSMetric("alex", backbone_weights=args.lpips_weights, device=args.device)

    def score(images: torch.Tensor, reference: Optional[torch.Tensor]) -> dict:
        row = {"judge_miou": judge.judge_miou(images, labels).miou}
        if reference is not None:
            row["psnr_to_reference_db"] = psnr_db(images, reference)
            row["lpips_to_reference"] = (float(lpips_metric(images, reference).mean()) if lpips_metric else None)
        return row

    reference, seconds = generate(pipe, cond, build_scheduler("ddpm", pipe.scheduler.config), args.reference_steps,
                                  guidance, args.seed, args.batch_size)
    rows = [{"sampler": "ddpm (reference)", "steps": args.reference_steps, "seconds_per_image": seconds,
             **score(reference, None)}]
    print(f"reference ddpm {args.reference_steps} steps: judge mIoU {rows[0]['judge_miou']:.3f} "
          f"({seconds:.1f} s/image)", flush=True)
    for spec in args.samplers:
        for steps in args.steps:
            images, seconds = generate(pipe, cond, make_scheduler(spec, pipe.scheduler.config), steps, guidance,
                                       args.seed, args.batch_size)
            rows.append({"sampler": spec, "steps": steps, "seconds_per_image": seconds, **score(images, reference)})
            print(f"  {spec} {steps}: mIoU {rows[-1]['judge_miou']:.3f}, PSNR to ref "
                  f"{rows[-1]['psnr_to_reference_db']:.1f} dB", flush=True)

    ceiling = rows[0]["judge_miou"]
    print(f"\n| sampler | steps | judge mIoU | mIoU - reference (points) | LPIPS to ref | PSNR to ref (dB) | "
          f"s / image |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        lp = row.get("lpips_to_reference")
        delta = 100 * (row["judge_miou"] - ceiling)
        print(f"| {row['sampler']} | {row['steps']} | {row['judge_miou']:.3f} | {delta:+.1f} | "
              f"{'n/a' if lp is None else f'{lp:.3f}'} | {row.get('psnr_to_reference_db', float('nan')):.1f} | "
              f"{row['seconds_per_image']:.2f} |")
    print(f"\n{len(items)} CamVid val maps at {size[0]}x{size[1]}, guidance {guidance}, seed {args.seed}, "
          f"{args.device}, {args.threads} threads; LPIPS {'on' if lpips_metric else 'n/a (no backbone weights)'}")
    summary = {"device": args.device, "threads": args.threads, "num_maps": len(items), "guidance": guidance,
               "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
