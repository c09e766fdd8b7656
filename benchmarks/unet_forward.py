#!/usr/bin/env python
"""One guided sampling step (the U-Net evaluations of one classifier-free-guidance step) under different execution
options, side by side: time per step relative to the authors' two separate forwards, and the largest difference of
the guided output from theirs.

    python benchmarks/unet_forward.py                       # demo model (camvid-small, 64x80), CPU
    python benchmarks/unet_forward.py --quick               # smoke test (tiny config, 2 repeats, no compile)
    python benchmarks/unet_forward.py --config cityscapes --size 256 512 --device cuda --dtype fp16

Rows, each adding one option to the row above it unless marked otherwise:

* ``authors``: conditional and unconditional forwards as two separate calls (reference doc section 4);
* ``batched CFG``: both halves in one forward of batch 2;
* ``shared encoder``: one image, two maps: the encoder (which never sees the map) runs once;
* ``+ cached SPADE modulation``: the pipeline's default (``SemanticModulationCache``; the step after the first
  reads the modulations back);
* ``+ channels_last``, ``+ bf16 autocast``, ``+ torch.compile``: options a user can switch on;
* ``plain attention``: the default row with diffusers' non-SDPA attention processor instead (for comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from gesco_diffusers.models import SemanticModulationCache, SemanticUNet2DModel, semantic_unet_config  # noqa: E402
from gesco_diffusers.shipped import demo_model_path  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def interleaved_medians(variants: list[tuple[Callable[[], None], Callable[[], torch.Tensor]]], repeats: int,
                        device: str) -> list[tuple[float, torch.Tensor]]:
    """Median seconds of each ``step()`` and its output. The variants take turns (round robin), each after its own
    ``setup()`` and one untimed call, so that a slow spell of a shared machine hits every row alike rather than the
    one that happened to run then."""
    def timed(step):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    times: list[list[float]] = [[] for _ in variants]
    outputs: list[torch.Tensor] = [torch.empty(0)] * len(variants)
    for _ in range(repeats):
        for i, (setup, step) in enumerate(variants):
            setup()
            step()  # warm-up (compilation on the first round, cache fill, memory-format conversion)
            seconds, outputs[i] = timed(step)
            times[i].append(seconds)
    return [(statistics.median(t), out.float()) for t, out in zip(times, outputs)]


def load_model(config_name: Optional[str], device: str, dtype: torch.dtype) -> tuple[SemanticUNet2DModel, str]:
    """The shipped demo U-Net (real weights) unless a config is named; a named config gets random weights whose
    zero-initialised output convolutions are filled in, so that differences are not hidden behind zeros."""
    if config_name is None and (demo_model_path() / "unet" / "config.json").is_file():
        model, source = SemanticUNet2DModel.from_pretrained(demo_model_path(), subfolder="unet"), "demo model"
    else:
        torch.manual_seed(0)
        model, source = SemanticUNet2DModel(**semantic_unet_config(config_name or "camvid-small")), "random"
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim > 1 and p.abs().sum() == 0:
                    p.normal_(0, 0.02)
    return model.to(device=device, dtype=dtype).eval(), f"{source} ({config_name or 'camvid-small'})"


def main(argv: Optional[list[str]] = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="random U-Net of this config (default: the demo model)")
    parser.add_argument("--batch", type=int, default=1, help="images per step")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="model weights (fp16 on a GPU)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the rows (and the largest |value| of the reference output) to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.config, args.repeats, args.no_compile = "tiny", 2, True
    torch.set_num_threads(args.threads)
    device, dtype, scale = args.device, DTYPES[args.dtype], args.guidance

    model, source = load_model(args.config, device, dtype)
    size = tuple(args.size or model.config.sample_size)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, model.config.in_channels, *size, generator=generator).to(device, dtype)
    labels = torch.randint(0, model.config.segmap_channels, (args.batch, *size), generator=generator)
    cond = torch.nn.functional.one_hot(labels, model.config.segmap_channels).permute(0, 3, 1, 2).to(device, dtype)
    maps = torch.cat([torch.zeros_like(cond), cond])
    t = torch.tensor(500, device=device)
    eps_channels = model.config.in_channels

    def guided(out_uncond: torch.Tensor, out_cond: torch.Tensor) -> torch.Tensor:
        eps = out_uncond[:, :eps_channels] + scale * (out_cond[:, :eps_channels] - out_uncond[:, :eps_channels])
        return torch.cat([eps, out_cond[:, eps_channels:]], dim=1)

    @torch.no_grad()
    def authors(net=model):
        return guided(net(x, t, torch.zeros_like(cond)).sample, net(x, t, cond).sample)

    @torch.no_grad()
    def batched(net=model):
        return guided(*net(torch.cat([x, x]), t, maps).sample.chunk(2))

    @torch.no_grad()
    def shared(net=model, segmaps=maps, image=x):
        return guided(*net(image, t, segmaps).sample.chunk(2))

    def cached(net=model, memory_format=torch.contiguous_format, autocast=False):
        cache = SemanticModulationCache(maps.contiguous(memory_format=memory_format))
        image = x.contiguous(memory_format=memory_format)

        def step():
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
                return shared(net, cache, image)
        return step

    def configure(memory_format=torch.contiguous_format, processor=AttnProcessor2_0):
        """Every row sets both the weights' memory format and the attention processor, so that no row inherits the
        state of the row before it in the round robin."""
        return lambda: (model.to(memory_format=memory_format), model.set_attn_processor(processor()))

    sdpa, channels_last = configure(), configure(torch.channels_last)
    variants: list[tuple[str, Callable[[], Callable], Callable[[], None]]] = [
        ("authors: two separate forwards", lambda: authors, sdpa),
        ("batched CFG (batch 2)", lambda: batched, sdpa),
        ("shared encoder (1 image, 2 maps)", lambda: shared, sdpa),
        ("+ cached SPADE modulation (default)", cached, sdpa),
        ("+ channels_last", lambda: cached(memory_format=torch.channels_last), channels_last),
        ("+ bf16 autocast", lambda: cached(memory_format=torch.channels_last, autocast=True), channels_last),
    ]
    if not args.no_compile:
        # A copy of its own: the other rows switch the weights' memory format, which would recompile it each round.
        def compiled():
            return cached(net=torch.compile(copy.deepcopy(model).to(memory_format=torch.contiguous_format)))

        variants.append(("+ torch.compile (fp32, contiguous)", compiled, sdpa))
    variants.append(("default with plain attention (no SDPA)", cached, configure(processor=AttnProcessor)))

    built, rows = [], []
    for name, build, setup in variants:
        setup()
        try:
            step = build()
            step()
            built.append((name, setup, step))
        except Exception as err:  # e.g. no compiler toolchain for torch.compile
            rows.append({"variant": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:80]}"})
    measured = interleaved_medians([(setup, step) for _, setup, step in built], args.repeats, device)
    (base_time, reference) = measured[0]
    for (name, _, _), (seconds, out) in zip(built, measured):
        rows.append({"variant": name, "ms": seconds * 1000, "speedup": base_time / seconds,
                     "max_abs_diff": float((out - reference).abs().max())})
    print(f"{source} at {size[0]}x{size[1]}, {args.batch} image(s) per step, guidance {scale}, {device}, "
          f"{args.dtype}, {torch.get_num_threads()} threads, median of {args.repeats} rounds (variants interleaved)")
    print("| variant | ms / guided step | speed-up vs authors | max abs difference of the guided output |")
    print("|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['variant']} | failed: {row['error']} | | |")
        else:
            print(f"| {row['variant']} | {row['ms']:.1f} | {row['speedup']:.2f}x | {row['max_abs_diff']:.2e} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"source": source, "size": list(size), "device": device, "dtype": args.dtype,
                                         "reference_abs_max": float(reference.abs().max()), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
