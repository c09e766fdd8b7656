"""Classifier-free guidance (paper Eq. 14) in one place: the sampler and the distillation teacher both use it."""

from __future__ import annotations

import torch

__all__ = ["guidance_maps", "guided_model_output", "null_and_conditional_maps"]


def null_and_conditional_maps(segmap: torch.Tensor) -> torch.Tensor:
    """``[null; segmap]``: the null map is all zeros over every channel, edge channel included (the map CFG dropout
    trains, :func:`gesco_diffusers.training.drop_conditioning`)."""
    return torch.cat([torch.zeros_like(segmap), segmap])


def guidance_maps(segmap: torch.Tensor, scale: float) -> torch.Tensor:
    """The maps :func:`guided_model_output` takes at scale ``s``: ``[null; segmap]`` with guidance (``s > 1``),
    ``segmap`` alone without."""
    return null_and_conditional_maps(segmap) if scale > 1.0 else segmap


def guided_model_output(unet, sample: torch.Tensor, timestep, maps, scale: float) -> torch.Tensor:
    """One U-Net evaluation with classifier-free guidance, both halves in one batched forward.

    ``eps = eps_u + s (eps_c - eps_u)`` (Ho & Salimans; the authors' code uses this form, so their ``s = 2`` equals
    the paper's Eq. 14 with ``s = 1``). The learned variance channels come from the conditional half. With ``s > 1``,
    ``maps`` holds two maps per image (:func:`null_and_conditional_maps`, possibly wrapped in a
    :class:`~gesco_diffusers.models.SemanticModulationCache`), so the U-Net runs its map-free encoder once per image
    and only the middle block and decoder twice; with ``s <= 1`` it holds one map per image and one pass is made.
    """
    if scale <= 1.0:
        return unet(sample, timestep, maps).sample
    out_uncond, out_cond = unet(sample, timestep, maps).sample.chunk(2)
    eps_channels = sample.shape[1]
    eps = out_uncond[:, :eps_channels] + scale * (out_cond[:, :eps_channels] - out_uncond[:, :eps_channels])
    return torch.cat([eps, out_cond[:, eps_channels:]], dim=1)
