"""Tests of the segmentation judge (mIoU protocol, Eq. 16) and of the CamVid judge training script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from gesco_diffusers.evaluation import (
    CITYSCAPES_IGNORE_TRAIN_ID,
    CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    SegmentationJudge,
    default_camvid_judge_path,
)

from fixture_data import CAMVID

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def _load_train_judge():
    spec = importlib.util.spec_from_file_location("train_judge", REPO / "training" / "train_judge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_judge = _load_train_judge()


def _images(n: int, h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny_judge_dir(tmp_path_factory):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    config = SegformerConfig(
        num_labels=4, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=16,
    )
    folder = tmp_path_factory.mktemp("tiny_judge")
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    (folder / "judge_config.json").write_text(json.dumps({"ignore_index": 9}))
    return folder


@pytest.fixture(scope="module")
def tiny_judge(tiny_judge_dir):
    return SegmentationJudge.from_pretrained(tiny_judge_dir, batch_size=2)


def test_from_pretrained_reads_side_files(tiny_judge):
    assert tiny_judge.num_classes == 4
    assert tiny_judge.ignore_index == 9
    assert tiny_judge.image_mean.flatten().tolist() == [0.5] * 3
    assert tiny_judge.image_std.flatten().tolist() == [0.25] * 3


def test_predict_returns_maps_at_input_or_requested_size(tiny_judge):
    images = _images(3)
    maps = tiny_judge.predict(images)
    assert maps.shape == (3, 24, 32) and maps.dtype == torch.int64
    assert int(maps.min()) >= 0 and int(maps.max()) < 4
    assert tiny_judge.logits(images, output_size=(12, 16)).shape == (3, 4, 12, 16)
    # uint8 and PIL inputs give the same maps as the float tensor they represent.
    as_uint8 = (images * 255).round().to(torch.uint8)
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in as_uint8]
    assert torch.equal(tiny_judge.predict(as_uint8), tiny_judge.predict(pil))


def test_batching_and_processing_size(tiny_judge_dir):
    images = _images(5)
    one_batch = SegmentationJudge.from_pretrained(tiny_judge_dir, batch_size=8).logits(images)
    small_batches = SegmentationJudge.from_pretrained(tiny_judge_dir, batch_size=2).logits(images)
    assert torch.allclose(one_batch, small_batches, atol=1e-5)
    resized = SegmentationJudge.from_pretrained(tiny_judge_dir, processing_size=(48, 64)).predict(images)
    assert resized.shape == (5, 24, 32)


def test_judge_miou_reference_modes(tiny_judge):
    generated = _images(2, seed=1)
    own = tiny_judge.predict(generated)
    assert tiny_judge.judge_miou(generated, own).miou == pytest.approx(1.0)
    # The judge on the original photo as reference; originals at another resolution are predicted at the
    # generated size.
    result = tiny_judge.judge_miou(generated, reference="judge_on_original", original_images=generated)
    assert result.miou == pytest.approx(1.0)
    different = tiny_judge.judge_miou(generated, reference="judge_on_original", original_images=_images(2, seed=2))
    assert different.miou < 1.0
    large = torch.nn.functional.interpolate(generated, size=(48, 64), mode="bilinear", align_corners=False)
    assert tiny_judge.judge_miou(generated, reference="judge_on_original", original_images=large).num_pixels == 2 * 24 * 32
    # Ignored reference pixels do not count.
    labels = own.clone()
    labels[:, :, :16] = 9
    assert tiny_judge.judge_miou(generated, labels).num_pixels == 2 * 24 * 16


def test_update_accumulates_over_batches(tiny_judge):
    generated = _images(4, seed=3)
    labels = torch.randint(0, 4, (4, 24, 32), generator=torch.Generator().manual_seed(4))
    matrix = tiny_judge.new_confusion_matrix()
    tiny_judge.update(matrix, generated[:2], reference_labels=labels[:2])
    tiny_judge.update(matrix, generated[2:], reference_labels=labels[2:])
    assert matrix.compute().miou == pytest.approx(tiny_judge.judge_miou(generated, labels).miou)


def test_judge_input_errors(tiny_judge):
    with pytest.raises(ValueError, match="do not match"):
        tiny_judge.judge_miou(_images(1), torch.zeros(1, 12, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="reference must be"):
        tiny_judge.judge_miou(_images(1), reference="original")
    with pytest.raises(ValueError, match="needs original_images"):
        tiny_judge.judge_miou(_images(1), reference="judge_on_original")
    with pytest.raises(ValueError, match="shape"):
        tiny_judge.predict(torch.rand(1, 4, 24, 32))
    with pytest.raises(ValueError, match="outside"):
        tiny_judge.judge_miou(_images(1), torch.full((1, 24, 32), 5))


def test_label_id_map_cityscapes_table(tiny_judge_dir):
    table = CITYSCAPES_LABEL_ID_TO_TRAIN_ID
    assert len(table) == 35
    assert sorted(set(table) - {CITYSCAPES_IGNORE_TRAIN_ID}) == list(range(19))
    assert (table[7], table[8], table[11], table[24], table[26], table[33], table[34]) == (0, 1, 2, 11, 13, 18, 255)
    # A 4-class judge with a 6-id dataset: ids 0,1 -> 255 (ignored), 2..5 -> 0..3.
    judge = SegmentationJudge.from_pretrained(tiny_judge_dir, ignore_index=255, label_id_map=[255, 255, 0, 1, 2, 3])
    assert judge.map_labels(torch.tensor([[0, 2, 5]])).tolist() == [[255, 0, 3]]
    generated = _images(1, seed=5)
    dataset_labels = judge.predict(generated) + 2  # the same map, written in dataset ids
    assert judge.judge_miou(generated, dataset_labels).miou == pytest.approx(1.0)
    with pytest.raises(ValueError, match="label_id_map"):
        judge.map_labels(torch.tensor([6]))
    with pytest.raises(ValueError, match="collides"):
        SegmentationJudge.from_pretrained(tiny_judge_dir, ignore_index=2)


def test_missing_judge_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SegmentationJudge.from_pretrained(tmp_path / "no" / "judge")


# ------------------------------------------------------------------------------------------- shipped CamVid judge
def _shipped_judge_path() -> Path:
    path = default_camvid_judge_path(check_exists=False)
    if not (path / "config.json").is_file():
        pytest.skip("the CamVid judge is not shipped in this checkout")
    return path


def test_shipped_camvid_judge_on_val_photos():
    judge = SegmentationJudge.from_pretrained(_shipped_judge_path())
    assert judge.num_classes == 11 and judge.ignore_index == 11
    images, labels = train_judge.load_split(CAMVID, "val", limit=4)
    maps = judge.predict(images[:2])
    assert maps.shape == (2, 180, 240) and int(maps.max()) < 12
    assert judge.judge_miou(images, labels).miou > 0.2


# ------------------------------------------------------------------------------------------------ training script
def test_augment_batch_is_seeded_and_keeps_labels_valid():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 30, 40), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 12, (3, 30, 40), dtype=torch.uint8, generator=g)
    runs = [
        train_judge.augment_batch(images, labels, (24, 32), (0.5, 1.5), torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    x, y = runs[0]
    assert x.shape == (3, 3, 24, 32) and y.shape == (3, 24, 32)
    assert set(torch.unique(y).tolist()) <= set(range(12))
    # Scaled to half size (15x20 < 24x32): padded with the ignore id.
    _, y_small = train_judge.augment_batch(images, labels, (24, 32), (0.5, 0.5), torch.Generator().manual_seed(1))
    assert ((y_small == 11).float().mean(dim=(1, 2)) >= 1 - 15 * 20 / (24 * 32) - 1e-6).all()


def test_class_weights_and_poly_lr():
    labels = torch.tensor([[0, 0, 0, 0, 1, 1, 2, 11]])
    weights = train_judge.class_weights(labels)
    # frequencies 4/7, 2/7, 1/7 -> median 2/7 -> sqrt(0.5), 1, sqrt(2); absent classes 0.
    assert weights[:3].tolist() == pytest.approx([0.5**0.5, 1.0, 2**0.5])
    assert weights[3:].abs().sum() == 0
    assert train_judge.poly_lr(0, 0.0, 1.0, warmup=10) == pytest.approx(0.1)
    assert train_judge.poly_lr(20, 0.5, 1.0, warmup=10) == pytest.approx(0.5**0.9)
    assert train_judge.poly_lr(20, 1.0, 1.0, warmup=10) == 0.0


def test_smoke_training_writes_a_loadable_judge(tmp_path):
    out = tmp_path / "judge"
    result = train_judge.main(["--smoke", "--output_dir", str(out), "--data_root", str(CAMVID)])
    assert result["training"]["steps"] == 3
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "judge_config.json",
                 "training_log.json", "README.md", "eval_results.json"):
        assert (out / name).is_file(), name
    assert not out.with_name("judge.checkpoint").exists()  # checkpoints are removed after the final save
    evaluation = json.loads((out / "eval_results.json").read_text())
    assert evaluation["num_val_images"] == 2
    assert 0.0 <= evaluation["native_180x240"]["miou"] <= 1.0
    judge = SegmentationJudge.from_pretrained(out)
    assert judge.ignore_index == 11 and judge.class_names[3] == "road"
    assert judge.predict(torch.rand(1, 3, 64, 80)).shape == (1, 64, 80)


def test_smoke_refuses_to_overwrite_the_shipped_judge():
    with pytest.raises(SystemExit):
        train_judge.parse_args(["--smoke"])


# ---------------------------------------------------------------------------------------------------------------------
# Resuming never unpickles (issue #14)


class PlantedCode:
    """Unpickling this object opens (creates) ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_training_checkpoint_round_trip_never_unpickles(tmp_path, tiny_judge_dir):
    from transformers import SegformerForSemanticSegmentation

    def setup(seed):
        torch.manual_seed(seed)
        model = SegformerForSemanticSegmentation.from_pretrained(tiny_judge_dir)
        for p in model.parameters():
            p.data.add_(torch.randn_like(p) * 0.01)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3), torch.Generator().manual_seed(seed)

    model, optimizer, generator = setup(0)
    model(pixel_values=torch.rand(1, 3, 16, 16)).logits.mean().backward()
    optimizer.step()
    torch.rand(5, generator=generator)
    ckpt = tmp_path / "judge.checkpoint"
    train_judge.save_training_checkpoint(ckpt, model, optimizer, generator, 7, 12.5, [0.9, 0.8])
    assert sorted(p.suffix for p in ckpt.iterdir()) == [".json", ".json", ".json", ".safetensors", ".safetensors",
                                                        ".safetensors"]
    torch.save({"state": PlantedCode(tmp_path / "ran")}, ckpt / "training_state.pt")  # the former pickle's name

    other, other_optimizer, other_generator = setup(1)
    assert train_judge.load_training_checkpoint(ckpt, other, other_optimizer, other_generator) == (7, 12.5, [0.9, 0.8])
    assert not (tmp_path / "ran").exists()
    assert torch.equal(other_generator.get_state(), generator.get_state())
    for ours, theirs in zip(other.parameters(), model.parameters()):
        assert torch.equal(ours, theirs)
    assert other_optimizer.state_dict()["state"][0]["exp_avg"].equal(optimizer.state_dict()["state"][0]["exp_avg"])

    (ckpt / "training_state.json").unlink()  # only the pickle left: refused, not unpickled
    with pytest.raises(ValueError, match="is a pickle from an older version"):
        train_judge.load_training_checkpoint(ckpt, other, other_optimizer, other_generator)
    assert not (tmp_path / "ran").exists()
    assert train_judge.load_training_checkpoint(tmp_path / "none", other, other_optimizer, other_generator) is None


