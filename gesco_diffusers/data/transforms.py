"""Joint image / label-map transforms of the paper's data pipelines (SDM/GESCO ``image_datasets.py``; reference doc
2.1).

Every transform maps a :class:`SemanticSample` (PIL RGB image, PIL label map, optional PIL instance map) to a new one
with the same geometry applied to all three; images are resampled with BOX/BICUBIC filters, label and instance maps
with NEAREST so that no id is ever blended into another. Randomness comes only from the ``numpy.random.Generator``
argument, so a sample's augmentation is reproducible from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np
import PIL.Image
import torch

__all__ = [
    "Compose",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "ResizeKeepAspect",
    "SemanticSample",
    "image_to_tensor",
    "label_to_tensor",
]

Image = PIL.Image.Image


@dataclass
class SemanticSample:
    """One training example before tensor conversion: ``image`` (RGB), ``label`` (ids), optional ``instance``."""

    image: Image
    label: Image
    instance: Optional[Image] = None

    def map_geometry(self, image_fn, label_fn) -> "SemanticSample":
        """Apply ``image_fn`` to the image and ``label_fn`` to the label and instance maps."""
        return replace(
            self,
            image=image_fn(self.image),
            label=label_fn(self.label),
            instance=None if self.instance is None else label_fn(self.instance),
        )


def _halve_with_box(image: Image, smaller_side: int) -> Image:
    """Repeated 2x BOX downscaling while the smaller side is at least twice ``smaller_side`` (anti-aliasing)."""
    while min(image.size) >= 2 * smaller_side:
        image = image.resize(tuple(s // 2 for s in image.size), resample=PIL.Image.BOX)
    return image


def _resize_smaller_side(sample: SemanticSample, smaller_side: int) -> SemanticSample:
    """Scale so the smaller side equals ``smaller_side``: BOX halving, then BICUBIC; maps NEAREST to the same size."""
    halved = _halve_with_box(sample.image, smaller_side)
    scale = smaller_side / min(halved.size)
    size = tuple(round(s * scale) for s in halved.size)
    return SemanticSample(
        image=halved.resize(size, resample=PIL.Image.BICUBIC),
        label=sample.label.resize(size, resample=PIL.Image.NEAREST),
        instance=None if sample.instance is None else sample.instance.resize(size, resample=PIL.Image.NEAREST),
    )


class ResizeKeepAspect:
    """Resize keeping the aspect ratio so the smaller side is ``smaller_side`` (Cityscapes: 2048x1024 -> 512x256).

    The image is halved with a BOX filter while its smaller side is at least twice the target, then resized with
    BICUBIC (a no-op for Cityscapes); label/instance maps are resized with NEAREST straight to the final size.
    """

    def __init__(self, smaller_side: int) -> None:
        if smaller_side < 1:
            raise ValueError(f"smaller_side must be positive, got {smaller_side}")
        self.smaller_side = int(smaller_side)

    def __call__(self, sample: SemanticSample, rng: np.random.Generator) -> SemanticSample:
        return _resize_smaller_side(sample, self.smaller_side)

    def __repr__(self) -> str:
        return f"ResizeKeepAspect({self.smaller_side})"


class RandomResizedCrop:
    """ADE20K/COCO-Stuff training augmentation: random smaller side in ``[min_side, max_side]``, then a random crop.

    The smaller side is drawn uniformly among the integers of ``[min_side, max_side]`` (SDM: ``[256, 320]`` for a
    256 crop, i.e. crop fractions 1.0 to 0.8), the image is resized as in :class:`ResizeKeepAspect`, and a
    ``height x width`` window is cropped at a uniformly random position.
    """

    def __init__(self, height: int, width: int, min_side: Optional[int] = None, max_side: Optional[int] = None):
        self.height, self.width = int(height), int(width)
        self.min_side = int(min_side if min_side is not None else max(self.height, self.width))
        self.max_side = int(max_side if max_side is not None else math.ceil(self.min_side / 0.8))
        if not max(self.height, self.width) <= self.min_side <= self.max_side:
            raise ValueError(
                f"need max(height, width) <= min_side <= max_side, got crop {self.height}x{self.width}, "
                f"sides [{self.min_side}, {self.max_side}]"
            )

    def __call__(self, sample: SemanticSample, rng: np.random.Generator) -> SemanticSample:
        side = int(rng.integers(self.min_side, self.max_side + 1))
        sample = _resize_smaller_side(sample, side)
        width, height = sample.image.size
        top = int(rng.integers(0, height - self.height + 1))
        left = int(rng.integers(0, width - self.width + 1))
        box = (left, top, left + self.width, top + self.height)
        return sample.map_geometry(lambda im: im.crop(box), lambda m: m.crop(box))

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.height}x{self.width}, sides=[{self.min_side}, {self.max_side}])"


class Resize:
    """Resize to exactly ``height x width`` (aspect not kept): BICUBIC for the image, NEAREST for the maps."""

    def __init__(self, height: int, width: int) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"size must be positive, got {height}x{width}")
        self.size = (int(width), int(height))  # PIL order

    def __call__(self, sample: SemanticSample, rng: np.random.Generator) -> SemanticSample:
        if sample.image.size == self.size:
            return sample
        return sample.map_geometry(
            lambda im: _halve_with_box(im, min(self.size)).resize(self.size, resample=PIL.Image.BICUBIC),
            lambda m: m.resize(self.size, resample=PIL.Image.NEAREST),
        )

    def __repr__(self) -> str:
        return f"Resize({self.size[1]}x{self.size[0]})"


class RandomHorizontalFlip:
    """Mirror image and maps together with probability ``p`` (0.5 in SDM/GESCO)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, sample: SemanticSample, rng: np.random.Generator) -> SemanticSample:
        # Always draw, so the random stream does not depend on p.
        if rng.random() < self.p:
            flip = PIL.Image.Transpose.FLIP_LEFT_RIGHT
            return sample.map_geometry(lambda im: im.transpose(flip), lambda m: m.transpose(flip))
        return sample

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply transforms in order, sharing one generator."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: SemanticSample, rng: np.random.Generator) -> SemanticSample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.transforms))})"


def image_to_tensor(image: Image) -> torch.Tensor:
    """RGB PIL image -> ``(3, H, W)`` float32 in [-1, 1] (``x / 127.5 - 1``, as in SDM/GESCO)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def label_to_tensor(label: np.ndarray) -> torch.Tensor:
    """Integer id map ``(H, W)`` -> int64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))
