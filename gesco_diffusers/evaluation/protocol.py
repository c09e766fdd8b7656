"""What ``gesco evaluate`` runs: channel conditions, methods, and the runs (a method under a condition) of one
evaluation.

A run's methods (:attr:`Method.kind`; each kind has an image source, :data:`.sources.IMAGE_SOURCES`):

* ``ours``: the pipeline regenerates the image from the received map, with FDS (Eq. 1) on or off;
* ``full_image`` (the paper's "Full image" baseline): the photo coded with a lossy image codec at a quality, sent
  over the same channel;
* ``semantic_map`` (Table V's "Semantic map" row): the received map itself, colour-coded;
* ``deepjscc`` (Fig. 10): the photo sent by a trained DeepJSCC network over the same channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from ..channel import CHANNEL_REGISTRY
from ..receiver import RECEIVER_METHODS
from .reports import PAPER_FDS_MODES, RunRecord

__all__ = [
    "DEFAULT_IMAGE_QUALITIES",
    "FDS_MODES",
    "PAPER_PSNRS",
    "ChannelCondition",
    "Method",
    "Run",
    "channel_grid",
    "plan_runs",
]

#: The PSNR columns of the paper's Tables I-III (dB).
PAPER_PSNRS = (100.0, 30.0, 20.0, 15.0, 10.0, 5.0, 1.0)
#: Every receiver arm `gesco evaluate` can run: the paper's FDS, none, the adaptive FDS and the learned denoiser.
FDS_MODES = RECEIVER_METHODS  # the receiver's methods, named in one place
#: Default qualities of the full-image curve of Fig. 7.
DEFAULT_IMAGE_QUALITIES = (0, 10, 20, 30, 40)


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
        from ..channel import build_channel  # (the models: torch; the names above import none, for --help)

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


@dataclass(frozen=True)
class Method:
    """How a run's images are made (see the module docstring)."""

    kind: str
    fds: Optional[str] = None
    ablation: bool = False
    codec: Optional[str] = None
    quality: Optional[int] = None
    baseline: Optional[str] = None  # the name of a ``deepjscc`` run's network

    def __post_init__(self) -> None:
        from .sources import IMAGE_SOURCES  # the method kinds are the kinds that have an image source

        if self.kind not in IMAGE_SOURCES:
            raise ValueError(f"method kind must be one of {tuple(IMAGE_SOURCES)}, got {self.kind!r}")
        if (self.kind == "ours") != (self.fds is not None):
            raise ValueError(f"an 'ours' method needs fds (one of {FDS_MODES}); other methods take none")
        if self.fds is not None and self.fds not in FDS_MODES:
            raise ValueError(f"fds must be one of {FDS_MODES}, got {self.fds!r}")
        if (self.kind == "full_image") != (self.codec is not None and self.quality is not None):
            raise ValueError("a 'full_image' method needs a codec and a quality; other methods take none")
        if (self.kind == "deepjscc") != (self.baseline is not None):
            raise ValueError("a 'deepjscc' method needs the name of its network; other methods take none")

    @property
    def key(self) -> str:
        if self.kind == "ours":
            return f"{'ablation' if self.ablation else 'ours'}_fds-{self.fds}"
        if self.kind == "full_image":
            return f"full-image_{self.codec}-q{self.quality}"
        if self.kind == "deepjscc":
            return f"deepjscc_{self.baseline}"
        return self.kind.replace("_", "-")

    @property
    def label(self) -> str:
        if self.kind == "ours":
            name = "Ours, no noisy training" if self.ablation else "Ours"
            return {"paper": name, "none": f"{name}, FDS off", "adaptive": f"{name}, adaptive FDS",
                    "learned": f"{name}, learned denoiser"}[self.fds]
        if self.kind == "full_image":
            return f"Full image ({self.codec} q{self.quality})"
        if self.kind == "semantic_map":
            return "Semantic map (received)"
        if self.kind == "deepjscc":
            return f"DeepJSCC ({self.baseline})"
        return self.kind


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
    baselines: Sequence[str] = (),
) -> list[Run]:
    """Every run of an evaluation: ``ours`` for each FDS mode, the full image and each DeepJSCC network in
    ``baselines`` at every condition, the received map and the ablation pipeline at the tables' condition, and the
    noiseless runs of Fig. 7."""
    runs: list[Run] = []
    for condition in conditions:
        runs += [Run(Method("ours", fds=mode), condition) for mode in fds]
        if condition.channel != "digital":  # the photo baselines send analog values, not the link's bits
            if image_codec is not None:
                runs.append(Run(Method("full_image", codec=image_codec, quality=image_quality), condition))
            runs += [Run(Method("deepjscc", baseline=name), condition) for name in baselines]
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
