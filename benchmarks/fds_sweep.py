#!/usr/bin/env python
"""Sweep candidate receiver denoising rules on real label maps: the measurements behind the adaptive FDS.

    python benchmarks/fds_sweep.py                                   # 24 CamVid val maps, every candidate
    python benchmarks/fds_sweep.py --quick                           # 4 maps, 3 PSNRs, a few candidates
    python benchmarks/fds_sweep.py --candidates paper adaptive potts-b3-t20-n4 --psnrs 5 1 --limit 16

For each channel (AWGN, Poisson, Poisson + Gaussian, Rayleigh with equalisation) and PSNR, every map is one-hot
encoded, sent through the channel (a fresh ``torch.Generator(seed)`` per setting, so all candidates see the same
realisation), cleaned by each candidate and scored by the map mIoU (argmax of the class channels vs the clean labels,
unlabelled id ignored; the metric of :mod:`gesco_diffusers.experiments.map_level`).

Candidates (``--candidates``; names with parameters are parsed):

* ``none``: the received map as it is; ``paper``: the paper's FDS (Eq. 1);
* ``box<k>``: ``k x k`` box average, then argmax among the transmitted classes;
* ``wbox<k>``: the same with the noise-weighted score ``(mean - 1/2) / sigma_c^2`` (per-channel blind levels);
* ``lepski<tau>``: per pixel, the smallest box in 1, 3, ..., 9 whose weighted decision margin exceeds ``tau``
  (log-likelihood units), else the 9x9 decision;
* ``potts-b<beta>-t<T>-n<4|8>``: the adaptive FDS with those Potts settings; ``adaptive``: its defaults.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
try:
    import gesco_diffusers  # noqa: F401
except ImportError:  # source checkout
    sys.path.insert(0, str(REPO_ROOT))

from gesco_diffusers.channel import build_channel
from gesco_diffusers.evaluation.metrics.miou import ConfusionMatrix
from gesco_diffusers.experiments.map_level import ANALOG_CHANNELS, load_label_maps
from gesco_diffusers.presets import get_dataset_preset
from gesco_diffusers.receiver import adaptive_fast_denoise, estimate_channel_sigma, fast_denoise
from gesco_diffusers.sender import SemanticEncoder

#: A rule maps ``(received (B, C, H, W), transmitted (B, C), num_classes)`` to ``(B, H, W)`` class ids.
Rule = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

DEFAULT_CHANNELS = ("awgn", "poisson", "mixture", "rayleigh")
DEFAULT_PSNRS = (100.0, 30.0, 20.0, 15.0, 10.0, 5.0, 1.0)
DEFAULT_CANDIDATES = (
    "none", "paper", "box3", "box5", "wbox3", "wbox5", "lepski8", "potts-b1.5-t10-n4", "potts-b2-t10-n4",
    "potts-b3-t10-n4", "potts-b1-t10-n8", "adaptive",
)


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    return x if k == 1 else F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)


def _restricted(scores: torch.Tensor, transmitted: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(~transmitted[:, :, None, None], -torch.inf)


def _weights(received: torch.Tensor, transmitted: torch.Tensor, k: int) -> torch.Tensor:
    """``1 / sigma_c^2`` of the class channels, ``(B, K, 1, 1)``."""
    return estimate_channel_sigma(received, transmitted, k)[:, :k, None, None].square().reciprocal()


def _lepski(received: torch.Tensor, transmitted: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    y, mask = received[:, :k], transmitted[:, :k]
    weights = _weights(received, transmitted, k)
    ones = torch.ones(1, 1, *y.shape[-2:])
    out = decided = None
    for size in (1, 3, 5, 7, 9):
        count = F.avg_pool2d(ones, size, 1, size // 2, count_include_pad=True) * size * size  # pixels inside
        score = _restricted(count * (_box(y, size) - 0.5) * weights, mask)
        top = score.topk(min(2, k), dim=1)
        margin = top.values[:, 0] - top.values[:, -1] if k > 1 else torch.full_like(top.values[:, 0], torch.inf)
        labels = top.indices[:, 0]
        if out is None:
            out, decided = labels.clone(), torch.zeros_like(labels, dtype=torch.bool)
        sure = (margin > tau) & ~decided
        out = torch.where(sure, labels, out)
        decided |= sure
    return torch.where(decided, out, labels)


def build_rule(name: str) -> Rule:
    """The candidate called ``name`` (see the module doc); ``ValueError`` for an unknown one."""
    if name == "none":
        return lambda y, t, k: y[:, :k].argmax(1)
    if name == "paper":
        return lambda y, t, k: fast_denoise(y, t)[:, :k].argmax(1)
    if name == "adaptive":
        return lambda y, t, k: adaptive_fast_denoise(y, t, k)[:, :k].argmax(1)
    if match := re.fullmatch(r"box(\d+)", name):
        size = int(match[1])
        return lambda y, t, k: _restricted(_box(y[:, :k], size), t[:, :k]).argmax(1)
    if match := re.fullmatch(r"wbox(\d+)", name):
        size = int(match[1])
        return lambda y, t, k: _restricted((_box(y[:, :k], size) - 0.5) * _weights(y, t, k), t[:, :k]).argmax(1)
    if match := re.fullmatch(r"lepski([\d.]+)", name):
        tau = float(match[1])
        return lambda y, t, k: _lepski(y, t, k, tau)
    if match := re.fullmatch(r"potts-b([\d.]+)-t(\d+)-n([48])", name):
        beta, steps, hood = float(match[1]), int(match[2]), int(match[3])
        return lambda y, t, k: adaptive_fast_denoise(y, t, k, beta, steps, hood)[:, :k].argmax(1)
    raise ValueError(f"unknown candidate {name!r}; see the module doc of benchmarks/fds_sweep.py")


def sweep_candidates(
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    psnrs: Sequence[float] = DEFAULT_PSNRS,
    dataset: str = "camvid",
    limit: Optional[int] = 24,
    stride: int = 4,
    seed: int = 0,
    data_root: Optional[Path] = None,
    verbose: bool = True,
) -> list[dict]:
    """Map mIoU of every candidate at every (channel, PSNR), one row per setting: ``channel``, ``psnr_db`` and
    the mIoU under each candidate's name.

    Uses every ``stride``-th map of the split, at most ``limit`` of them.
    """
    rules = {name: build_rule(name) for name in candidates}
    unknown = sorted(set(channels) - set(ANALOG_CHANNELS))
    if unknown:
        raise ValueError(f"unknown channels {unknown}; choose from {sorted(ANALOG_CHANNELS)}")
    preset = get_dataset_preset(dataset)
    maps = load_label_maps(preset, data_root)[::stride][:limit]
    labels = torch.stack([m[0] for m in maps])
    instances = None if maps[0][1] is None else torch.stack([m[1] for m in maps])
    sent = SemanticEncoder.from_preset(preset).encode(labels, instances)
    rows = []
    for channel_name in channels:
        factory, kwargs = ANALOG_CHANNELS[channel_name]
        for psnr in psnrs:
            channel = build_channel(factory, psnr_db=psnr, **kwargs)
            received = channel(sent.one_hot, sent.transmitted, torch.Generator().manual_seed(seed))
            row = {"channel": channel_name, "psnr_db": float(psnr)}
            for name, rule in rules.items():
                matrix = ConfusionMatrix(preset.num_classes, preset.ignore_ids)
                matrix.update(rule(received, sent.transmitted, preset.num_classes), labels)
                row[name] = matrix.compute().miou
            rows.append(row)
            if verbose:
                print(f"{channel_name:>8} {psnr:5g} dB: " + " ".join(f"{n}={row[n]:.3f}" for n in rules), flush=True)
    return rows


def markdown(rows: list[dict], candidates: Sequence[str]) -> str:
    lines = ["| channel | PSNR (dB) | " + " | ".join(candidates) + " |", "|---|---|" + "---|" * len(candidates)]
    for row in rows:
        best = max(row[c] for c in candidates)
        cells = [f"**{row[c]:.3f}**" if row[c] == best else f"{row[c]:.3f}" for c in candidates]
        lines.append(f"| {row['channel']} | {row['psnr_db']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", nargs="+", default=None)
    parser.add_argument("--channels", nargs="+", default=list(DEFAULT_CHANNELS))
    parser.add_argument("--psnrs", type=float, nargs="+", default=None)
    parser.add_argument("--limit", type=int, default=None, help="number of maps (default 24; --quick 4)")
    parser.add_argument("--stride", type=int, default=4, help="use every stride-th map of the split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="4 maps, PSNR 100/10/1, none/paper/box3/adaptive")
    args = parser.parse_args(argv)
    candidates = args.candidates or (["none", "paper", "box3", "adaptive"] if args.quick else DEFAULT_CANDIDATES)
    psnrs = args.psnrs or ((100.0, 10.0, 1.0) if args.quick else DEFAULT_PSNRS)
    limit = args.limit if args.limit is not None else (4 if args.quick else 24)
    start = time.perf_counter()
    rows = sweep_candidates(candidates, args.channels, psnrs, limit=limit, stride=args.stride, seed=args.seed,
                            data_root=args.data_root)
    print(f"\n{markdown(rows, candidates)}\n\n({limit} maps, {time.perf_counter() - start:.1f}s)")
    return rows


if __name__ == "__main__":
    main()
