"""Where the images of a run come from: one image source per method kind, ``source(items) -> [uint8 (H, W, 3)]``.

* ``ours``: sender -> channel -> FDS -> the pipeline's batched reverse diffusion;
* ``semantic_map``: the received map (no FDS), arg-maxed and colour-coded with the dataset palette;
* ``full_image``: the photo coded with a lossy codec, decoded, and the float image in ``[0, 1]`` sent over the same
  channel module (for AWGN: noise at the same PSNR, Eq. 15 with the peak power ``P = 1``); the receiver shows it as
  an 8-bit picture, i.e. clipped to ``[0, 1]`` and rounded (a display cannot show anything else);
* ``deepjscc``: the photo through a trained :class:`~gesco_diffusers.baselines.DeepJSCC` network, its latent sent
  over the same channel module (unit power per real element, so Eq. 15 gives both systems the same noise level).

A new method kind is one entry of :data:`IMAGE_SOURCES`.

Randomness, per item ``i`` (its row in the sorted split): the sampler's initial noise is seeded with ``seed + i``;
the channel noise with ``derive_seed(seed + i, 1)`` (an independent stream, the same for every method at a condition,
so FDS on/off and the ablation model see the same received map). Batching does not change which noise an item gets.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from ..channel import channel_for, resolve_psnr_convention
from .data import EvaluationItem
from .protocol import FDS_MODES, ChannelCondition, Run
from .store import model_fingerprint, module_fingerprint

if TYPE_CHECKING:  # imported where used: the pipeline stack is heavy
    from ..pipelines import GescoPipeline

__all__ = [
    "CHANNEL_SEED_KEY",
    "IMAGE_SOURCES",
    "DeepJSCCImages",
    "FullImages",
    "GenerationSettings",
    "ImageSources",
    "PipelineImages",
    "ReceivedMapImages",
    "check_generation_arguments",
    "check_size",
    "load_pipeline",
    "sample_size",
    "sampling",
]

#: ``derive_seed(seed + i, CHANNEL_SEED_KEY)`` seeds the channel noise of item ``i``.
CHANNEL_SEED_KEY = 1

ImageSource = Callable[[Sequence[EvaluationItem]], list[np.ndarray]]
PathLike = Union[str, os.PathLike]


@dataclass
class GenerationSettings:
    """How the pipeline samples (shared by every ``ours`` run)."""

    num_inference_steps: int
    guidance_scale: float
    seed: int
    psnr_convention: Optional[str] = None  # PSNR -> noise level; None: the one stored with each pipeline


def channel_generator(seed: int, index: int) -> torch.Generator:
    """The generator of item ``index``'s channel noise."""
    from ..data import seeded_generator

    return seeded_generator(seed + index, CHANNEL_SEED_KEY)


