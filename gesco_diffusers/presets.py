"""Dataset presets: how many classes a label map has, which id means "unlabelled", whether an instance-edge channel
is sent, the colour palette and the paper's sampling settings.

The channel count C of the semantic map that conditions the network follows SPADE/SDM/GESCO: one channel per label
id (the unlabelled id included) plus, for datasets with instance maps, one instance-edge channel appended last
(reference doc, section 1.1). So Cityscapes is 35 + 1 = 36, COCO-Stuff 183 + 1 = 184, ADE20K 151, CamVid 12.
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

from .utils.files import existing_file


#: The largest image or map side, in pixels, that the commands accept (``gesco transmit --size``, ``gesco evaluate
#: --size``, ``gesco convert --sample-size``, the training scripts' ``--resolution``): 8x the largest side the paper's
#: models generate at (512, Cityscapes at 256x512). A typo such as 100000 would otherwise allocate tens of gigabytes
#: (and be killed) before any other check could name it.
MAX_SIDE = 4096


def check_image_size(size: Any, what: str = "size") -> tuple[int, int]:
    """``size`` as ``(height, width)``: two integers in ``1..MAX_SIDE``, else a one-line error naming ``what``."""
    values = tuple(size) if isinstance(size, (list, tuple)) else (size,)
    if len(values) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{what} must be two integers (height width), got {size!r}")
    values = tuple(int(v) for v in values)
    if not all(1 <= v <= MAX_SIDE for v in values):
        raise ValueError(f"{what} must be between 1 and {MAX_SIDE} pixels per side, got {values[0]} {values[1]}")
    return values


def _load_class_names(dataset: str) -> Optional[list[str]]:
    """Class names shipped in ``gesco_diffusers/assets/class_names/<dataset>.json`` (``None`` if not shipped)."""
    try:
        text = resources.files("gesco_diffusers").joinpath(f"assets/class_names/{dataset}.json").read_text()
    except (FileNotFoundError, OSError):
        return None
    return json.loads(text)


def default_palette(num_classes: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """A fixed, well-spread palette for datasets without an official one (golden-ratio hue walk)."""
    import colorsys

    palette = []
    for i in range(num_classes):
        hue = (i * 0.618033988749895 + 0.1 * seed) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.65 + 0.35 * ((i // 7) % 2), 0.55 + 0.45 * ((i // 3) % 2))
        palette.append((int(r * 255), int(g * 255), int(b * 255)))
    return palette


@dataclass(frozen=True)
class DatasetPreset:
    """Everything the sender, the receiver and the pipeline need to know about a dataset's label maps.

    Attributes:
        name: preset key, e.g. ``"cityscapes"``.
        num_classes: number of label ids, i.e. one-hot class channels (ids ``0 .. num_classes - 1``).
        unlabelled_id: the id used for unlabelled pixels *after* the dataset's label remapping (or ``None``).
        use_instance_edges: whether an instance-edge channel is appended as the last map channel.
        class_names: one name per id.
        palette: one RGB colour per id, for colourised maps.
        guidance_scale: the paper's classifier-free guidance scale ``s`` for this dataset (Sec. IV-A).
        resolution: ``(height, width)`` the paper's models generate at.
        ignore_ids: label ids excluded from mIoU (the unlabelled id).
    """

    name: str
    num_classes: int
    unlabelled_id: Optional[int]
    use_instance_edges: bool
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    guidance_scale: float
    resolution: tuple[int, int]
    ignore_ids: tuple[int, ...] = field(default=())

    @property
    def map_channels(self) -> int:
        """C, the number of channels of the conditioning map: classes plus the optional edge channel."""
        return self.num_classes + int(self.use_instance_edges)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["palette"] = [list(c) for c in self.palette]
        d["class_names"] = list(self.class_names)
        d["resolution"] = list(self.resolution)
        d["ignore_ids"] = list(self.ignore_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetPreset":
        return cls(
            name=d["name"],
            num_classes=int(d["num_classes"]),
            unlabelled_id=d.get("unlabelled_id"),
            use_instance_edges=bool(d["use_instance_edges"]),
            class_names=tuple(d["class_names"]),
            palette=tuple(tuple(int(v) for v in c) for c in d["palette"]),
            guidance_scale=float(d["guidance_scale"]),
            resolution=tuple(d["resolution"]),
            ignore_ids=tuple(d.get("ignore_ids", ())),
        )


# Cityscapes labelIds 0..33 plus "license plate" (-1 in the official list), 35 ids as in SPADE/SDM.
_CITYSCAPES_NAMES = (
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground", "road",
    "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel", "pole",
    "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "caravan", "trailer", "train", "motorcycle", "bicycle", "license plate",
)
_CITYSCAPES_PALETTE = (
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32), (0, 0, 142),
)

# CamVid, SegNet 11-class split (``../shared/data/camvid/classes.json``): 11 classes + unlabelled (id 11).
_CAMVID_NAMES = (
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol", "fence", "car", "pedestrian",
    "bicyclist", "unlabelled",
)
_CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 0),
)


def _names_or_numbered(dataset: str, n: int) -> tuple[str, ...]:
    names = _load_class_names(dataset)
    if names is None or len(names) != n:
        names = [f"class_{i}" for i in range(n)]
    return tuple(names)


def _build_presets() -> dict[str, DatasetPreset]:
    coco_names = _names_or_numbered("coco-stuff", 183)
    ade_names = _names_or_numbered("ade20k", 151)
    return {
        "cityscapes": DatasetPreset(
            name="cityscapes", num_classes=35, unlabelled_id=0, use_instance_edges=True,
            class_names=_CITYSCAPES_NAMES, palette=_CITYSCAPES_PALETTE, guidance_scale=2.0,
            resolution=(256, 512), ignore_ids=(0,),
        ),
        # COCO-Stuff stuffthingmaps: ids 0..181, 255 (unlabelled) is remapped to 182 (reference doc 2.1).
        "coco-stuff": DatasetPreset(
            name="coco-stuff", num_classes=183, unlabelled_id=182, use_instance_edges=True,
            class_names=coco_names, palette=tuple(default_palette(182)) + ((0, 0, 0),), guidance_scale=2.5,
            resolution=(256, 256), ignore_ids=(182,),
        ),
        # ADE20K (ADEChallengeData2016): label-1, so "other" (0) becomes 150 after the uint8 wrap-around.
        "ade20k": DatasetPreset(
            name="ade20k", num_classes=151, unlabelled_id=150, use_instance_edges=False,
            class_names=ade_names, palette=tuple(default_palette(150)) + ((0, 0, 0),), guidance_scale=2.5,
            resolution=(256, 256), ignore_ids=(150,),
        ),
        "camvid": DatasetPreset(
            name="camvid", num_classes=12, unlabelled_id=11, use_instance_edges=False,
            class_names=_CAMVID_NAMES, palette=_CAMVID_PALETTE, guidance_scale=1.5,
            resolution=(64, 80), ignore_ids=(11,),
        ),
    }


DATASET_PRESETS: dict[str, DatasetPreset] = _build_presets()


#: Defaults of a ``classes.json`` preset for what the file does not say.
CLASSES_FILE_DEFAULTS = {"generation_resolution": (256, 256), "guidance_scale": 1.5, "instance_edges": False}


def _classes_file_error(path: Path, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def preset_from_classes_file(path: Union[str, os.PathLike]) -> DatasetPreset:
    """A dataset preset defined by a ``classes.json`` file, for datasets this package does not know.

    The file (the format of ``tests/fixtures/camvid/classes.json``)::

        {"name": "my-streets",                       # optional: default the file's folder name
         "classes": [{"id": 0, "name": "road", "color": [128, 64, 128]}, ...],   # ids 0..N-1, each once
         "ignore_index": 11,                         # optional: the unlabelled id, excluded from mIoU
         "instance_edges": false,                    # optional: append the instance-edge channel (SPADE/SDM)
         "generation_resolution": [256, 256],        # optional: the (H, W) the model generates at
         "guidance_scale": 1.5}                      # optional: the classifier-free guidance scale s

    Other keys (a description, the source, split sizes) are ignored. A name that is a built-in preset must define
    the same number of classes.
    """
    path = existing_file(path, "classes file", "the classes.json file")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise _classes_file_error(path, f"not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise _classes_file_error(path, 'expected an object with a non-empty "classes" list')
    classes = data["classes"]
    for i, entry in enumerate(classes):
        if not isinstance(entry, dict) or not {"id", "name", "color"} <= set(entry):
            raise _classes_file_error(path, f'classes[{i}] needs "id", "name" and "color"')
        color = entry["color"]
        if (not isinstance(color, list) or len(color) != 3
                or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)):
            raise _classes_file_error(path, f"classes[{i}] color must be [r, g, b] with ints 0..255, got {color!r}")
    ids = [entry["id"] for entry in classes]
    if sorted(ids) != list(range(len(classes))) or any(isinstance(i, bool) for i in ids):
        raise _classes_file_error(path, f"class ids must be 0..{len(classes) - 1}, each once; got {ids}")
    classes = sorted(classes, key=lambda entry: entry["id"])
    options = {**CLASSES_FILE_DEFAULTS, **{k: data[k] for k in CLASSES_FILE_DEFAULTS if k in data}}
    unlabelled = data.get("ignore_index", data.get("unlabelled_id"))
    if unlabelled is not None and (isinstance(unlabelled, bool) or unlabelled not in ids):
        raise _classes_file_error(path, f"ignore_index {unlabelled!r} is not one of the class ids")
    resolution = options["generation_resolution"]
    if (not isinstance(resolution, (list, tuple)) or len(resolution) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resolution)):
        raise _classes_file_error(path, f"generation_resolution must be [height, width] (positive ints), got {resolution!r}")
    if not isinstance(options["instance_edges"], bool):
        raise _classes_file_error(path, f"instance_edges must be true or false, got {options['instance_edges']!r}")
    guidance = options["guidance_scale"]
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not guidance > 0:
        raise _classes_file_error(path, f"guidance_scale must be a positive number, got {guidance!r}")
    name = data.get("name") or path.resolve().parent.name
    builtin = DATASET_PRESETS.get(str(name).lower())
    if builtin is not None and builtin.num_classes != len(classes):
        raise _classes_file_error(path, f"name {name!r} is the built-in preset with {builtin.num_classes} classes, "
                                        f"this file defines {len(classes)}: give it another \"name\"")
    return DatasetPreset(
        name=str(name), num_classes=len(classes), unlabelled_id=unlabelled,
        use_instance_edges=options["instance_edges"], class_names=tuple(str(c["name"]) for c in classes),
        palette=tuple(tuple(c["color"]) for c in classes), guidance_scale=float(guidance),
        resolution=tuple(resolution), ignore_ids=() if unlabelled is None else (unlabelled,),
    )


def is_classes_file(name: Any) -> bool:
    """Whether a dataset argument names a ``classes.json`` file rather than a built-in preset."""
    return isinstance(name, (str, os.PathLike)) and str(name).endswith(".json")


def get_dataset_preset(name: Union[str, os.PathLike, DatasetPreset]) -> DatasetPreset:
    """Return the preset called ``name`` (case-insensitive, ``coco``/``cocostuff`` accepted for COCO-Stuff), or the
    one a ``classes.json`` file defines (:func:`preset_from_classes_file`)."""
    if isinstance(name, DatasetPreset):
        return name
    if is_classes_file(name):
        return preset_from_classes_file(name)
    key = name.lower().replace("_", "-")
    key = {"coco": "coco-stuff", "cocostuff": "coco-stuff", "ade20k-150": "ade20k"}.get(key, key)
    if key not in DATASET_PRESETS:
        raise ValueError(f"Unknown dataset preset {name!r}; available: {sorted(DATASET_PRESETS)}")
    return DATASET_PRESETS[key]
