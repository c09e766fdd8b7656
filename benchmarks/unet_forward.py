#!/usr/bin/env python
"""One U-Net forward under different execution options, side by side: SDPA vs plain attention, channels_last,
bf16 autocast, torch.compile. Prints time per forward relative to the baseline and the largest output difference.

    python benchmarks/unet_forward.py                       # camvid-small, batch 2 (one CFG step), CPU
    python benchmarks/unet_forward.py --quick               # smoke test (tiny config, 2 repeats, no compile)
    python benchmarks/unet_forward.py --config cityscapes --batch 2 --size 256 512 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gesco_diffusers.models import SemanticUNet2DModel, semantic_unet_config  # noqa: E402


def time_forward(fn: Callable[[], torch.Tensor], repeats: int, device: str) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out.float()


def main(argv: Optional[list[str]] = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="camvid-small")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.config, args.repeats, args.no_compile = "tiny", 2, True

    torch.manual_seed(0)
    config = semantic_unet_config(args.config)
    model = SemanticUNet2DModel(**config).to(args.device).eval()
    with torch.no_grad():  # zero-initialised output convs would hide differences: give them values
        for p in model.parameters():
            if p.ndim > 1 and p.abs().sum() == 0:
                p.normal_(0, 0.02)
    size = tuple(args.size or config["sample_size"])
    x = torch.randn(args.batch, 3, *size, device=args.device)
    y = torch.rand(args.batch, config["segmap_channels"], *size, device=args.device)
    t = torch.full((args.batch,), 500, device=args.device)

    def forward(m=model, xx=x, yy=y):
        with torch.no_grad():
            return m(xx, t, yy).sample

    variants: list[tuple[str, Callable[[], torch.Tensor], Callable[[], None]]] = []
    set_sdpa = lambda: model.set_attn_processor(AttnProcessor2_0())  # noqa: E731
    variants.append(("baseline: SDPA attention, fp32", forward, set_sdpa))
    variants.append(("plain attention (no SDPA)", forward, lambda: model.set_attn_processor(AttnProcessor())))

    def channels_last():
        set_sdpa()
        model.to(memory_format=torch.channels_last)

    variants.append(("channels_last", lambda: forward(xx=x.to(memory_format=torch.channels_last)), channels_last))

    def bf16():
        with torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16):
            return forward()

    variants.append(("bf16 autocast", bf16, lambda: (model.to(memory_format=torch.contiguous_format), set_sdpa())))
    if not args.no_compile:
        compiled = torch.compile(model)
        variants.append(("torch.compile", lambda: forward(m=compiled), set_sdpa))

    rows, reference, base_time = [], None, None
    for name, fn, setup in variants:
        setup()
        try:
            seconds, out = time_forward(fn, args.repeats, args.device)
        except Exception as err:  # e.g. no compiler toolchain for torch.compile
            rows.append({"variant": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:80]}"})
            continue
        reference = out if reference is None else reference
        base_time = seconds if base_time is None else base_time
        rows.append({"variant": name, "ms": seconds * 1000, "speedup": base_time / seconds,
                     "max_abs_diff": float((out - reference).abs().max())})
    print(f"{args.config} at {size[0]}x{size[1]}, batch {args.batch}, {args.device}, "
          f"{torch.get_num_threads()} threads")
    print("| variant | ms / forward | speed-up vs baseline | max abs output difference |")
    print("|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['variant']} | failed: {row['error']} | | |")
        else:
            print(f"| {row['variant']} | {row['ms']:.1f} | {row['speedup']:.2f}x | {row['max_abs_diff']:.2e} |")
    return rows


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
