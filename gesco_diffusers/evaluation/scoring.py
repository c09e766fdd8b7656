"""The KPIs of Sec. IV-B, computed from the PNG files of a run at the generation resolution, against the real photo
resized by the dataset's evaluation transform and the label map resized with nearest neighbours:

* mIoU (Eq. 16): a segmentation judge on the generated images against the label maps, the confusion matrix
  accumulated over the split; the judge on the real photos gives the ceiling;
* LPIPS to the real photo (mean and std over images); FID between the generated and the real photos;
* optional: DETR detection mAP/mAP50 (references = detections on the real photo) and DPT depth RMSE after
  scale-and-shift alignment (Table V), at the tables' PSNR only.

Networks that are not available locally (no judge, no LPIPS/FID weights) are skipped with a note in the report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from .data import EvaluationData, EvaluationItem, photo_batch
from .distributed import Processes, SingleProcess, numbered_batches
from .metrics import (
    DepthEstimator,
    DetectionMAP,
    DetrDetector,
    FeatureStatistics,
    FIDMetric,
    JudgeFeatureExtractor,
    LPIPSMetric,
    SegmentationJudge,
    default_camvid_judge_path,
    depth_rmse,
    load_fid_inception,
)
from .store import load_images

__all__ = ["KPISuite", "ScoringNetworks", "check_judge_labels"]

PathLike = Union[str, os.PathLike]


@dataclass
class KPISuite:
    """The networks that score a run; any of them may be missing (``None``)."""

    judge: Optional[SegmentationJudge] = None
    lpips: Optional[LPIPSMetric] = None
    fid: Optional[FIDMetric] = None
    detector: Optional[DetrDetector] = None
    depth: Optional[DepthEstimator] = None
    notes: list[str] = field(default_factory=list)
    #: Frechet distance of the judge's pooled encoder features ("judge FD"; not comparable to FID: other network),
    #: built from the judge when not given.
    judge_fd: Optional[FIDMetric] = None

    def __post_init__(self) -> None:
        if self.judge_fd is None and self.judge is not None:
            self.judge_fd = FIDMetric(JudgeFeatureExtractor(self.judge), device=self.judge.device)

    @property
    def frechet_metrics(self) -> dict[str, FIDMetric]:
        """The distribution-level KPIs (real and generated feature statistics): FID and judge FD."""
        return {key: metric for key, metric in (("fid", self.fid), ("judge_fd", self.judge_fd)) if metric is not None}

    def _judge_targets(self, items: Sequence[EvaluationItem]) -> torch.Tensor:
        """The label maps in the judge's id space, ``(B, H, W)``."""
        return self.judge.map_labels(torch.stack([item.labels for item in items]))

    def reference_pass(self, data: EvaluationData, indices: Sequence[int], batch_size: int,
                       processes: Optional[Processes] = None) -> dict[str, float]:
        """One pass over the real photos: the FID statistics of the real set and the judge's ceiling (its mIoU on
        the real photos against the labels). With several processes each scores its batches and the counts and
        float64 feature sums are added across processes."""
        processes = processes or SingleProcess()
        matrix = self.judge.new_confusion_matrix() if self.judge is not None else None
        for metric in self.frechet_metrics.values():
            metric.reset()  # a suite may serve several evaluations
        for _, batch in processes.shard(numbered_batches(indices, batch_size)):
            items = [data.item(i) for i in batch]
            photos = photo_batch(items)
            for metric in self.frechet_metrics.values():
                metric.update(photos, real=True)
            if matrix is not None:
                matrix.update(self.judge.predict(photos), self._judge_targets(items))
        for metric in self.frechet_metrics.values():
            metric.real = _merged_statistics(processes, metric.real)
        if matrix is None:
            return {}
        result = _merged_matrix(processes, matrix).compute()
        return {"miou": result.miou, "pixel_accuracy": result.pixel_accuracy}

    def score(self, folder: Path, data: EvaluationData, indices: Sequence[int], batch_size: int,
              downstream: bool, processes: Optional[Processes] = None) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """KPIs of the images in ``folder`` and the per-image values (in the order of ``indices``). With several
        processes each scores its batches (the same batches as one process would); per-image values are gathered
        exactly, confusion counts and float64 feature sums are added across processes."""
        processes = processes or SingleProcess()
        matrix = self.judge.new_confusion_matrix() if self.judge is not None else None
        use_detection = downstream and self.detector is not None
        detections: list[tuple[int, list, list]] = []
        use_depth = downstream and self.depth is not None
        generated_stats = {key: FeatureStatistics() for key in self.frechet_metrics}
        per_image: list[tuple[int, dict[str, Any]]] = []
        for number, batch in processes.shard(numbered_batches(indices, batch_size)):
            items = [data.item(i) for i in batch]
            images, photos = load_images(folder, items), photo_batch(items)
            rows = [{"stem": item.stem} for item in items]
            if matrix is not None:
                prediction, target = self.judge.predict(images), self._judge_targets(items)
                matrix.update(prediction, target)
                for row, pred, ref in zip(rows, prediction, target):
                    row["miou"] = self.judge.new_confusion_matrix().update(pred, ref).compute().miou
            if self.lpips is not None:
                for row, value in zip(rows, self.lpips(images, photos).tolist()):
                    row["lpips"] = value
            for key, metric in self.frechet_metrics.items():
                generated_stats[key].update(metric.features(images))
            if use_detection:
                part = self.detector.update(DetectionMAP(), images, photos)
                detections.append((number, part._predictions, part._references))
            if use_depth:
                reference = self.depth.predict(photos, output_size=tuple(images.shape[-2:]))
                for row, value in zip(rows, depth_rmse(self.depth.predict(images), reference).tolist()):
                    row["depth_rmse"] = value
            per_image += [(item.index, row) for item, row in zip(items, rows)]
        position = {index: k for k, index in enumerate(indices)}
        per_image = [row for _, row in sorted(processes.gather(per_image), key=lambda pair: position[pair[0]])]
        if matrix is not None:
            matrix = _merged_matrix(processes, matrix)
        generated_stats = {key: _merged_statistics(processes, stats) for key, stats in generated_stats.items()}
        detection = None
        if use_detection:
            detection = DetectionMAP()
            for _, predictions, references in sorted(processes.gather(detections), key=lambda part: part[0]):
                detection.update(predictions, references)
        kpis: dict[str, float] = {}
        for key in ("lpips", "depth_rmse"):
            values = [row[key] for row in per_image if key in row]
            if values:
                kpis[key] = float(np.mean(values))
                kpis[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        if matrix is not None:
            result = matrix.compute()
            kpis.update(miou=result.miou, pixel_accuracy=result.pixel_accuracy)
        for key, metric in self.frechet_metrics.items():
            if generated_stats[key].count >= 2 and metric.real.count >= 2:
                metric.generated = generated_stats[key]
                kpis[key] = metric.compute()
        if detection is not None:
            result = detection.compute()
            kpis.update(map=result.map, map50=result.map50)
        return kpis, per_image


def _merged_matrix(processes: Processes, matrix):
    """The confusion counts of every process added (integers: exact)."""
    parts = processes.gather([matrix._counts.cpu()])
    merged = matrix.__class__(matrix.num_classes, matrix.ignore_ids)
    for counts in parts:
        merged._counts += counts
    return merged


def _merged_statistics(processes: Processes, stats: FeatureStatistics) -> FeatureStatistics:
    """The float64 feature sums of every process added in rank order (never an average of per-process figures)."""
    merged = FeatureStatistics()
    for part in processes.gather([stats]):
        merged.merge(part)
    return merged


def check_judge_labels(judge: SegmentationJudge, num_classes: int, dataset: str) -> None:
    """Every label id ``0 .. num_classes - 1`` must reach a class of the judge or its ignore id (after
    ``label_id_map``); otherwise mIoU would fail half-way through an evaluation."""
    ids = torch.arange(num_classes)
    if judge.label_id_map is not None and len(judge.label_id_map) < num_classes:
        raise ValueError(f"the judge's label_id_map covers ids 0..{len(judge.label_id_map) - 1}, {dataset} has "
                         f"0..{num_classes - 1}")
    mapped = judge.map_labels(ids)
    valid = mapped < judge.num_classes
    if judge.ignore_index is not None:
        valid |= mapped == judge.ignore_index
    bad = ids[~valid]
    if bad.numel():
        raise ValueError(
            f"{dataset} label ids {bad.tolist()} are neither classes of the judge (0..{judge.num_classes - 1}) nor its "
            f"ignore id ({judge.ignore_index}); put a judge_config.json with \"ignore_index\" (e.g. the unlabelled id) "
            "or a \"label_id_map\" in the judge folder"
        )


def _load_optional(what: str, loader: Callable[[], Any], notes: list[str]) -> Any:
    """Run ``loader``; if the network is not available locally, note that its KPI is skipped."""
    try:
        return loader()
    except (FileNotFoundError, ModuleNotFoundError) as error:
        notes.append(f"{what} skipped: {str(error).strip().splitlines()[0]}")
        return None


@dataclass
class ScoringNetworks:
    """Which networks score the images, before loading.

    Each field is a loaded network, a local path, ``"default"`` (the locally installed default: the shipped CamVid
    judge, the LPIPS AlexNet and the FID Inception from the torch hub cache; skipped with a note when absent) or
    ``None`` (skip that KPI). ``lpips`` as a path is the torchvision weights of the LPIPS backbone ``lpips_net``;
    ``fid`` as a path the FID Inception weights, as a module any feature extractor of images in ``[0, 1]``.
    """

    judge: Union[SegmentationJudge, PathLike, None] = "default"
    lpips: Union[LPIPSMetric, PathLike, None] = "default"
    lpips_net: str = "alex"
    fid: Union[torch.nn.Module, PathLike, None] = "default"
    detector: Union[DetrDetector, PathLike, None] = None
    depth_model: Union[DepthEstimator, PathLike, None] = None

    def load(self, dataset: str, device: torch.device, batch_size: int = 8) -> KPISuite:
        notes: list[str] = []
        judge, lpips, fid = self.judge, self.lpips, self.fid
        if judge == "default":
            if dataset == "camvid":
                judge = _load_optional(
                    "mIoU (the shipped CamVid judge)",
                    lambda: SegmentationJudge.from_pretrained(default_camvid_judge_path(), device=device), notes)
            else:
                notes.append(f"mIoU skipped: no default segmentation judge for {dataset}; pass --judge PATH "
                             "(the paper uses DRN-D-105 on Cityscapes and MaskFormer on COCO-Stuff)")
                judge = None
        elif isinstance(judge, (str, os.PathLike)):
            judge = SegmentationJudge.from_pretrained(judge, device=device)
        elif judge is None:
            notes.append("mIoU skipped: no judge")

        if lpips == "default":
            lpips = _load_optional("LPIPS", lambda: LPIPSMetric(self.lpips_net, device=device), notes)
        elif isinstance(lpips, (str, os.PathLike)):
            lpips = LPIPSMetric(self.lpips_net, backbone_weights=lpips, device=device)
        elif lpips is None:
            notes.append("LPIPS skipped: no LPIPS network")

        if fid == "default":
            fid = _load_optional("FID", load_fid_inception, notes)
        elif isinstance(fid, (str, os.PathLike)):
            fid = load_fid_inception(fid)
        elif fid is None:
            notes.append("FID skipped: no feature extractor")

        detector, depth = self.detector, self.depth_model
        if isinstance(detector, (str, os.PathLike)):
            detector = DetrDetector.from_pretrained(detector, device=device)
        if isinstance(depth, (str, os.PathLike)):
            depth = DepthEstimator.from_pretrained(depth, device=device)
        if detector is None and depth is None:
            notes.append("Table V omitted: pass a DETR folder (--detector) and/or a DPT folder (--depth-model)")
        fid_metric = FIDMetric(fid, device=device, batch_size=batch_size) if fid is not None else None
        return KPISuite(judge, lpips, fid_metric, detector, depth, notes)
