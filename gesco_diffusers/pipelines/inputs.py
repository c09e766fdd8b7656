"""Turning what users pass as a semantic map (tensors, arrays, PIL images, lists of them) into batched tensors,
with early errors that name the problem."""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import PIL.Image
import torch

MapInput = Union[torch.Tensor, np.ndarray, PIL.Image.Image, list]


def _to_tensor(item: Any, what: str) -> torch.Tensor:
    if isinstance(item, PIL.Image.Image):
        if item.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(
                f"{what}: a PIL label map must be single-channel (mode L, P, I or I;16) with class ids as values, "
                f"got mode {item.mode!r}"
            )
        item = np.array(item)
    if isinstance(item, np.ndarray):
        if item.dtype == np.uint16:
            item = item.astype(np.int32)
        item = torch.from_numpy(np.ascontiguousarray(item))
    if not torch.is_tensor(item):
        raise TypeError(f"{what}: expected a torch.Tensor, numpy array or PIL image, got {type(item).__name__}")
    return item


def to_batched_tensor(value: MapInput, what: str = "segmap") -> torch.Tensor:
    """Stack a single map or a list of maps into one tensor with a leading batch dimension.

    Integer maps come out as ``(B, H, W)``; float maps as given (``(B, C, H, W)`` expected for one-hot maps).
    """
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            raise ValueError(f"{what}: got an empty list")
        items = [_to_tensor(v, f"{what}[{i}]") for i, v in enumerate(value)]
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) != 1:
            raise ValueError(f"{what}: all maps in a list must have the same shape, got {sorted(shapes)}")
        # (H, W) label maps and (C, H, W) one-hot maps are stacked; already batched items are concatenated.
        return torch.cat(items) if items[0].ndim == 4 else torch.stack(items)
    tensor = _to_tensor(value, what)
    if tensor.ndim == 2:
        tensor = tensor[None]
    return tensor


def is_label_map(tensor: torch.Tensor) -> bool:
    """Integer (B, H, W) tensors are label maps; float (B, C, H, W) tensors are one-hot or received maps."""
    return not tensor.is_floating_point() and not tensor.is_complex()


def check_label_map(labels: torch.Tensor, num_classes: int, what: str = "segmap") -> torch.Tensor:
    """Validate an integer label map ``(B, H, W)`` and return it as int64."""
    if labels.dtype == torch.bool:
        raise ValueError(f"{what}: wrong dtype bool; a label map needs integer class ids")
    if labels.is_floating_point():
        raise ValueError(
            f"{what}: wrong dtype {labels.dtype} for a label map of shape {tuple(labels.shape)}; pass integer class "
            f"ids (B, H, W) or a float one-hot map (B, C, H, W)"
        )
    if labels.ndim != 3:
        raise ValueError(f"{what}: a label map must be (H, W) or (B, H, W), got shape {tuple(labels.shape)}")
    labels = labels.long()
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0:
            raise ValueError(f"{what}: label id {low} is negative")
        if high >= num_classes:
            count = int((labels >= num_classes).sum())
            raise ValueError(
                f"{what}: label id {high} >= num_classes={num_classes} ({count} pixels); remap the dataset's ids "
                f"first (e.g. COCO-Stuff 255 -> 182)"
            )
    return labels


def check_float_map(segmap: torch.Tensor, channels: int, what: str = "segmap") -> torch.Tensor:
    """Validate a float map ``(B, C, H, W)``: channel count and finiteness."""
    if segmap.ndim == 3:
        if segmap.shape[0] != channels:
            raise ValueError(
                f"{what}: wrong dtype {segmap.dtype} for a label map of shape {tuple(segmap.shape)}; pass integer "
                f"class ids (B, H, W), or a float one-hot map with {channels} channels"
            )
        segmap = segmap[None]
    if segmap.ndim != 4:
        raise ValueError(f"{what}: a one-hot map must be (B, C, H, W), got shape {tuple(segmap.shape)}")
    if segmap.shape[1] != channels:
        raise ValueError(
            f"{what}: wrong channel count {segmap.shape[1]}; this model expects {channels} map channels"
        )
    if not torch.isfinite(segmap).all():
        raise ValueError(f"{what}: the map contains NaN or inf values")
    return segmap


def check_not_empty(batch: int, height: int, width: int, what: str = "segmap") -> None:
    if batch == 0:
        raise ValueError(f"{what}: empty batch (0 maps)")
    if height == 0 or width == 0:
        raise ValueError(f"{what}: empty map ({height}x{width} pixels)")


def check_instance_map(instances: torch.Tensor, label_shape: tuple, what: str = "instance_map") -> torch.Tensor:
    """Validate instance ids against the label map ``(B, H, W)`` they belong to."""
    if instances.dtype == torch.bool or instances.is_floating_point() or instances.is_complex():
        raise ValueError(f"{what}: wrong dtype {instances.dtype}; instance ids must be integers")
    if tuple(instances.shape) != tuple(label_shape):
        raise ValueError(f"{what}: shape {tuple(instances.shape)} does not match the label map {tuple(label_shape)}")
    return instances


def check_spatial_size(height: int, width: int, factor: int, what: str = "segmap") -> None:
    if height % factor or width % factor:
        raise ValueError(
            f"{what}: spatial size {height}x{width} is not divisible by the network's downsampling factor {factor}; "
            f"resize or pad the map (e.g. to {height // factor * factor or factor}x{width // factor * factor or factor})"
        )


def optional_batched(value: Optional[MapInput], what: str) -> Optional[torch.Tensor]:
    return None if value is None else to_batched_tensor(value, what)
