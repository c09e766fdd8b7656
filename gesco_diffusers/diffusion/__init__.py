from .schedulers import (
    DEFAULT_SAMPLING_STEPS,
    PAPER_DIFFUSION_CONFIG,
    SAMPLERS,
    X0_CLIPPING,
    build_scheduler,
    default_scheduler,
    official_ddpm_scheduler,
    respaced_timesteps,
)
from .losses import (
    PAPER_VLB_WEIGHT,
    GaussianDiffusion,
    betas_from_scheduler_config,
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    mean_flat,
    normal_kl,
)
