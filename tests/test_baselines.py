"""The paper's comparison systems: DeepJSCC (Fig. 10), the learned map denoiser (Table IX) and their training script."""

from __future__ import annotations

import json
import math

import pytest
import torch

from _scripts import REPO, load_script
from fixture_data import CAMVID
from gesco_diffusers.baselines import DeepJSCC, latent_channels_for
from gesco_diffusers.channel import AWGNChannel, RayleighFadingChannel
from gesco_diffusers.receiver import FastDenoisingSemantic, MapDenoiser
from gesco_diffusers.sender.encoding import SemanticEncoder

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def train_baseline():
    return load_script("train_baseline", REPO / "training" / "train_baseline.py")


# ------------------------------------------------------------------------------------------------------------ DeepJSCC
@pytest.mark.parametrize("ratio, planes", [(1 / 48, 2), (1 / 12, 8), (0.25, 24), (0.5, 48)])
def test_bandwidth_ratio_sets_the_latent_planes(ratio, planes):
    # k/n = (c/2)(H/4)(W/4) / (3 H W) = c / 96
    assert latent_channels_for(ratio) == planes
    model = DeepJSCC(resolution=(16, 20), bandwidth_ratio=ratio)
    assert model.encode(torch.rand(1, 3, 16, 20)).shape == (1, planes, 4, 5)
    assert model.channel_uses_per_pixel == pytest.approx(3 * ratio)


@pytest.mark.parametrize("ratio", [0.3, 1 / 96, 0.0, -0.25, float("nan")])
def test_a_bandwidth_ratio_that_does_not_give_whole_complex_planes_is_refused(ratio):
    with pytest.raises(ValueError, match="bandwidth_ratio"):
        DeepJSCC(bandwidth_ratio=ratio)


def test_bad_resolutions_and_images_are_refused_before_the_network_runs():
    with pytest.raises(ValueError, match="multiples of 4"):
        DeepJSCC(resolution=(62, 80))
    model = DeepJSCC(resolution=(16, 20), bandwidth_ratio=1 / 48)
    with pytest.raises(ValueError, match="trained for 16x20"):
        model(torch.rand(1, 3, 32, 40))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        model(torch.rand(1, 3, 16, 20) * 2 - 1)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 1, 16, 20))


def test_symbols_have_unit_power_and_the_channel_adds_eq15_noise():
    model = DeepJSCC(resolution=(32, 40), bandwidth_ratio=0.5)
    symbols = model.encode(torch.rand(3, 3, 32, 40))
    assert symbols.pow(2).flatten(1).mean(1).tolist() == pytest.approx([1.0] * 3, rel=1e-5)
    # Eq. 15 with P = 1: sigma = 10^(-PSNR/20) per real element, 0.316 at 10 dB: the same as on a one-hot map.
    received = AWGNChannel(10.0)(symbols, generator=torch.Generator().manual_seed(0))
    assert float((received - symbols).std()) == pytest.approx(10 ** (-10 / 20), rel=0.03)


def test_reconstruction_depends_only_on_the_generator_and_degrades_with_noise():
    torch.manual_seed(0)
    model = DeepJSCC(resolution=(16, 20), bandwidth_ratio=0.25).eval()
    x = torch.rand(2, 3, 16, 20)
    with torch.no_grad():
        a = model(x, AWGNChannel(1.0), torch.Generator().manual_seed(5))
        b = model(x, AWGNChannel(1.0), torch.Generator().manual_seed(5))
        c = model(x, AWGNChannel(1.0), torch.Generator().manual_seed(6))
        clean = model(x)
        faded = model(x, RayleighFadingChannel(1.0), torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, clean) and not torch.equal(faded, clean)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_deepjscc_round_trips_through_save_pretrained(tmp_path):
    model = DeepJSCC(resolution=(16, 20), bandwidth_ratio=1 / 12)
    model.save_pretrained(tmp_path)
    loaded = DeepJSCC.from_pretrained(tmp_path)
    assert loaded.config.bandwidth_ratio == pytest.approx(1 / 12) and tuple(loaded.config.resolution) == (16, 20)
    x = torch.rand(1, 3, 16, 20)
    assert torch.equal(model(x), loaded(x))


