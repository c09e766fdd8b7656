"""The GESCO chain on one label map, as library functions (paper Fig. 1).

sender (one-hot encoding, lossless codec -> BPP) -> channel -> receiver (FDS) -> semantic diffusion model -> image,
with the map mIoU before and after FDS and timings. ``gesco transmit`` and the demo app (``gesco demo``) are thin
front ends over these functions: reading a label map (class ids, or colours of the dataset palette), loading a
pipeline, building the link from its options, and :func:`run_chain`.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import PIL.Image
import torch

from .chain_figures import ChainFigures
from .channel import SemanticChannel, build_channel, channel_for, channel_summary
from .evaluation.metrics.miou import compute_miou
from .pipelines import GescoPipeline
from .presets import DatasetPreset
from .sender.codecs import encode_semantic_map
from .shipped import resolve_model
from .utils.files import existing_file
from .visualize import labels_from_colors

__all__ = [
    "ChainFigures",
    "ChainResult",
    "LABEL_MODES",
    "build_link",
    "check_label_ids",
    "label_map_from_image",
    "looks_like_a_photo",
    "load_pipeline",
    "read_label_map",
    "resize_labels",
    "run_chain",
]

#: PIL modes of a single-channel label map of class ids.
LABEL_MODES = ("L", "P", "I", "I;16")
#: PIL modes read as a colour-coded map (colours of the dataset palette; alpha ignored).
COLOUR_MODES = ("RGB", "RGBA")


def load_pipeline(model: Optional[str], device: str) -> tuple[GescoPipeline, str]:
    """The pipeline to run and a one-line description of where it came from.

    ``model``: a pipeline folder, a Hub repo id or a shipped model name (``demo``, ``fast``); ``None`` is the default
    shipped model, or an untrained placeholder when it is not installed.
    """
    model = resolve_model(model)
    if model is None:
        pipe = GescoPipeline.from_unet_config("camvid-small", dataset="camvid", seed=0)
        return pipe.to(device), "UNTRAINED placeholder (random camvid-small weights: the image will be noise)"
    if not os.path.isdir(model) and os.path.exists(model):
        raise ValueError(f"--model {model!r} is not a pipeline folder")
    if os.path.isdir(model) and not os.path.isfile(os.path.join(model, "model_index.json")):
        raise FileNotFoundError(f"--model {model!r} has no model_index.json: not a GescoPipeline folder")
    # Shipped weights are fp16 (small); run in fp32 on a CPU, where half-precision kernels are slow or missing.
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    from diffusers.utils import logging as diffusers_logging

    # No loading bars: the command prints its own report, and an error after loading must stay one line.
    bars = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        pipe = GescoPipeline.from_pretrained(model, dtype=dtype)
    finally:
        if bars:
            diffusers_logging.enable_progress_bar()
    return pipe.to(device), model


#: Above this share of +-1 steps among the id changes between neighbouring pixels, a "label map" is more likely a photo
#: (a grey picture with few levels changes in smooth ramps; a label map changes at object boundaries, between any
#: two class ids). The threshold separates CamVid/COCO-Stuff maps from CamVid photos read as ids
#: (``benchmarks/photo_heuristic.py``, figures in benchmarks/README.md).
PHOTO_RAMP_SHARE = 0.55
#: Upscaling a map by more than this factor (either side) to the generation size earns a warning.
MAX_QUIET_UPSCALE = 4.0


def ramp_share(labels: np.ndarray) -> float:
    """The share of +-1 steps among the id changes between horizontally or vertically neighbouring pixels."""
    ids = np.asarray(labels, dtype=np.int64)
    steps = np.concatenate([np.diff(ids, axis=1).ravel(), np.diff(ids, axis=0).ravel()])
    steps = steps[steps != 0]
    return float((np.abs(steps) == 1).mean()) if steps.size else 0.0


def looks_like_a_photo(labels: np.ndarray) -> bool:
    """Whether an id map with at least four ids changes like a photo (:data:`PHOTO_RAMP_SHARE`)."""
    return np.unique(labels).size >= 4 and ramp_share(labels) > PHOTO_RAMP_SHARE


def check_label_ids(labels: np.ndarray, preset: DatasetPreset, what: str = "label map") -> np.ndarray:
    """``labels`` (class ids) checked against ``preset``: ids outside it are an error, a map that changes like a photo
    (:func:`looks_like_a_photo`) is named in a warning. Returns ``labels``."""
    foreign = np.unique(labels[(labels < 0) | (labels >= preset.num_classes)])
    if foreign.size:
        raise ValueError(
            f"{what}: ids {foreign[:8].tolist()} are not {preset.name} classes (0..{preset.num_classes - 1})"
        )
    if looks_like_a_photo(labels):
        warnings.warn(f"{what} looks like a photo, not a label map: {ramp_share(labels):.0%} of its id changes are "
                      "+-1 steps (smooth ramps; label maps measure at most 51%); pass the segmentation map",
                      stacklevel=3)
    return labels


def read_label_map(path: Union[str, Path], preset: Optional[DatasetPreset] = None) -> np.ndarray:
    """A single-channel PNG of class ids as an int64 ``(H, W)`` array: the one reader of label-map files.

    Every problem of the file is a one-line error naming it: missing, a folder, not an image (empty, another
    format), truncated or corrupt, not single-channel, empty. With ``preset``, ids outside it are an error too
    (:func:`check_label_ids`); without, the ids are not checked, so that a command can read its maps before the model
    (and its preset) loads and check them with :func:`check_label_ids` after.
    """
    path = existing_file(path, "label map", "a PNG file")
    try:
        with PIL.Image.open(path) as image:
            if image.mode not in LABEL_MODES:
                raise ValueError(f"{path}: a label map must be a single-channel PNG of class ids, got mode "
                                 f"{image.mode}")
            labels = np.array(image).astype(np.int64)  # decodes the pixels: a truncated file fails here
    except PIL.UnidentifiedImageError:
        raise ValueError(f"label map {path} is not a readable image file (empty, or another kind of file)") from None
    except (OSError, SyntaxError, EOFError) as err:  # PIL reports truncated or corrupt data with these
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"label map {path} cannot be decoded (truncated or corrupt file: {reason})") from None
    if labels.ndim != 2 or 0 in labels.shape:
        raise ValueError(f"label map {path} is empty ({'x'.join(map(str, labels.shape))} pixels)")
    return labels if preset is None else check_label_ids(labels, preset, str(path))


def label_map_from_image(image: PIL.Image.Image, preset: DatasetPreset, what: str = "label map") -> np.ndarray:
    """Class ids ``(H, W)`` int64 of a label image: a single-channel map of ids (``L``, ``P`` indices, ``I``,
    ``I;16``), or a colour-coded ``RGB``/``RGBA`` map in the preset's palette, converted back to ids
    (:func:`~gesco_diffusers.visualize.labels_from_colors`; a colour not in the palette is an error listing the first
    unknown colours). Ids outside the preset are an error."""
    if image.mode in LABEL_MODES:
        return check_label_ids(np.array(image).astype(np.int64), preset, what)
    if image.mode in COLOUR_MODES:
        rgb = np.asarray(image.convert("RGB"))
        return labels_from_colors(rgb, preset.palette, what=what, palette_name=f"the {preset.name} palette")
    raise ValueError(f"{what}: mode {image.mode!r} is neither a single-channel map of class ids {LABEL_MODES} nor a "
                     f"colour-coded map {COLOUR_MODES}")


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to ``size`` = (height, width), as label maps must be (no new ids). Upscaling by more
    than :data:`MAX_QUIET_UPSCALE` on a side is warned about (a 1x1 map becomes one block of one class)."""
    if labels.ndim != 2 or 0 in labels.shape:
        raise ValueError(f"a label map must be a non-empty (H, W) array, got shape {labels.shape}")
    factor = max(size[0] / labels.shape[0], size[1] / labels.shape[1])
    if factor > MAX_QUIET_UPSCALE:
        warnings.warn(f"the {labels.shape[0]}x{labels.shape[1]} label map is upscaled {factor:.0f}x to the "
                      f"generation size {size[0]}x{size[1]}: each of its pixels becomes a block", stacklevel=2)
    image = PIL.Image.fromarray(labels.astype(np.int32), mode="I")
    return np.array(image.resize((size[1], size[0]), PIL.Image.NEAREST)).astype(np.int64)


