"""One training step's objective: sender encoding -> noisy channel -> CFG dropout -> diffusion loss (Eq. 9-11).

:class:`SemanticDiffusionObjective` is the single place where a batch of (image, label map) pairs becomes a loss, so
``training/train.py``, the throughput benchmark and the tests all train exactly the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..diffusion.losses import PAPER_VLB_WEIGHT, GaussianDiffusion, hybrid_loss
from ..sender.encoding import SemanticEncoder
from .noise_schedule import NoisyMapSchedule

__all__ = ["SemanticDiffusionObjective", "drop_conditioning", "received_maps"]


def drop_conditioning(
    segmap: torch.Tensor, drop_probability: float, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Classifier-free guidance training: replace each sample's whole map by the null map with ``drop_probability``.

    The null map is all zeros over every channel, edge channel included: the map the sampler feeds the
    unconditional branch (paper Eq. 14; reference doc 4). One Bernoulli draw per sample, applied after the channel
    noise, so dropped maps are exact zeros.
    """
    if not 0.0 <= drop_probability <= 1.0:
        raise ValueError(f"drop_probability must lie in [0, 1], got {drop_probability}")
    if segmap.ndim != 4:
        raise ValueError(f"segmap must be (B, C, H, W), got {tuple(segmap.shape)}")
    device = generator.device if generator is not None else segmap.device
    # Always draw, so the random stream after this call does not depend on the probability.
    dropped = torch.rand(segmap.shape[0], generator=generator, device=device) < drop_probability
    return torch.where(dropped.to(segmap.device)[:, None, None, None], torch.zeros((), dtype=segmap.dtype,
                                                                                   device=segmap.device), segmap)


def received_maps(
    encoder: SemanticEncoder,
    noise_schedule: NoisyMapSchedule,
    labels: torch.Tensor,
    instances: Optional[torch.Tensor],
    generator: Optional[torch.Generator],
) -> tuple[torch.Tensor, Optional[float]]:
    """The sender's one-hot maps of a batch sent through a channel condition drawn by ``noise_schedule`` (Sec. III-A,
    IV-A): ``(maps, psnr)`` with ``psnr = None`` for a clean batch. Draws the condition, then the channel noise."""
    encoded = encoder.encode(labels, instances if encoder.use_instance_edges else None)
    psnr = noise_schedule.sample(generator)
    return noise_schedule.corrupt(encoded.one_hot, encoded.transmitted, psnr, generator), psnr


@dataclass
class SemanticDiffusionObjective:
    """The paper's training objective for one batch.

    Per batch: one-hot encode the label maps (Sec. III-A), corrupt them with a channel condition drawn by
    ``noise_schedule`` (Sec. IV-A), null each map with ``cfg_drop_probability`` (Sec. III-D), draw ``t`` uniformly and
    ``eps ~ N(0, I)``, and return the hybrid loss of Eq. 11.

    Every random draw uses ``generator`` (drawn on its device, then moved), in a fixed order: channel condition,
    channel noise, CFG mask, timesteps, image noise.

    Attributes:
        diffusion: the schedule buffers and loss math.
        encoder: the sender's one-hot encoder of the dataset preset.
        noise_schedule: the noisy-map training schedule.
        cfg_drop_probability: probability of the null map per sample.
        vlb_weight: ``lambda`` of Eq. 11 (0.001).
    """

    diffusion: GaussianDiffusion
    encoder: SemanticEncoder
    noise_schedule: NoisyMapSchedule
    cfg_drop_probability: float = 0.1
    vlb_weight: float = PAPER_VLB_WEIGHT

    def __post_init__(self) -> None:
        if not 0.0 <= self.cfg_drop_probability <= 1.0:
            raise ValueError(f"cfg_drop_probability must lie in [0, 1], got {self.cfg_drop_probability}")

    def conditioning(
        self, labels: torch.Tensor, instances: Optional[torch.Tensor], generator: Optional[torch.Generator]
    ) -> tuple[torch.Tensor, Optional[float]]:
        """The training conditioning map of a batch and the PSNR it was corrupted at (``None``: clean)."""
        segmap, psnr = received_maps(self.encoder, self.noise_schedule, labels, instances, generator)
        return drop_conditioning(segmap, self.cfg_drop_probability, generator), psnr

    def __call__(
        self,
        unet: nn.Module,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        instances: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> dict:
        """Loss of one batch.

        Args:
            unet: the U-Net (possibly wrapped by Accelerate/DDP), called as ``unet(x_t, t, segmap).sample``.
            pixel_values: images ``(B, 3, H, W)`` in [-1, 1].
            labels: label maps ``(B, H, W)`` of preset ids.
            instances: instance maps ``(B, H, W)`` (datasets with an edge channel).
            generator: source of all randomness.

        Returns:
            ``dict(loss=scalar, mse=(B,), vb=(B,), psnr=Optional[float])``.
        """
        segmap, psnr = self.conditioning(labels, instances, generator)
        device = pixel_values.device
        draw_device = generator.device if generator is not None else device
        batch = pixel_values.shape[0]
        t = torch.randint(0, self.diffusion.num_timesteps, (batch,), generator=generator, device=draw_device)
        noise = torch.randn(pixel_values.shape, generator=generator, device=draw_device, dtype=torch.float32)
        t, noise = t.to(device), noise.to(device)
        x0 = pixel_values.float()
        x_t = self.diffusion.q_sample(x0, t, noise)
        model_output = unet(x_t, t, segmap.to(device)).sample
        terms = hybrid_loss(model_output, x0, x_t, t, noise, self.diffusion, self.vlb_weight)
        return {"loss": terms["loss"].mean(), "mse": terms["mse"], "vb": terms["vb"], "psnr": psnr}
