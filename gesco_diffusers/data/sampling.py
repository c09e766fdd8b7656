"""Stateless randomness for resumable training: every random choice is a pure function of (seed, counters).

A run that is stopped and resumed from a checkpoint must see the same data order, augmentations and noise as one
that never stopped. Instead of saving and restoring random-generator states, each draw derives its own seed from the
base seed and where it happens (epoch, row, step, process), so restoring the step counter restores the randomness.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["EpochShuffleSampler", "derive_seed", "seeded_generator"]


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed mixed from ``seed`` and ``keys`` with ``numpy.random.SeedSequence`` (well spread, collision-free
    in practice: ``derive_seed(s, 1, 2) != derive_seed(s, 2, 1)``)."""
    entropy = [int(seed)] + [int(k) for k in keys]
    if any(v < 0 for v in entropy):
        raise ValueError(f"seed and keys must be non-negative integers, got {entropy}")
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def seeded_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``derive_seed(seed, *keys)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *keys))


class EpochShuffleSampler(Sampler[int]):
    """Row indices in a fresh random order each epoch, the order being a function of ``(seed, epoch)`` only.

    ``set_epoch`` is called by Accelerate's data loader (and by the training loop); under multi-process training
    every process draws the same permutation and Accelerate shards the resulting batches.

    Args:
        num_samples: dataset length.
        seed: base seed.
        shuffle: ``False`` yields ``0 .. num_samples - 1`` in order.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        order = torch.randperm(self.num_samples, generator=seeded_generator(self.seed, self.epoch))
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.num_samples
