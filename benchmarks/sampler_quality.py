#!/usr/bin/env python
"""Quality against steps: which sampler, and how few steps, keep the semantics of the 1000-step DDPM output.

    python benchmarks/sampler_quality.py                  # demo model, 4 CamVid val maps (clean), CPU
    python benchmarks/sampler_quality.py --num-maps 101 --device cuda
    python benchmarks/sampler_quality.py --quick          # smoke test: tiny random U-Net, 2 maps, 2-3 steps

The reference is the authors' sampler: 1000 ancestral DDPM steps with the learned-range variance and x0 clipping
(reference doc section 5). Every sampler then runs at each step count on the same maps with the same seeds
(``seed + map index``), and the script prints, side by side:

* the judge's mIoU (Eq. 16: the shipped CamVid SegFormer on the generated image against the clean labels; the
  reference's own mIoU is the target, issue #8 asks for at most 2 points below it);
* the distance to the reference image of the same map and seed: LPIPS where the AlexNet backbone weights are on
  disk (``--lpips-weights``; nothing is downloaded), and always the PSNR in dB (images in [0, 1]);
* seconds per image, measured in the same run;
* a 95 % paired bootstrap interval of the mIoU difference to the reference (maps resampled with replacement, the
  same resample for both; ``--bootstrap`` resamples): with a handful of maps it is several points wide, so "within
  2 points" is only a claim where the interval says so.

The reference (1000 steps per map: minutes per map on a CPU) is cached in ``--reference-cache`` under a key of the
model weights, maps, size, guidance, seed and step count, so later runs with other samplers reuse it.

Sampler names are those of :func:`gesco_diffusers.diffusion.build_scheduler`; ``NAME+clip`` clips the predicted x0
to [-1, 1] (``X0_CLIPPING``: diffusers' ``thresholding`` with ``sample_max_value=1``, whose percentile threshold is
clamped to 1, i.e. static clipping), the multistep solvers' counterpart of DDPM's ``clip_sample``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.sampling_cost import load_pipeline  # noqa: E402
from gesco_diffusers.diffusion import SAMPLERS, X0_CLIPPING, build_scheduler  # noqa: E402
from gesco_diffusers.evaluation.data import EvaluationData  # noqa: E402
from gesco_diffusers.evaluation.metrics.miou import ConfusionMatrix  # noqa: E402
from gesco_diffusers.evaluation.metrics.segmentation_judge import SegmentationJudge, default_camvid_judge_path  # noqa: E402
from gesco_diffusers.utils.files import atomic_save  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "camvid"
DEFAULT_CACHE = REPO_ROOT / "benchmarks" / ".cache" / "sampler_quality"
#: The default run (4 maps, these samplers at 10/25/50/100 steps) took 6 min 46 s on the 2-core CPU with the
#: reference made, about 3 min with it read from the cache; DDIM and UniPC are one ``--samplers`` away.
DEFAULT_SAMPLERS = ("ddpm", "sde-dpmsolver++", "dpmsolver++ +clip")


#: Sampler options, written ``NAME+OPTION[+OPTION]``.
SAMPLER_OPTIONS = {
    "clip": X0_CLIPPING,
    # Timesteps counted back from T - 1 (the first step starts from pure noise, as the authors' respacing does);
    # diffusers' DDPM default "leading" starts at (N - 1) * (T // N), which leaves signal in x_T at few steps.
    "trailing": dict(timestep_spacing="trailing"),
}


def make_scheduler(spec: str, config) -> object:
    """``"dpmsolver++"`` -> its scheduler; ``"dpmsolver++ +clip"`` -> the same with x0 clipped to [-1, 1]."""
    text = spec.replace(" ", "")
    # The longest registered name the spec starts with ("sde-dpmsolver++" before "dpmsolver++"; names may end in "+").
    known = [sampler for sampler in SAMPLERS if text.startswith(sampler)]
    name = max(known, key=len) if known else text.split("+")[0]
    options = [option for option in text[len(name):].split("+") if option]
    unknown = [o for o in options if o not in SAMPLER_OPTIONS]
    if unknown:
        raise ValueError(f"unknown sampler option(s) {unknown} in {spec!r}; options: {sorted(SAMPLER_OPTIONS)}")
    overrides = {key: value for option in options for key, value in SAMPLER_OPTIONS[option].items()}
    return build_scheduler(name, config, **overrides)


def generate(pipe, cond: torch.Tensor, scheduler, steps: int, guidance: float, seeds: list[int], batch_size: int):
    """Images ``(N, 3, H, W)`` in [0, 1], map ``i`` seeded with ``seeds[i]``; and seconds per image."""
    pipe.scheduler = scheduler
    images = []
    start = time.perf_counter()
    for first in range(0, cond.shape[0], batch_size):
        chunk = cond[first:first + batch_size]
        generators = [torch.Generator().manual_seed(seed) for seed in seeds[first:first + batch_size]]
        images.append(pipe(chunk, fds=False, num_inference_steps=steps, guidance_scale=guidance,
                           generator=generators, output_type="pt").images.float().cpu())
    return torch.cat(images), (time.perf_counter() - start) / cond.shape[0]


def psnr_db(images: torch.Tensor, references: torch.Tensor) -> float:
    mse = ((images - references) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return float((10 * torch.log10(1 / mse)).mean())


def per_map_confusion(judge: SegmentationJudge, images: torch.Tensor, labels: torch.Tensor) -> list[ConfusionMatrix]:
    """One confusion matrix per map: the dataset mIoU of any subset (or resample) of maps is that of their sum."""
    return [judge.update(judge.new_confusion_matrix(), image[None], reference_labels=label[None])
            for image, label in zip(images, labels)]


def pooled_miou(matrices: list[ConfusionMatrix], indices: list[int]) -> float:
    total = ConfusionMatrix(matrices[0].num_classes, matrices[0].ignore_ids)
    for i in indices:
        total.merge(matrices[i])
    return total.compute().miou


def bootstrap_difference(ours: list[ConfusionMatrix], reference: list[ConfusionMatrix], resamples: int,
                         seed: int) -> tuple[float, float]:
    """95 % percentile interval of ``mIoU(ours) - mIoU(reference)`` over maps resampled with replacement (paired)."""
    generator = torch.Generator().manual_seed(seed)
    n = len(ours)
    differences = []
    for _ in range(resamples):
        indices = torch.randint(0, n, (n,), generator=generator).tolist()
        differences.append(pooled_miou(ours, indices) - pooled_miou(reference, indices))
    low, high = torch.tensor(differences, dtype=torch.float64).quantile(torch.tensor([0.025, 0.975],
                                                                                   dtype=torch.float64)).tolist()
    return low, high


def weights_digest(pipe) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(pipe.unet.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def reference_key(weights: str, scheduler, stem: str, seed: int, size, guidance: float, steps: int,
                  device: str, extra: Optional[dict] = None) -> str:
    """Hash of everything one map's reference image depends on (weights, sampler, map, seed, size, guidance, steps,
    device, and ``extra`` settings such as the channel condition)."""
    settings = dict(weights=weights, stem=stem, seed=seed, size=list(size), guidance=guidance, steps=steps,
                    device=torch.device(device).type,
                    scheduler={k: v for k, v in scheduler.config.items() if not k.startswith("_")})
    if extra:
        settings["extra"] = extra
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_references(cache_dir: Optional[str], keys: list[str], compute) -> tuple[torch.Tensor, float, int]:
    """The reference image of every map: read from ``cache_dir/KEY.safetensors`` where present, the others made by
    ``compute(missing_positions) -> (images, seconds per image)`` and stored one file per map (each written to a
    temporary file, then renamed: an interrupted run never leaves a half-written reference). Returns the images, the
    mean seconds per image (as measured when each was made) and how many came from the cache."""
    paths = [Path(cache_dir) / f"{key}.safetensors" if cache_dir else None for key in keys]
    images: list[Optional[torch.Tensor]] = [None] * len(keys)
    seconds: list[float] = [0.0] * len(keys)
    for i, path in enumerate(paths):
        if path is not None and path.is_file():
            stored = load_file(path)
            images[i], seconds[i] = stored["image"], float(stored["seconds_per_image"])
    missing = [i for i, image in enumerate(images) if image is None]
    if missing:
        made, seconds_each = compute(missing)
        for i, image in zip(missing, made):
            images[i], seconds[i] = image, seconds_each
            if paths[i] is not None:
                paths[i].parent.mkdir(parents=True, exist_ok=True)
                tensors = {"image": image.contiguous(), "seconds_per_image": torch.tensor(seconds_each)}
                atomic_save(paths[i], lambda tmp: save_file(tensors, str(tmp)))
    return torch.stack(images), sum(seconds) / len(seconds), len(keys) - len(missing)


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped demo model)")
    parser.add_argument("--unet-config", default=None, help="a random pipeline of this U-Net config instead")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="CamVid folder with val/{images,labels}")
    parser.add_argument("--num-maps", type=int, default=4, help="N val maps spread evenly over the split")
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="generation size (default: the U-Net's sample size)")
    parser.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS))
    parser.add_argument("--steps", nargs="+", type=int, default=[10, 25, 50, 100])
    parser.add_argument("--reference-steps", type=int, default=1000)
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the maps (0: none)")
    parser.add_argument("--reference-cache", default=None,
                        help=f"folder for the cached reference images (default {DEFAULT_CACHE.relative_to(REPO_ROOT)}, "
                             "none with --quick; '' to recompute every run)")
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
        args.samplers = ["ddpm", "sde-dpmsolver++"]
        args.bootstrap = 20
    if args.reference_cache is None:
        args.reference_cache = "" if args.quick else str(DEFAULT_CACHE)
    torch.set_num_threads(args.threads)

    pipe = load_pipeline(args.model, args.device, torch.float32, args.unet_config)
    guidance = args.guidance if args.guidance is not None else pipe.dataset_preset.guidance_scale
    size = tuple(args.size or pipe.unet.config.sample_size)
    data = EvaluationData("camvid", "val", size, data_dir=args.data_dir)
    if not 1 <= args.num_maps <= len(data):
        parser.error(f"--num-maps must be between 1 and {len(data)}")
    # Spread over the split: neighbouring CamVid frames are near copies of each other.
    indices = torch.linspace(0, len(data) - 1, args.num_maps).round().long().unique().tolist()
    items = [data.item(i) for i in indices]
    stems = [item.stem for item in items]
    labels = torch.stack([item.labels for item in items])
    cond = pipe.prepare_semantic_map(labels, fds=False, device=args.device).conditioning
    judge = SegmentationJudge.from_pretrained(args.judge or default_camvid_judge_path(), device=args.device)
    lpips_metric = None
    if args.lpips_weights:
        from gesco_diffusers.evaluation.metrics.lpips_metric import LPIPSMetric
        lpips_metric = LPIPSMetric("alex", backbone_weights=args.lpips_weights, device=args.device)

    # Map i of the split is seeded with seed + i in every run, whichever subset it is part of.
    seeds = [args.seed + i for i in indices]
    reference_scheduler = build_scheduler("ddpm", pipe.scheduler.config)
    weights = weights_digest(pipe)
    keys = [reference_key(weights, reference_scheduler, stem, seed, size, guidance, args.reference_steps, args.device)
            for stem, seed in zip(stems, seeds)]
    reference, seconds, from_cache = cached_references(
        args.reference_cache, keys,
        lambda missing: generate(pipe, cond[missing], reference_scheduler, args.reference_steps, guidance,
                                 [seeds[i] for i in missing], args.batch_size))
    reference_matrices = per_map_confusion(judge, reference, labels)

    def score(images: torch.Tensor) -> dict:
        matrices = per_map_confusion(judge, images, labels)
        miou = pooled_miou(matrices, list(range(len(matrices))))
        row = {"judge_miou": miou, "psnr_to_reference_db": psnr_db(images, reference),
               "lpips_to_reference": float(lpips_metric(images, reference).mean()) if lpips_metric else None}
        if args.bootstrap:
            row["difference_ci95"] = bootstrap_difference(matrices, reference_matrices, args.bootstrap, args.seed)
        return row

    rows = [{"sampler": "ddpm (reference)", "steps": args.reference_steps, "seconds_per_image": seconds,
             "judge_miou": pooled_miou(reference_matrices, list(range(len(items)))), "maps_from_cache": from_cache}]
    print(f"reference ddpm {args.reference_steps} steps: judge mIoU {rows[0]['judge_miou']:.3f} "
          f"({seconds:.1f} s/image; {from_cache} of {len(items)} maps read from the cache)", flush=True)
    for spec in args.samplers:
        for steps in args.steps:
            images, seconds = generate(pipe, cond, make_scheduler(spec, pipe.scheduler.config), steps, guidance,
                                       seeds, args.batch_size)
            rows.append({"sampler": spec, "steps": steps, "seconds_per_image": seconds, **score(images)})
            print(f"  {spec} {steps}: mIoU {rows[-1]['judge_miou']:.3f}, PSNR to ref "
                  f"{rows[-1]['psnr_to_reference_db']:.1f} dB", flush=True)

    ceiling = rows[0]["judge_miou"]
    print(f"\n| sampler | steps | judge mIoU | mIoU - reference (points) | 95 % interval (points) | LPIPS to ref | "
          f"PSNR to ref (dB) | s / image |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        lp = row.get("lpips_to_reference")
        delta = 100 * (row["judge_miou"] - ceiling)
        interval = row.get("difference_ci95")
        interval = "" if interval is None else f"[{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}]"
        print(f"| {row['sampler']} | {row['steps']} | {row['judge_miou']:.3f} | {delta:+.1f} | {interval} | "
              f"{'n/a' if lp is None else f'{lp:.3f}'} | {row.get('psnr_to_reference_db', float('nan')):.1f} | "
              f"{row['seconds_per_image']:.2f} |")
    print(f"\n{len(items)} CamVid val maps (spread over the {len(data)}) at {size[0]}x{size[1]}, guidance {guidance}, "
          f"seed {args.seed}, "
          f"{args.device}, {args.threads} threads; LPIPS {'on' if lpips_metric else 'n/a (no backbone weights)'}")
    summary = {"device": args.device, "threads": args.threads, "num_maps": len(items), "guidance": guidance,
               "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
