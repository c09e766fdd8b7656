"""The label maps and photos ``gesco evaluate`` works on: the rows of a dataset split at the generation size."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

__all__ = ["EvaluationData", "EvaluationItem", "photo_batch"]

PathLike = Union[str, os.PathLike]


@dataclass
class EvaluationItem:
    """One label map of the split at the generation resolution.

    Attributes:
        index: its row in the sorted split (seeds are ``seed + index``).
        stem: its file name without extension (the image file name of every run).
        photo: the real photo, ``(3, H, W)`` uint8.
        labels: ``(H, W)`` int64 preset ids.
        instances: ``(H, W)`` int64 instance ids (datasets with instance maps), else ``None``.
    """

    index: int
    stem: str
    photo: torch.Tensor
    labels: torch.Tensor
    instances: Optional[torch.Tensor] = None


class EvaluationData:
    """The rows of a dataset split, read at the generation size with the dataset's evaluation transform
    (bicubic photo, nearest-neighbour maps; :mod:`gesco_diffusers.data`)."""

    def __init__(
        self,
        dataset: str,
        split: str,
        size: tuple[int, int],
        *,
        data_dir: Optional[PathLike] = None,
        dataset_name: Optional[str] = None,
        limit: Optional[int] = None,
    ):
        from ..data import SemanticExampleTransform, build_transform, load_semantic_dataset

        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        if dataset_name is None and data_dir is None:
            raise ValueError(
                f"give the folder of the {dataset} dataset (--data-dir) or a Hub/local table (--dataset-name)"
            )
        if data_dir is not None and not Path(data_dir).is_dir():
            raise FileNotFoundError(f"dataset folder not found: {data_dir}")
        self.rows, layout = load_semantic_dataset(
            dataset, data_dir, split, dataset_name=dataset_name, limit=limit
        )
        if len(self.rows) == 0:
            raise ValueError(f"the {split} split of {dataset} has no rows")
        self.size = tuple(size)
        self.transform = SemanticExampleTransform(
            build_transform(layout.eval_transform, self.size), self.size, layout.remap_labels
        )
        self.stems = self._stems()

    def _stems(self) -> list[str]:
        """Image file names: the label file's stem (the row number for in-memory rows), made unique."""
        stems = []
        for i, ref in enumerate(self.rows["label"]):
            path = ref.get("path") if isinstance(ref, dict) else ref if isinstance(ref, (str, os.PathLike)) else None
            stems.append(Path(path).stem if path else f"{i:06d}")
        if len(set(stems)) != len(stems):  # e.g. equal names in different sub-folders
            stems = [f"{i:06d}_{stem}" for i, stem in enumerate(stems)]
        return stems

    def __len__(self) -> int:
        return len(self.rows)

    def item(self, index: int) -> EvaluationItem:
        example = self.transform.example(self.rows[index])
        photo = ((example["pixel_values"] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)  # exact inverse
        return EvaluationItem(index, self.stems[index], photo, example["label"], example.get("instance"))


def photo_batch(items: Sequence[EvaluationItem]) -> torch.Tensor:
    """The items' real photos as one ``(B, 3, H, W)`` float batch in ``[0, 1]``."""
    return torch.stack([item.photo for item in items]).float() / 255.0
