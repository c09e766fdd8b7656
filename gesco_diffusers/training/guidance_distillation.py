r"""Guidance distillation: fold classifier-free guidance into a single-map student (library side of
``training/distill.py --method guidance``).

Stage one of Meng et al. 2023 ("On Distillation of Guided Diffusion Models", Eq. 6 with a fixed scale): the student
``eps_phi(x_t, t, y)`` regresses the guided teacher ``eps_u + s (eps_c - eps_u)`` (paper Eq. 14, the form the
pipeline samples with) at points ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` of the forward process, so
sampling makes one pass with one map per step instead of two. The variance channels of a learned-variance teacher
are regressed to its conditional ones, so the student stays a complete GESCO model for any sampler.

With ``timesteps`` the regression is restricted to the timesteps a few-step sampler evaluates (e.g. the 4 trailing
timesteps ``999, 749, 499, 249`` of SDE-DPM-Solver++ at 4 steps, which also contain those of 2 steps and 1 step):
the student spends its capacity where it is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from ..diffusion.guidance import guidance_maps, guided_model_output
from ..diffusion.losses import GaussianDiffusion, mean_flat
from ..sender.encoding import SemanticEncoder
from .noise_schedule import NoisyMapSchedule
from .objective import received_maps

__all__ = ["GuidanceDistillationObjective"]


@dataclass
class GuidanceDistillationObjective:
    """One step of guidance distillation for a batch of (image, label map) pairs.

    Every random draw uses ``generator`` in a fixed order: channel condition, channel noise, timesteps, noise.

    Attributes:
        teacher: the frozen teacher U-Net.
        guidance_scale: the teacher's classifier-free guidance scale ``s`` (folded into the student).
        diffusion: the noise schedule (forward process).
        encoder: the sender's one-hot encoder.
        noise_schedule: the noisy-map schedule (the teacher's training distribution).
        timesteps: train only at these timesteps (``None``: uniformly over ``0 .. T-1``).
    """

    teacher: nn.Module
    guidance_scale: float
    diffusion: GaussianDiffusion
    encoder: SemanticEncoder
    noise_schedule: NoisyMapSchedule
    timesteps: Optional[Sequence[int]] = None

    def __post_init__(self) -> None:
        if not (self.guidance_scale >= 0.0 and self.guidance_scale < float("inf")):
            raise ValueError(f"guidance_scale must be a finite non-negative number, got {self.guidance_scale}")
        if self.timesteps is not None:
            steps = [int(t) for t in self.timesteps]
            if not steps or min(steps) < 0 or max(steps) >= self.diffusion.num_timesteps:
                raise ValueError(f"timesteps must be a non-empty list in [0, {self.diffusion.num_timesteps}), "
                                 f"got {list(self.timesteps)}")
            self.timesteps = tuple(steps)

    def draw_timesteps(self, batch: int, generator: Optional[torch.Generator], device) -> torch.Tensor:
        if self.timesteps is None:
            return torch.randint(0, self.diffusion.num_timesteps, (batch,), generator=generator, device=device)
        index = torch.randint(0, len(self.timesteps), (batch,), generator=generator, device=device)
        return torch.tensor(self.timesteps, device=device)[index]

    def __call__(
        self,
        student: nn.Module,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        instances: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> dict:
        """Loss of one batch: ``dict(loss=scalar, per_sample=(B,), psnr=Optional[float], timesteps=(B,))``."""
        device = pixel_values.device
        segmap, psnr = received_maps(self.encoder, self.noise_schedule, labels, instances, generator)
        segmap = segmap.to(device)
        draw_device = generator.device if generator is not None else device
        t = self.draw_timesteps(pixel_values.shape[0], generator, draw_device)
        noise = torch.randn(pixel_values.shape, generator=generator, device=draw_device, dtype=torch.float32)
        t, noise = t.to(device), noise.to(device)
        x_t = self.diffusion.q_sample(pixel_values.float(), t, noise)

        prediction = student(x_t, t, segmap).sample.float()
        with torch.no_grad():
            maps = guidance_maps(segmap, self.guidance_scale)
            target = guided_model_output(self.teacher, x_t.to(self.teacher.dtype), t, maps.to(self.teacher.dtype),
                                         self.guidance_scale).float()
        if prediction.shape != target.shape:
            raise ValueError(f"student output {tuple(prediction.shape)} and teacher output {tuple(target.shape)} "
                             "differ: the student must have the teacher's output channels")
        per_sample = mean_flat((prediction - target) ** 2)
        return {"loss": per_sample.mean(), "per_sample": per_sample.detach(), "psnr": psnr, "timesteps": t}
