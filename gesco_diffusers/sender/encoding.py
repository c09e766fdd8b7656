"""Sender side of GESCO (paper Sec. III-A): one-hot encoding of a semantic label map.

The sender turns a label map of class ids into the map ``y`` that is transmitted: one channel per class id (the
unlabelled id included) plus, for datasets with instance maps, an instance-edge channel appended **last**
(reference doc, section 1.1). Only the channels of classes present in the map are transmitted; the receiver pads the
absent ones with exact zeros (the "Pad" of Eq. 1). The set of present channels is therefore *side information*
that the receiver gets without error (reference doc, section 1.4, step 7); here it is the boolean ``transmitted``
mask of shape ``(B, C)``.

Everything is batched: label maps are ``(B, H, W)`` integer tensors. Single ``(H, W)`` maps and numpy arrays are
accepted too and get a batch dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # only for the annotation of ``from_preset``
    from ..presets import DatasetPreset

ArrayLike = Union[torch.Tensor, np.ndarray]

__all__ = [
    "EncodedSemanticMap",
    "SemanticEncoder",
    "check_semantic_map",
    "instance_edges",
    "label_to_one_hot",
    "pad_absent_channels",
    "present_classes",
]


def _as_integer_maps(maps: ArrayLike, name: str) -> torch.Tensor:
    """Return ``maps`` as an int64 ``(B, H, W)`` tensor; ``(H, W)`` gets a batch dimension.

    Raises ``TypeError`` for non-integer data (float label maps are a common mistake: a resized or normalised
    map is no longer a map of ids) and ``ValueError`` for any other rank.
    """
    if isinstance(maps, np.ndarray):
        if not (np.issubdtype(maps.dtype, np.integer) or maps.dtype == np.bool_):
            raise TypeError(f"{name} must hold integer ids, got a numpy array of dtype {maps.dtype}")
        maps = torch.from_numpy(np.ascontiguousarray(maps).astype(np.int64, copy=False))
    elif not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(maps).__name__}")
    if maps.is_floating_point() or maps.is_complex():
        raise TypeError(f"{name} must hold integer ids, got a tensor of dtype {maps.dtype}")
    if maps.dim() == 2:
        maps = maps.unsqueeze(0)
    if maps.dim() != 3:
        raise ValueError(f"{name} must have shape (B, H, W) or (H, W), got {tuple(maps.shape)}")
    return maps.long()


def _check_ids(labels: torch.Tensor, num_classes: int) -> None:
    """Raise if an id lies outside ``[0, num_classes)``, naming the offending ids and how many pixels carry them."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    bad = (labels < 0) | (labels >= num_classes)
    if bool(bad.any()):
        ids, counts = torch.unique(labels[bad], return_counts=True)
        listed = ", ".join(f"id {int(i)} ({int(c)} pixels)" for i, c in zip(ids[:10], counts[:10]))
        more = f" and {len(ids) - 10} more ids" if len(ids) > 10 else ""
        raise ValueError(
            f"labels contain ids outside [0, {num_classes}): {listed}{more}. Remap them first (e.g. COCO-Stuff's "
            f"unlabelled 255 -> 182) or use a preset with more classes."
        )


def label_to_one_hot(labels: ArrayLike, num_classes: int) -> torch.Tensor:
    """One-hot encode label maps: ``(B, H, W)`` ids in ``[0, num_classes)`` -> ``(B, num_classes, H, W)`` float 0/1.

    Channel ``c`` is 1 exactly where the id is ``c`` (the scatter of reference doc 1.1). ``(H, W)`` maps and numpy
    arrays are accepted and get a batch dimension.
    """
    labels = _as_integer_maps(labels, "labels")
    _check_ids(labels, num_classes)
    return F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(torch.float32)


def instance_edges(instances: ArrayLike) -> torch.Tensor:
    """Instance-edge map of SPADE/SDM/GESCO: ``(B, H, W)`` instance ids -> ``(B, 1, H, W)`` float 0/1.

    A pixel is 1 if its id differs from its left, right, upper or lower neighbour; both pixels of a differing pair
    are marked (reference doc 1.1). Image borders have no neighbour outside the map, so they are not edges by
    themselves.
    """
    inst = _as_integer_maps(instances, "instances")
    edges = torch.zeros(inst.shape, dtype=torch.bool, device=inst.device)
    horizontal = inst[:, :, 1:] != inst[:, :, :-1]  # pair (x, x+1) differs
    vertical = inst[:, 1:, :] != inst[:, :-1, :]  # pair (y, y+1) differs
    edges[:, :, 1:] |= horizontal
    edges[:, :, :-1] |= horizontal
    edges[:, 1:, :] |= vertical
    edges[:, :-1, :] |= vertical
    return edges.unsqueeze(1).to(torch.float32)


def present_classes(labels: ArrayLike, num_classes: int) -> torch.Tensor:
    """``(B, num_classes)`` bool: whether each class id occurs at least once in each label map."""
    labels = _as_integer_maps(labels, "labels")
    _check_ids(labels, num_classes)
    batch = labels.shape[0]
    counts = torch.zeros(batch, num_classes, dtype=torch.long, device=labels.device)
    counts.scatter_add_(1, labels.reshape(batch, -1), torch.ones_like(labels.reshape(batch, -1)))
    return counts > 0


