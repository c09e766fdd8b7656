"""Dataset presets: the shipped class-name lists must have the official lengths and orders."""

import json
from importlib import resources

import pytest

from gesco_diffusers.presets import DATASET_PRESETS, get_dataset_preset


def _shipped(dataset: str) -> list[str]:
    text = resources.files("gesco_diffusers").joinpath(f"assets/class_names/{dataset}.json").read_text()
    return json.loads(text)


@pytest.mark.parametrize("dataset, length", [("coco-stuff", 183), ("ade20k", 151)])
def test_shipped_class_names_have_one_name_per_id(dataset, length):
    names = _shipped(dataset)
    assert len(names) == length
    assert len(set(names)) == length, "class names must be unique"
    assert all(isinstance(n, str) and n == n.strip() and n for n in names)
    # The preset must use the shipped list, not the "class_<i>" fallback.
    assert get_dataset_preset(dataset).class_names == tuple(names)


def test_coco_stuff_names_follow_stuffthingmaps_ids():
    names = _shipped("coco-stuff")
    # stuffthingmaps id i is COCO category id i + 1; 255 (unlabelled) is remapped to 182.
    assert names[0] == "person" and names[1] == "bicycle" and names[2] == "car"
    assert names[89] == "toothbrush"  # COCO id 90, last thing class
    assert names[91] == "banner" and names[95] == "building-other"  # COCO ids 92, 96: first stuff classes
    assert names[181] == "wood" and names[182] == "unlabeled"
    unused_coco_ids = [12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91]
    assert [i for i, n in enumerate(names) if n.startswith("unused_")] == [c - 1 for c in unused_coco_ids]
    assert all(names[c - 1] == f"unused_{c}" for c in unused_coco_ids)
    assert get_dataset_preset("coco-stuff").unlabelled_id == names.index("unlabeled")


def test_ade20k_names_follow_scene_parsing_order():
    names = _shipped("ade20k")
    assert names[:5] == ["wall", "building", "sky", "floor", "tree"]
    assert names[12] == "person" and names[20] == "car"
    assert names[148] == "clock" and names[149] == "flag" and names[150] == "other"
    assert get_dataset_preset("ade20k").unlabelled_id == names.index("other")


@pytest.mark.parametrize("name", sorted(DATASET_PRESETS))
def test_every_preset_names_and_colours_each_id(name):
    preset = get_dataset_preset(name)
    assert len(preset.class_names) == preset.num_classes
    assert len(preset.palette) == preset.num_classes
    assert not any(n.startswith("class_") for n in preset.class_names)
