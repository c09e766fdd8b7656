from .configs import SEMANTIC_UNET_CONFIGS, official_unet_config, semantic_unet_config
from .spade import SemanticModulationCache, SPADEGroupNorm
from .unet_semantic import SemanticUNet2DModel, SemanticUNet2DOutput
from .unet_semantic_blocks import SemanticDownBlock2D, SemanticMidBlock2D, SemanticUpBlock2D, SPADEResnetBlock2D

__all__ = [
    "SEMANTIC_UNET_CONFIGS",
    "SPADEGroupNorm",
    "SPADEResnetBlock2D",
    "SemanticDownBlock2D",
    "SemanticMidBlock2D",
    "SemanticModulationCache",
    "SemanticUNet2DModel",
    "SemanticUNet2DOutput",
    "SemanticUpBlock2D",
    "official_unet_config",
    "semantic_unet_config",
]
