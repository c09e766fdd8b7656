"""The fast-denoising semantic block (Eq. 1): AvgPool -> MaxPool on transmitted channels, Pad absent ones."""

import numpy as np
import pytest
import torch
from PIL import Image

from gesco_diffusers.channel import AWGNChannel
from gesco_diffusers.evaluation.metrics.miou import compute_miou
from gesco_diffusers.presets import get_dataset_preset
from gesco_diffusers.receiver import FastDenoisingSemantic, fast_denoise
from gesco_diffusers.sender import SemanticEncoder

from fixture_data import fixture_path

CAMVID_VAL = fixture_path("camvid_val_labels", "first20")  # the first 20 CamVid val maps


def test_fds_has_no_parameters():
    fds = FastDenoisingSemantic()
    assert sum(p.numel() for p in fds.parameters()) == 0
    assert len(list(fds.buffers())) == 0
    assert "avg_kernel_size=3" in repr(fds)


def test_fds_matches_hand_computed_example():
    received = torch.zeros(1, 1, 5, 5)
    received[0, 0, 2, 2] = 9.0  # a single spike
    out = fast_denoise(received)
    # AvgPool 3x3 (zero padding counted) spreads it to 1.0 on the 3x3 around (2, 2); MaxPool 3x3 dilates that to
    # the whole 5x5 map.
    assert torch.equal(out, torch.ones(1, 1, 5, 5))
    corner = torch.zeros(1, 1, 4, 4)
    corner[0, 0, 0, 0] = 9.0
    # count_include_pad=True: the corner average divides by 9, not by the 4 valid pixels.
    expected_avg = torch.zeros(4, 4)
    expected_avg[:2, :2] = 1.0
    assert torch.equal(fast_denoise(corner, avg_kernel_size=3, max_kernel_size=1)[0, 0], expected_avg)


def test_fds_equals_torch_pooling_per_channel():
    received = torch.randn(2, 4, 9, 11, generator=torch.Generator().manual_seed(0))
    pooled = torch.nn.MaxPool2d(5, 1, 2)(torch.nn.AvgPool2d(3, 1, 1, count_include_pad=True)(received))
    assert torch.allclose(FastDenoisingSemantic(3, 5)(received), pooled)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("with_edges", [False, True])
def test_absent_channels_are_exact_zeros(batch, with_edges):
    labels = torch.randint(0, 3, (batch, 12, 12), generator=torch.Generator().manual_seed(batch))  # of 5 classes
    encoder = SemanticEncoder(5, use_instance_edges=with_edges)
    encoded = encoder.encode(labels, labels if with_edges else None)
    noisy = AWGNChannel(5.0)(encoded.one_hot, encoded.transmitted, torch.Generator().manual_seed(0))
    out = FastDenoisingSemantic()(noisy, encoded.transmitted)
    assert out.shape == encoded.one_hot.shape
    assert torch.equal(out[:, 3:5], torch.zeros_like(out[:, 3:5]))
    assert (out[encoded.transmitted] != 0).any()
    if with_edges:
        assert encoded.transmitted[:, -1].all() and (out[:, -1] != 0).any()  # the edge channel is pooled too


def test_bad_inputs_rejected():
    with pytest.raises(ValueError, match="odd"):
        FastDenoisingSemantic(avg_kernel_size=2)
    with pytest.raises(ValueError, match="odd"):
        fast_denoise(torch.zeros(1, 1, 4, 4), max_kernel_size=0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        fast_denoise(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        fast_denoise(torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="transmitted must have shape"):
        fast_denoise(torch.zeros(2, 3, 4, 4), torch.ones(2, 2, dtype=torch.bool))


def test_fds_improves_map_miou_at_10db_on_camvid():
    preset = get_dataset_preset("camvid")
    files = sorted(CAMVID_VAL.glob("*.png"))
    assert len(files) == 20, files
    labels = torch.from_numpy(np.stack([np.array(Image.open(f)) for f in files]).astype(np.int64))
    encoded = SemanticEncoder.from_preset(preset).encode(labels)
    received = AWGNChannel(10.0)(encoded.one_hot, encoded.transmitted, torch.Generator().manual_seed(0))
    cleaned = FastDenoisingSemantic()(received, encoded.transmitted)
    miou_raw = compute_miou(received.argmax(1), labels, preset.num_classes, preset.ignore_ids).miou
    miou_fds = compute_miou(cleaned.argmax(1), labels, preset.num_classes, preset.ignore_ids).miou
    assert miou_fds > miou_raw + 0.1, (miou_raw, miou_fds)