def check_semantic_map(x: torch.Tensor, transmitted: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Validate a (received) semantic map and its side information; return the ``(B, C)`` bool mask.

    ``x`` must be a finite floating ``(B, C, H, W)`` tensor; ``transmitted`` a ``(B, C)`` bool tensor (``None``
    means every channel is transmitted). Shared by the channel models and the receiver so that both reject the
    same inputs with the same messages.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"the semantic map must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"the semantic map must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"the semantic map must have shape (B, C, H, W), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        raise ValueError(f"the semantic map contains non-finite values ({n_nan} NaN, {n_inf} inf)")
    batch, channels = x.shape[:2]
    if transmitted is None:
        return torch.ones(batch, channels, dtype=torch.bool, device=x.device)
    if not isinstance(transmitted, torch.Tensor) or transmitted.dtype != torch.bool:
        raise TypeError("transmitted must be a bool torch.Tensor of shape (B, C)")
    if tuple(transmitted.shape) != (batch, channels):
        raise ValueError(
            f"transmitted must have shape (B, C) = {(batch, channels)} to match the map, "
            f"got {tuple(transmitted.shape)}"
        )
    return transmitted.to(x.device)


def pad_absent_channels(x: torch.Tensor, transmitted: torch.Tensor) -> torch.Tensor:
    """The "Pad" of Eq. 1: set every channel that was not transmitted to exact zeros (no noise, no residue)."""
    return torch.where(transmitted[:, :, None, None], x, torch.zeros((), dtype=x.dtype, device=x.device))


@dataclass
class EncodedSemanticMap:
    """What the sender produces for a batch of label maps.

    Attributes:
        one_hot: ``(B, C, H, W)`` float 0/1 map, ``C = num_classes (+1 edge channel, last)``.
        transmitted: ``(B, C)`` bool, the present classes plus the edge channel when used. This is the side
            information: channels outside it are not sent and the receiver pads them with zeros.
    """

    one_hot: torch.Tensor
    transmitted: torch.Tensor

    def to(self, device: Union[str, torch.device]) -> "EncodedSemanticMap":
        """Move both tensors to ``device`` (the dtypes stay: float map, bool mask)."""
        return EncodedSemanticMap(self.one_hot.to(device), self.transmitted.to(device))


class SemanticEncoder:
    """One-hot encodes label maps (+ instance edges) and computes the transmitted-channel mask (Sec. III-A).

    Args:
        num_classes: number of label ids, i.e. class channels (the unlabelled id included).
        use_instance_edges: append the instance-edge channel last; then ``encode`` requires instance maps.
    """

    def __init__(self, num_classes: int, use_instance_edges: bool = False) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.use_instance_edges = bool(use_instance_edges)

    @classmethod
    def from_preset(cls, preset: "Union[str, DatasetPreset]") -> "SemanticEncoder":
        """Build the encoder of a dataset preset (a ``DatasetPreset`` or its name, e.g. ``"cityscapes"``)."""
        from ..presets import get_dataset_preset

        preset = get_dataset_preset(preset)
        return cls(preset.num_classes, preset.use_instance_edges)

    @property
    def map_channels(self) -> int:
        """C, the channel count of the encoded map."""
        return self.num_classes + int(self.use_instance_edges)

    def encode(self, labels: ArrayLike, instances: Optional[ArrayLike] = None) -> EncodedSemanticMap:
        """Encode ``(B, H, W)`` (or ``(H, W)``) label maps, with instance maps iff ``use_instance_edges``."""
        labels = _as_integer_maps(labels, "labels")
        if self.use_instance_edges and instances is None:
            raise ValueError("this encoder appends an instance-edge channel (use_instance_edges=True): pass instances")
        if not self.use_instance_edges and instances is not None:
            raise ValueError("instances were given but use_instance_edges=False: the edge channel would be dropped")
        one_hot = label_to_one_hot(labels, self.num_classes)
        transmitted = one_hot.flatten(2).amax(-1) > 0  # present_classes, without validating the ids twice
        if instances is not None:
            inst = _as_integer_maps(instances, "instances").to(labels.device)
            if inst.shape != labels.shape:
                raise ValueError(
                    f"instances must have the same shape as labels, got {tuple(inst.shape)} vs {tuple(labels.shape)}"
                )
            one_hot = torch.cat([one_hot, instance_edges(inst)], dim=1)
            # The edge channel is always sent (reference doc 1.4, step 3), even when it happens to be all zeros.
            edge_sent = torch.ones(labels.shape[0], 1, dtype=torch.bool, device=labels.device)
            transmitted = torch.cat([transmitted, edge_sent], dim=1)
        return EncodedSemanticMap(one_hot=one_hot, transmitted=transmitted)

    __call__ = encode

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes}, use_instance_edges={self.use_instance_edges})"
