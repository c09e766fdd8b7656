"""The demo's logic, free of any user interface (no gradio here): what the two tabs compute.

* :func:`transmit_map`: one map through the whole chain (:func:`gesco_diffusers.chain.run_chain`) with a shipped (or
  given) model; the images a person looks at (photo, sent / received / FDS-cleaned maps coloured with the dataset
  palette, generated image) and the figures (BPP, map mIoU before and after FDS, timings).
* :func:`psnr_sweep`: one map over a list of channel levels, map mIoU of every receiver (no FDS, the paper's FDS, the
  adaptive FDS) on the same channel realisation (:func:`gesco_diffusers.experiments.map_level.score_channel`); no
  diffusion model is run, only the model's dataset preset and PSNR convention are read.

Errors from bad input are ``ValueError`` (or ``FileNotFoundError``) with one line of message; the app shows them.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch

from ..chain import ChainResult, build_link, label_map_from_image, load_pipeline, read_label_map, resize_labels
from ..chain import run_chain
from ..channel import CHANNEL_REGISTRY, MODULATIONS
from ..diffusion import SAMPLERS, build_scheduler
from ..experiments.map_level import FDS_ARMS, encode_label_maps, score_channel
from ..models import SemanticUNet2DModel
from ..pipelines import GescoPipeline
from ..presets import DatasetPreset
from ..receiver import FDS_METHODS
from ..shipped import DEFAULT_MODEL, SHIPPED_MODELS, resolve_model, sample_maps, sample_photo
from ..visualize import colorize

__all__ = [
    "CHANNELS",
    "DEFAULT_SWEEP",
    "FDS_METHODS",
    "MODELS",
    "MODULATIONS",
    "NOISELESS",
    "PipelineCache",
    "SAMPLER_CHOICES",
    "SWEEP_RECEIVERS",
    "TransmitOutputs",
    "legend_html",
    "load_input_map",
    "model_info",
    "model_preset",
    "parse_levels",
    "psnr_sweep",
    "sample_names",
    "transmit_map",
]

#: The shipped models the demo offers: ``demo`` (40 guided steps), ``fast`` (the distilled 4-call student); not the
#: Table VIII ablation (trained on clean maps only, weak on noisy ones by design), which ``--model ablation`` adds.
MODELS: tuple[str, ...] = tuple(name for name in SHIPPED_MODELS if name != "ablation")
#: The channel choice without noise (the map arrives as sent).
NOISELESS = "noiseless"
CHANNELS: tuple[str, ...] = (NOISELESS, *sorted(CHANNEL_REGISTRY))
#: ``default``: the model's own sampler (the scheduler stored with it).
SAMPLER_CHOICES: tuple[str, ...] = ("default", *SAMPLERS)
#: The PSNR grid of the sweep tab (the paper's, Tables I-III, without the 100 dB "clean" point).
DEFAULT_SWEEP: tuple[float, ...] = (30, 20, 15, 10, 5, 1)
#: Receiver labels of the sweep, per :data:`~gesco_diffusers.experiments.map_level.FDS_ARMS` arm.
SWEEP_RECEIVERS = {"no_fds": "no FDS", "fds": "FDS (paper)", "adaptive_fds": "adaptive FDS"}
#: At most this many levels in one sweep (each costs a channel draw and three receivers).
MAX_SWEEP_LEVELS = 40


def sample_names() -> list[str]:
    """The shipped sample maps by name (file stem)."""
    return [path.stem for path in sample_maps()]


def _sample_path(name: str) -> Path:
    paths = {path.stem: path for path in sample_maps()}
    if name not in paths:
        raise ValueError(f"unknown sample {name!r}; choose one of {sorted(paths)}")
    return paths[name]


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_input_map(
    sample: Optional[str], upload: Optional[Union[str, Path]], preset: DatasetPreset
) -> tuple[np.ndarray, Optional[PIL.Image.Image], str]:
    """``(labels (H, W) int64, photo or None, a name for it)``: the uploaded file when given, else the shipped sample.

    An upload is a class-id PNG (single channel) or a colour-coded map in the dataset palette, converted back to ids;
    colours outside the palette, ids outside the dataset and files that are not images are errors.
    """
    if upload:
        path = Path(upload)
        try:
            with PIL.Image.open(path) as image:
                image.load()
                labels = label_map_from_image(image, preset, what=f"uploaded map {path.name}")
        except PIL.UnidentifiedImageError as err:
            raise ValueError(f"uploaded map {path.name} is not an image file") from err
        return labels, None, path.name
    if not sample:
        raise ValueError("choose a shipped sample or upload a label map")
    path = _sample_path(sample)
    labels = read_label_map(path, preset)
    photo_path = sample_photo(path)
    photo = None
    if photo_path is not None:
        with PIL.Image.open(photo_path) as image:
            photo = image.convert("RGB")
    return labels, photo, f"sample {sample}"


def model_info(model: str) -> tuple[dict, tuple[int, int]]:
    """``(semantic_config, (H, W) generation size)`` of a model, read from its configuration files (no weights)."""
    folder = resolve_model(model)
    if folder is None:
        raise FileNotFoundError(f"the default shipped model {DEFAULT_MODEL!r} is not installed")
    config = GescoPipeline.load_config(folder)
    semantic_config = dict(config.get("semantic_config") or {})
    unet_config = SemanticUNet2DModel.load_config(folder, subfolder="unet")
    size = unet_config["sample_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    return semantic_config, size


def legend_html(preset: DatasetPreset) -> str:
    """The dataset's classes as coloured swatches with their names (HTML), to read the coloured maps."""
    import html

    items = "".join(
        f'<span style="display:inline-block;margin:2px 10px 2px 0;white-space:nowrap">'
        f'<span style="display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle;'
        f'border:1px solid #888;background:rgb{tuple(colour)}"></span>{html.escape(name)} ({i})</span>'
        for i, (name, colour) in enumerate(zip(preset.class_names, preset.palette)))
    return f'<div style="font-size:0.85em;line-height:1.6">{items}</div>'


