"""Wall time of `gesco generate` with 1 and with N processes in one run (torchrun; CPU: gloo, one thread per process).

    python benchmarks/scaling.py                       # the shipped demo model, 8 CamVid maps, 10 steps, 1 vs 2 CPUs
    python benchmarks/scaling.py --nproc 4 --device cuda --maps 64 --steps 40   # on a 4-GPU node

Each launch writes into a fresh folder; the images of the 1- and N-process runs are compared bit for bit. The time
includes each launch's start-up (imports, model load), reported separately from the generation time measured by the
first and last image's modification times.

Expected scaling: the work is split by batches with no communication until the end (a gather of per-image figures
and float64 sums in `gesco evaluate`), so on GPUs the generation time scales ~linearly with the number of GPUs as long
as each GPU gets several batches; the fixed start-up per process (~10 s) and the last, possibly partial, batch are
what is not divided. On a CPU, N processes only help when N cores are free.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image

REPO = Path(__file__).resolve().parents[1]
LABELS = [REPO / "tests" / "fixtures" / "camvid" / split / "labels" for split in ("val", "train")]


def write_maps(folder: Path, count: int, size: tuple[int, int]) -> None:
    sources = sorted(p for d in LABELS for p in d.glob("*.png"))
    folder.mkdir(parents=True)
    for i in range(count):
        with PIL.Image.open(sources[i % len(sources)]) as image:
            labels = np.asarray(image.resize(size[::-1], PIL.Image.NEAREST))
        if i >= len(sources):  # more maps than fixtures: shift to make new ones
            labels = np.roll(labels, i, axis=1)
        PIL.Image.fromarray(labels).save(folder / f"map{i:04d}.png")


def launch(nproc: int, maps: Path, out: Path, args) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "gesco_diffusers", "generate", str(maps), str(out), "--model", args.model, "--steps",
           str(args.steps), "--batch-size", str(args.batch_size), "--device", args.device, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def generation_span(out: Path) -> float:
    """Seconds from the first to the last image written (generation only, roughly one batch short)."""
    times = sorted(p.stat().st_mtime for p in out.glob("*.png"))
    return times[-1] - times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--maps", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(64, 80))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per process")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gesco-scaling-"))
    try:
        write_maps(root / "maps", args.maps, tuple(args.size))
        wall = {n: launch(n, root / "maps", root / f"out{n}", args) for n in (1, args.nproc)}
        span = {n: generation_span(root / f"out{n}") for n in wall}
        same = all(np.array_equal(np.asarray(PIL.Image.open(p)), np.asarray(PIL.Image.open(root / f"out{args.nproc}"
                                                                                               / p.name)))
                   for p in sorted((root / "out1").glob("*.png")))
        print(f"gesco generate, model {args.model}, {args.maps} maps {args.size[0]}x{args.size[1]}, {args.steps} steps, "
              f"batch {args.batch_size}, device {args.device}, {args.threads} thread(s) per process, "
              f"{os.cpu_count()} CPUs")
        print("| processes | wall time (s) | first->last image (s) |")
        print("|---|---|---|")
        for n in wall:
            print(f"| {n} | {wall[n]:.1f} | {span[n]:.1f} |")
        print(f"speed-up 1 -> {args.nproc}: wall {wall[1] / wall[args.nproc]:.2f}x, "
              f"generation {span[1] / max(span[args.nproc], 1e-9):.2f}x; images identical: {same}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
