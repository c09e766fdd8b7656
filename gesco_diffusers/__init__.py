"""gesco-diffusers: generative semantic communication (GESCO) with Hugging Face diffusers.

Where each part of the system lives:

- :mod:`gesco_diffusers.sender` -- one-hot encoding of label maps, instance edges, map and image codecs (BPP).
- :mod:`gesco_diffusers.channel` -- channel models (AWGN, Poisson, mixture, Rayleigh fading, OFDM digital link).
- :mod:`gesco_diffusers.receiver` -- the fast-denoising semantic block (FDS, Eq. 1).
- :mod:`gesco_diffusers.models` -- ``SemanticUNet2DModel``, the SPADE diffusion U-Net.
- :mod:`gesco_diffusers.pipelines` -- ``GescoPipeline``: received map in, image out.
- :mod:`gesco_diffusers.diffusion` -- the paper's noise schedule, samplers and training losses.
- :mod:`gesco_diffusers.evaluation` -- KPIs (mIoU, FID, LPIPS, detection, depth) and ``gesco evaluate``.
- :mod:`gesco_diffusers.convert` -- conversion of the authors' checkpoints.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from .utils.lazy import lazy_names

# Lazy top-level names, as diffusers' own ``__init__``: ``import gesco_diffusers.channel`` (or ``gesco --help``) must
# not pay for diffusers and transformers; the models and the pipeline are imported on first use.
__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "models": ("SemanticUNet2DModel", "SemanticUNet2DOutput", "semantic_unet_config"),
    "pipelines": ("GescoPipeline", "GescoPipelineOutput", "PreparedSemanticMap"),
    "presets": ("DATASET_PRESETS", "DatasetPreset", "get_dataset_preset"),
})

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .models import SemanticUNet2DModel, SemanticUNet2DOutput, semantic_unet_config
    from .pipelines import GescoPipeline, GescoPipelineOutput, PreparedSemanticMap
    from .presets import DATASET_PRESETS, DatasetPreset, get_dataset_preset
