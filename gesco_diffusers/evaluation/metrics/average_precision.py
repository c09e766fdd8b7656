"""Box mean average precision (mAP, mAP50 of Table V), COCO style, implemented here (no pycocotools needed).

For every class ``c`` that has at least one reference box and every IoU threshold ``t``:

1. per image, the class-``c`` detections are sorted by score (descending, stable) and truncated to
   ``max_detections``; each one, in that order, is matched to the still unmatched reference box of the same image
   with the highest IoU, provided that IoU >= ``t`` (greedy matching, as pycocotools' ``evaluateImg``);
2. all detections of the class are pooled and sorted by score; ``precision_k = TP_k / k`` and
   ``recall_k = TP_k / n_ref`` along that list; precision is replaced by its running maximum from the right
   (the precision envelope);
3. ``AP = (1/101) sum_{r in {0, 0.01, ..., 1}} p(r)``, with ``p(r)`` the envelope at the first rank whose recall is
   >= r (0 if recall never reaches r): COCO's 101-point interpolation.

``mAP`` is the mean of AP over classes and thresholds; classes without reference boxes are skipped (their AP is
undefined, COCO's -1). Differences from pycocotools: no crowd boxes and no area ranges (the "all" area only).

Table V follows GESCO's protocol: the reference boxes are DETR's detections on the *original* image, the predictions
DETR's detections on the regenerated one. The paper's text mentions thresholds "0.1 for mAP and 0.5 for mAP50";
``iou_thresholds`` is configurable so either reading (COCO's 0.5:0.95 or a single 0.1) can be evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

#: COCO's IoU thresholds 0.50, 0.55, ..., 0.95.
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
_RECALL_POINTS = torch.linspace(0, 1, 101, dtype=torch.float64)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(N, M)`` of boxes in absolute ``(x0, y0, x1, y1)`` corners (area = (x1-x0)(y1-y0))."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    intersection = (bottom_right - top_left).clamp_min(0).prod(dim=-1)
    union = area1[:, None] + area2[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1e-12), torch.zeros_like(union))


def _check_boxes(boxes: torch.Tensor, what: str) -> torch.Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    if boxes.numel() == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what}: boxes must have shape (N, 4) in (x0, y0, x1, y1), got {tuple(boxes.shape)}")
    if not torch.isfinite(boxes).all():
        raise ValueError(f"{what}: boxes contain NaN or inf")
    if bool((boxes[:, 2] < boxes[:, 0]).any()) or bool((boxes[:, 3] < boxes[:, 1]).any()):
        raise ValueError(f"{what}: boxes need x1 >= x0 and y1 >= y0 (absolute corner format)")
    return boxes


def _check_entry(entry: Mapping[str, torch.Tensor], what: str, needs_scores: bool) -> dict[str, torch.Tensor]:
    missing = {"boxes", "labels"} - set(entry) | ({"scores"} - set(entry) if needs_scores else set())
    if missing:
        raise ValueError(f"{what}: missing keys {sorted(missing)}")
    boxes = _check_boxes(entry["boxes"], what)
    labels = torch.as_tensor(entry["labels"]).reshape(-1)
    if labels.is_floating_point() or labels.shape[0] != boxes.shape[0]:
        raise ValueError(f"{what}: labels must be {boxes.shape[0]} integer class ids")
    out = {"boxes": boxes, "labels": labels.long()}
    if needs_scores:
        scores = torch.as_tensor(entry["scores"], dtype=torch.float64).reshape(-1)
        if scores.shape[0] != boxes.shape[0] or not torch.isfinite(scores).all():
            raise ValueError(f"{what}: scores must be {boxes.shape[0]} finite values")
        out["scores"] = scores
    return out


def _interpolated_ap(is_tp: torch.Tensor, num_references: int) -> float:
    """COCO 101-point AP of a score-sorted TP/FP list."""
    if is_tp.numel() == 0:
        return 0.0
    tp = is_tp.double().cumsum(0)
    precision = tp / torch.arange(1, is_tp.numel() + 1, dtype=torch.float64)
    recall = tp / num_references
    envelope = precision.flip(0).cummax(0).values.flip(0)
    index = torch.searchsorted(recall, _RECALL_POINTS, side="left")
    reached = index < recall.numel()
    sampled = torch.where(reached, envelope[index.clamp_max(recall.numel() - 1)], torch.zeros_like(_RECALL_POINTS))
    return sampled.mean().item()


@dataclass(frozen=True)
class DetectionAPResult:
    """Detection scores.

    Attributes:
        map: mean AP over classes and ``iou_thresholds`` (NaN without reference boxes).
        map50, map75: class-mean AP at IoU 0.5 / 0.75 (NaN when that threshold was not evaluated).
        iou_thresholds: the thresholds evaluated.
        per_threshold_ap: class-mean AP at each threshold.
        ap: ``ap[class_id]`` = AP at each threshold, for every class with reference boxes.
    """

    map: float
    map50: float
    map75: float
    iou_thresholds: tuple[float, ...]
    per_threshold_ap: tuple[float, ...]
    ap: dict[int, list[float]]


class DetectionMAP:
    """Accumulates detections and reference boxes over batches; :meth:`compute` gives the mAP.

    Each image is a dict with ``boxes`` ``(N, 4)`` absolute ``(x0, y0, x1, y1)``, integer ``labels`` ``(N,)`` and,
    for predictions, ``scores`` ``(N,)`` (the format of ``post_process_object_detection``).
    """

    def __init__(self, iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS, max_detections: int = 100):
        thresholds = tuple(float(t) for t in iou_thresholds)
        if not thresholds or any(not 0.0 < t <= 1.0 for t in thresholds):
            raise ValueError(f"iou_thresholds must be non-empty values in (0, 1], got {thresholds}")
        if max_detections < 1:
            raise ValueError("max_detections must be >= 1")
        self.iou_thresholds = thresholds
        self.max_detections = max_detections
        self._predictions: list[dict[str, torch.Tensor]] = []
        self._references: list[dict[str, torch.Tensor]] = []

    def reset(self) -> None:
        self._predictions.clear()
        self._references.clear()

    def update(
        self, predictions: Sequence[Mapping[str, torch.Tensor]], references: Sequence[Mapping[str, torch.Tensor]]
    ) -> "DetectionMAP":
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} prediction entries for {len(references)} reference entries")
        for i, (pred, ref) in enumerate(zip(predictions, references)):
            self._predictions.append(_check_entry(pred, f"predictions[{i}]", needs_scores=True))
            self._references.append(_check_entry(ref, f"references[{i}]", needs_scores=False))
        return self

    def _class_ap(self, label: int, threshold: float) -> float:
        scores, hits, num_references = [], [], 0
        for pred, ref in zip(self._predictions, self._references):
            ref_boxes = ref["boxes"][ref["labels"] == label]
            num_references += ref_boxes.shape[0]
            keep = pred["labels"] == label
            order = torch.argsort(pred["scores"][keep], descending=True, stable=True)[: self.max_detections]
            boxes, image_scores = pred["boxes"][keep][order], pred["scores"][keep][order]
            matched = torch.zeros(ref_boxes.shape[0], dtype=torch.bool)
            ious = box_iou(boxes, ref_boxes) if ref_boxes.numel() and boxes.numel() else None
            for k in range(boxes.shape[0]):
                hit = False
                if ious is not None:
                    candidates = ious[k].masked_fill(matched, -1.0)
                    best = int(candidates.argmax())
                    if candidates[best] >= threshold:
                        matched[best], hit = True, True
                hits.append(hit)
            scores.append(image_scores)
        if not hits:
            return 0.0
        all_scores = torch.cat(scores)
        order = torch.argsort(all_scores, descending=True, stable=True)
        return _interpolated_ap(torch.tensor(hits)[order], num_references)

    def compute(self) -> DetectionAPResult:
        classes = sorted({int(c) for ref in self._references for c in ref["labels"].tolist()})
        ap = {c: [self._class_ap(c, t) for t in self.iou_thresholds] for c in classes}
        nan = float("nan")
        if ap:
            per_threshold = torch.tensor(list(ap.values()), dtype=torch.float64).mean(dim=0).tolist()
        else:
            per_threshold = [nan] * len(self.iou_thresholds)

        def at(value: float) -> float:
            matches = [i for i, t in enumerate(self.iou_thresholds) if abs(t - value) < 1e-9]
            return per_threshold[matches[0]] if matches else nan

        mean = sum(per_threshold) / len(per_threshold)
        return DetectionAPResult(mean, at(0.5), at(0.75), self.iou_thresholds, tuple(per_threshold), ap)


def mean_average_precision(
    predictions: Sequence[Mapping[str, torch.Tensor]],
    references: Sequence[Mapping[str, torch.Tensor]],
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    max_detections: int = 100,
) -> DetectionAPResult:
    """One-shot :class:`DetectionMAP` over a list of images."""
    return DetectionMAP(iou_thresholds, max_detections).update(predictions, references).compute()
