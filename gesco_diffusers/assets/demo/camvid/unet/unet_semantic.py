"""Written by GescoPipeline.save_pretrained so that diffusers can load this folder:
DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True). The implementation is the
gesco-diffusers package, which must be installed."""

from gesco_diffusers.models.unet_semantic import SemanticUNet2DModel  # noqa: F401