def _to_uint8_hwc(images: torch.Tensor) -> list[np.ndarray]:
    """``(B, 3, H, W)`` floats in [0, 1] -> 8-bit ``(H, W, 3)`` pictures (what a PNG stores)."""
    return list((images.float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())


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
                fds=fds, generator=channel_generator(self.settings.seed, item.index), device=device,
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
                image = self.channel(image, None, generator=channel_generator(self.seed, item.index))
            out += _to_uint8_hwc(image.clamp(0.0, 1.0))  # the receiver's 8-bit display of the noisy image
        return out


class DeepJSCCImages:
    """``deepjscc`` runs: photo -> DeepJSCC encoder -> the channel (per-item seeded) -> decoder -> 8-bit picture."""

    def __init__(self, model, condition: ChannelCondition, seed: int):
        if condition.channel == "digital":
            raise ValueError("DeepJSCC is not defined over the digital link (it sends analog symbols)")
        self.model, self.channel, self.seed = model, condition.build(), seed

    @torch.no_grad()
    def __call__(self, items: Sequence[EvaluationItem]) -> list[np.ndarray]:
        out = []
        for item in items:
            photo = item.photo[None].to(self.model.device, self.model.dtype) / 255.0
            symbols = self.model.encode(photo)
            if self.channel is not None:
                symbols = self.channel(symbols, None, generator=channel_generator(self.seed, item.index))
            out += _to_uint8_hwc(self.model.decode(symbols))
        return out


# -- the method kinds ---------------------------------------------------------------------------------------------
# A maker returns a run's image source and what determines its images beyond the settings every run shares.

SourceMaker = Callable[["ImageSources", Run], tuple[ImageSource, dict[str, Any]]]


def _pipeline_source(images: type[PipelineImages]) -> SourceMaker:
    def make(sources: "ImageSources", run: Run) -> tuple[ImageSource, dict[str, Any]]:
        method, generation = run.method, sources.generation
        pipe = sources.pipes[method.ablation]
        settings = {"model": sources.fingerprints[method.ablation], "steps": generation.num_inference_steps,
                    "guidance_scale": generation.guidance_scale}
        convention = resolve_psnr_convention(pipe, generation.psnr_convention)
        if run.condition.channel == "awgn" and convention != "paper":  # (Eq. 15 folders keep their earlier settings)
            settings["psnr_convention"] = convention
        receiver = method.fds or "none"
        if receiver in sources.receivers:  # a trained receiver: the module, and its weights decide the images too
            settings["receiver"] = module_fingerprint(sources.receivers[receiver])
            receiver = sources.receivers[receiver]
        return images(pipe, receiver, run.condition, generation), settings

    return make


def _full_image_source(sources: "ImageSources", run: Run) -> tuple[ImageSource, dict[str, Any]]:
    return FullImages(run.method.codec, run.method.quality, run.condition, sources.generation.seed), {}


def _deepjscc_source(sources: "ImageSources", run: Run) -> tuple[ImageSource, dict[str, Any]]:
    model = sources.baselines[run.method.baseline]
    return DeepJSCCImages(model, run.condition, sources.generation.seed), {"model": module_fingerprint(model)}


#: The image source of each method kind (:attr:`~.protocol.Method.kind`).
IMAGE_SOURCES: dict[str, SourceMaker] = {
    "ours": _pipeline_source(PipelineImages),
    "full_image": _full_image_source,
    "semantic_map": _pipeline_source(ReceivedMapImages),
    "deepjscc": _deepjscc_source,
}


class ImageSources:
    """Builds the image source of each run and the settings that determine its images (``settings.json``)."""

    def __init__(self, pipe: "GescoPipeline", ablation_pipe: Optional["GescoPipeline"],
                 generation: GenerationSettings, common: dict[str, Any], baselines: Optional[dict] = None,
                 receivers: Optional[dict] = None):
        self.pipes = {False: pipe, True: ablation_pipe}
        self.baselines = dict(baselines or {})  # DeepJSCC networks by run name
        self.receivers = dict(receivers or {})  # trained receivers by FDS mode name ("learned")
        self.fingerprints = {key: model_fingerprint(p) for key, p in self.pipes.items() if p is not None}
        self.generation, self.common = generation, common

    def __call__(self, run: Run) -> tuple[ImageSource, dict[str, Any]]:
        source, own = IMAGE_SOURCES[run.method.kind](self, run)
        return source, {**self.common, "channel": run.condition.describe(), "method": run.method.key, **own}


# -- the pipelines that sample ------------------------------------------------------------------------------------


def load_pipeline(pipeline: Union["GescoPipeline", PathLike], device: torch.device) -> "GescoPipeline":
    """``pipeline`` (a :class:`GescoPipeline` or its folder) on ``device``."""
    from ..chain import load_pipeline as load_named
    from ..pipelines import GescoPipeline

    if isinstance(pipeline, GescoPipeline):
        return pipeline.to(device)
    if not isinstance(pipeline, (str, os.PathLike)):
        raise TypeError(f"pipeline must be a GescoPipeline or a folder, got {type(pipeline).__name__}")
    return load_named(os.fspath(pipeline), str(device))[0]


@contextmanager
def sampling(pipes: Sequence["GescoPipeline"], sampler: Optional[str]) -> Iterator[None]:
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


def sample_size(pipe: "GescoPipeline") -> tuple[int, int]:
    """The U-Net's ``(H, W)``."""
    size = pipe.unet.config.sample_size
    return (size, size) if isinstance(size, int) else tuple(size)


def check_size(size: Sequence[int], factor: int) -> tuple[int, int]:
    """``size`` as ``(H, W)``, checked against the U-Net's downsampling ``factor``."""
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width) > 0, got {size}")
    if size[0] % factor or size[1] % factor:
        raise ValueError(f"size {size[0]}x{size[1]} is not divisible by the U-Net's downsampling factor {factor}")
    return size


def check_generation_arguments(seed: int, batch_size: int, num_inference_steps: int, fds: Sequence[str]) -> None:
    for name, value, low in (("seed", seed, 0), ("batch_size", batch_size, 1),
                             ("num_inference_steps", num_inference_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not fds or any(mode not in FDS_MODES for mode in fds) or len(set(fds)) != len(fds):
        raise ValueError(f"fds must list distinct modes among {FDS_MODES}, got {tuple(fds)}")
