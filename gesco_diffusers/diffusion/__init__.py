from .schedulers import (
    PAPER_DIFFUSION_CONFIG,
    SAMPLERS,
    build_scheduler,
    default_scheduler,
    official_ddpm_scheduler,
    respaced_timesteps,
)