def build_link(
    source: Any,
    name: Optional[str],
    psnr_db: Optional[float] = None,
    ebn0_db: Optional[float] = None,
    modulation: Optional[str] = None,
    rician_k: Optional[float] = None,
    psnr_convention: Optional[str] = None,
) -> tuple[Optional[SemanticChannel], str]:
    """The channel the options name and a one-line description of it, for a pipeline (or ``semantic_config``)
    ``source`` whose stored PSNR convention the analog channels follow (see
    :func:`~gesco_diffusers.channel.channel_for`).

    ``name``: a channel of :data:`~gesco_diffusers.channel.CHANNEL_REGISTRY`, or ``None`` (noiseless). Analog
    channels take ``psnr_db`` (``None`` or ``inf``: noiseless); ``"digital"`` takes ``ebn0_db``, ``modulation``
    (default ``qpsk``, the paper's) and ``rician_k`` (flat Rician fading with that K factor instead of the default
    multipath channel).
    """
    if name == "digital":
        if ebn0_db is None:
            raise ValueError("the digital link needs an Eb/N0 (ebn0_db)")
        modulation = modulation or "qpsk"
        link = {} if rician_k is None else {"channel": "rician_flat", "rician_k": rician_k}
        channel = build_channel("digital", ebn0_db=ebn0_db, modulation=modulation, **link)
        fading = "multipath" if rician_k is None else f"flat Rician K={rician_k:g}"
        return channel, f"digital OFDM/{modulation.upper()} link over {fading} at Eb/N0 {ebn0_db} dB"
    if name is None or psnr_db is None or np.isinf(psnr_db):
        return None, "noiseless"
    channel = channel_for(source, name, psnr_db, psnr_convention=psnr_convention)
    return channel, f"{name} at PSNR {psnr_db} dB, {channel_summary(channel)}"


