"""Sender side of GESCO: semantic-map encoding (Sec. III-A) and map/image codecs."""

from . import encoding
from .encoding import (
    EncodedSemanticMap,
    SemanticEncoder,
    check_semantic_map,
    instance_edges,
    label_to_one_hot,
    pad_absent_channels,
    present_classes,
)

__all__ = [*encoding.__all__]
