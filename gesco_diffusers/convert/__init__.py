"""Conversion of the authors' GESCO / SDM checkpoints into :class:`~gesco_diffusers.GescoPipeline` folders."""

from .checkpoint import (
    ConvertedCheckpoint,
    convert_official_checkpoint,
    dataset_for_architecture,
    load_official_checkpoint,
)
from .cli import main
from .official import (
    ConversionReport,
    OfficialUNetArchitecture,
    TensorMapping,
    build_unet,
    convert_official_state_dict,
    infer_official_architecture,
    merge_legacy_qkv,
    official_key_mapping,
    split_legacy_qkv,
    to_official_state_dict,
)

__all__ = [
    "ConvertedCheckpoint",
    "convert_official_checkpoint",
    "dataset_for_architecture",
    "load_official_checkpoint",
    "main",
    "ConversionReport",
    "OfficialUNetArchitecture",
    "TensorMapping",
    "build_unet",
    "convert_official_state_dict",
    "infer_official_architecture",
    "merge_legacy_qkv",
    "official_key_mapping",
    "split_legacy_qkv",
    "to_official_state_dict",
]
