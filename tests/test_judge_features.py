"""The judge-feature Frechet distance (issue #16): pooled encoder features of the shipped CamVid judge, used as
the feature network of FIDMetric. A realism figure that a blurry image cannot game the way judge mIoU can."""

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from gesco_diffusers.evaluation.metrics import FIDMetric, JudgeFeatureExtractor, SegmentationJudge
from gesco_diffusers.evaluation.metrics.segmentation_judge import default_camvid_judge_path

SAMPLES = Path(__file__).resolve().parents[1] / "gesco_diffusers" / "assets" / "samples" / "camvid" / "val" / "images"


@pytest.fixture(scope="module")
def judge():
    return SegmentationJudge.from_pretrained(default_camvid_judge_path())


def sample_photos() -> torch.Tensor:
    files = sorted(SAMPLES.glob("*.png"))
    assert len(files) >= 4, f"shipped sample photos missing in {SAMPLES}"
    photos = [torch.from_numpy(np.asarray(PIL.Image.open(f).convert("RGB").resize((80, 64)))) for f in files]
    return torch.stack(photos).permute(0, 3, 1, 2).float() / 255.0


def test_pooled_features_are_the_last_encoder_stage_averaged(judge):
    photos = sample_photos()
    features = judge.pooled_features(photos)
    assert features.shape == (len(photos), judge.model.config.hidden_sizes[-1])
    normalised = (photos - judge.image_mean) / judge.image_std
    hidden = judge.model(pixel_values=normalised, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(features, hidden.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)


def test_judge_fd_is_zero_for_the_same_set_and_grows_with_blur(judge):
    photos = sample_photos()
    # Flips and small shifts make a set of 16 images (a covariance needs more images than the 4 samples).
    real = torch.cat([photos, photos.flip(-1), photos.roll(4, -1), photos.roll(-4, -1)])
    fd = FIDMetric(JudgeFeatureExtractor(judge))
    fd.update(real, real=True)
    fd.update(real, real=False)
    same = fd.compute()
    assert abs(same) < 1e-4  # float64 eigen-decompositions of rank-deficient covariances
    blurred = F.avg_pool2d(real, 9, stride=1, padding=4, count_include_pad=False)
    fd.reset()
    fd.update(real, real=True)
    fd.update(blurred, real=False)
    assert fd.compute() > 1.0  # 7.2 for a 9x9 box blur
