r"""Trajectory distillation: a few-step deterministic student that lands where the guided teacher's own sampler lands
(library side of ``training/distill.py --method trajectory``).

Progressive distillation (Salimans & Ho 2022) halves the number of steps stage by stage, one student step matching
two teacher steps; here the stages are collapsed into one, the student matching ``K`` teacher steps at once (as
TRACT, Berthelot et al. 2023, does in two stages):

* **Teacher trajectories** (recorded once, :func:`teacher_trajectories`): the guided teacher (Eq. 14, fixed scale)
  runs its deterministic sampler, DDIM (``eta = 0``, x0 clipped to [-1, 1], trailing timesteps), for ``S K`` steps
  from noise ``z`` on a received map; its states at the student's timesteps ``t_0 = T - 1 > t_1 > ... > t_{S-1}``
  (DDIM's trailing spacing at ``S`` steps, a subset of that at ``S K``) and its final image ``x_0`` are kept.
* **Student step**: DDIM with the student's epsilon ``e`` (one map, no guidance pass, no clipping: the sampler
  stored with the student, :func:`student_sampler`)

  ``x0(e) = (x_{t_i} - sqrt(1 - abar_{t_i}) e) / sqrt(abar_{t_i})``,
  ``x_{t_{i+1}} = sqrt(abar_{t_{i+1}}) x0(e) + sqrt(1 - abar_{t_{i+1}}) e``  (``abar = 1`` after the last step).
* **Loss** (Salimans & Ho 2022, Algorithm 2): the DDIM step is linear in ``x0(e)``, so landing on the teacher's state
  ``x_s`` means predicting the *implied* ``x0``, ``x0_target = (x_s - (sigma_s / sigma_t) x_t) / (alpha_s - sigma_s
  alpha_t / sigma_t)`` (``alpha = sqrt(abar)``, ``sigma = sqrt(1 - abar)``; ``x0_target = x_s`` after the last step);
  the loss is ``w_i |x0(e) - x0_target|^2``, with ``w_i = max(SNR_t, 1)`` (truncated-SNR weighting) or, balanced,
  ``w_i = 1 / E|x0_target|^2`` over the recorded jumps of step ``i`` (:meth:`TrajectoryDistillationObjective.balance`).
  Measuring the error in image units matters: at ``t = 999`` the image is a component of amplitude ``alpha = 0.006``
  of the state, so a plain distance between states lets the first jumps lose the image (tried: it did). Balancing
  matters too: the first jump's target divides the teacher's drift along its 3 sub-steps by ``gain = 0.052``, which
  makes it 5x an image's size and mostly unpredictable; weighted by ``max(SNR, 1) = 1`` its loss is 100x the others'
  and its noise drowns their gradients under Adam (measured: 2.2 vs 0.11 / 0.018 / 0.012 after 250 steps).

Precision: at ``t = 999`` an epsilon error ``d`` is an ``x0`` error ``d / alpha = 156 d``; bf16's rounding of the
U-Net output (0.4 %) alone makes an x0 error of 0.6 there (0.004 at ``t = 249``), so the student is trained and run in
fp32 (or fp16, 8x finer than bf16), not under bf16 autocast.

The trajectories are cached because one costs ``2 S K`` teacher passes against ``S`` student passes, and each serves
several epochs. A stochastic teacher sampler (the default SDE-DPM-Solver++) cannot be distilled this way: from
``x_{t_i}`` its next state is random, and a regression onto it would average (blur) the images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from ..diffusion.losses import GaussianDiffusion, mean_flat
from ..diffusion.schedulers import MODEL_PREDICTIONS, build_scheduler
from ..utils.files import atomic_save, atomic_write_text

__all__ = [
    "PREDICTION_TYPES",
    "TrajectoryCache",
    "TrajectoryDataset",
    "TrajectoryDistillationObjective",
    "student_sampler",
    "student_timesteps",
    "teacher_sampler",
    "teacher_trajectories",
]

MANIFEST = "trajectories.json"
SHARD = "shard-{:05d}.safetensors"


def teacher_sampler(scheduler_config):
    """The teacher's deterministic sampler: DDIM, x0 clipped, trailing timesteps, last step to ``abar = 1``."""
    return build_scheduler("ddim", scheduler_config, timestep_spacing="trailing", set_alpha_to_one=True,
                           clip_sample=True)


