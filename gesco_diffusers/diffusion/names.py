"""The sampler names of :func:`~gesco_diffusers.diffusion.build_scheduler`, importable without diffusers (the
command lines offer them)."""

__all__ = ["SAMPLERS"]

SAMPLERS = ("ddpm", "ddim", "dpmsolver++", "sde-dpmsolver++", "unipc", "euler")
