"""A fast pass over a dataset's label maps before training, so bad data fails with one clear message.

Users of SPADE/SDM keep hitting ``CUDA error: device-side assert triggered`` deep inside training: a label id at or
above the class count reaches ``scatter_``/``one_hot`` on the GPU. :func:`check_semantic_dataset` finds every such
problem up front (ids out of range after the dataset's remapping, a label map whose size differs from its image's,
a missing image/label/instance partner, an unreadable or colour-coded map) and raises a single
:class:`SemanticDataError` that names the files.

Label and instance maps are decoded, in a thread pool. Photos are checked to the end of their data without a full
decode (PNG chunk checksums, JPEG decoded at 1/8 scale), so a truncated photo is reported here instead of crashing
training at the step that first draws it.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import datasets
import numpy as np
import PIL.Image

from .semantic_datasets import check_label_mode, describe_ref, load_label_array, open_image

__all__ = ["DataProblem", "SemanticDataError", "check_semantic_dataset", "find_data_problems", "raise_for_problems"]


@dataclass(frozen=True)
class DataProblem:
    """One problem found in one row: ``kind`` (a short category), the offending ``file`` and a ``detail``."""

    row: int
    kind: str
    file: str
    detail: str


class SemanticDataError(ValueError):
    """Bad training data; ``problems`` lists every :class:`DataProblem` found."""

    def __init__(self, message: str, problems: Sequence[DataProblem]) -> None:
        super().__init__(message)
        self.problems = list(problems)


def _read(ref, what: str, fn):
    """``fn(image)`` on the opened reference, closing files this function opened (not caller-owned images)."""
    image = open_image(ref, what)
    try:
        return fn(image)
    finally:
        if image is not ref:
            image.close()


def _photo_size(image: PIL.Image.Image) -> tuple[int, int]:
    """The photo's size, after reading its data to the end: a truncated or corrupt file raises here.

    PNG: ``verify()`` checks every chunk's CRC and the end marker without decompressing. JPEG: decoded at 1/8 scale
    (``draft``), which still walks the whole entropy-coded stream. Other formats are decoded. An image that is
    already in memory (no file behind it) has nothing to check.
    """
    size = image.size
    if getattr(image, "fp", None) is None:
        return size
    if image.format == "PNG":
        image.verify()
    else:
        if image.format == "JPEG":
            image.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
        image.load()
    return size


def _check_row(
    row: dict, num_classes: int, remap_labels: Callable[[np.ndarray], np.ndarray], use_instances: bool
) -> list[DataProblem]:
    index = int(row.get("__index__", -1))
    problems: list[DataProblem] = []

    def problem(kind: str, ref, detail: str) -> None:
        problems.append(DataProblem(index, kind, describe_ref(ref), detail))

    # Missing partners: a row exists because one of its files exists, so name the file that is there.
    present = {k: row.get(k) for k in ("image", "label", "instance") if k in row}
    partner = next((describe_ref(v) for v in present.values() if v is not None), "?")
    for key in ("image", "label") + (("instance",) if use_instances else ()):
        if present.get(key) is None:
            problems.append(DataProblem(index, "missing pair", partner, f"no {key} file for it"))
    if problems:
        return problems

    try:
        image_size = _read(row["image"], "image", _photo_size)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported, not raised one by one
        problem("unreadable file", row["image"], str(err))
        image_size = None
    try:
        raw = _read(row["label"], "label map", lambda im: load_label_array(im, "label map"))
    except Exception as err:  # noqa: BLE001
        problem("unreadable label map", row["label"], str(err))
        return problems
    label_size = (raw.shape[1], raw.shape[0])
    if image_size is not None and label_size != image_size:
        problem("size mismatch", row["label"],
                f"label map is {label_size[1]}x{label_size[0]} but its image {describe_ref(row['image'])} is "
                f"{image_size[1]}x{image_size[0]}")
    ids = remap_labels(raw)
    bad = (ids < 0) | (ids >= num_classes)
    if bad.any():
        values, counts = np.unique(raw[bad], return_counts=True)
        listed = ", ".join(f"{int(v)} ({int(c)} px)" for v, c in zip(values[:8], counts[:8]))
        problem("ids out of range", row["label"],
                f"raw ids {listed}{' ...' if len(values) > 8 else ''} map outside [0, {num_classes})")
    if use_instances:
        try:
            instance_size = _read(row["instance"], "instance map", lambda im: check_label_mode(im, "instance map").size)
            if instance_size != label_size:
                problem("size mismatch", row["instance"],
                        f"instance map is {instance_size[1]}x{instance_size[0]} but the label map is "
                        f"{label_size[1]}x{label_size[0]}")
        except Exception as err:  # noqa: BLE001
            problem("unreadable instance map", row["instance"], str(err))
    return problems


def find_data_problems(
    dataset: datasets.Dataset,
    num_classes: int,
    remap_labels: Callable[[np.ndarray], np.ndarray] = lambda ids: ids,
    use_instances: bool = False,
    indices: Optional[Iterable[int]] = None,
    num_threads: int = 4,
) -> list[DataProblem]:
    """Check rows of a dataset built by :mod:`gesco_diffusers.data` (no transform set) and list their problems.

    Args:
        dataset: rows with ``image``, ``label`` (and ``instance``) references.
        num_classes: the preset's class count; remapped ids must lie in ``[0, num_classes)``.
        remap_labels: the dataset's raw-id -> preset-id mapping.
        use_instances: whether instance maps are required.
        indices: rows to check (default all), e.g. one shard per training process.
        num_threads: decoding threads.
    """
    if use_instances and "instance" not in dataset.column_names:
        raise ValueError(
            "the dataset has no 'instance' column but this preset needs instance maps for its edge channel"
        )
    rows = (dataset[int(i)] for i in (range(len(dataset)) if indices is None else indices))
    check = lambda row: _check_row(row, num_classes, remap_labels, use_instances)  # noqa: E731
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        return [p for found in pool.map(check, rows) for p in found]


def raise_for_problems(problems: Sequence[DataProblem], max_files: int = 10) -> None:
    """Raise one :class:`SemanticDataError` summarising ``problems`` by kind (first ``max_files`` files each)."""
    if not problems:
        return
    by_kind: dict[str, list[DataProblem]] = defaultdict(list)
    for p in problems:
        by_kind[p.kind].append(p)
    lines = [f"found {len(problems)} problem(s) in the training data; fix them before training:"]
    for kind, items in by_kind.items():
        lines.append(f"  {kind} ({len(items)} file(s)):")
        lines += [f"    {p.file}: {p.detail}" for p in items[:max_files]]
        if len(items) > max_files:
            lines.append(f"    ... and {len(items) - max_files} more")
    raise SemanticDataError("\n".join(lines), problems)


def check_semantic_dataset(
    dataset: datasets.Dataset,
    num_classes: int,
    remap_labels: Callable[[np.ndarray], np.ndarray] = lambda ids: ids,
    use_instances: bool = False,
    num_threads: int = 4,
) -> None:
    """:func:`find_data_problems` over every row, then :func:`raise_for_problems`."""
    raise_for_problems(find_data_problems(dataset, num_classes, remap_labels, use_instances, num_threads=num_threads))
