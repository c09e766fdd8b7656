"""The paper's diffusion process: noise schedule and samplers (:mod:`.schedulers`, diffusers schedulers), training
losses (:mod:`.losses`) and classifier-free guidance (:mod:`.guidance`).

Names load on first use (diffusers' pattern): importing the package, or :data:`SAMPLERS`, imports no diffusers.
"""

from ..utils.lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "names": ("SAMPLERS",),
    "schedulers": ("DEFAULT_SAMPLING_STEPS", "PAPER_DIFFUSION_CONFIG", "X0_CLIPPING", "build_scheduler",
                   "default_scheduler", "official_ddpm_scheduler", "respaced_timesteps"),
    "losses": ("PAPER_VLB_WEIGHT", "GaussianDiffusion", "betas_from_scheduler_config",
               "discretized_gaussian_log_likelihood", "hybrid_loss", "mean_flat", "normal_kl"),
})