def _preset_of(semantic_config: dict, model: str) -> DatasetPreset:
    if not semantic_config.get("dataset"):
        raise ValueError(f"model {model!r} stores no dataset preset (semantic_config['dataset'])")
    return DatasetPreset.from_dict(semantic_config["dataset"])


def model_preset(model: str) -> DatasetPreset:
    """The dataset preset stored with ``model`` (read from its configuration, no weights)."""
    return _preset_of(model_info(model)[0], model)


class PipelineCache:
    """Pipelines by model name, loaded once on first use, and the lock that serialises their use (the sampler is
    swapped on the shared pipeline for each request)."""

    def __init__(self, device: Optional[str] = None):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._pipes: dict[str, tuple[GescoPipeline, Any]] = {}
        self.lock = threading.RLock()

    def get(self, model: str) -> tuple[GescoPipeline, float]:
        """The pipeline of ``model`` with its own scheduler restored, and the seconds its loading took (0 when it
        was loaded before)."""
        with self.lock:
            if model not in self._pipes:
                start = time.perf_counter()
                pipe, _ = load_pipeline(model, self.device)
                pipe.set_progress_bar_config(disable=True)
                self._pipes[model] = (pipe, pipe.scheduler)
                seconds = time.perf_counter() - start
            else:
                seconds = 0.0
            pipe, scheduler = self._pipes[model]
            pipe.scheduler = scheduler
            return pipe, seconds


_DEFAULT_CACHE: Optional[PipelineCache] = None


def default_cache() -> PipelineCache:
    global _DEFAULT_CACHE
    if _DEFAULT_CACHE is None:
        _DEFAULT_CACHE = PipelineCache()
    return _DEFAULT_CACHE


