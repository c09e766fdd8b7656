"""``gesco evaluate``: the paper's evaluation (Sec. IV) of a pipeline over a grid of channel conditions.

A *run* is one method under one channel condition; it produces one image per label map of the split:

* ``ours``: the pipeline regenerates the image from the received map, with FDS (Eq. 1) on or off;
* ``full_image`` (the paper's "Full image" baseline): the photo is coded with a lossy image codec at a quality,
  decoded, and the decoded float image in ``[0, 1]`` is sent over the *same* channel module (for AWGN: noise at
  the same PSNR, Eq. 15 with the peak power ``P = 1``); the receiver shows the result as an 8-bit picture, i.e.
  clipped to ``[0, 1]`` and rounded (a display cannot show anything else);
* ``semantic_map`` (Table V's "Semantic map" row): the received map itself, arg-maxed and colour-coded with the
  dataset palette, as a downstream network would see it without regeneration.

Every image is written atomically as ``out_dir/images/<run>/<stem>.png``; a rerun skips the images already there,
and every KPI is computed from the PNG files, so an interrupted and resumed evaluation gives the same numbers as an
uninterrupted one. Each run folder also holds ``settings.json`` (what determines its images); a rerun with other
settings into the same folder is refused rather than mixing images.

Randomness, per item ``i`` (its row in the sorted split): the sampler's initial noise is seeded with
``seed + i``; the channel noise with ``derive_seed(seed + i, 1)`` (an independent stream, the same for every
method at a condition, so FDS on/off and the ablation model see the same received map). Batching does not change
which noise an item gets.

KPIs (Sec. IV-B) at the generation resolution, against the real photo resized by the dataset's evaluation
transform and the label map resized with nearest neighbours:

* mIoU (Eq. 16): a segmentation judge on the generated images against the label maps, the confusion matrix
  accumulated over the split; the judge on the real photos gives the ceiling;
* LPIPS to the real photo (mean and std over images); FID between the generated and the real photos;
* optional: DETR detection mAP/mAP50 (references = detections on the real photo) and DPT depth RMSE after
  scale-and-shift alignment (Table V), at the tables' PSNR only;
* BPP (Fig. 7): the clean one-hot map coded losslessly, or the photo coded at each quality (noiseless link).

Networks that are not available locally (no judge, no LPIPS/FID weights) are skipped with a note in the report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch

from ..channel import CHANNEL_REGISTRY, build_channel, channel_for, resolve_psnr_convention
from ..receiver import FDS_METHODS
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
from ..utils.files import atomic_write_text
from .distributed import Processes
from .reports import PAPER_FDS_MODES, EvaluationReport, RunRecord, write_report

if TYPE_CHECKING:  # imported where used: the pipeline stack is heavy and gesco_diffusers.transmit imports us
    from ..pipelines import GescoPipeline

__all__ = [
    "CHANNEL_SEED_KEY",
    "PAPER_PSNRS",
    "ChannelCondition",
    "EvaluationData",
    "EvaluationItem",
    "KPISuite",
    "Method",
    "Run",
    "ScoringNetworks",
    "build_parser",
    "channel_grid",
    "evaluate",
    "main",
    "run",
]

#: The PSNR columns of the paper's Tables I-III (dB).
PAPER_PSNRS = (100.0, 30.0, 20.0, 15.0, 10.0, 5.0, 1.0)
#: ``derive_seed(seed + i, CHANNEL_SEED_KEY)`` seeds the channel noise of item ``i``.
CHANNEL_SEED_KEY = 1
#: Every FDS arm `gesco evaluate` runs: the paper's two and the adaptive variant.
FDS_MODES = FDS_METHODS  # the receiver's methods, named in one place
#: Default qualities of the full-image curve of Fig. 7.
DEFAULT_IMAGE_QUALITIES = (0, 10, 20, 30, 40)

Logger = Callable[[str], None]
PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------------------------
# What is evaluated


@dataclass(frozen=True)
class ChannelCondition:
    """A channel model at one level: PSNR in dB (Eq. 15), or Eb/N0 in dB for the ``digital`` link.

    ``ChannelCondition()`` (no channel, no level) is the noiseless link of Fig. 7.
    """

    channel: Optional[str] = None
    level_db: Optional[float] = None

    def __post_init__(self) -> None:
        if (self.channel is None) != (self.level_db is None):
            raise ValueError(
                f"a channel needs a level and a level needs a channel, got {self.channel!r}, {self.level_db!r}"
            )
        if self.channel is not None:
            if self.channel not in CHANNEL_REGISTRY:
                raise ValueError(f"unknown channel {self.channel!r}; choose one of {sorted(CHANNEL_REGISTRY)}")
            level = self.level_db
            is_number = isinstance(level, (int, float)) and not isinstance(level, bool)
            if not is_number or math.isnan(level) or level == -math.inf:
                raise ValueError(f"the level of channel {self.channel!r} must be a number of dB, got {level!r}")
            object.__setattr__(self, "level_db", float(level))

    @property
    def is_clean(self) -> bool:
        return self.channel is None

    @property
    def level_name(self) -> str:
        return "Eb/N0" if self.channel == "digital" else "PSNR"

    @property
    def key(self) -> str:
        """Folder-name part: ``clean``, ``awgn_psnr10``, ``digital_ebn0_4``."""
        if self.is_clean:
            return "clean"
        tag = "ebn0_" if self.channel == "digital" else "psnr"
        return f"{self.channel}_{tag}{self.level_db:g}"

    def build(self):
        """The channel module (``None`` for the noiseless link)."""
        if self.is_clean:
            return None
        if self.channel == "digital":
            return build_channel("digital", ebn0_db=self.level_db)
        return build_channel(self.channel, psnr_db=self.level_db)

    def describe(self) -> str:
        return "noiseless link" if self.is_clean else f"{self.channel} at {self.level_name} {self.level_db:g} dB"


def channel_grid(
    channels: Sequence[str], psnrs: Sequence[float] = PAPER_PSNRS, ebn0s: Sequence[float] = ()
) -> list[ChannelCondition]:
    """Every channel model at every PSNR (the ``digital`` link at every Eb/N0 of ``ebn0s`` instead)."""
    conditions = []
    for channel in channels:
        levels = ebn0s if channel == "digital" else psnrs
        if not levels:
            what = "Eb/N0 values (--ebn0s)" if channel == "digital" else "PSNR values (--psnrs)"
            raise ValueError(f"channel {channel!r} needs at least one of the {what}")
        conditions += [ChannelCondition(channel, level) for level in levels]
    if len(set(conditions)) != len(conditions):
        raise ValueError("the channel grid repeats a condition (same channel and level twice)")
    return conditions


METHOD_KINDS = ("ours", "full_image", "semantic_map")


@dataclass(frozen=True)
class Method:
    """How a run's images are made (see the module docstring)."""

    kind: str
    fds: Optional[str] = None
    ablation: bool = False
    codec: Optional[str] = None
    quality: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in METHOD_KINDS:
            raise ValueError(f"method kind must be one of {METHOD_KINDS}, got {self.kind!r}")
        if (self.kind == "ours") != (self.fds is not None):
            raise ValueError(f"an 'ours' method needs fds (one of {FDS_MODES}); other methods take none")
        if self.fds is not None and self.fds not in FDS_MODES:
            raise ValueError(f"fds must be one of {FDS_MODES}, got {self.fds!r}")
        if (self.kind == "full_image") != (self.codec is not None and self.quality is not None):
            raise ValueError("a 'full_image' method needs a codec and a quality; other methods take none")

    @property
    def key(self) -> str:
        if self.kind == "ours":
            return f"{'ablation' if self.ablation else 'ours'}_fds-{self.fds}"
        if self.kind == "full_image":
            return f"full-image_{self.codec}-q{self.quality}"
        return "semantic-map"

    @property
    def label(self) -> str:
        if self.kind == "ours":
            name = "Ours, no noisy training" if self.ablation else "Ours"
            return {"paper": name, "none": f"{name}, FDS off", "adaptive": f"{name}, adaptive FDS"}[self.fds]
        if self.kind == "full_image":
            return f"Full image ({self.codec} q{self.quality})"
        return "Semantic map (received)"


