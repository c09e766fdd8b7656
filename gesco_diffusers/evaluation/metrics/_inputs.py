"""Validation of the images and label maps every metric receives, so each one fails early with the same messages."""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

ImageInput = Union[torch.Tensor, np.ndarray, Image.Image, Sequence[Image.Image]]
LabelInput = Union[torch.Tensor, np.ndarray]


#: Float images may exceed [0, 1] by this much (resampling overshoot, far below one 8-bit step of 1/255).
RANGE_TOLERANCE = 1e-4


def _pil_to_tensor(images: Sequence) -> torch.Tensor:
    arrays = [np.asarray(image.convert("RGB")) for image in images]
    sizes = {a.shape for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"all PIL images of a batch must have the same size, got sizes {sorted(sizes)}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def as_image_batch(images: ImageInput, name: str = "images") -> torch.Tensor:
    """Return ``images`` as a float32 tensor of shape ``(B, 3, H, W)`` with values in ``[0, 1]``.

    Accepted: a tensor/array of shape ``(B, 3, H, W)`` or ``(3, H, W)``, either ``uint8`` (0..255, divided by 255)
    or floating point already in ``[0, 1]``; a PIL image; a sequence of equally sized PIL images. Floats outside
    ``[0, 1]`` by more than :data:`RANGE_TOLERANCE` are rejected rather than clipped, since they usually mean
    ``[-1, 1]`` images were passed.
    """
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError(f"{name}: empty sequence")
        if not all(isinstance(i, Image.Image) for i in images):
            raise TypeError(f"{name}: a sequence must contain PIL images only; pass tensors as one (B, 3, H, W) batch")
        images = _pil_to_tensor(images)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, an array or PIL images, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: expected shape (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name}: empty batch or image, shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TypeError(f"{name}: expected uint8 (0..255) or floating point (0..1) images, got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name}: contains NaN or inf")
    low, high = images.min().item(), images.max().item()
    if low < -RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        raise ValueError(
            f"{name}: floating point images must lie in [0, 1], got values in [{low:.6g}, {high:.6g}] "
            "(convert [-1, 1] images with (x + 1) / 2)"
        )
    # Only rounding-level excursions (e.g. from antialiased resizing) reach this clamp.
    return images.float().clamp(0.0, 1.0)


def as_label_tensor(labels: LabelInput, name: str = "labels") -> torch.Tensor:
    """Return integer label ids as an int64 tensor (any shape); reject non-integer dtypes."""
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name}: expected an integer tensor or array, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name}: label ids must have an integer dtype, got {labels.dtype}")
    return labels.long()


def same_size_pairs(images: torch.Tensor, references: torch.Tensor, names: tuple[str, str]) -> None:
    """Raise unless two image batches have identical shapes (paired metrics compare pixel-aligned images)."""
    if images.shape != references.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape (B, 3, H, W), got {tuple(images.shape)} and "
            f"{tuple(references.shape)}"
        )


def check_batch_size(batch_size: int) -> int:
    """Images per forward pass: a positive int."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size
