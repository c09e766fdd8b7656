"""Conversion of the authors' GESCO / SDM checkpoints into :class:`~gesco_diffusers.GescoPipeline` folders.

Names load on first use (diffusers' pattern), so ``gesco convert --help`` imports no torch.
"""

from ..utils.lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "checkpoint": ("ConvertedCheckpoint", "convert_official_checkpoint", "dataset_for_architecture",
                   "load_official_checkpoint"),
    "cli": ("main",),
    "official": ("ConversionReport", "OfficialUNetArchitecture", "TensorMapping", "build_unet",
                 "convert_official_state_dict", "infer_official_architecture", "merge_legacy_qkv",
                 "official_key_mapping", "split_legacy_qkv", "to_official_state_dict"),
})