def test_resume_ignores_a_planted_pickle(tmp_path, capsys):
    out = tmp_path / "judge"
    common = ["--smoke", "--output_dir", str(out), "--data_root", str(CAMVID), "--skip_eval", "--keep_checkpoint"]
    assert train_judge.main(common)["training"]["steps"] == 3  # checkpoint at step 2 (every 2 steps), kept
    ckpt = out.with_name("judge.checkpoint")
    torch.save({"state": PlantedCode(tmp_path / "ran")}, ckpt / "training_state.pt")
    assert train_judge.main([*common, "--resume"])["training"]["steps"] == 3
    assert f"resumed from {ckpt} at step 2" in capsys.readouterr().out and not (tmp_path / "ran").exists()


def test_a_broken_judge_side_file_is_an_error_not_a_silent_default(tmp_path):
    from gesco_diffusers.evaluation.metrics._pretrained import read_json

    assert read_json(tmp_path, "judge_config.json") is None  # absent: optional
    (tmp_path / "judge_config.json").write_text('{"ignore_index": 11,')  # truncated
    with pytest.raises(ValueError, match="judge_config.json: not a valid JSON file"):
        read_json(tmp_path, "judge_config.json")
    (tmp_path / "judge_config.json").write_text("[11]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        read_json(tmp_path, "judge_config.json")


def test_shipped_files_carry_no_absolute_path_of_the_build_machine():
    """A published folder must not name the training machine's folders (the judge's training log once did)."""
    import re

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r'"(/work|/tmp|/root|/home)/')
    shipped = [p for folder in ("gesco_diffusers/assets", "hub_cards") for p in (root / folder).rglob("*")
               if p.is_file() and p.suffix in (".json", ".md", ".txt", ".yaml", ".py")]
    assert shipped and not [str(p) for p in shipped if pattern.search(p.read_text(errors="ignore"))]


def test_logged_paths_are_made_relative():
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location(
        "train_judge_script", Path(__file__).resolve().parents[1] / "training" / "train_judge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._portable(os.path.join(os.getcwd(), "runs", "judge")) == os.path.join("runs", "judge")
    assert module._portable((1, 2)) == [1, 2] and module._portable("relative/path") == "relative/path"
