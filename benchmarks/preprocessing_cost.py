#!/usr/bin/env python
"""Cost of the receiver preprocessing (channel simulation + FDS) as a fraction of one sampling run.

    python benchmarks/preprocessing_cost.py            # camvid-small at 64x80, default solver, CPU
    python benchmarks/preprocessing_cost.py --quick    # smoke test

Both are measured in the same process on the same map: ``pipe.prepare_semantic_map`` (AWGN channel + FDS) and the
full ``pipe(...)`` call with the default solver and step count (which includes that preprocessing once).
Target (issue #8): preprocessing under 1% of a sampling run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sampling_cost import load_pipeline  # noqa: E402
from gesco_diffusers.channel import build_channel  # noqa: E402
from gesco_diffusers.diffusion import DEFAULT_SAMPLING_STEPS  # noqa: E402
from gesco_diffusers.shipped import sample_maps  # noqa: E402
from gesco_diffusers.chain import read_label_map, resize_labels  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channel", default="awgn")
    parser.add_argument("--psnr", type=float, default=10.0)
    parser.add_argument("--fds", default="paper")
    parser.add_argument("--steps", type=int, default=DEFAULT_SAMPLING_STEPS)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 3, 2
    torch.set_num_threads(args.threads)

    pipe = load_pipeline(args.model, args.device, torch.float32, "tiny" if args.quick else None)
    size = tuple(pipe.unet.config.sample_size)
    labels = torch.from_numpy(resize_labels(read_label_map(sample_maps()[0], pipe.dataset_preset), size))[None]
    channel = build_channel(args.channel, psnr_db=args.psnr)

    def preprocess():
        pipe.prepare_semantic_map(labels, channel=channel, fds=args.fds, generator=torch.Generator().manual_seed(0))

    def sample():
        with torch.no_grad():
            pipe(labels, channel=channel, fds=args.fds, num_inference_steps=args.steps,
                 generator=torch.Generator().manual_seed(0), output_type="pt")

    pre = median_seconds(preprocess, args.repeats * 20)
    full = median_seconds(sample, max(1, args.repeats // 2))
    fraction = pre / full
    print(f"| stage | ms |\n|---|---|\n| channel ({args.channel} {args.psnr} dB) + FDS ({args.fds}) | {pre * 1000:.2f} |"
          f"\n| sampling run ({args.steps} steps, incl. preprocessing) | {full * 1000:.0f} |")
    print(f"\npreprocessing = {100 * fraction:.3f}% of a sampling run ({size[0]}x{size[1]}, {args.device})")
    return {"preprocessing_s": pre, "sampling_s": full, "fraction": fraction}


if __name__ == "__main__":
    main()
