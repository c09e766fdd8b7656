"""Validation images during training: fixed label maps rendered with the EMA weights, shown next to the real photos."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import PIL.Image
import torch

__all__ = ["colorize_labels", "validation_grid"]


def colorize_labels(labels: torch.Tensor, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """``(B, H, W)`` ids -> ``(B, H, W, 3)`` uint8 colours from ``palette`` (one RGB triple per id)."""
    lut = np.asarray(palette, dtype=np.uint8)
    ids = labels.detach().cpu().numpy()
    if ids.min() < 0 or ids.max() >= len(lut):
        raise ValueError(f"label ids must lie in [0, {len(lut)}) to be coloured, got [{ids.min()}, {ids.max()}]")
    return lut[ids]


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] ``(B, H, W, 3)`` -> uint8."""
    return (np.clip(images, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def validation_grid(
    labels: torch.Tensor,
    generated: np.ndarray,
    palette: Sequence[Sequence[int]],
    real: Optional[torch.Tensor] = None,
) -> PIL.Image.Image:
    """One picture: coloured maps (top row), generated images (middle), real images (bottom, if given).

    Args:
        labels: ``(B, H, W)`` ids.
        generated: ``(B, H, W, 3)`` floats in [0, 1] (the pipeline's ``output_type="np"``).
        palette: the preset's palette.
        real: ``(B, 3, H, W)`` images in [-1, 1].
    """
    rows = [colorize_labels(labels, palette), _to_uint8(generated)]
    if real is not None:
        rows.append(_to_uint8((real.detach().float().cpu().permute(0, 2, 3, 1).numpy() + 1.0) / 2.0))
    shapes = {r.shape for r in rows}
    if len(shapes) != 1:
        raise ValueError(f"grid rows must have the same shape, got {sorted(shapes)}")
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    return PIL.Image.fromarray(grid)
