"""The paper's diffusion process as diffusers schedulers, and the authors' timestep respacing.

Training and the official sampler use T = 1000 steps with linear betas from 1e-4 to 0.02, epsilon prediction and the
Improved-DDPM learned-range variance (paper Sec. IV-A; reference doc section 5). Every sampler below shares that
noise schedule, so any of them can drive a model trained with it.
"""

from __future__ import annotations

import inspect
from typing import Optional, Union

from diffusers import (
    DDIMScheduler,
    DDPMParallelScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UnCLIPScheduler,
    UniPCMultistepScheduler,
)

from .names import SAMPLERS

#: Noise schedule of the paper (Sec. IV-A: "T = 1000 with a linear noise schedule").
PAPER_DIFFUSION_CONFIG = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                              prediction_type="epsilon")

#: What a GESCO U-Net's first output channels may predict: ``epsilon`` (the paper's models) or ``sample`` (x0, a
#: trajectory-distilled student); stored as ``semantic_config["prediction_type"]``, default ``epsilon``.
MODEL_PREDICTIONS = ("epsilon", "sample")

#: x0 clipping to the image range [-1, 1], through diffusers' ``thresholding`` option. Its dynamic threshold (Imagen:
#: the 99.5th percentile of |x0|) is clamped to ``[1, sample_max_value]`` = [1, 1], so this is static clipping, the
#: multistep solvers' counterpart of DDPM's ``clip_sample`` (the authors' ``clip_denoised=True``), not Imagen's dynamic
#: thresholding.
X0_CLIPPING = dict(thresholding=True, sample_max_value=1.0, dynamic_thresholding_ratio=0.995)

#: Steps of the default sampler (``GescoPipeline.__call__``, ``gesco transmit``), chosen with
#: ``benchmarks/sampler_quality.py`` (see :func:`default_scheduler`).
DEFAULT_SAMPLING_STEPS = 40


def official_ddpm_scheduler(**overrides) -> DDPMScheduler:
    """The authors' sampler: ancestral DDPM with the learned-range variance and ``clip_denoised=True``."""
    return DDPMScheduler(**{**PAPER_DIFFUSION_CONFIG, "variance_type": "learned_range", "clip_sample": True,
                            **overrides})


def default_scheduler(config: Union[dict, None] = None, **overrides) -> DPMSolverMultistepScheduler:
    """The package's default sampler: SDE-DPM-Solver++(2M) (Lu et al. 2022, stochastic second-order, noise
    re-injected at every step) with the predicted x0 clipped to [-1, 1], run for ``DEFAULT_SAMPLING_STEPS`` (40)
    steps, on the noise schedule of ``config`` (default: the paper's).

    Chosen with ``benchmarks/sampler_quality.py`` on the CamVid demo model (31 val maps, judge mIoU against the
    authors' 1000-step ancestral DDPM output, 0.323; ``benchmarks/README.md``): -1.7 points at 40 steps (paired
    bootstrap 95 % interval [-5.0, +1.7]), -0.9 at 50, -2.2 at 25; the authors' ancestral DDPM respaced to 50 steps
    is -3.4 (-6.6 at 25), and the deterministic solvers (DDIM, DPM-Solver++, UniPC) fall far below on this briefly
    trained model. With the pipeline's one-forward guided step, 40 steps are the most that keep the wall time under
    1/40 of the authors' protocol on the 2-core CPU (``benchmarks/sampling_cost.py``).
    """
    return build_scheduler("sde-dpmsolver++", config, **overrides)


def build_scheduler(name: str, config: Union[dict, None] = None, **overrides):
    """A scheduler by name, sharing the noise schedule of ``config`` (default: the paper's).

    ``ddpm`` and ``dpmsolver++`` use the learned-range variance; ``ddim``, ``unipc`` and ``euler`` use the epsilon
    channels only (the pipeline splits the variance channels off for them). ``sde-dpmsolver++`` is the stochastic
    second-order DPM-Solver++ (2M SDE, Lu et al. 2022): it re-injects noise at every step like the ancestral sampler,
    and clips its x0 predictions to [-1, 1] (``X0_CLIPPING``; it is the package default,
    :func:`default_scheduler`).
    """
    base = {**PAPER_DIFFUSION_CONFIG, **{k: v for k, v in (config or {}).items() if k in PAPER_DIFFUSION_CONFIG}}
    key = name.lower()
    if key == "ddpm":
        return DDPMScheduler(**{**base, "variance_type": "learned_range", "clip_sample": True, **overrides})
    if key in ("dpmsolver++", "dpm-solver++", "dpmsolver", "sde-dpmsolver++"):
        if key.startswith("sde"):
            algorithm = dict(algorithm_type="sde-dpmsolver++", **X0_CLIPPING)
        else:
            algorithm = dict(algorithm_type="dpmsolver++")
        return DPMSolverMultistepScheduler(**{**base, **algorithm, "solver_order": 2, "variance_type": "learned_range",
                                              **overrides})
    if key == "ddim":
        return DDIMScheduler(**{**base, "clip_sample": True, "set_alpha_to_one": False, **overrides})
    if key == "unipc":
        return UniPCMultistepScheduler(**{**base, **overrides})
    if key == "euler":
        return EulerDiscreteScheduler(**{**base, **overrides})
    raise ValueError(f"unknown sampler {name!r}; choose from {SAMPLERS}")


