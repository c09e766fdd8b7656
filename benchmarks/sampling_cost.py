#!/usr/bin/env python
"""Sampling cost per image: the authors' protocol against the package default, side by side in one run.

    python benchmarks/sampling_cost.py                 # camvid-small at 64x80 (demo model if shipped), CPU
    python benchmarks/sampling_cost.py --quick         # smoke test: tiny U-Net, 10 authors' steps, 2 of ours
    python benchmarks/sampling_cost.py --model path/to/pipeline --device cuda --dtype fp16

Authors' protocol (reference doc sections 4-5): 1000 ancestral DDPM steps with the learned-range variance, and
classifier-free guidance as two separate forward passes per step (2000 network evaluations per image).
Ours: the pipeline's default solver at the default (or each given) step count, both CFG halves in one forward that
runs the map-free encoder once and reuses the SPADE modulations of the map across steps.

Each protocol runs in its own child process, so its peak memory (CUDA allocator peak on a GPU, peak resident set
size on a CPU) is its own; wall times are medians over ``--repeats`` images.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from gesco_diffusers.diffusion import DEFAULT_SAMPLING_STEPS, official_ddpm_scheduler  # noqa: E402
from gesco_diffusers.pipelines import GescoPipeline  # noqa: E402
from gesco_diffusers.shipped import demo_model_path, sample_maps  # noqa: E402
from gesco_diffusers.chain import read_label_map, resize_labels  # noqa: E402


def load_pipeline(model: Optional[str], device: str, dtype: torch.dtype, unet_config: Optional[str] = None):
    """``model`` if given; else a random ``unet_config`` pipeline if given; else the demo model if shipped; else a
    random camvid-small pipeline (costs do not depend on the weights)."""
    if model is None and unet_config is None and (demo_model_path() / "model_index.json").is_file():
        model = str(demo_model_path())
    pipe = (GescoPipeline.from_pretrained(model) if model
            else GescoPipeline.from_unet_config(unet_config or "camvid-small", dataset="camvid"))
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def authors_protocol(pipe: GescoPipeline, cond: torch.Tensor, steps: int, scale: float, generator) -> tuple:
    """The released sampler's arithmetic: ancestral DDPM, learned range, two separate passes per step."""
    scheduler = official_ddpm_scheduler()
    scheduler.set_timesteps(steps)
    unet = pipe.unet
    x = torch.randn((1, 3, *cond.shape[-2:]), generator=generator).to(cond.device, cond.dtype)
    evaluations = 0
    null = torch.zeros_like(cond)
    for t in scheduler.timesteps:
        out_cond = unet(x, t, cond).sample
        out_uncond = unet(x, t, null).sample
        evaluations += 2
        eps = out_uncond[:, :3] + scale * (out_cond[:, :3] - out_uncond[:, :3])
        x = scheduler.step(torch.cat([eps, out_cond[:, 3:]], 1), t, x, generator=generator).prev_sample
    return x, evaluations


def ours(pipe: GescoPipeline, cond: torch.Tensor, steps: int, scale: float, generator) -> tuple:
    calls = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(args[2].shape[0]))
    try:
        image = pipe(cond, fds=False, num_inference_steps=steps, guidance_scale=scale, generator=generator,
                     output_type="pt").images
    finally:
        hook.remove()
    return image, sum(calls)  # one evaluation per map: with CFG each call evaluates both halves of one image


def _measure(protocol: str, args: dict, queue) -> None:
    torch.set_num_threads(args["threads"])
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args["dtype"]]
    pipe = load_pipeline(args["model"], args["device"], dtype, args["unet_config"])
    preset = pipe.dataset_preset
    size = tuple(pipe.unet.config.sample_size)
    labels = torch.from_numpy(resize_labels(read_label_map(sample_maps()[0], preset), size))[None]
    cond = pipe.prepare_semantic_map(labels, fds=False).conditioning.to(args["device"], dtype)
    scale = args["guidance"]
    run = authors_protocol if protocol == "authors" else ours
    steps = args["authors_steps"] if protocol == "authors" else args["ours_steps"]
    if args["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times, evaluations = [], 0
    with torch.no_grad():
        for repeat in range(args["repeats"]):
            generator = torch.Generator().manual_seed(repeat)
            if args["device"].startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            _, evaluations = run(pipe, cond, steps, scale, generator)
            if args["device"].startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if args["device"].startswith("cuda")
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    queue.put({"protocol": protocol, "steps": steps, "network_evaluations": evaluations,
               "seconds_per_image": statistics.median(times), "peak_memory_mb": peak_mb})


def measure(protocol: str, args: dict) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(protocol, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder (default: demo model or random camvid-small)")
    parser.add_argument("--unet-config", default=None, help="benchmark a random pipeline of this U-Net config")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--steps", type=int, nargs="+", default=[DEFAULT_SAMPLING_STEPS],
                        help="our solver's step counts, one row each (default: the pipeline's default)")
    parser.add_argument("--authors-steps", type=int, default=1000)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny U-Net, 10 authors' steps, 2 of ours")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.authors_steps, args.steps = 10, [2]
        args.unet_config = args.unet_config or "tiny"
    base = measure("authors", vars(args))
    rows = [base] + [measure("ours", {**vars(args), "ours_steps": steps}) for steps in args.steps]
    for row in rows[1:]:
        row["wall_time_ratio"] = base["seconds_per_image"] / row["seconds_per_image"]
        row["evaluation_ratio"] = base["network_evaluations"] / row["network_evaluations"]
    summary = {"device": args.device, "dtype": args.dtype, "threads": args.threads, "rows": rows}
    print("| protocol | steps | network evaluations / image | s / image | peak memory (MB) | wall-time ratio |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        name = ("authors (DDPM, CFG as two forwards)" if row is base
                else "ours (default sampler, one forward: shared encoder, cached SPADE)")
        ratio = f"{row['wall_time_ratio']:.1f}x" if row is not base else "1x"
        print(f"| {name} | {row['steps']} | {row['network_evaluations']} | {row['seconds_per_image']:.2f} | "
              f"{row['peak_memory_mb']:.0f} | {ratio} |")
    for row in rows[1:]:
        print(f"wall-time ratio authors/ours at {row['steps']} steps: {row['wall_time_ratio']:.1f}x; "
              f"network-evaluation ratio: {row['evaluation_ratio']:.1f}x")
    print(f"({args.device}, {args.dtype}, {args.threads} threads, median of {args.repeats} image(s))")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