def _integer(value: Any, what: str, minimum: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or number < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(number)


def _level(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in dB, got {value!r}") from None
    if math.isnan(number):
        raise ValueError(f"{what} must be a number in dB, got {value!r}")
    return number


@dataclass
class TransmitOutputs:
    """What the Transmit tab shows: the images (maps coloured with the dataset palette, at the generation size) and
    the chain's figures (``result``)."""

    photo: Optional[PIL.Image.Image]
    sent: PIL.Image.Image
    received: PIL.Image.Image
    denoised: PIL.Image.Image
    generated: PIL.Image.Image
    result: ChainResult
    source: str
    model: str
    channel: str
    seconds_loading: float

    def summary(self) -> str:
        """The figures as Markdown."""
        r = self.result
        size = f"{r.labels.shape[0]}x{r.labels.shape[1]}"
        return "\n".join([
            f"**map** {self.source} at {size} · **model** {self.model}",
            f"- **BPP** (one-hot map, lossless {r.codec}): {r.bpp:.4f} bits per pixel",
            f"- **channel**: {self.channel}",
            f"- **map mIoU**: received {r.map_miou_received:.3f} → after FDS ({r.fds}) {r.map_miou_fds:.3f}",
            f"- **generation**: {r.sampler}, {r.steps} steps, guidance {r.guidance_scale:g}, seed {r.seed}",
            f"- **time**: model loading {self.seconds_loading:.1f} s, channel + FDS "
            f"{r.seconds_preprocessing * 1000:.1f} ms, generation {r.seconds_generation:.2f} s",
        ])


def transmit_map(
    sample: Optional[str] = None,
    upload: Optional[Union[str, Path]] = None,
    model: str = DEFAULT_MODEL,
    channel: str = "awgn",
    psnr_db: Optional[float] = 10.0,
    ebn0_db: Optional[float] = 6.0,
    modulation: str = "qpsk",
    fds: str = "paper",
    sampler: str = "default",
    steps: Optional[int] = None,
    seed: int = 0,
    cache: Optional[PipelineCache] = None,
) -> TransmitOutputs:
    """Send one map through the chain with ``model`` and return what the Transmit tab shows.

    ``channel``: :data:`CHANNELS` (``noiseless``, or a channel of the registry at ``psnr_db``; ``digital`` at
    ``ebn0_db`` with ``modulation``). ``steps``: ``None`` or 0 for the model's own (40 for ``demo``, 4 for ``fast``).
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; choose one of {list(CHANNELS)}")
    if fds not in FDS_METHODS:
        raise ValueError(f"unknown FDS method {fds!r}; choose one of {list(FDS_METHODS)}")
    if sampler not in SAMPLER_CHOICES:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLER_CHOICES)}")
    if channel == "digital" and modulation not in MODULATIONS:
        raise ValueError(f"unknown modulation {modulation!r}; choose one of {sorted(MODULATIONS)}")
    steps = _integer(0 if steps is None else steps, "steps", 0) or None
    seed = _integer(seed, "seed", 0)
    level = {"ebn0_db": _level(ebn0_db, "Eb/N0")} if channel == "digital" else \
        {} if channel == NOISELESS else {"psnr_db": _level(psnr_db, "PSNR")}

    cache = cache or default_cache()
    with cache.lock:
        pipe, seconds_loading = cache.get(model)
        preset = pipe.dataset_preset
        labels_full, photo, source = load_input_map(sample, upload, preset)
        labels = resize_labels(labels_full, tuple(pipe.unet.config.sample_size))
        if sampler != "default":
            pipe.scheduler = build_scheduler(sampler, pipe.scheduler.config)
        link, channel_desc = build_link(pipe, None if channel == NOISELESS else channel, modulation=modulation,
                                        **level)
        result = run_chain(pipe, labels, channel=link, fds=fds, num_inference_steps=steps, seed=seed)
        if sampler != "default":
            result.sampler = f"{sampler} ({result.sampler})"
    palette = preset.palette
    return TransmitOutputs(
        photo=photo, sent=colorize(result.labels, palette), received=colorize(result.received, palette),
        denoised=colorize(result.denoised, palette), generated=result.image, result=result, source=source,
        model=model, channel=channel_desc, seconds_loading=seconds_loading,
    )


def parse_levels(text: Union[str, Sequence[float]], what: str = "PSNR") -> list[float]:
    """A list of levels in dB from text such as ``"30, 20, 10 5"`` (commas or spaces); finite numbers only."""
    if not isinstance(text, str):
        items = list(text)
    else:
        items = [item for item in re.split(r"[,;\s]+", text.strip()) if item]
    if not items:
        raise ValueError(f"give at least one {what} in dB, e.g. 30, 20, 10, 5, 1")
    levels = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"{what} list: {item!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{what} list: {item!r} is not a finite number of dB")
        levels.append(value)
    if len(levels) > MAX_SWEEP_LEVELS:
        raise ValueError(f"{what} list: {len(levels)} levels, at most {MAX_SWEEP_LEVELS}")
    return levels


def psnr_sweep(
    sample: Optional[str] = None,
    upload: Optional[Union[str, Path]] = None,
    model: str = DEFAULT_MODEL,
    channel: str = "awgn",
    levels: Union[str, Sequence[float]] = DEFAULT_SWEEP,
    modulation: str = "qpsk",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Map mIoU of one map over ``levels`` (PSNR in dB; Eb/N0 for ``digital``), one row per level and receiver:
    ``{"level_db", "receiver", "miou"}``, levels in ascending order.

    The map is resized to ``model``'s generation size and scored against itself, as in the Transmit tab; the analog
    channels follow the PSNR convention stored with ``model``. Every level draws its noise from a fresh generator
    seeded with ``seed``, and the three receivers see the same draw.
    """
    if channel not in CHANNEL_REGISTRY:
        raise ValueError(f"choose a channel to sweep, one of {sorted(CHANNEL_REGISTRY)} (got {channel!r})")
    if channel == "digital" and modulation not in MODULATIONS:
        raise ValueError(f"unknown modulation {modulation!r}; choose one of {sorted(MODULATIONS)}")
    levels = sorted(parse_levels(levels, "Eb/N0" if channel == "digital" else "PSNR"))
    seed = _integer(seed, "seed", 0)
    semantic_config, size = model_info(model)
    preset = _preset_of(semantic_config, model)
    labels, _, _ = load_input_map(sample, upload, preset)
    labels = torch.from_numpy(resize_labels(labels, size))
    # Datasets with an edge channel: the label map's own borders (what the pipeline sends without an instance map).
    batches = encode_label_maps([(labels, labels if preset.use_instance_edges else None)], preset)
    rows = []
    for level in levels:
        link, _ = build_link(semantic_config, channel, modulation=modulation,
                             **({"ebn0_db": level} if channel == "digital" else {"psnr_db": level}))
        scores = score_channel(link, batches, preset, seed)
        rows += [{"level_db": level, "receiver": SWEEP_RECEIVERS[arm], "miou": scores[f"miou_{arm}"]}
                 for arm in FDS_ARMS]
    return rows
