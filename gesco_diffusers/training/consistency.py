r"""Consistency distillation of a guided GESCO teacher into a few-step student (library side of
``training/distill.py``).

The student learns the *consistency function* of the guided teacher's probability-flow ODE (Song et al. 2023,
"Consistency Models"; in pixel space with the skipping-step DDIM solver and the boundary scalings of Luo et al. 2023,
"Latent Consistency Models"): ``f(x_t, t)`` maps any point of an ODE trajectory to its end ``x_0``, so sampling needs
one U-Net call, or a few with re-noising in between (diffusers' ``LCMScheduler``).

Notation: ``abar_t`` as in :mod:`gesco_diffusers.diffusion.losses`; the skipping grid is ``tau_i = (i + 1) k - 1``,
``i = 0 .. N-1``, ``k = T / N`` (``LCMScheduler``'s ``lcm_origin_timesteps`` with ``original_inference_steps = N``).

* Student (Eq. 9 of LCM): ``f_theta(x, t) = c_skip(t) x + c_out(t) x0_theta(x, t)`` with
  ``x0_theta = (x - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)``, ``c_skip(t) = s^2 / ((10 t)^2 + s^2)``,
  ``c_out(t) = 10 t / sqrt((10 t)^2 + s^2)``, ``s = sigma_data = 0.5``: ``f(x, 0) = x`` (the boundary condition).
* Teacher step: from ``x_{tau_i}`` one DDIM step of the guided teacher (Eq. 14, fixed scale) to ``tau_{i-1}``
  (``t = 0`` for ``i = 0``): ``x_prev = sqrt(abar_prev) x0_T + sqrt(1 - abar_prev) eps_T``, with ``x0_T`` clipped to
  the image range [-1, 1] and ``eps_T`` re-derived from it, as the teacher's own samplers clip (``clip_sample``).
  ``substeps > 1`` splits the skip into that many DDIM steps (more teacher calls, a finer ODE solution).
* Loss: pseudo-Huber ``sqrt((f_theta(x_{tau_i}, tau_i) - f_target(x_prev, tau_{i-1}))^2 + c^2) - c``, the target
  network an EMA of the student (no gradient through it).

The student is conditioned on the same maps as the teacher (the sender's one-hot maps through the teacher's
noisy-map training schedule): classifier-free guidance is folded into it, so sampling makes one pass per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..diffusion.guidance import guidance_maps, guided_model_output
from ..diffusion.losses import GaussianDiffusion
from ..sender.encoding import SemanticEncoder
from .noise_schedule import NoisyMapSchedule
from .objective import received_maps

__all__ = [
    "ConsistencyDistillationObjective",
    "SkippingStepSolver",
    "boundary_scalings",
    "pseudo_huber",
    "update_target",
]

#: ``LCMScheduler`` defaults, which the student's sampler must share with training.
SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


def boundary_scalings(
    t: torch.Tensor, sigma_data: float = SIGMA_DATA, timestep_scaling: float = TIMESTEP_SCALING
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c_skip, c_out)`` of the consistency parametrisation, exactly as ``LCMScheduler`` computes them."""
    scaled = timestep_scaling * t.double()
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip.float(), c_out.float()