#: Schedulers whose ``step`` *reads* the learned variance: given a model output with twice the image channels and a
#: ``variance_type`` of ``"learned"``/``"learned_range"``, their ancestral step draws its noise with it (and fails
#: without it). The DPM-Solver family (multistep, singlestep, SA-Solver) accepts the same ``variance_type`` but only
#: slices the variance channels off, and every other scheduler reads epsilon alone, so they all get epsilon only.
LEARNED_VARIANCE_SCHEDULERS = (DDPMScheduler, DDPMParallelScheduler, UnCLIPScheduler)


def scheduler_reads_learned_variance(scheduler) -> bool:
    """Whether ``scheduler.step`` needs the model output with its variance channels (see
    :data:`LEARNED_VARIANCE_SCHEDULERS`). Decided by the class, not by a config key: ``from_config`` copies
    ``variance_type`` into schedulers that never read it."""
    return isinstance(scheduler, LEARNED_VARIANCE_SCHEDULERS) and scheduler.config.variance_type in (
        "learned", "learned_range")


def scheduler_incompatibility(scheduler, model_prediction: str = "epsilon") -> Optional[str]:
    """Why ``scheduler`` cannot drive a model trained on a discrete beta schedule (the paper's diffusion) that
    predicts ``model_prediction`` (epsilon; ``sample``, x0, for a trajectory-distilled student), or ``None`` when it
    can.

    Samplers of that diffusion (DDPM, DDIM, PNDM, the k-diffusion family, DPM-Solver, DEIS, UniPC, LCM, TCD, ...) derive
    their noise levels from the model's ``alphas_cumprod`` and call it at training timesteps. Refused: schedulers with
    their own noise levels (flow matching, EDM, consistency-model and Wuerstchen schedulers feed the U-Net times it
    never saw), inversion schedulers (they run the diffusion forward), schedulers whose step needs extra inputs
    (RePaint's inpainting mask), and any configured for another parametrisation than the model's.
    """
    name = type(scheduler).__name__
    config = getattr(scheduler, "config", None)
    if not callable(getattr(scheduler, "step", None)) or not callable(getattr(scheduler, "set_timesteps", None)):
        return f"{name} is not a diffusers scheduler (it needs set_timesteps and step)"
    if "FlowMatch" in name or getattr(config, "use_flow_sigmas", False) or \
            getattr(config, "prediction_type", None) == "flow_prediction":
        return (f"{name} is a flow-matching scheduler (velocity prediction on its own sigma schedule); this U-Net "
                f"predicts the noise of a discrete DDPM schedule")
    if getattr(scheduler, "alphas_cumprod", None) is None:
        return (f"{name} defines its own noise levels instead of the model's beta schedule (no alphas_cumprod), so "
                f"it would call the U-Net at times it was not trained on")
    if "Inverse" in name:
        return f"{name} inverts images into noise (it runs the diffusion forward), it does not sample"
    required = [p.name for p in list(inspect.signature(scheduler.step).parameters.values())[3:]
                if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD]
    if required:
        return f"{name}.step needs {', '.join(required)}, which plain sampling does not have"
    prediction = getattr(config, "prediction_type", "epsilon")
    if prediction != model_prediction:
        return (f"{name} is configured for prediction_type={prediction!r}; this U-Net predicts {model_prediction} "
                f"(pass prediction_type={model_prediction!r} to the scheduler)")
    return None


def respaced_timesteps(num_train_timesteps: int, section_counts: Union[str, int]) -> list[int]:
    """The authors' timestep respacing (guided-diffusion ``space_timesteps``), as a descending list for schedulers.

    ``"N"`` (or ``N``) keeps N steps spread evenly, both ends included (e.g. 1000 -> "10": 0, 111, ..., 999);
    ``"a,b,c"`` splits the range into equal sections with a, b, c steps each; ``"ddimN"`` keeps ``range(0, T, k)`` for
    the integer stride k that gives exactly N steps.
    """
    T = num_train_timesteps
    spec = str(section_counts)
    if spec.startswith("ddim"):
        wanted = int(spec[len("ddim"):])
        for stride in range(1, T):
            if len(range(0, T, stride)) == wanted:
                return sorted(range(0, T, stride), reverse=True)
        raise ValueError(f"cannot take exactly {wanted} steps from {T} with an integer stride")
    counts = [int(c) for c in spec.split(",")]
    size_per, extra = divmod(T, len(counts))
    kept, start = set(), 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise ValueError(f"cannot take {count} steps from a section of {size}")
        if count < 1:
            raise ValueError(f"each section needs at least one step, got {count}")
        stride = (size - 1) / (count - 1) if count > 1 else 1.0
        kept.update(start + round(stride * j) for j in range(count))
        start += size
    return sorted(kept, reverse=True)