#: What the student's output channels are: ``epsilon`` (the teacher's parametrisation) or ``sample`` (``x0``).
PREDICTION_TYPES = MODEL_PREDICTIONS


def student_sampler(scheduler_config, prediction_type: str = "epsilon"):
    """The student's sampler: the teacher's DDIM without clipping (the student learned unclipped jumps), reading the
    student's output as ``prediction_type``."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    return build_scheduler("ddim", scheduler_config, timestep_spacing="trailing", set_alpha_to_one=True,
                           clip_sample=False, thresholding=False, prediction_type=prediction_type)


def student_timesteps(scheduler_config, num_steps: int) -> list[int]:
    scheduler = student_sampler(scheduler_config)
    scheduler.set_timesteps(num_steps)
    return [int(t) for t in scheduler.timesteps]


@torch.no_grad()
def teacher_trajectories(teacher, maps: torch.Tensor, noise: torch.Tensor, num_student_steps: int, substeps: int,
                         guidance_scale: float) -> torch.Tensor:
    """States ``(B, S + 1, 3, H, W)`` of the guided teacher's DDIM run from ``noise`` on the received ``maps``: at the
    student's ``S`` timesteps, then the final image ``x_0`` (in [-1, 1]).

    ``teacher`` is a ``GescoPipeline``; it is run with :func:`teacher_sampler` at ``S * substeps`` steps (its own
    ``__call__``: guidance, modulation cache), and its state is read after every ``substeps``-th step."""
    from ..pipelines import GescoPipeline

    if num_student_steps < 1 or substeps < 1:
        raise ValueError(f"num_student_steps and substeps must be >= 1, got {num_student_steps}, {substeps}")
    pipe = GescoPipeline(unet=teacher.unet, scheduler=teacher_sampler(teacher.scheduler.config),
                         semantic_config={k: v for k, v in (teacher.config.semantic_config or {}).items()
                                          if k not in ("timesteps", "num_inference_steps")})
    pipe.set_progress_bar_config(disable=True)
    keep = {(i + 1) * substeps - 1 for i in range(num_student_steps)}  # after step j the state is at timesteps[j+1]
    states = [noise.float()]

    def record(_pipe, step, _t, tensors):
        if step in keep:
            states.append(tensors["latents"].float().clone())
        return tensors

    pipe(maps, fds=False, latents=noise.to(teacher.unet.dtype), num_inference_steps=num_student_steps * substeps,
         guidance_scale=guidance_scale, output_type="pt", callback_on_step_end=record)
    return torch.stack(states, dim=1)


@dataclass
class TrajectoryDistillationObjective:
    """The student's loss on recorded teacher jumps.

    Attributes:
        diffusion: the noise schedule (``abar_t``) of the teacher.
        timesteps: the student's ``S`` timesteps, descending (:func:`student_timesteps`).
        prediction_type: the student's output (:data:`PREDICTION_TYPES`): ``epsilon`` gives ``x0(e)`` as above;
            ``sample`` is ``x0`` itself, well-conditioned at ``t = 999`` where ``x0(e)`` multiplies an epsilon error
            by 156 (the sampler, :func:`student_sampler`, is told the same).
    """

    diffusion: GaussianDiffusion
    timesteps: Sequence[int]
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        steps = [int(t) for t in self.timesteps]
        if not steps or any(a <= b for a, b in zip(steps, steps[1:])) or steps[-1] < 0 \
                or steps[0] >= self.diffusion.num_timesteps:
            raise ValueError(f"timesteps must be strictly descending in [0, {self.diffusion.num_timesteps}), "
                             f"got {list(self.timesteps)}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        self.timesteps = tuple(steps)
        abar = self.diffusion.buffer("alphas_cumprod").double()
        # abar at each student timestep and after it (1 after the last: the final DDIM step returns x0)
        self._abar_now = abar[list(steps)].float()
        self._abar_next = torch.cat([abar[list(steps[1:])], torch.ones(1, dtype=abar.dtype)]).float()
        a_t, s_t = abar[list(steps)].sqrt(), (1 - abar[list(steps)]).sqrt()
        a_s, s_s = self._abar_next.double().sqrt(), (1 - self._abar_next.double()).sqrt()
        # x0_target = (x_s - ratio x_t) / gain, with ratio = sigma_s / sigma_t and gain = alpha_s - ratio alpha_t
        self._ratio = (s_s / s_t).float()
        self._gain = (a_s - s_s / s_t * a_t).float()
        self._weight = torch.clamp(a_t**2 / s_t**2, min=1.0).float()  # max(SNR_t, 1)

    @property
    def weights(self) -> list[float]:
        """The loss weight of each student step."""
        return [float(w) for w in self._weight]

    @torch.no_grad()
    def balance(self, states: torch.Tensor) -> list[float]:
        """Weight each student step by ``1 / E|x0_target|^2`` over recorded trajectories ``states`` ``(N, S + 1, C, H,
        W)`` (module docstring), so that every jump counts alike; returns the weights."""
        if states.ndim != 5 or states.shape[1] != len(self.timesteps) + 1:
            raise ValueError(f"states must be (N, {len(self.timesteps) + 1}, C, H, W), got {tuple(states.shape)}")
        weights = []
        for i in range(len(self.timesteps)):
            segment = torch.full((states.shape[0],), i)
            power = self.target_x0(states[:, i].float(), states[:, i + 1].float(), segment).pow(2).mean()
            weights.append(1.0 / max(power.item(), 1e-12))
        self._weight = torch.tensor(weights, dtype=torch.float32)
        return weights

    def _per_segment(self, values: torch.Tensor, segment: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.to(like.device)[segment].reshape(-1, 1, 1, 1)

    def target_x0(self, start: torch.Tensor, target: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        """The ``x0`` whose DDIM step from ``start`` lands on ``target`` (module docstring)."""
        ratio, gain = (self._per_segment(v, segment, start) for v in (self._ratio, self._gain))
        return (target - ratio * start) / gain

    def __call__(self, student: nn.Module, maps: torch.Tensor, start: torch.Tensor, target: torch.Tensor,
                 segment: torch.Tensor) -> dict:
        """Loss of a batch of jumps ``start -> target`` at segments ``segment`` (``(B,)`` ints):
        ``dict(loss=scalar, per_sample=(B,), timesteps=(B,))``."""
        t = torch.tensor(self.timesteps, device=start.device)[segment]
        start = start.float()
        output = student(start, t, maps).sample[:, : start.shape[1]].float()
        if self.prediction_type == "sample":
            x0 = output
        else:
            now = self._per_segment(self._abar_now, segment, start)
            x0 = (start - (1 - now).sqrt() * output) / now.sqrt()
        error = mean_flat((x0 - self.target_x0(start, target.float(), segment)) ** 2)
        per_sample = self._weight.to(start.device)[segment] * error
        return {"loss": per_sample.mean(), "per_sample": per_sample.detach(), "timesteps": t}


class TrajectoryCache:
    """A folder of recorded teacher trajectories: ``trajectories.json`` (what they were made with) and shards
    ``shard-<k>.safetensors`` of ``shard_size`` trajectories each (``maps``, ``states``, ``indices``: the global
    trajectory numbers), each written atomically, so an interrupted recording resumes at the first missing shard.

    A folder made with other settings (teacher, guidance, steps, seed, maps) is refused, never mixed or overwritten.
    """

    def __init__(self, folder, settings: dict, num_trajectories: int, shard_size: int) -> None:
        if num_trajectories < 1 or shard_size < 1:
            raise ValueError(f"num_trajectories and shard_size must be >= 1, got {num_trajectories}, {shard_size}")
        self.folder = Path(folder)
        self.settings = {**settings, "shard_size": int(shard_size)}
        self.num_trajectories, self.shard_size = int(num_trajectories), int(shard_size)

    @property
    def num_shards(self) -> int:
        return -(-self.num_trajectories // self.shard_size)

    def shard_path(self, k: int) -> Path:
        return self.folder / SHARD.format(k)

    def shard_indices(self, k: int) -> range:
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.num_trajectories))

    def open(self) -> None:
        """Create the folder and its manifest, or check an existing one against these settings."""
        manifest = self.folder / MANIFEST
        if manifest.is_file():
            stored, wanted = json.loads(manifest.read_text()), json.loads(json.dumps(self.settings))
            if stored != wanted:
                changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
                raise ValueError(f"{self.folder} holds trajectories made with other settings ({', '.join(changed)}); "
                                 "give another --output_dir or delete that folder")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(manifest, json.dumps(self.settings, indent=2, sort_keys=True) + "\n")

    def missing_shards(self) -> list[int]:
        return [k for k in range(self.num_shards) if not self.shard_path(k).is_file()]

    def write_shard(self, k: int, maps: torch.Tensor, states: torch.Tensor) -> Path:
        from safetensors.torch import save_file

        indices = torch.tensor(list(self.shard_indices(k)), dtype=torch.int64)
        if maps.shape[0] != len(indices) or states.shape[0] != len(indices):
            raise ValueError(f"shard {k} holds {len(indices)} trajectories, got {maps.shape[0]} maps and "
                             f"{states.shape[0]} states")
        tensors = {"maps": maps.float().contiguous(), "states": states.float().contiguous(), "indices": indices}
        return atomic_save(self.shard_path(k), lambda tmp: save_file(tensors, str(tmp)))

    def load(self) -> dict[str, torch.Tensor]:
        """All shards concatenated (in trajectory order); every shard must be there."""
        from safetensors.torch import load_file

        missing = self.missing_shards()
        if missing:
            raise ValueError(f"{self.folder}: {len(missing)} of {self.num_shards} trajectory shards are missing "
                             f"(first: {self.shard_path(missing[0]).name})")
        shards = [load_file(str(self.shard_path(k))) for k in range(self.num_shards)]
        out = {key: torch.cat([s[key] for s in shards]) for key in ("maps", "states", "indices")}
        if not torch.equal(out["indices"], torch.arange(self.num_trajectories)):
            raise ValueError(f"{self.folder}: the shards do not hold trajectories 0 .. {self.num_trajectories - 1}")
        return out


class TrajectoryDataset(torch.utils.data.Dataset):
    """Every (trajectory, student step) pair of recorded trajectories: ``maps``, ``start`` (the state at ``t_i``),
    ``target`` (the state after the step) and ``segment`` (``i``)."""

    def __init__(self, maps: torch.Tensor, states: torch.Tensor) -> None:
        if maps.shape[0] != states.shape[0] or states.ndim != 5 or states.shape[1] < 2:
            raise ValueError(f"maps {tuple(maps.shape)} and states {tuple(states.shape)} do not match "
                             "(states: (N, S + 1, C, H, W))")
        self.maps, self.states = maps, states
        self.num_steps = states.shape[1] - 1

    def __len__(self) -> int:
        return self.states.shape[0] * self.num_steps

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        trajectory, segment = divmod(int(index), self.num_steps)
        return {"maps": self.maps[trajectory], "start": self.states[trajectory, segment],
                "target": self.states[trajectory, segment + 1], "segment": torch.tensor(segment)}


def record_trajectories(cache: TrajectoryCache, teacher, example_for, num_student_steps: int, substeps: int,
                        guidance_scale: float, shards: Optional[Sequence[int]] = None, autocast=None,
                        log=None) -> None:
    """Record the missing shards of ``cache`` (or ``shards``, e.g. this process's share).

    ``example_for(j) -> (maps, noise)`` gives trajectory ``j``'s received map ``(C, H, W)`` and initial noise
    ``(3, H, W)``, drawn from a generator of ``j`` alone, so the trajectories do not depend on the shard size."""
    import contextlib

    todo = cache.missing_shards() if shards is None else [k for k in shards if not cache.shard_path(k).is_file()]
    for done, k in enumerate(todo, start=1):
        examples = [example_for(j) for j in cache.shard_indices(k)]
        maps = torch.stack([m for m, _ in examples])
        noise = torch.stack([z for _, z in examples])
        with (autocast() if autocast is not None else contextlib.nullcontext()):
            states = teacher_trajectories(teacher, maps, noise, num_student_steps, substeps, guidance_scale)
        cache.write_shard(k, maps.cpu(), states.cpu())
        if log is not None:
            log(f"recorded trajectory shard {k + 1}/{cache.num_shards} ({done}/{len(todo)} this run)")
