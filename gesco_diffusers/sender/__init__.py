"""Sender side of GESCO: semantic-map encoding (Sec. III-A, :mod:`.encoding`) and map/image codecs (:mod:`.codecs`).

Names load on first use (diffusers' pattern): importing the package, or the codecs, imports no torch.
"""

from ..utils.lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "encoding": ("EncodedSemanticMap", "SemanticEncoder", "check_semantic_map", "instance_edges", "label_to_one_hot",
                 "pad_absent_channels", "present_classes"),
})
