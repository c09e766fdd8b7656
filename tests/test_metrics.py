"""Tests of gesco_diffusers.evaluation.metrics: mIoU, FID, LPIPS, detection mAP (DETR) and depth RMSE (DPT).

Every network is a tiny randomly initialised one built from a config; nothing is downloaded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from gesco_diffusers.evaluation import (
    COCO_IOU_THRESHOLDS,
    ConfusionMatrix,
    DepthEstimator,
    DepthRMSE,
    DetectionMAP,
    DetrDetector,
    FeatureStatistics,
    FIDMetric,
    LPIPSMetric,
    align_scale_shift,
    box_iou,
    compute_miou,
    depth_rmse,
    frechet_distance,
    load_fid_inception,
    lpips_distance,
    lpips_diversity,
    mean_average_precision,
    sqrtm_psd,
)

torch.set_num_threads(1)


def _images(n: int, h: int = 32, w: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------------------ mIoU
def test_miou_matches_hand_computed_confusion_matrix_with_ignore_id():
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])
    target = torch.tensor([[0, 1, 2], [2, 255, 1]])  # 255: not evaluated, whatever is predicted there
    result = compute_miou(pred, target, num_classes=3, ignore_ids=(255,))
    # Rows = reference, columns = prediction, over the 5 evaluated pixels.
    assert result.confusion_matrix.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    # IoU_0 = 1 / (1 + 2 - 1), IoU_1 = 1 / (2 + 2 - 1), IoU_2 = 1 / (2 + 1 - 1)
    assert torch.allclose(result.per_class_iou, torch.tensor([1 / 2, 1 / 3, 1 / 2], dtype=torch.float64))
    assert result.miou == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert result.pixel_accuracy == pytest.approx(3 / 5)
    assert result.num_pixels == 5


def test_miou_in_range_ignore_class_and_absent_classes_are_excluded():
    # num_classes 4 with id 3 ignored (like CamVid's unlabelled 11); class 2 appears nowhere -> NaN, excluded.
    target = np.array([[0, 0, 1, 3]])
    pred = np.array([[0, 1, 1, 0]])
    result = compute_miou(pred, target, num_classes=4, ignore_ids=(3,))
    assert math.isnan(result.per_class_iou[2]) and math.isnan(result.per_class_iou[3])
    assert result.per_class_iou[0].item() == pytest.approx(1 / 2)
    assert result.per_class_iou[1].item() == pytest.approx(1 / 2)
    assert result.miou == pytest.approx(0.5)


def test_prediction_of_ignored_id_is_a_miss():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 255, 1, 1])
    result = compute_miou(pred, target, num_classes=2, ignore_ids=(255,))
    assert result.per_class_iou.tolist() == pytest.approx([1 / 2, 1.0])
    assert result.pixel_accuracy == pytest.approx(3 / 4)


def test_confusion_matrix_accumulates_batches_like_one_call():
    g = torch.Generator().manual_seed(1)
    pred = torch.randint(0, 5, (6, 8, 9), generator=g)
    target = torch.randint(0, 6, (6, 8, 9), generator=g)  # id 5 ignored
    matrix = ConfusionMatrix(5, ignore_ids=(5,))
    for i in range(0, 6, 2):
        matrix.update(pred[i : i + 2], target[i : i + 2])
    whole = compute_miou(pred, target, 5, (5,))
    assert torch.equal(matrix.compute().confusion_matrix, whole.confusion_matrix)
    assert matrix.compute().miou == pytest.approx(whole.miou)
    merged = ConfusionMatrix(5, (5,)).update(pred[:3], target[:3]).merge(ConfusionMatrix(5, (5,)).update(pred[3:], target[3:]))
    assert torch.equal(merged.matrix, whole.confusion_matrix)


@pytest.mark.parametrize(
    "pred, target, error",
    [
        (torch.tensor([0, 1]), torch.tensor([0, 1, 1]), ValueError),  # shape
        (torch.tensor([0, 7]), torch.tensor([0, 1]), ValueError),  # id out of range
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), TypeError),  # float labels
    ],
)
def test_miou_rejects_bad_inputs(pred, target, error):
    with pytest.raises(error):
        compute_miou(pred, target, num_classes=3)


# ------------------------------------------------------------------------------------------------------------- FID
def _random_psd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d + 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / d


def test_sqrtm_and_frechet_distance_match_scipy():
    s1, s2 = _random_psd(6, 0), _random_psd(6, 1)
    root = sqrtm_psd(s1)
    assert torch.allclose(root @ root, s1, atol=1e-10)
    mu1, mu2 = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    covmean = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = ((mu1 - mu2) ** 2).sum().item() + np.trace(s1.numpy() + s2.numpy() - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_diagonal_gaussians_closed_form():
    # For diagonal covariances: sum (mu1-mu2)^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(mu1, torch.diag(torch.tensor([1.0, -1.0, 1.0])), mu2, torch.diag(b))


def test_feature_statistics_match_numpy_over_batches():
    feats = torch.randn(40, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 3.0
    stats = FeatureStatistics().update(feats[:17]).update(feats[17:])
    mean, cov = stats.mean_and_covariance()
    assert torch.allclose(mean, feats.mean(0))
    assert torch.allclose(cov, torch.from_numpy(np.cov(feats.numpy(), rowvar=False)))


class _TinyFeatures(torch.nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x):
        return self.conv(x).flatten(1)


def test_fid_is_zero_for_identical_sets_and_grows_with_noise():
    real = _images(48, seed=3)
    fid = FIDMetric(_TinyFeatures(), batch_size=16)
    fid.update(real, real=True)
    fid.update(real, real=False)
    assert abs(fid.compute()) < 1e-8
    values = []
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(4))
    for sigma in (0.05, 0.15, 0.4):
        fid.generated = FeatureStatistics()
        fid.update((real + sigma * noise).clamp(0, 1), real=False)
        values.append(fid.compute())
    assert 0 < values[0] < values[1] < values[2]


def test_fid_inception_needs_local_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="FID Inception weights not found"):
        load_fid_inception(tmp_path / "missing.pth")


def test_fid_inception_loads_a_local_weights_file(tmp_path, monkeypatch):
    feature_extractor = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    # Make a correctly shaped (random) weights file: build the network once without any state dict.
    monkeypatch.setattr(feature_extractor, "load_state_dict_from_url", lambda *a, **k: None)
    monkeypatch.setattr(feature_extractor.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    net = feature_extractor.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    monkeypatch.undo()
    path = tmp_path / "weights-inception.pth"
    torch.save(net.state_dict(), path)
    fid = FIDMetric(path)
    features = fid.features(_images(2, 48, 48))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()


# ----------------------------------------------------------------------------------------------------------- LPIPS
@pytest.fixture(scope="module")
def lpips_metric():
    return LPIPSMetric("alex", pretrained_backbone=False)


def test_lpips_zero_for_identical_and_positive_for_different(lpips_metric):
    a, b = _images(2, 64, 64, seed=5), _images(2, 64, 64, seed=6)
    assert torch.allclose(lpips_distance(a, a, lpips_metric), torch.zeros(2), atol=1e-7)
    assert (lpips_distance(a, b, lpips_metric) > 0).all()


def test_lpips_diversity_is_mean_over_pairs(lpips_metric):
    samples = _images(3, 64, 64, seed=7)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = torch.stack([lpips_metric(samples[i], samples[j])[0] for i, j in pairs]).mean()
    assert lpips_diversity(samples, lpips_metric) == pytest.approx(expected.item(), rel=1e-5)
    assert lpips_diversity(torch.cat([samples[:1]] * 3), lpips_metric) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="at least 2"):
        lpips_diversity(samples[:1], lpips_metric)


def test_lpips_backbone_loaded_from_local_torchvision_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.alexnet().state_dict()
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    metric = LPIPSMetric("alex", backbone_weights=path)
    loaded = metric.model.net.state_dict()
    assert torch.equal(loaded["slice1.0.weight"], state["features.0.weight"])
    assert torch.equal(loaded["slice5.10.bias"], state["features.10.bias"])
    with pytest.raises(FileNotFoundError, match="backbone weights not found"):
        LPIPSMetric("alex", backbone_weights=tmp_path / "missing.pth")


def test_lpips_rejects_bad_images(lpips_metric):
    with pytest.raises(ValueError, match="same shape"):
        lpips_metric(_images(1, 64, 64), _images(1, 64, 72))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lpips_metric(_images(1, 64, 64) * 2 - 1, _images(1, 64, 64))
    with pytest.raises(ValueError, match="NaN"):
        lpips_metric(torch.full((1, 3, 64, 64), float("nan")), _images(1, 64, 64))


# --------------------------------------------------------------------------------------------- detection AP / DETR
def _entry(boxes, labels, scores=None):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
    if scores is not None:
        out["scores"] = torch.tensor(scores)
    return out


def test_box_iou():
    iou = box_iou(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[0.0, 0, 10, 5], [20.0, 20, 30, 30]]))
    assert iou.tolist() == [[0.5, 0.0]]


def test_ap_is_one_for_identical_boxes():
    refs = [_entry([[0, 0, 10, 10], [5, 5, 20, 25]], [1, 2]), _entry([[30, 30, 40, 50]], [1])]
    preds = [{**r, "scores": torch.tensor([0.9, 0.8][: len(r["labels"])])} for r in refs]
    result = mean_average_precision(preds, refs)
    assert result.map == pytest.approx(1.0) and result.map50 == pytest.approx(1.0)
    assert set(result.ap) == {1, 2}


def test_ap_hand_checked_small_case():
    # Two reference boxes; detections by score: hit, false positive, hit -> precision 1, 1/2, 2/3, recall .5, .5, 1.
    # Envelope: 1 up to recall .5, 2/3 up to recall 1 -> 101-point AP = (51 * 1 + 50 * 2/3) / 101.
    refs = [_entry([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
    preds = [_entry([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0, 0, 0], [0.9, 0.8, 0.7])]
    result = mean_average_precision(preds, refs, iou_thresholds=(0.5,))
    assert result.map == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_ap_over_coco_thresholds_counts_thresholds_below_the_iou():
    # IoU 0.62 passes 0.50, 0.55, 0.60 only -> mAP@[.5:.95] = 3/10, mAP50 = 1, mAP75 = 0.
    refs = [_entry([[0, 0, 10, 10]], [3])]
    preds = [_entry([[0, 0, 10, 6.2]], [3], [0.5])]
    result = mean_average_precision(preds, refs, COCO_IOU_THRESHOLDS)
    assert result.map == pytest.approx(0.3)
    assert (result.map50, result.map75) == (pytest.approx(1.0), pytest.approx(0.0))


def test_ap_wrong_class_and_duplicates():
    refs = [_entry([[0, 0, 10, 10]], [1])]
    # A duplicate detection of the same object is a false positive ranked below the hit: AP stays 1 (101-point).
    dup = [_entry([[0, 0, 10, 10], [0, 0, 10, 10]], [1, 1], [0.9, 0.8])]
    assert mean_average_precision(dup, refs, (0.5,)).map == pytest.approx(1.0)
    # Ranked above the hit, it halves the precision at full recall: AP = 1/2.
    dup_first = [_entry([[40, 40, 50, 50], [0, 0, 10, 10]], [1, 1], [0.9, 0.8])]
    assert mean_average_precision(dup_first, refs, (0.5,)).map == pytest.approx(0.5)
    wrong = [_entry([[0, 0, 10, 10]], [2], [0.9])]
    assert mean_average_precision(wrong, refs, (0.5,)).map == 0.0


def test_detection_map_rejects_bad_entries():
    metric = DetectionMAP()
    with pytest.raises(ValueError, match="scores"):
        metric.update([_entry([[0, 0, 1, 1]], [0])], [_entry([[0, 0, 1, 1]], [0])])
    with pytest.raises(ValueError, match="x1 >= x0"):
        metric.update([_entry([[5, 0, 1, 1]], [0], [0.5])], [_entry([[0, 0, 1, 1]], [0])])


@pytest.fixture(scope="module")
def tiny_detr():
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    torch.manual_seed(0)
    backbone = ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
        out_features=["stage1", "stage2"],
    )
    config = DetrConfig(
        backbone_config=backbone, d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32,
        decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, num_queries=8,
        id2label={0: "car", 1: "person"}, label2id={"car": 0, "person": 1},
    )
    return DetrForObjectDetection(config), DetrImageProcessor(size={"shortest_edge": 48, "longest_edge": 96})


def test_tiny_detr_detects_and_scores_against_originals(tiny_detr, tmp_path):
    model, processor = tiny_detr
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    detector = DetrDetector.from_pretrained(tmp_path, batch_size=2)
    images = _images(3, 40, 56, seed=8)
    detections = detector.detect(images, threshold=0.0)
    assert len(detections) == 3
    assert detections[0]["boxes"].shape == (8, 4) and detections[0]["labels"].max() < 2
    # Boxes come in the requested image coordinates.
    scaled = detector.detect(images, threshold=0.0, target_size=(80, 112))
    assert torch.allclose(scaled[0]["boxes"], detections[0]["boxes"] * 2, atol=1e-3)
    # Same images as generated and as originals: every reference box is found exactly.
    result = detector.detection_map(images, images, reference_threshold=0.0, prediction_threshold=0.0)
    assert result.map == pytest.approx(1.0)


def test_detector_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DetrDetector.from_pretrained(tmp_path / "nope" / "detr")


# ------------------------------------------------------------------------------------------------------ depth RMSE
def test_alignment_recovers_known_scale_and_shift():
    g = torch.Generator().manual_seed(9)
    pred = torch.rand(2, 6, 7, generator=g, dtype=torch.float64)
    ref = torch.stack([2.5 * pred[0] - 0.7, -0.3 * pred[1] + 4.0])
    aligned, scale, shift = align_scale_shift(pred, ref)
    assert torch.allclose(scale, torch.tensor([2.5, -0.3], dtype=torch.float64))
    assert torch.allclose(shift, torch.tensor([-0.7, 4.0], dtype=torch.float64))
    assert torch.allclose(aligned, ref)
    assert depth_rmse(pred, ref).max().item() < 1e-12
    assert depth_rmse(pred, ref, align=False).min().item() > 0.1


def test_depth_rmse_hand_value_and_mask():
    pred = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    ref = torch.tensor([[[0.0, 1.0, 2.0, 5.0]]])
    # Without alignment: sqrt(4 / 4) = 1; the mask drops the outlier.
    assert depth_rmse(pred, ref, align=False).item() == pytest.approx(1.0)
    mask = torch.tensor([[[True, True, True, False]]])
    assert depth_rmse(pred, ref, mask).item() == pytest.approx(0.0, abs=1e-12)
    # Least squares on (0,0),(1,1),(2,2),(3,5): s = 1.6, t = -0.4, residuals .4 -.2 -.8 .6 -> RMSE sqrt(0.3).
    assert depth_rmse(pred, ref).item() == pytest.approx(math.sqrt(0.3))
    with pytest.raises(ValueError, match="same shape"):
        depth_rmse(pred, ref[..., :3])


def test_tiny_dpt_runs_and_rmse_is_zero_on_identical_images(tmp_path):
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    config = DPTConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32,
        patch_size=8, backbone_out_indices=[0, 1], neck_hidden_sizes=[8, 16], fusion_hidden_size=16,
        reassemble_factors=[1, 0.5],
    )
    DPTForDepthEstimation(config).save_pretrained(tmp_path)
    DPTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    estimator = DepthEstimator.from_pretrained(tmp_path)
    images = _images(2, 40, 56, seed=10)
    depth = estimator.predict(images)
    assert depth.shape == (2, 40, 56) and torch.isfinite(depth).all()
    assert estimator.depth_rmse(images, images) == pytest.approx(0.0, abs=1e-9)
    metric = estimator.update(DepthRMSE(), images, _images(2, 80, 112, seed=11))
    assert metric.count == 2 and metric.compute() >= 0
