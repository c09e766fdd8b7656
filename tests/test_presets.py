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


# ----------------------------------------------------------------------------------------------------------------
# classes.json: a preset for any dataset


def _classes(tmp_path, n=5, name="streets", **extra):
    data = {"name": name, "classes": [{"id": i, "name": f"c{i}", "color": [i, 2 * i, 3 * i]} for i in range(n)],
            **extra}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_a_classes_file_defines_the_same_preset_as_the_builtin_camvid():
    from fixture_data import CAMVID

    preset = get_dataset_preset(CAMVID / "classes.json")  # the dataset's own file (name: its folder)
    camvid = DATASET_PRESETS["camvid"]
    assert (preset.name, preset.num_classes, preset.unlabelled_id, preset.ignore_ids) == ("camvid", 12, 11, (11,))
    assert preset.class_names == camvid.class_names and preset.palette == camvid.palette
    assert not preset.use_instance_edges and preset.map_channels == 12


def test_a_classes_file_with_options(tmp_path):
    preset = get_dataset_preset(str(_classes(tmp_path, 7, ignore_index=6, instance_edges=True,
                                             generation_resolution=[32, 48], guidance_scale=2.0)))
    assert (preset.name, preset.num_classes, preset.map_channels) == ("streets", 7, 8)
    assert preset.resolution == (32, 48) and preset.guidance_scale == 2.0 and preset.ignore_ids == (6,)
    assert preset.palette[3] == (3, 6, 9)


@pytest.mark.parametrize("change, match", [
    (lambda d: d["classes"].pop(1), r"class ids must be 0\.\.3"),
    (lambda d: d["classes"][0].update(id=1), "each once"),
    (lambda d: d["classes"][2].update(color=[0, 0, 256]), r"color must be \[r, g, b\]"),
    (lambda d: d["classes"][2].pop("name"), '"id", "name" and "color"'),
    (lambda d: d.update(ignore_index=9), "ignore_index 9 is not one of the class ids"),
    (lambda d: d.update(name="cityscapes"), "built-in preset with 35 classes"),
    (lambda d: d.update(generation_resolution=[0, 8]), "generation_resolution"),
    (lambda d: d.update(instance_edges="yes"), "instance_edges must be true or false"),
    (lambda d: d.update(classes=[]), 'non-empty "classes"'),
])
def test_bad_classes_files_are_one_line_errors_naming_the_file(tmp_path, change, match):
    path = _classes(tmp_path)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match) as err:
        get_dataset_preset(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        get_dataset_preset(str(path))
    with pytest.raises(FileNotFoundError, match="classes file not found"):
        get_dataset_preset(str(tmp_path / "missing.json"))


def test_a_checkpoint_of_any_class_count_converts_with_a_classes_file(tmp_path):
    from test_convert import HEAD_CHANNELS, random_official_state_dict

    import torch
    from gesco_diffusers.convert import convert_official_checkpoint
    from gesco_diffusers.pipelines import GescoPipeline

    checkpoint = tmp_path / "model.pt"
    torch.save(random_official_state_dict(seed=3, segmap_channels=13), checkpoint)
    with pytest.raises(ValueError, match="cannot infer the dataset from C = 13.*--classes"):
        convert_official_checkpoint(checkpoint, tmp_path / "a", num_head_channels=HEAD_CHANNELS, print_fn=None)
    classes = _classes(tmp_path, 12, name="roads12", instance_edges=True, generation_resolution=[32, 64])
    result = convert_official_checkpoint(checkpoint, tmp_path / "b", dataset=str(classes),
                                         num_head_channels=HEAD_CHANNELS, print_fn=None)
    pipe = GescoPipeline.from_pretrained(result.path)
    assert pipe.dataset_preset.name == "roads12" and pipe.dataset_preset.map_channels == 13
    assert pipe.dataset_preset.palette[2] == (2, 4, 6)
