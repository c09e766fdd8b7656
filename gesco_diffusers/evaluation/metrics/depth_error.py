"""Depth RMSE after scale-and-shift alignment (Table V).

DPT-style networks predict *relative* depth (for the MiDaS-trained checkpoints: inverse depth up to an unknown
scale and shift), so depth maps of two images are only comparable after alignment. For each image the prediction
``p`` (depth on the regenerated image) is aligned to the reference ``r`` (depth on the original) with the
least-squares scale and shift

    (s, t) = argmin_{s, t} sum_i (s p_i + t - r_i)^2,   s = cov(p, r) / var(p),  t = mean(r) - s mean(p)

over the valid pixels, and ``RMSE = sqrt(mean_i (s p_i + t - r_i)^2)``. The dataset score is the mean of the
per-image RMSEs. A constant prediction (var(p) = 0) has no unique scale: ``s = 0, t = mean(r)`` (the minimum-norm
choice of the same minimum).
"""

from __future__ import annotations

from typing import Optional

import torch


def _check_maps(pred: torch.Tensor, ref: torch.Tensor, mask: Optional[torch.Tensor]) -> tuple:
    pred, ref = torch.as_tensor(pred), torch.as_tensor(ref)
    if pred.ndim == 2 and ref.ndim == 2:  # a single map
        pred, ref = pred[None], ref[None]
        mask = mask[None] if mask is not None and mask.ndim == 2 else mask
    if pred.ndim != 3 or pred.shape != ref.shape:
        raise ValueError(f"depth maps must have the same shape (B, H, W), got {tuple(pred.shape)} and {tuple(ref.shape)}")
    if not (pred.is_floating_point() and ref.is_floating_point()):
        raise TypeError("depth maps must be floating point")
    if not (torch.isfinite(pred).all() and torch.isfinite(ref).all()):
        raise ValueError("depth maps contain NaN or inf")
    if mask is None:
        mask = torch.ones_like(pred, dtype=torch.bool)
    elif mask.shape != pred.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(pred.shape)}")
    if not bool(mask.flatten(1).any(dim=1).all()):
        raise ValueError("every image needs at least one valid pixel in mask")
    return pred.double(), ref.double(), mask


def align_scale_shift(
    pred: torch.Tensor, ref: torch.Tensor, mask: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image least-squares ``s, t`` and the aligned prediction ``s * pred + t`` (float64, shape of ``pred``)."""
    pred, ref, mask = _check_maps(pred, ref, mask)
    weight = mask.double()
    count = weight.flatten(1).sum(dim=1)
    mean_p = (pred * weight).flatten(1).sum(dim=1) / count
    mean_r = (ref * weight).flatten(1).sum(dim=1) / count
    centred_p = (pred - mean_p[:, None, None]) * weight
    centred_r = (ref - mean_r[:, None, None]) * weight
    var_p = centred_p.square().flatten(1).sum(dim=1)
    cov = (centred_p * centred_r).flatten(1).sum(dim=1)
    # Relative threshold: a prediction constant up to rounding has no meaningful scale.
    constant = var_p <= 1e-24 * count * (mean_p.square() + 1.0)
    scale = torch.where(constant, torch.zeros_like(cov), cov / torch.where(constant, torch.ones_like(var_p), var_p))
    shift = mean_r - scale * mean_p
    return scale[:, None, None] * pred + shift[:, None, None], scale, shift


def depth_rmse(
    pred: torch.Tensor, ref: torch.Tensor, mask: Optional[torch.Tensor] = None, align: bool = True
) -> torch.Tensor:
    """Per-image RMSE ``(B,)`` between ``pred`` and ``ref`` over the valid pixels, after alignment if ``align``."""
    pred_checked, ref_checked, mask = _check_maps(pred, ref, mask)
    aligned = align_scale_shift(pred_checked, ref_checked, mask)[0] if align else pred_checked
    squared = (aligned - ref_checked).square() * mask
    return (squared.flatten(1).sum(dim=1) / mask.flatten(1).sum(dim=1)).sqrt()


class DepthRMSE:
    """Mean over images of :func:`depth_rmse`, accumulated over batches."""

    def __init__(self, align: bool = True):
        self.align = align
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, pred: torch.Tensor, ref: torch.Tensor, mask: Optional[torch.Tensor] = None) -> "DepthRMSE":
        values = depth_rmse(pred, ref, mask, align=self.align)
        self.total += values.sum().item()
        self.count += values.numel()
        return self

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError("DepthRMSE.compute() called before any update")
        return self.total / self.count