# ------------------------------------------------------------------------------------------------ learned denoiser
def _received(num_classes=12, psnr=5.0, seed=0):
    labels = torch.randint(0, 4, (2, 16, 20), generator=torch.Generator().manual_seed(seed))
    sent = SemanticEncoder(num_classes).encode(labels)
    return labels, sent, AWGNChannel(psnr)(sent.one_hot, sent.transmitted, torch.Generator().manual_seed(seed))


def test_the_denoiser_returns_a_one_hot_map_of_transmitted_classes_only():
    labels, sent, received = _received()
    out = MapDenoiser(num_classes=12).eval()(received, sent.transmitted)
    assert out.shape == received.shape
    assert torch.equal(out.sum(1), torch.ones(2, 16, 20))  # one class per pixel
    assert float(out[~sent.transmitted].abs().sum()) == 0  # absent classes stay exact zeros (Eq. 1's Pad)


def test_the_denoiser_refuses_maps_of_another_dataset_or_size():
    denoiser = MapDenoiser(num_classes=12)
    _, sent, received = _received(num_classes=35)
    with pytest.raises(ValueError, match="trained for maps of 12 class channels"):
        denoiser(received, sent.transmitted)
    with pytest.raises(ValueError, match="multiples of 4"):
        denoiser(torch.zeros(1, 12, 18, 20))


def test_the_training_script_resumes_exactly_and_refuses_to_overwrite(train_baseline, tmp_path):
    """4 steps in one go equal the same run resumed from its step-2 checkpoint, bit for bit."""
    import shutil

    common = ["denoiser", "--data_dir", str(CAMVID), "--resolution", "16", "20", "--train_batch_size", "4",
              "--learning_rate", "3e-3", "--checkpointing_steps", "2", "--log_every", "100", "--max_train_steps", "4"]
    straight = train_baseline.main(common + ["--output_dir", str(tmp_path / "a")])
    with pytest.raises(FileExistsError, match="already holds files"):
        train_baseline.main(common + ["--output_dir", str(tmp_path / "a")])
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")  # as if killed after step 2
    resumed = train_baseline.main(common + ["--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", "latest"])
    a, b = MapDenoiser.from_pretrained(tmp_path / "a"), MapDenoiser.from_pretrained(tmp_path / "b")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert straight["steps"] == resumed["steps"] == 4 and straight["losses_tail"] == resumed["losses_tail"]
    log = json.loads((tmp_path / "a" / "training_log.json").read_text())
    assert "data_dir" not in log["args"] and log["num_parameters"] == sum(p.numel() for p in a.parameters())
    assert str(tmp_path) not in log["command"] and str(CAMVID) not in log["command"]  # no machine paths ship
    card = (tmp_path / "a" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: diffusers") and "# Learned map denoiser (paper Table IX)" in card
    assert f"Parameters: {log['num_parameters']:,}" in card and str(tmp_path) not in card


def test_the_training_script_refuses_bad_input_in_one_line(train_baseline, tmp_path):
    with pytest.raises(SystemExit):
        train_baseline.parse_args(["deepjscc", "--data_dir", "x", "--output_dir", "y", "--clean_probability", "2"])
    with pytest.raises(ValueError, match="bandwidth_ratio"):
        train_baseline.main(["deepjscc", "--data_dir", str(CAMVID), "--output_dir", str(tmp_path / "c"),
                             "--bandwidth_ratio", "0.3", "--max_train_steps", "1"])


def test_paper_fds_is_parameter_free_and_the_denoiser_is_not():
    # Table IX's "Params" column: FDS 0, the learned denoiser its weights.
    assert sum(p.numel() for p in FastDenoisingSemantic().parameters()) == 0
    assert sum(p.numel() for p in MapDenoiser(num_classes=12).parameters()) > 0
    assert math.isfinite(float(next(MapDenoiser(num_classes=12).parameters()).sum()))