@dataclass
class ChainResult(ChainFigures):
    """One run of the chain on one map: its figures, the maps (``(H, W)`` int64 class ids at the generation size) and
    the image."""

    labels: np.ndarray  # the sent map
    received: np.ndarray  # argmax of the received class channels
    denoised: np.ndarray  # argmax after FDS
    image: PIL.Image.Image


def run_chain(
    pipe: GescoPipeline,
    labels: np.ndarray,
    channel: Optional[SemanticChannel] = None,
    fds: str = "paper",
    num_inference_steps: Optional[int] = None,
    guidance_scale: Optional[float] = None,
    seed: int = 0,
    codec: str = "png",
) -> ChainResult:
    """Send the ``(H, W)`` label map ``labels`` (already at the generation size) through the whole chain.

    BPP: the one-hot map coded losslessly with ``codec`` (bits / (H x W), the codec module's definition). The channel
    noise and the sampler are seeded with ``seed`` (two fresh generators). ``num_inference_steps`` and
    ``guidance_scale`` default to the pipeline's own (a distilled model stores 4 steps and guidance 1).
    """
    preset = pipe.dataset_preset
    guidance = pipe.default_guidance_scale if guidance_scale is None else guidance_scale
    steps = pipe.default_num_inference_steps if num_inference_steps is None else num_inference_steps
    pipe.check_inputs(steps, None, guidance, "pil", [])  # e.g. more steps than the schedule: refused before any work
    coded = encode_semantic_map(labels, codec=codec, representation="one_hot", num_classes=preset.num_classes)

    label_tensor = torch.from_numpy(np.asarray(labels, dtype=np.int64))[None]
    start = time.perf_counter()
    maps = pipe.prepare_semantic_map(label_tensor, channel=channel, fds=fds,
                                     generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"))
    seconds_pre = time.perf_counter() - start

    classes = preset.num_classes
    received_ids = maps.received[:, :classes].argmax(1)
    denoised_ids = maps.denoised[:, :classes].argmax(1)
    miou_received = compute_miou(received_ids, label_tensor, classes, preset.ignore_ids).miou
    miou_fds = compute_miou(denoised_ids, label_tensor, classes, preset.ignore_ids).miou

    start = time.perf_counter()
    image = pipe(maps.received, fds=fds, num_inference_steps=steps, guidance_scale=guidance,
                 generator=torch.Generator().manual_seed(seed), output_type="pil").images[0]
    seconds_gen = time.perf_counter() - start

    return ChainResult(
        labels=np.asarray(labels, dtype=np.int64), received=received_ids[0].numpy(), denoised=denoised_ids[0].numpy(),
        image=image, codec=codec, bpp=coded.bpp, bits_per_element=coded.bits_per_element,
        map_miou_received=miou_received, map_miou_fds=miou_fds, fds=fds, sampler=type(pipe.scheduler).__name__,
        steps=steps, guidance_scale=guidance, seed=seed, seconds_preprocessing=seconds_pre,
        seconds_generation=seconds_gen,
    )
