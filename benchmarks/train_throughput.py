#!/usr/bin/env python
"""Training throughput (images/s, seconds per step) and peak memory of one GESCO training step.

    python benchmarks/train_throughput.py                      # camvid-small at 64x80, batch 8 (the CPU preset)
    python benchmarks/train_throughput.py --quick              # a few seconds: batch 2, 2 timed steps
    python benchmarks/train_throughput.py --model_config cityscapes --dataset cityscapes --resolution 256 512 \
        --batch_size 4 --mixed_precision fp16 --gradient_checkpointing     # the paper's network, on a GPU

A step is exactly what ``training/train.py`` does per optimizer step (``SemanticDiffusionObjective``: encoding,
noisy map, CFG dropout, hybrid loss; backward; AdamW; EMA update), on a fixed batch so that data loading is not
measured. Wall-clock and CPU time per step are both reported (on a shared CPU the wall time depends on the other
load; the CPU time does not). Real CamVid images are used when ``--data_dir`` exists, random ones otherwise. Peak memory is the CUDA
allocator's peak on a GPU and the process's peak resident set size (``getrusage`` maxrss, which includes the Python
runtime and libraries) on a CPU, reported with its growth during the timed steps.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Optional

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
try:
    import gesco_diffusers  # noqa: F401
except ImportError:  # source checkout
    sys.path.insert(0, str(REPO_ROOT))

from gesco_diffusers.data import SemanticExampleTransform, build_transform, load_semantic_dataset
from gesco_diffusers.diffusion import GaussianDiffusion, default_scheduler
from gesco_diffusers.models import SemanticUNet2DModel, semantic_unet_config
from gesco_diffusers.presets import get_dataset_preset
from gesco_diffusers.sender import SemanticEncoder
from gesco_diffusers.training import NoisyMapSchedule, SemanticDiffusionObjective, build_ema

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "camvid"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_config", default="camvid-small")
    p.add_argument("--dataset", default="camvid", help="dataset preset (class count, edge channel)")
    p.add_argument("--data_dir", default=str(DEFAULT_DATA), help="CamVid folder for real images (optional)")
    p.add_argument("--resolution", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="default: the preset's (64 80 for CamVid)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--mixed_precision", default="no", choices=("no", "fp16", "bf16"))
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="batch 2, 1 warm-up + 2 timed steps (smoke test)")
    p.add_argument("--json", action="store_true", help="print one JSON line only")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.warmup = 2, 2, 1
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0:
        p.error("--batch_size and --steps must be >= 1, --warmup >= 0")
    return args


def fixed_batch(args, preset, resolution) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], str]:
    """A batch of real CamVid pairs if available (else random images and maps) and where it came from."""
    if preset.name == "camvid" and Path(args.data_dir).is_dir():
        rows, layout = load_semantic_dataset("camvid", args.data_dir, "train", limit=args.batch_size)
        rows.set_transform(SemanticExampleTransform(build_transform("resize", resolution), resolution,
                                                    layout.remap_labels))
        examples = [rows[i] for i in range(len(rows))]
        if len(examples) == args.batch_size:
            return (torch.stack([e["pixel_values"] for e in examples]), torch.stack([e["label"] for e in examples]),
                    None, f"CamVid train ({args.data_dir})")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch_size, 3, *resolution, generator=g) * 2 - 1
    labels = torch.randint(0, preset.num_classes, (args.batch_size, *resolution), generator=g)
    instances = labels.clone() if preset.use_instance_edges else None
    return images, labels, instances, "random"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    preset = get_dataset_preset(args.dataset)
    resolution = tuple(args.resolution or preset.resolution)
    images, labels, instances, source = fixed_batch(args, preset, resolution)
    images, labels = images.to(device), labels.to(device)
    instances = instances.to(device) if instances is not None else None

    torch.manual_seed(0)
    unet = SemanticUNet2DModel(**semantic_unet_config(args.model_config, segmap_channels=preset.map_channels,
                                                      sample_size=list(resolution))).to(device).train()
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    objective = SemanticDiffusionObjective(GaussianDiffusion.from_scheduler(default_scheduler()),
                                           SemanticEncoder.from_preset(preset), NoisyMapSchedule())
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.0)
    ema = build_ema(unet.parameters())
    dtype = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.mixed_precision]
    scaler = torch.amp.GradScaler(device.type, enabled=args.mixed_precision == "fp16")

    def step(i: int) -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = objective(unet, images, labels, instances, torch.Generator().manual_seed(i))["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        return float(loss.detach())

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = peak_memory_mb(torch.device("cpu"))
    start, cpu_start = time.perf_counter(), time.process_time()
    losses = [step(args.warmup + i) for i in range(args.steps)]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed, cpu_time = time.perf_counter() - start, time.process_time() - cpu_start
    result = {
        "model_config": args.model_config,
        "parameters_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 3),
        "resolution": list(resolution),
        "batch_size": args.batch_size,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "mixed_precision": args.mixed_precision,
        "gradient_checkpointing": args.gradient_checkpointing,
        "data": source,
        "timed_steps": args.steps,
        "seconds_per_step": elapsed / args.steps,
        "images_per_second": args.batch_size * args.steps / elapsed,
        # CPU time of this process (all threads): on a shared machine, the wall time of a step on idle cores is
        # about cpu_seconds_per_step / threads when the threads scale perfectly.
        "cpu_seconds_per_step": cpu_time / args.steps,
        "peak_memory_mb": peak_memory_mb(device),
        "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process maxrss",
        "maxrss_growth_mb": peak_memory_mb(torch.device("cpu")) - rss_before,
        "final_loss": losses[-1],
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")
    return result


if __name__ == "__main__":
    main()