def pseudo_huber(prediction: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
    """Per-sample pseudo-Huber distance ``mean(sqrt((a - b)^2 + c^2) - c)`` (Song & Dhariwal 2023), ``(B,)``."""
    return (torch.sqrt((prediction.float() - target.float()) ** 2 + c**2) - c).flatten(1).mean(1)


class SkippingStepSolver:
    """The teacher's ODE solver on the skipping grid ``tau_i = (i + 1) k - 1`` (DDIM, ``eta = 0``).

    Args:
        diffusion: the noise schedule (``abar_t``) the teacher was trained with.
        num_grid_steps: ``N``, the grid size (``LCMScheduler(original_inference_steps=N)``); ``T`` must divide by it.
        substeps: DDIM steps of the teacher per skip (evenly spaced inside it).
        clip_x0: clip the teacher's x0 to [-1, 1] (and re-derive its epsilon) at each DDIM step.
    """

    def __init__(self, diffusion: GaussianDiffusion, num_grid_steps: int, substeps: int = 1,
                 clip_x0: bool = True) -> None:
        T = diffusion.num_timesteps
        if not isinstance(num_grid_steps, int) or num_grid_steps < 1 or T % num_grid_steps:
            raise ValueError(f"num_grid_steps must be a positive divisor of the {T} training timesteps, "
                             f"got {num_grid_steps!r}")
        self.skip = T // num_grid_steps
        if not isinstance(substeps, int) or not 1 <= substeps <= self.skip:
            raise ValueError(f"substeps must be an integer in [1, {self.skip}] (the skip), got {substeps!r}")
        self.num_grid_steps, self.substeps, self.clip_x0 = num_grid_steps, substeps, clip_x0
        self.grid = torch.arange(1, num_grid_steps + 1) * self.skip - 1
        self.alphas_cumprod = diffusion.buffer("alphas_cumprod").float()

    def start_and_target_timesteps(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tau_i, tau_{i-1})`` for grid indices ``index``; ``tau_{-1}`` is the boundary ``t = 0``."""
        start = self.grid[index]
        return start, (start - self.skip).clamp(min=0)

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod.to(like.device)[t.long().to(like.device)].reshape(-1, 1, 1, 1)

    def predict_x0(self, sample: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        abar = self._abar(t, sample)
        return (sample - (1 - abar).sqrt() * eps) / abar.sqrt()

    @torch.no_grad()
    def step(self, eps_fn, sample: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Solve the teacher's ODE from ``sample`` at ``start`` to ``target`` (``(B,)`` timesteps) with
        ``self.substeps`` DDIM steps; ``eps_fn(x, t) -> eps`` is the guided teacher."""
        x = sample
        fractions = torch.linspace(1.0, 0.0, self.substeps + 1)
        for a, b in zip(fractions[:-1], fractions[1:]):
            t_now = (target + (start - target) * a).round().long()
            t_next = (target + (start - target) * b).round().long()
            eps = eps_fn(x, t_now).float()
            abar_now = self._abar(t_now, x)
            x0 = (x - (1 - abar_now).sqrt() * eps) / abar_now.sqrt()
            if self.clip_x0:
                x0 = x0.clamp(-1.0, 1.0)
                eps = (x - abar_now.sqrt() * x0) / (1 - abar_now).sqrt()
            abar_next = self._abar(t_next, x)
            x = abar_next.sqrt() * x0 + (1 - abar_next).sqrt() * eps
        return x


@dataclass
class ConsistencyDistillationObjective:
    """One step of consistency distillation for a batch of (image, label map) pairs.

    Per batch: one-hot encode the maps, corrupt them with a channel condition of ``noise_schedule`` (the teacher's
    training distribution, so the student learns the noisy maps the receiver sees), draw a grid index per sample and
    ``eps``, noise the image to ``tau_i``, and compare the student's consistency output there with the target
    network's at the teacher's ODE step ``tau_{i-1}`` (module docstring).

    Every random draw uses ``generator`` in a fixed order: channel condition, channel noise, grid indices, noise.

    Attributes:
        teacher: the frozen teacher U-Net (learned variance allowed: its epsilon channels are used).
        guidance_scale: the teacher's classifier-free guidance scale ``s`` (folded into the student).
        solver: the skipping-step solver of the teacher's ODE.
        diffusion: the noise schedule (forward process ``q(x_t | x_0)``).
        encoder: the sender's one-hot encoder.
        noise_schedule: the noisy-map schedule.
        huber_c: ``c`` of the pseudo-Huber loss (LCM: 0.001).
    """

    teacher: nn.Module
    guidance_scale: float
    solver: SkippingStepSolver
    diffusion: GaussianDiffusion
    encoder: SemanticEncoder
    noise_schedule: NoisyMapSchedule
    huber_c: float = 0.001

    def __post_init__(self) -> None:
        if not (self.guidance_scale >= 0.0 and self.guidance_scale < float("inf")):
            raise ValueError(f"guidance_scale must be a finite non-negative number, got {self.guidance_scale}")
        if not self.huber_c > 0.0:
            raise ValueError(f"huber_c must be positive, got {self.huber_c}")

    def consistency_output(self, unet: nn.Module, sample: torch.Tensor, t: torch.Tensor,
                           segmap: torch.Tensor) -> torch.Tensor:
        """``f(x, t) = c_skip(t) x + c_out(t) x0(x, t)`` from the epsilon channels of ``unet``."""
        eps = unet(sample, t, segmap).sample[:, : sample.shape[1]].float()
        c_skip, c_out = (c.to(sample.device).reshape(-1, 1, 1, 1) for c in boundary_scalings(t))
        return c_skip * sample + c_out * self.solver.predict_x0(sample, t, eps)

    def teacher_epsilon(self, segmap: torch.Tensor):
        maps = guidance_maps(segmap, self.guidance_scale)

        def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = guided_model_output(self.teacher, x.to(self.teacher.dtype), t, maps.to(self.teacher.dtype),
                                      self.guidance_scale)
            return out[:, : x.shape[1]]

        return eps_fn

    def __call__(
        self,
        student: nn.Module,
        target: nn.Module,
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
        batch = pixel_values.shape[0]
        index = torch.randint(0, self.solver.num_grid_steps, (batch,), generator=generator, device=draw_device)
        noise = torch.randn(pixel_values.shape, generator=generator, device=draw_device, dtype=torch.float32)
        start, end = (t.to(device) for t in self.solver.start_and_target_timesteps(index.cpu()))
        x_start = self.diffusion.q_sample(pixel_values.float(), start, noise.to(device))

        prediction = self.consistency_output(student, x_start, start, segmap)
        with torch.no_grad():
            x_end = self.solver.step(self.teacher_epsilon(segmap), x_start, start, end)
            target_output = self.consistency_output(target, x_end, end, segmap)
        per_sample = pseudo_huber(prediction, target_output, self.huber_c)
        return {"loss": per_sample.mean(), "per_sample": per_sample.detach(), "psnr": psnr, "timesteps": start}


@torch.no_grad()
def update_target(target: nn.Module, online: nn.Module, decay: float) -> None:
    """``target <- decay * target + (1 - decay) * online`` (the consistency target network, LCM's ``update_ema``)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o.detach().to(t.dtype), 1.0 - decay)