@dataclass(frozen=True)
class Run:
    """A method under a channel condition; its images live in ``images/<name>/``."""

    method: Method
    condition: ChannelCondition

    @property
    def name(self) -> str:
        return f"{self.condition.key}__{self.method.key}"

    def record(self) -> RunRecord:
        m, c = self.method, self.condition
        return RunRecord(
            name=self.name, method=m.kind, label=m.label, channel=c.channel or "none", level_db=c.level_db,
            level_name=c.level_name, fds=m.fds, noisy_training=(not m.ablation) if m.kind == "ours" else None,
            codec=m.codec, quality=m.quality,
        )


# ----------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class EvaluationItem:
    """One label map of the split at the generation resolution.

    Attributes:
        index: its row in the sorted split (seeds are ``seed + index``).
        stem: its file name without extension (the image file name of every run).
        photo: the real photo, ``(3, H, W)`` uint8.
        labels: ``(H, W)`` int64 preset ids.
        instances: ``(H, W)`` int64 instance ids (datasets with instance maps), else ``None``.
    """

    index: int
    stem: str
    photo: torch.Tensor
    labels: torch.Tensor
    instances: Optional[torch.Tensor] = None


class EvaluationData:
    """The rows of a dataset split, read at the generation size with the dataset's evaluation transform
    (bicubic photo, nearest-neighbour maps; :mod:`gesco_diffusers.data`)."""

    def __init__(
        self,
        dataset: str,
        split: str,
        size: tuple[int, int],
        *,
        data_dir: Optional[PathLike] = None,
        dataset_name: Optional[str] = None,
        limit: Optional[int] = None,
    ):
        from ..data import SemanticExampleTransform, build_transform, load_semantic_dataset

        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        if dataset_name is None and data_dir is None:
            raise ValueError(
                f"give the folder of the {dataset} dataset (--data-dir) or a Hub/local table (--dataset-name)"
            )
        if data_dir is not None and not Path(data_dir).is_dir():
            raise FileNotFoundError(f"dataset folder not found: {data_dir}")
        self.rows, layout = load_semantic_dataset(
            dataset, data_dir, split, dataset_name=dataset_name, limit=limit
        )
        if len(self.rows) == 0:
            raise ValueError(f"the {split} split of {dataset} has no rows")
        self.size = tuple(size)
        self.transform = SemanticExampleTransform(
            build_transform(layout.eval_transform, self.size), self.size, layout.remap_labels
        )
        self.stems = self._stems()

    def _stems(self) -> list[str]:
        """Image file names: the label file's stem (the row number for in-memory rows), made unique."""
        stems = []
        for i, ref in enumerate(self.rows["label"]):
            path = ref.get("path") if isinstance(ref, dict) else ref if isinstance(ref, (str, os.PathLike)) else None
            stems.append(Path(path).stem if path else f"{i:06d}")
        if len(set(stems)) != len(stems):  # e.g. equal names in different sub-folders
            stems = [f"{i:06d}_{stem}" for i, stem in enumerate(stems)]
        return stems

    def __len__(self) -> int:
        return len(self.rows)

    def item(self, index: int) -> EvaluationItem:
        example = self.transform.example(self.rows[index])
        photo = ((example["pixel_values"] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)  # exact inverse
        return EvaluationItem(index, self.stems[index], photo, example["label"], example.get("instance"))

    def batches(self, indices: Sequence[int], batch_size: int) -> Iterator[list[EvaluationItem]]:
        for start in range(0, len(indices), batch_size):
            yield [self.item(i) for i in indices[start : start + batch_size]]


def _photos(items: Sequence[EvaluationItem]) -> torch.Tensor:
    return torch.stack([item.photo for item in items]).float() / 255.0


def _channel_generator(seed: int, index: int) -> torch.Generator:
    from ..data import seeded_generator

    return seeded_generator(seed + index, CHANNEL_SEED_KEY)


def _to_uint8_hwc(images: torch.Tensor) -> list[np.ndarray]:
    """``(B, 3, H, W)`` floats in [0, 1] -> 8-bit ``(H, W, 3)`` pictures (what a PNG stores)."""
    return list((images.float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())


# ----------------------------------------------------------------------------------------------------------------
# Image sources: one per method kind, ``source(items) -> [uint8 (H, W, 3)]``


@dataclass
class GenerationSettings:
    """How the pipeline samples (shared by every ``ours`` run)."""

    num_inference_steps: int
    guidance_scale: float
    seed: int
    psnr_convention: Optional[str] = None  # PSNR -> noise level; None: the one stored with each pipeline


class PipelineImages:
    """``ours`` runs: sender -> channel (per-item seeded) -> FDS -> batched reverse diffusion (seed + index)."""

    def __init__(self, pipe: "GescoPipeline", fds: str, condition: ChannelCondition, settings: GenerationSettings):
        channel = channel_for(pipe, condition.channel, condition.level_db, settings.psnr_convention)
        self.pipe, self.fds, self.channel, self.settings = pipe, fds, channel, settings

    def received_maps(self, items: Sequence[EvaluationItem], fds: str) -> list:
        """The chain up to the conditioning map, one item at a time so each gets its own channel noise."""
        device = self.pipe._execution_device
        return [
            self.pipe.prepare_semantic_map(
                item.labels[None], None if item.instances is None else item.instances[None], channel=self.channel,
                fds=fds, generator=_channel_generator(self.settings.seed, item.index), device=device,
            )
            for item in items
        ]

    def __call__(self, items: Sequence[EvaluationItem]) -> list[np.ndarray]:
        conditioning = torch.cat([maps.denoised for maps in self.received_maps(items, self.fds)])
        generators = [torch.Generator().manual_seed(self.settings.seed + item.index) for item in items]
        # The map is already through the channel and FDS: the pipeline only regenerates (fds=False, no channel).
        images = self.pipe(
            conditioning, fds=False, num_inference_steps=self.settings.num_inference_steps,
            guidance_scale=self.settings.guidance_scale, generator=generators, output_type="pt",
        ).images
        return _to_uint8_hwc(images)


class ReceivedMapImages(PipelineImages):
    """``semantic_map`` runs: the received map (no FDS), arg-max, in the dataset palette."""

    def __call__(self, items: Sequence[EvaluationItem]) -> list[np.ndarray]:
        from ..visualize import colorize

        preset = self.pipe.dataset_preset
        return [
            np.asarray(colorize(maps.received[0, : preset.num_classes].argmax(0).cpu().numpy(), preset.palette))
            for maps in self.received_maps(items, "none")
        ]


class FullImages:
    """``full_image`` runs: lossy-coded photo -> the same channel on the float image -> 8-bit picture."""

    def __init__(self, codec: str, quality: int, condition: ChannelCondition, seed: int):
        if condition.channel == "digital":
            raise ValueError("the full-image baseline is not defined over the digital link (it carries map bits)")
        self.codec, self.quality, self.channel, self.seed = codec, quality, condition.build(), seed

    def decoded(self, item: EvaluationItem):
        from ..sender.codecs import encode_image

        return encode_image(item.photo.permute(1, 2, 0).numpy(), self.codec, quality=self.quality)

    def __call__(self, items: Sequence[EvaluationItem]) -> list[np.ndarray]:
        out = []
        for item in items:
            image = torch.from_numpy(self.decoded(item).decoded).permute(2, 0, 1)[None].float() / 255.0
            if self.channel is not None:
                # The image is the transmitted signal: every element is sent (no side information), peak power 1.
                image = self.channel(image, None, generator=_channel_generator(self.seed, item.index))
            out += _to_uint8_hwc(image.clamp(0.0, 1.0))  # the receiver's 8-bit display of the noisy image
        return out


# ----------------------------------------------------------------------------------------------------------------
# Image files


def _read_png(path: Path) -> torch.Tensor:
    with PIL.Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def _load_images(folder: Path, items: Sequence[EvaluationItem]) -> torch.Tensor:
    images = torch.stack([_read_png(folder / f"{item.stem}.png") for item in items]).float() / 255.0
    if tuple(images.shape[-2:]) != tuple(items[0].labels.shape):
        raise ValueError(
            f"{folder}: images are {tuple(images.shape[-2:])}, the evaluation size is {tuple(items[0].labels.shape)}"
        )
    return images


def _atomic_json(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _check_folder(folder: Path, settings: dict) -> bool:
    """Check that an existing ``folder`` was made with ``settings`` (read only); return whether its ``settings.json``
    is still to be written."""
    path = folder / "settings.json"
    canonical = json.loads(json.dumps(settings, sort_keys=True))
    if not path.is_file():
        return True
    try:
        stored = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); write to another --out or delete that folder") from None
    if stored != canonical:
        changed = sorted(k for k in set(stored) | set(canonical) if stored.get(k) != canonical.get(k))
        if "model" in changed:
            raise ValueError(
                f"{folder} holds images of another model (fingerprint {stored.get('model')}, this model "
                f"{canonical.get('model')}); write to another --out or delete that folder"
            )
        raise ValueError(
            f"{folder} holds images made with other settings (differences: {changed}); write to another --out "
            "or delete that folder"
        )
    return False


def _claim_folder(folder: Path, settings: dict) -> None:
    """Create ``folder`` with its ``settings.json``, or check that an existing one was made with ``settings``."""
    if _check_folder(folder, settings):
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_json(folder / "settings.json", json.loads(json.dumps(settings, sort_keys=True)))


def _remove_stale_temporaries(folder: Path) -> None:
    """Hidden temporaries a killed writer left (``.<stem>.png.<random>.tmp.png``, see ``utils.files``); called by the
    main process while it holds the output folder's lock, so no writer of this launch is running yet."""
    for path in folder.glob(".*.tmp.png"):
        path.unlink(missing_ok=True)


def model_fingerprint(pipe: "GescoPipeline") -> str:
    """A short hash of what determines the generated images: the U-Net's configuration, the bytes of every weight
    tensor with its name and dtype, and the scheduler's class and configuration."""
    digest = hashlib.sha1()
    digest.update(json.dumps(dict(pipe.unet.config), sort_keys=True, default=str).encode())
    digest.update(json.dumps({"scheduler": type(pipe.scheduler).__name__, **dict(pipe.scheduler.config)},
                             sort_keys=True, default=str).encode())
    for name, tensor in sorted(pipe.unet.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------
# KPIs


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
        processes = processes or _single_process()
        matrix = self.judge.new_confusion_matrix() if self.judge is not None else None
        for metric in self.frechet_metrics.values():
            metric.reset()  # a suite may serve several evaluations
        for _, batch in processes.shard(_global_batches(indices, batch_size)):
            items = [data.item(i) for i in batch]
            photos = _photos(items)
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
        processes = processes or _single_process()
        matrix = self.judge.new_confusion_matrix() if self.judge is not None else None
        use_detection = downstream and self.detector is not None
        detections: list[tuple[int, list, list]] = []
        use_depth = downstream and self.depth is not None
        generated_stats = {key: FeatureStatistics() for key in self.frechet_metrics}
        per_image: list[tuple[int, dict[str, Any]]] = []
        for number, batch in processes.shard(_global_batches(indices, batch_size)):
            items = [data.item(i) for i in batch]
            images, photos = _load_images(folder, items), _photos(items)
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


def _single_process() -> "Processes":
    """A stand-in for :class:`Processes` when a caller scores without a launch (one process, no Accelerate state)."""
    return _SingleProcess()


class _SingleProcess:
    num_processes, process_index, is_main = 1, 0, True

    def shard(self, work):
        return list(work)

    def gather(self, objects):
        return list(objects)

    def broadcast(self, value):
        return value

    def check(self, error):
        if error is not None:
            raise error

    def wait(self):
        pass


def _global_batches(indices: Sequence[int], batch_size: int) -> list[tuple[int, list[int]]]:
    """``indices`` cut into numbered batches: the same batches whatever the number of processes."""
    indices = list(indices)
    return list(enumerate(indices[start : start + batch_size] for start in range(0, len(indices), batch_size)))


def _merged_matrix(processes: "Processes", matrix):
    """The confusion counts of every process added (integers: exact)."""
    parts = processes.gather([matrix._counts.cpu()])
    merged = matrix.__class__(matrix.num_classes, matrix.ignore_ids)
    for counts in parts:
        merged._counts += counts
    return merged


def _merged_statistics(processes: "Processes", stats: FeatureStatistics) -> FeatureStatistics:
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


# ----------------------------------------------------------------------------------------------------------------
# The evaluation


def _load_pipeline(pipeline: Union["GescoPipeline", PathLike], device: torch.device) -> "GescoPipeline":
    from ..pipelines import GescoPipeline
    from ..transmit import load_pipeline

    if isinstance(pipeline, GescoPipeline):
        return pipeline.to(device)
    if not isinstance(pipeline, (str, os.PathLike)):
        raise TypeError(f"pipeline must be a GescoPipeline or a folder, got {type(pipeline).__name__}")
    return load_pipeline(os.fspath(pipeline), str(device))[0]


@contextmanager
def _sampling(pipes: Sequence["GescoPipeline"], sampler: Optional[str]) -> Iterator[None]:
    """Use ``sampler`` (a name of ``SAMPLERS``; ``None`` keeps each pipeline's scheduler) without a progress bar,
    and give the pipelines their own schedulers back afterwards."""
    from ..diffusion import build_scheduler

    saved = [(pipe, pipe.scheduler) for pipe in pipes]
    try:
        for pipe in pipes:
            pipe.set_progress_bar_config(disable=True)
            if sampler is not None:
                pipe.scheduler = build_scheduler(sampler, pipe.scheduler.config)
        yield
    finally:
        for pipe, scheduler in saved:
            pipe.scheduler = scheduler


def _sample_size(pipe: "GescoPipeline") -> tuple[int, int]:
    size = pipe.unet.config.sample_size
    return (size, size) if isinstance(size, int) else tuple(size)


def _check_size(size: Sequence[int], factor: int) -> tuple[int, int]:
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width) > 0, got {size}")
    if size[0] % factor or size[1] % factor:
        raise ValueError(f"size {size[0]}x{size[1]} is not divisible by the U-Net's downsampling factor {factor}")
    return size


def _check_generation_arguments(seed: int, batch_size: int, num_inference_steps: int, fds: Sequence[str]) -> None:
    for name, value, low in (("seed", seed, 0), ("batch_size", batch_size, 1),
                             ("num_inference_steps", num_inference_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not fds or any(mode not in FDS_MODES for mode in fds) or len(set(fds)) != len(fds):
        raise ValueError(f"fds must list distinct modes among {FDS_MODES}, got {tuple(fds)}")


def plan_runs(
    conditions: Sequence[ChannelCondition],
    fds: Sequence[str],
    *,
    table_condition: ChannelCondition,
    image_codec: Optional[str],
    image_quality: Optional[int],
    image_qualities: Sequence[int],
    rate_distortion: bool,
    semantic_map: bool,
    ablation: bool,
) -> list[Run]:
    """Every run of an evaluation: ``ours`` for each FDS mode and the full image at every condition, the received
    map and the ablation pipeline at the tables' condition, and the noiseless runs of Fig. 7."""
    runs: list[Run] = []
    for condition in conditions:
        runs += [Run(Method("ours", fds=mode), condition) for mode in fds]
        if image_codec is not None and condition.channel != "digital":
            runs.append(Run(Method("full_image", codec=image_codec, quality=image_quality), condition))
    if table_condition in conditions:
        if semantic_map:
            runs.append(Run(Method("semantic_map"), table_condition))
        if ablation:
            runs += [Run(Method("ours", fds=mode, ablation=True), table_condition) for mode in PAPER_FDS_MODES]
    if rate_distortion:
        clean = ChannelCondition()
        runs.append(Run(Method("ours", fds=fds[0]), clean))
        if image_codec is not None:
            runs += [Run(Method("full_image", codec=image_codec, quality=q), clean) for q in image_qualities]
    return list(dict.fromkeys(runs))


class ImageSources:
    """Builds the image source of each run and the settings that determine its images (``settings.json``)."""

    def __init__(self, pipe: "GescoPipeline", ablation_pipe: Optional["GescoPipeline"],
                 generation: GenerationSettings, common: dict[str, Any]):
        self.pipes = {False: pipe, True: ablation_pipe}
        self.fingerprints = {key: model_fingerprint(p) for key, p in self.pipes.items() if p is not None}
        self.generation, self.common = generation, common

    def __call__(self, run_spec: Run) -> tuple[Callable[[Sequence[EvaluationItem]], list[np.ndarray]], dict]:
        method, condition = run_spec.method, run_spec.condition
        settings = {**self.common, "channel": condition.describe(), "method": method.key}
        if method.kind == "full_image":
            return FullImages(method.codec, method.quality, condition, self.generation.seed), settings
        settings.update(model=self.fingerprints[method.ablation], steps=self.generation.num_inference_steps,
                        guidance_scale=self.generation.guidance_scale)
        convention = resolve_psnr_convention(self.pipes[method.ablation], self.generation.psnr_convention)
        if condition.channel == "awgn" and convention != "paper":  # (Eq. 15 folders keep their earlier settings)
            settings["psnr_convention"] = convention
        maker = ReceivedMapImages if method.kind == "semantic_map" else PipelineImages
        return maker(self.pipes[method.ablation], method.fds or "none", condition, self.generation), settings


def generate_images(runs: Sequence[Run], sources: ImageSources, data: EvaluationData, out: Path, batch_size: int,
                    log: Logger, processes: Optional[Processes] = None) -> dict[str, int]:
    """Write the missing images of every run; return how many each run made now.

    Every check comes first (each run folder's ``settings.json``, read by every process), then the main process
    writes the new ``settings.json`` files and lists the missing images. The missing images of each run are cut into
    batches of ``batch_size`` (the same batches for any number of processes); batch ``b`` of the whole list is made
    and written by process ``b mod N``. A killed launch leaves whole images only; a rerun, with any number of
    processes, makes the rest."""
    processes = processes or _single_process()
    makers, claims, error = [], [], None
    try:
        for run_spec in runs:
            make, settings = sources(run_spec)
            folder = out / "images" / run_spec.name
            claims.append((folder, settings, _check_folder(folder, settings)))
            makers.append(make)
    except (ValueError, OSError) as err:
        error = err
    processes.check(error if processes.is_main else None)
    if error is not None:  # (a rank whose own check failed although the main's passed: file system out of sync)
        raise error
    missing = None
    if processes.is_main:
        for folder, settings, unwritten in claims:
            folder.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(folder)
            if unwritten:
                _atomic_json(folder / "settings.json", json.loads(json.dumps(settings, sort_keys=True)))
        missing = [[i for i in range(len(data)) if not (folder / f"{data.stems[i]}.png").is_file()]
                   for folder, _, _ in claims]
    missing = processes.broadcast(missing)
    work = [(number, batch) for number, todo in enumerate(missing) for _, batch in _global_batches(todo, batch_size)]
    total = sum(len(todo) for todo in missing)
    for number, (run_spec, todo) in enumerate(zip(runs, missing), 1):
        log(f"[{number}/{len(runs)}] {run_spec.name}: {len(data) - len(todo)} done, {len(todo)} to make")
    if processes.num_processes > 1:
        log(f"{total} images in {len(work)} batches over {processes.num_processes} processes"
            + (" (more processes than batches: some have nothing to make)" if len(work) < processes.num_processes
               else ""))
    for number, batch in processes.shard(work):
        items = [data.item(i) for i in batch]
        folder = claims[number][0]
        for item, picture in zip(items, makers[number](items)):
            _save_png(picture, folder / f"{item.stem}.png")
    processes.wait()
    return {run_spec.name: len(todo) for run_spec, todo in zip(runs, missing)}


class SenderRates:
    """Mean BPP of what the sender codes (Fig. 7): the clean one-hot map (lossless ``map_codec``; every ``ours``
    and ``semantic_map`` run sends it) or the photo at a ``full_image`` run's codec and quality."""

    def __init__(self, data: EvaluationData, preset, map_codec: str, batch_size: int,
                 processes: Optional[Processes] = None):
        from ..sender.encoding import SemanticEncoder

        self.data, self.map_codec, self.batch_size = data, map_codec, batch_size
        self.processes = processes or _single_process()
        self.encoder = SemanticEncoder.from_preset(preset)
        self._photo: dict[tuple[str, int], float] = {}
        self._map: Optional[float] = None

    def _mean(self, value: Callable[[EvaluationItem], float]) -> float:
        """The mean of ``value`` over every item; each process codes its share, the values are gathered exactly and
        averaged in item order."""
        mine = [(i, value(self.data.item(i))) for i in self.processes.shard(range(len(self.data)))]
        return float(np.mean([v for _, v in sorted(self.processes.gather(mine))]))

    def map_bpp(self, item: EvaluationItem) -> float:
        from ..sender.codecs import encode_semantic_map

        instances = None if item.instances is None else item.instances[None]
        planes = self.encoder.encode(item.labels[None], instances).one_hot[0]
        return encode_semantic_map(planes.numpy(), self.map_codec, "one_hot").bpp

    def __call__(self, method: Method) -> float:
        if method.kind != "full_image":
            if self._map is None:
                self._map = self._mean(self.map_bpp)
            return self._map
        key = (method.codec, method.quality)
        if key not in self._photo:
            coder = FullImages(method.codec, method.quality, ChannelCondition(), seed=0)  # no channel: no seed used
            self._photo[key] = self._mean(lambda item: coder.decoded(item).bpp)
        return self._photo[key]


def score_runs(runs: Sequence[Run], generated: dict[str, int], suite: KPISuite, rates: SenderRates,
               data: EvaluationData, out: Path, batch_size: int, table_condition: ChannelCondition,
               log: Logger, processes: Optional[Processes] = None,
               ) -> tuple[list[RunRecord], list[dict[str, Any]], dict[str, float]]:
    """Score every run from its PNG files: the records, the per-image rows and the judge's ceiling."""
    indices = list(range(len(data)))
    log("scoring the real photos (FID statistics, judge ceiling)")
    ceiling = suite.reference_pass(data, indices, batch_size, processes)
    records: list[RunRecord] = []
    per_image: list[dict[str, Any]] = []
    for run_spec in runs:
        log(f"scoring {run_spec.name}")
        downstream = run_spec.condition == table_condition
        kpis, rows = suite.score(out / "images" / run_spec.name, data, indices, batch_size, downstream, processes)
        kpis["bpp"] = rates(run_spec.method)
        records.append(replace(run_spec.record(), num_images=len(indices), generated=generated[run_spec.name],
                               kpis=kpis))
        per_image += [{"run": run_spec.name, **row} for row in rows]
    return records, per_image, ceiling


def evaluate(
    pipeline: Union["GescoPipeline", PathLike],
    dataset: Optional[str] = None,
    split: str = "val",
    conditions: Optional[Sequence[ChannelCondition]] = None,
    *,
    data_dir: Optional[PathLike] = None,
    dataset_name: Optional[str] = None,
    fds: Sequence[str] = PAPER_FDS_MODES,
    out_dir: PathLike = "outputs/evaluate",
    limit: Optional[int] = None,
    size: Optional[Sequence[int]] = None,
    num_inference_steps: Optional[int] = None,
    guidance_scale: Optional[float] = None,
    sampler: Optional[str] = None,
    seed: int = 0,
    batch_size: int = 4,
    device: Union[str, torch.device, None] = None,
    networks: Union[ScoringNetworks, KPISuite, None] = None,
    ablation_pipeline: Union["GescoPipeline", PathLike, None] = None,
    table_psnr: float = 10.0,
    image_codec: Optional[str] = "hevc",
    image_quality: Optional[int] = None,
    image_qualities: Sequence[int] = DEFAULT_IMAGE_QUALITIES,
    map_codec: str = "hevc-lossless",
    rate_distortion: bool = True,
    log: Optional[Logger] = None,
    psnr_convention: Optional[str] = None,
) -> EvaluationReport:
    """Generate and score images for a pipeline over a dataset split and a grid of channel conditions.

    Args:
        pipeline: a :class:`GescoPipeline` or its folder (taken as trained with noisy maps, Sec. IV-A).
        dataset: dataset preset/layout (default: the pipeline's preset); ``split``: ``"val"`` or ``"train"``.
        conditions: channel conditions (:func:`channel_grid`); default AWGN at the paper's PSNRs.
        data_dir: the dataset folder in its usual layout; or ``dataset_name``: a Hub id / ``save_to_disk`` folder.
        fds: FDS modes of the ``ours`` runs among :data:`FDS_MODES` (the first one is used for Fig. 7).
        out_dir: where images, tables, plots and results go (resumable, see the module docstring).
        limit: evaluate the first ``limit`` maps only. ``size``: generation ``(H, W)`` (default: the U-Net's).
        num_inference_steps, guidance_scale, sampler: sampling (``sampler``: a name of
            :data:`gesco_diffusers.diffusion.SAMPLERS`; default: the pipeline's scheduler).
        seed: item ``i`` is sampled with seed ``seed + i``.
        batch_size: images per pipeline call and per metric forward.
        networks: the scoring networks (:class:`ScoringNetworks`, default: the locally installed defaults; or an
            already loaded :class:`KPISuite`).
        ablation_pipeline: the same model trained *without* noisy maps, for Table VIII.
        table_psnr: the PSNR of Tables V, VI and VIII (10 dB in the paper); it must be in the grid.
        image_codec, image_quality: the full-image baseline (``None`` codec: no baseline; quality default: the
            codec's). ``image_qualities``: its Fig. 7 curve. ``map_codec``: the lossless map codec of Fig. 7.
        rate_distortion: also run the noiseless link for Fig. 7.
        log: called with progress lines (default: silent).
        psnr_convention: ``"paper"`` (Eq. 15) or ``"official_table"`` (the authors' noise table, AWGN) for the
            ``ours`` runs; default: the one stored with each pipeline (converted checkpoints: the table).

    Returns:
        The :class:`EvaluationReport`; it is also written to ``out_dir`` (:func:`write_report`).

    Under ``torchrun`` or ``accelerate launch`` the processes share the work (:mod:`.distributed`): each makes and
    scores its batches, only the main process writes ``results.json``, the tables and the plots, and a second launch
    into the same ``out_dir`` is refused while one runs. Every process returns the same report.
    """
    from ..sender.codecs import get_codec

    log = log or (lambda message: None)
    fds = tuple(fds)
    _check_generation_arguments(seed, batch_size, 1 if num_inference_steps is None else num_inference_steps, fds)
    conditions = list(conditions) if conditions is not None else channel_grid(["awgn"], PAPER_PSNRS)
    if not conditions or not all(isinstance(c, ChannelCondition) and not c.is_clean for c in conditions):
        raise ValueError("conditions must be a non-empty list of noisy ChannelConditions (see channel_grid)")
    if image_codec is not None:
        codec = get_codec(image_codec)
        if codec.lossless:
            raise ValueError(f"image_codec must be a lossy codec, {image_codec!r} is lossless")
        image_quality = codec.default_quality if image_quality is None else image_quality
    if not get_codec(map_codec).lossless:
        raise ValueError(f"map_codec must be a lossless codec, {map_codec!r} is lossy")

    processes = Processes(device)
    device = processes.device
    if not processes.is_main:
        log = lambda message: None  # noqa: E731  (the main process reports progress)
    with contextlib.ExitStack() as stack:
        return _evaluate(
            pipeline, dataset, split, conditions, data_dir=data_dir, dataset_name=dataset_name, fds=fds,
            limit=limit, size=size, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            sampler=sampler, seed=seed, batch_size=batch_size, device=device, networks=networks,
            ablation_pipeline=ablation_pipeline, table_psnr=table_psnr, image_codec=image_codec,
            image_quality=image_quality, image_qualities=image_qualities, map_codec=map_codec,
            rate_distortion=rate_distortion, log=log, psnr_convention=psnr_convention, processes=processes,
            out=Path(out_dir), stack=stack,
        )


def _evaluate(pipeline, dataset, split, conditions, *, data_dir, dataset_name, fds, out, limit, size,
                     num_inference_steps, guidance_scale, sampler, seed, batch_size, device, networks,
                     ablation_pipeline, table_psnr, image_codec, image_quality, image_qualities, map_codec,
                     rate_distortion, log, psnr_convention, processes: Processes,
                     stack: contextlib.ExitStack) -> EvaluationReport:
    pipe = _load_pipeline(pipeline, device)
    if num_inference_steps is None:  # the pipeline's own (a distilled model stores its few steps)
        num_inference_steps = pipe.default_num_inference_steps
    ablation_pipe = _load_pipeline(ablation_pipeline, device) if ablation_pipeline is not None else None
    for model in (p for p in (pipe, ablation_pipe) if p is not None):
        for condition in conditions:  # a level the PSNR convention cannot give fails now, not after hours of runs
            channel_for(model, condition.channel, condition.level_db, psnr_convention)
    preset = pipe.dataset_preset
    if ablation_pipe is not None and ablation_pipe.dataset_preset.map_channels != preset.map_channels:
        raise ValueError("the ablation pipeline has another number of map channels than the main pipeline")
    dataset = dataset or preset.name
    size = _check_size(size if size is not None else _sample_size(pipe), pipe.unet.downsampling_factor)
    data = EvaluationData(dataset, split, size, data_dir=data_dir, dataset_name=dataset_name, limit=limit)
    channels = list(dict.fromkeys(c.channel for c in conditions))
    table_condition = ChannelCondition("awgn" if "awgn" in channels else channels[0], table_psnr)
    suite = networks if isinstance(networks, KPISuite) else (networks or ScoringNetworks()).load(
        dataset, device, batch_size)
    if suite.judge is not None:
        check_judge_labels(suite.judge, preset.num_classes, dataset)

    notes = list(suite.notes)
    if table_condition not in conditions:
        notes.append(f"Tables V and VIII need {table_condition.describe()} in the grid: omitted")
    if ablation_pipe is None:
        notes.append("Table VIII: the 'noisy training off' rows need a second pipeline (--ablation-model): omitted")
    else:
        notes.append("Table VIII: the main pipeline is taken as trained on noisy maps, --ablation-model as not")
    if suite.fid is not None and len(data) < 2:
        notes.append("FID skipped: it needs at least 2 images (a covariance)")
    if "digital" in channels and image_codec is not None:
        notes.append("the full-image baseline is not run over the digital link (it carries the map's bits)")
    if rate_distortion:
        notes.append(f"Fig. 7: map BPP = one-hot map ({preset.map_channels} planes) coded with {map_codec}; photo "
                     f"BPP = {image_codec} at qualities {list(image_qualities)}; both at {size[0]}x{size[1]}")
    runs = plan_runs(
        conditions, fds, table_condition=table_condition, image_codec=image_codec, image_quality=image_quality,
        image_qualities=image_qualities, rate_distortion=rate_distortion,
        semantic_map=suite.detector is not None or suite.depth is not None, ablation=ablation_pipe is not None,
    )

    pipes = [p for p in (pipe, ablation_pipe) if p is not None]
    # The output folder's lock, held until evaluate returns; taken after the checks above (a refused run creates no
    # folder) and before anything is written.
    stack.enter_context(processes.lock(out, "evaluate"))
    with _sampling(pipes, sampler):
        guidance = pipe.default_guidance_scale if guidance_scale is None else float(guidance_scale)
        common = {"dataset": dataset, "split": split, "data": str(data_dir or dataset_name), "size": list(size),
                  "seed": seed}
        generation = GenerationSettings(num_inference_steps, guidance, seed, psnr_convention)
        sources = ImageSources(pipe, ablation_pipe, generation, common)
        generated = generate_images(runs, sources, data, out, batch_size, log, processes)
        sampler_name = type(pipe.scheduler).__name__
    rates = SenderRates(data, preset, map_codec, batch_size, processes)
    records, per_image, ceiling = score_runs(runs, generated, suite, rates, data, out, batch_size, table_condition, log,
                                             processes)
    report = EvaluationReport(
        records=records, ceiling=ceiling, per_image=per_image, notes=notes, table_level_db=float(table_psnr),
        primary_channel=table_condition.channel,
        settings={
            **common, "num_items": len(data), "model": str(pipe.name_or_path or "in-memory pipeline"),
            "model_fingerprint": sources.fingerprints[False],
            "ablation_model": None if ablation_pipe is None else str(ablation_pipe.name_or_path),
            "sampler": sampler_name, "num_inference_steps": num_inference_steps, "guidance_scale": guidance,
            "fds": list(fds), "image_codec": image_codec, "image_quality": image_quality, "map_codec": map_codec,
            "device": str(device), "conditions": [c.describe() for c in conditions],
            "seeding": "sampler: seed + item index; channel: derive_seed(seed + item index, 1)",
            "psnr_convention": resolve_psnr_convention(pipe, psnr_convention),
            "num_processes": processes.num_processes,
        },
    )
    if processes.is_main:
        write_report(report, out)
    processes.wait()
    return report


def _save_png(picture: np.ndarray, path: Path) -> None:
    from ..transmit import _save_atomically

    _save_atomically(PIL.Image.fromarray(picture), path)


# ----------------------------------------------------------------------------------------------------------------
# Command line


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``gesco evaluate`` arguments (on ``parser`` if given)."""
    from ..diffusion import SAMPLERS

    parser = parser or argparse.ArgumentParser(
        prog="gesco evaluate", description="Generate and score images over channel conditions (paper Sec. IV).")
    parser.add_argument("--model", help="GescoPipeline folder, Hub id, or a shipped model: demo or fast "
                                        "(default: the shipped CamVid demo model)")
    parser.add_argument("--dataset", help="dataset preset/layout (default: the model's)")
    parser.add_argument("--data-dir", help="dataset folder, e.g. .../camvid with {split}/images and {split}/labels")
    parser.add_argument("--dataset-name", help="instead of --data-dir: a Hub id or a save_to_disk folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, help="evaluate the first N maps only")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="generation size (default: model's)")
    parser.add_argument("--channels", nargs="+", default=["awgn"], choices=sorted(CHANNEL_REGISTRY))
    parser.add_argument("--psnrs", type=float, nargs="+", default=list(PAPER_PSNRS), help="PSNRs in dB (Eq. 15)")
    parser.add_argument("--ebn0s", type=float, nargs="+", default=[], help="Eb/N0 values in dB for --channels digital")
    parser.add_argument("--fds", nargs="+", default=list(PAPER_FDS_MODES), choices=FDS_MODES,
                        help="FDS arms: paper (Eq. 1), none, adaptive (default: paper none)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's own)")
    parser.add_argument("--sampler", default="default", choices=("default",) + tuple(SAMPLERS))
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale s (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="item i is sampled with seed + i")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--out", default="outputs/evaluate", help="output folder (reruns resume)")
    parser.add_argument("--judge", help="segmentation judge folder (default: the shipped CamVid judge)")
    parser.add_argument("--lpips-weights", help="torchvision weights of the LPIPS backbone (default: torch hub cache)")
    parser.add_argument("--lpips-net", default="alex", choices=("alex", "vgg", "squeeze"))
    parser.add_argument("--fid-weights", help="FID Inception weights file (default: torch hub cache; else no FID)")
    parser.add_argument("--detector", help="DETR folder for the detection mAP of Table V")
    parser.add_argument("--depth-model", help="DPT folder for the depth RMSE of Table V")
    parser.add_argument("--ablation-model", help="the same model trained without noisy maps (Table VIII)")
    parser.add_argument("--table-psnr", type=float, default=10.0, help="PSNR of Tables V, VI, VIII")
    parser.add_argument("--psnr-convention", choices=("paper", "official_table"), default=None,
                        help="PSNR -> noise level of the model's runs: paper (Eq. 15) or official_table (the authors' "
                             "table, AWGN only); default: the one stored with the model (converted: official_table)")
    parser.add_argument("--image-codec", default="hevc", help="lossy codec of the full-image baseline ('none': off)")
    parser.add_argument("--image-quality", type=int, default=None, help="its quality (default: the codec's)")
    parser.add_argument("--image-qualities", type=int, nargs="+", default=list(DEFAULT_IMAGE_QUALITIES),
                        help="qualities of the full-image curve of Fig. 7")
    parser.add_argument("--map-codec", default="hevc-lossless", help="lossless map codec of Fig. 7")
    parser.add_argument("--no-rate-distortion", action="store_true", help="skip the noiseless runs of Fig. 7")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def _model(name_or_path: Optional[str]) -> str:
    """``--model``: a folder, a Hub id or a shipped model's name (``demo``, ``fast``); none: the default shipped one."""
    from ..shipped import DEFAULT_MODEL, resolve_model

    model = resolve_model(name_or_path)
    if model is None:
        raise FileNotFoundError(f"no --model given and the shipped {DEFAULT_MODEL!r} model is not installed")
    return model


def run(args: argparse.Namespace) -> int:
    """``gesco evaluate``: evaluate, write the report, print the tables and where everything went."""
    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    report = evaluate(
        _model(args.model), args.dataset, args.split,
        channel_grid(args.channels, args.psnrs, args.ebn0s),
        data_dir=args.data_dir, dataset_name=args.dataset_name, fds=args.fds, out_dir=args.out, limit=args.limit,
        size=args.size, num_inference_steps=args.steps, guidance_scale=args.guidance,
        sampler=None if args.sampler == "default" else args.sampler, seed=args.seed, batch_size=args.batch_size,
        device=args.device,
        networks=ScoringNetworks(
            judge=args.judge or "default", lpips=args.lpips_weights or "default", lpips_net=args.lpips_net,
            fid=args.fid_weights or "default", detector=args.detector, depth_model=args.depth_model,
        ),
        ablation_pipeline=args.ablation_model, table_psnr=args.table_psnr,
        image_codec=None if args.image_codec == "none" else args.image_codec, image_quality=args.image_quality,
        image_qualities=args.image_qualities, map_codec=args.map_codec, rate_distortion=not args.no_rate_distortion,
        log=log, psnr_convention=args.psnr_convention,
    )
    from accelerate import PartialState

    from .reports import tables_markdown

    if not PartialState().is_main_process:  # (evaluate built the state) one process prints
        return 0
    print(tables_markdown(report))
    print(f"results: {Path(args.out) / 'results.json'}, tables: {Path(args.out) / 'tables.md'}, "
          f"plots: {Path(args.out) / 'plots'}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status."""
    return run(build_parser().parse_args(argv))
