"""``GescoPipeline``: received semantic map in, regenerated image out (paper Fig. 1, receiver side).

``__call__`` = preprocessing (:meth:`GescoPipeline.prepare_semantic_map`: sender encoding, optional channel
simulation, FDS) + a conditional reverse diffusion with classifier-free guidance (Eq. 14) driven by any diffusers
scheduler.
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from ..diffusion.guidance import guidance_maps, guided_model_output
from ..diffusion.schedulers import (
    DEFAULT_SAMPLING_STEPS,
    MODEL_PREDICTIONS,
    scheduler_incompatibility,
    scheduler_reads_learned_variance,
)
from ..models import SemanticModulationCache, SemanticUNet2DModel
from ..presets import DatasetPreset, default_palette
from ..receiver import FDS_METHODS, FastDenoisingSemantic, build_fds
from ..sender.encoding import SemanticEncoder, instance_edges
from .inputs import (
    MapInput,
    check_float_map,
    check_instance_map,
    check_label_map,
    check_not_empty,
    check_spatial_size,
    is_label_map,
    to_batched_tensor,
)
from .loading import loading_names, package_names, write_loading_modules

#: How the conditioning map is laid out. ``"one_hot"``: C = classes (+ instance edges), the paper's encoding.
#: ``"label_index_and_edges"``: the 2-channel ``[raw label id, edge]`` map of checkpoints trained with the authors'
#: ``one_hot_label=False`` default (reference doc section 7, bug 3).
MAP_ENCODINGS = ("one_hot", "label_index_and_edges")

#: How the channel noise is drawn when ``num_images_per_map > 1``: ``"per_map"``, once per map (its images share the
#: received map and show the sampler's diversity); ``"per_image"``, once per image (each image sees its own channel
#: realisation, so they also show the channel's effect).
CHANNEL_DRAWS = ("per_map", "per_image")

#: Folders never uploaded or downloaded with a pipeline (Accelerate training state).
TRAINING_STATE_PATTERNS = [
    "checkpoint-*", "checkpoint-*/*", ".checkpoint-*", ".checkpoint-*/*", "logs/*", "validation/*",
    "train_log.jsonl", "*.pt", "*.pth", "*.bin",
]


@dataclass
class PreparedSemanticMap(BaseOutput):
    """The semantic map at each stage of the communication chain.

    Args:
        clean: the sender's one-hot map ``(B, C, H, W)`` (``None`` when a received map was passed in).
        received: the map after the channel (equal to ``clean`` without a channel).
        denoised: the map after FDS (equal to ``received`` with ``fds=False``).
        transmitted: ``(B, C)`` bool, the channels that were sent (present classes and the edge channel).
        conditioning: the tensor fed to the U-Net (``denoised``, or its 2-channel form for label-index models).
    """

    clean: Optional[torch.Tensor]
    received: torch.Tensor
    denoised: torch.Tensor
    transmitted: torch.Tensor
    conditioning: torch.Tensor


@dataclass
class GescoPipelineOutput(BaseOutput):
    """Output of :class:`GescoPipeline`.

    Args:
        images: generated images (list of PIL images, ``(B, H, W, 3)`` numpy array or ``(B, 3, H, W)`` tensor in [0, 1]).
        semantic_maps: the preprocessed maps that conditioned the generation.
    """

    images: Union[list[PIL.Image.Image], np.ndarray, torch.Tensor]
    semantic_maps: Optional[PreparedSemanticMap] = None


def _accepts(fn: Callable, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def _repeat(x: Optional[torch.Tensor], repeats: int) -> Optional[torch.Tensor]:
    """Each row ``repeats`` times in a row (images of the same map are neighbours, as diffusers orders prompts)."""
    return x if x is None or repeats == 1 else x.repeat_interleave(repeats, dim=0)


def _check_num_steps(value, num_train_timesteps: int, what: str = "num_inference_steps") -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if value > num_train_timesteps:
        raise ValueError(f"{what}={value} exceeds the scheduler's {num_train_timesteps} training timesteps")


def _check_guidance_scale(value, what: str = "guidance_scale") -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0 (values <= 1 mean no guidance), got {value!r}")


def _check_timesteps(timesteps, num_train_timesteps: int) -> list[int]:
    """Custom timesteps as a list of ints: integer, in ``[0, num_train_timesteps)``, strictly descending."""
    try:
        values = torch.as_tensor(timesteps).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"timesteps must be a sequence of integers, got {timesteps!r}") from None
    if values.numel() == 0:
        raise ValueError("timesteps is empty; pass the descending training timesteps to sample at")
    if values.dtype == torch.bool or (values.is_floating_point() and not (values == values.round()).all()):
        raise ValueError(f"timesteps must be integers, got {values.tolist()}")
    values = values.long().tolist()
    outside = [t for t in values if not 0 <= t < num_train_timesteps]
    if outside:
        raise ValueError(f"timesteps must lie in [0, {num_train_timesteps}), got {outside}")
    for a, b in zip(values, values[1:]):
        if a <= b:
            raise ValueError(f"timesteps must be strictly descending, got {a} then {b}")
    return values


class GescoPipeline(DiffusionPipeline):
    r"""Generative semantic communication receiver: regenerate images from (noisy) semantic maps.

    Components:
        unet ([`SemanticUNet2DModel`]): the SPADE diffusion U-Net.
        scheduler: a diffusers scheduler of the DDPM family, e.g. ``DDIMScheduler.from_config(pipe.scheduler.config)``.
            Schedulers whose step reads a learned variance (``DDPMScheduler`` with ``variance_type="learned_range"``)
            get the U-Net's variance channels, all others its epsilon channels only; schedulers that cannot drive the
            model (flow matching, EDM, ...) are refused before sampling
            (:func:`~gesco_diffusers.diffusion.schedulers.scheduler_incompatibility`).

    Config:
        semantic_config (`dict`, *optional*): ``{"dataset": DatasetPreset.to_dict(), "map_encoding": ...,
            "psnr_convention": ..., "guidance_scale": ..., "num_inference_steps": ...}``; without it the map is taken
            as ``segmap_channels`` plain class channels. ``guidance_scale``, ``num_inference_steps`` and
            ``timesteps`` (a descending list: the schedule of calls with its number of steps or none given) are the
            sampling defaults of ``__call__`` (a distilled pipeline stores its few steps and no guidance).
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents"]
    _guidance_scale: Optional[float] = None
    _num_timesteps: Optional[int] = None
    _interrupt = False

    def __init__(self, unet: SemanticUNet2DModel, scheduler, semantic_config: Optional[dict] = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        semantic_config = dict(semantic_config or {})
        encoding = semantic_config.setdefault("map_encoding", "one_hot")
        if encoding not in MAP_ENCODINGS:
            raise ValueError(f"map_encoding must be one of {MAP_ENCODINGS}, got {encoding!r}")
        if encoding == "one_hot" and semantic_config.get("dataset"):
            channels = DatasetPreset.from_dict(semantic_config["dataset"]).map_channels
            if channels != unet.config.segmap_channels:
                raise ValueError(f"the stored dataset has {channels} map channels but the U-Net takes "
                                 f"{unet.config.segmap_channels} (segmap_channels): the folder mixes two models")
        # Stored sampling defaults fail at loading, not at the first call.
        if semantic_config.get("prediction_type", "epsilon") not in MODEL_PREDICTIONS:
            raise ValueError(f"semantic_config['prediction_type'] must be 'epsilon' or 'sample', got "
                             f"{semantic_config['prediction_type']!r}")
        if "guidance_scale" in semantic_config:
            _check_guidance_scale(semantic_config["guidance_scale"], "semantic_config['guidance_scale']")
        if "num_inference_steps" in semantic_config:
            _check_num_steps(semantic_config["num_inference_steps"], scheduler.config.num_train_timesteps,
                             "semantic_config['num_inference_steps']")
        if semantic_config.get("timesteps") is not None:
            semantic_config["timesteps"] = _check_timesteps(semantic_config["timesteps"],
                                                            scheduler.config.num_train_timesteps)
            steps = semantic_config.setdefault("num_inference_steps", len(semantic_config["timesteps"]))
            if steps != len(semantic_config["timesteps"]):
                raise ValueError(f"semantic_config['num_inference_steps'] = {steps} but its 'timesteps' hold "
                                 f"{len(semantic_config['timesteps'])} steps")
        self.register_to_config(semantic_config=semantic_config)
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False, do_normalize=True)

    # ----------------------------------------------------------------------------------------------------------------
    # Configuration helpers

    @property
    def dataset_preset(self) -> DatasetPreset:
        """The dataset preset stored with the pipeline, or a plain one inferred from the U-Net's map channels."""
        cfg = self.config.semantic_config or {}
        if cfg.get("dataset"):
            return DatasetPreset.from_dict(cfg["dataset"])
        channels = self.unet.config.segmap_channels
        return DatasetPreset(
            name="custom", num_classes=channels, unlabelled_id=None, use_instance_edges=False,
            class_names=tuple(f"class_{i}" for i in range(channels)),
            palette=tuple(default_palette(channels)),
            guidance_scale=1.0, resolution=tuple(self._sample_size()),
        )

    @property
    def map_encoding(self) -> str:
        return (self.config.semantic_config or {}).get("map_encoding", "one_hot")

    @property
    def model_prediction(self) -> str:
        """What the U-Net's first channels predict: ``epsilon`` (GESCO), or ``sample`` (x0) for a student that stores
        ``semantic_config["prediction_type"]`` (``training/distill.py --method trajectory --student_prediction
        sample``); the scheduler must be configured for the same."""
        return (self.config.semantic_config or {}).get("prediction_type", "epsilon")

    @property
    def default_guidance_scale(self) -> float:
        cfg = self.config.semantic_config or {}
        return float(cfg.get("guidance_scale", self.dataset_preset.guidance_scale))

    @property
    def default_num_inference_steps(self) -> int:
        """The steps stored with the pipeline (``semantic_config["num_inference_steps"]``), else
        ``DEFAULT_SAMPLING_STEPS``."""
        return int((self.config.semantic_config or {}).get("num_inference_steps", DEFAULT_SAMPLING_STEPS))

    @property
    def guidance_scale(self) -> float:
        """The guidance scale of the running (or last) call, for callbacks."""
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        """The number of scheduler steps of the running (or last) call."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` in a callback to skip the remaining steps (as in diffusers' pipelines)."""
        return self._interrupt

    def _sample_size(self) -> tuple[int, int]:
        size = self.unet.config.sample_size or 64
        return (size, size) if isinstance(size, int) else tuple(size)

    def _scheduler_takes_variance(self) -> bool:
        """Whether the scheduler's step gets the variance channels; raises if the scheduler cannot drive the model."""
        problem = scheduler_incompatibility(self.scheduler, self.model_prediction)
        if problem is not None:
            raise ValueError(f"cannot sample with this scheduler: {problem}")
        takes = scheduler_reads_learned_variance(self.scheduler)
        if takes and not self.unet.learned_variance:
            raise ValueError(
                f"{type(self.scheduler).__name__} with variance_type={self.scheduler.config.variance_type!r} reads a "
                f"learned variance but the U-Net predicts {self.unet.config.out_channels} channels only"
            )
        return takes

    # ----------------------------------------------------------------------------------------------------------------
    # Preprocessing: sender encoding -> channel -> FDS (paper Sec. III-A)

    def _fds_module(self, fds: Union[bool, str, nn.Module, None]) -> Optional[nn.Module]:
        if fds is None or fds is False or fds == "none":
            return None
        if fds is True or fds == "paper":
            return FastDenoisingSemantic()
        if isinstance(fds, nn.Module):
            return fds
        if isinstance(fds, str):  # "adaptive" and any other registered name; unknown names raise, listing them
            return build_fds(fds, num_classes=self.dataset_preset.num_classes)
        raise ValueError(f"fds must be a bool, None, a name in {FDS_METHODS} or an nn.Module, got {fds!r}")

    @torch.no_grad()
    def prepare_semantic_map(
        self,
        segmap: MapInput,
        instance_map: Optional[MapInput] = None,
        channel: Optional[nn.Module] = None,
        fds: Union[bool, str, nn.Module, None] = True,
        generator: Optional[Union[torch.Generator, list[torch.Generator]]] = None,
        device: Optional[torch.device] = None,
        num_images_per_map: int = 1,
        channel_draw: str = "per_map",
    ) -> PreparedSemanticMap:
        """Run the communication chain up to the conditioning map, so users can inspect every stage.

        Args:
            segmap: a label map (integer ``(H, W)``/``(B, H, W)`` tensor or array, single-channel PIL image, or a list)
                that the sender encodes, or a float one-hot/received map ``(B, C, H, W)``. For a float map the
                transmitted channels are those that are not identically zero (absent classes arrive as exact zeros).
            instance_map: instance ids for the edge channel, the shape of the label map (datasets with instances).
                Without it the label map itself is used, so class borders become the edges. Models without an edge
                channel do not use it; a float ``segmap`` already carries its edges, so it is refused there.
            channel: a channel model from :mod:`gesco_diffusers.channel` (``None``: the map arrives as sent).
            fds: ``True``/``"paper"`` for the paper's FDS (Eq. 1), ``False`` for none, another registered method name,
                or any module ``(received, transmitted) -> denoised``.
            generator: seeds the channel noise: one generator, or one per image (``B * num_images_per_map``); with a
                list, map ``b``'s noise comes from the generator of its first image alone (``"per_map"``) or each
                image's from its own (``"per_image"``), so a map's result does not depend on its batch-mates.
            num_images_per_map, channel_draw: see :data:`CHANNEL_DRAWS`.

        Returns:
            One entry per image: rows ``b * num_images_per_map ...`` belong to map ``b``.
        """
        if isinstance(num_images_per_map, bool) or not isinstance(num_images_per_map, numbers.Integral) \
                or num_images_per_map < 1:
            raise ValueError(f"num_images_per_map must be a positive integer, got {num_images_per_map!r}")
        if channel_draw not in CHANNEL_DRAWS:
            raise ValueError(f"channel_draw must be one of {CHANNEL_DRAWS}, got {channel_draw!r}")
        preset = self.dataset_preset
        device = device or self._execution_device
        clean, sent, transmitted = self._encode(segmap, instance_map, preset, device)
        num_images = sent.shape[0] * num_images_per_map
        if isinstance(generator, list) and len(generator) != num_images:
            raise ValueError(
                f"got {len(generator)} generators for {num_images} images ({sent.shape[0]} maps x "
                f"{num_images_per_map} per map); pass one generator, or one per image"
            )

        per_image = channel_draw == "per_image"
        if per_image:  # each image gets its own copy of the map, hence its own channel realisation
            clean, sent, transmitted = (_repeat(x, num_images_per_map) for x in (clean, sent, transmitted))
        channel_generator = generator[::num_images_per_map] if isinstance(generator, list) and not per_image \
            else generator
        received = self._transmit(channel, sent, transmitted, channel_generator)
        fds_module = self._fds_module(fds)
        denoised = fds_module(received, transmitted) if fds_module is not None else received
        stages = dict(clean=clean, received=received, denoised=denoised, transmitted=transmitted,
                      conditioning=self._conditioning_from_map(denoised, preset))
        repeats = 1 if per_image else num_images_per_map
        return PreparedSemanticMap(**{name: _repeat(x, repeats) for name, x in stages.items()})

    def _encode(self, segmap: MapInput, instance_map: Optional[MapInput], preset: DatasetPreset, device):
        """``(clean, sent, transmitted)``: the sender's one-hot map (``None`` for a received float map), the map that
        enters the channel, and the channels that were sent."""
        tensor = to_batched_tensor(segmap, "segmap")
        if not is_label_map(tensor):
            if instance_map is not None:
                raise ValueError("instance_map applies to label maps; a float (one-hot or received) segmap already "
                                 "carries its edge channel")
            received = check_float_map(tensor.float(), preset.map_channels, "segmap")
            check_not_empty(received.shape[0], *received.shape[-2:], "segmap")
            check_spatial_size(*received.shape[-2:], self.unet.downsampling_factor, "segmap")
            return None, received.to(device), received.flatten(2).abs().amax(-1).to(device) > 0
        labels = check_label_map(tensor, preset.num_classes, "segmap")
        check_not_empty(*labels.shape, "segmap")
        check_spatial_size(*labels.shape[-2:], self.unet.downsampling_factor, "segmap")
        instances = None
        if instance_map is not None:
            instances = check_instance_map(to_batched_tensor(instance_map, "instance_map"), labels.shape)
        if preset.use_instance_edges and instances is None:
            instances = labels
        encoded = SemanticEncoder.from_preset(preset).encode(labels, instances if preset.use_instance_edges else None)
        clean = encoded.one_hot.to(device)
        return clean, clean, encoded.transmitted.to(device)

    @staticmethod
    def _transmit(channel: Optional[nn.Module], sent: torch.Tensor, transmitted: torch.Tensor, generator):
        """The channel; with one generator per map, map ``i``'s noise is drawn from generator ``i`` alone."""
        if channel is None:
            return sent
        if isinstance(generator, list):
            return torch.cat([channel(sent[i:i + 1], transmitted[i:i + 1], generator=g)
                              for i, g in enumerate(generator)])
        return channel(sent, transmitted, generator=generator)

    def _conditioning_from_map(self, denoised: torch.Tensor, preset: DatasetPreset) -> torch.Tensor:
        if self.map_encoding == "one_hot":
            return denoised
        # Authors' one_hot_label=False models read [raw label id, edge]: recover the ids from the cleaned map.
        labels = denoised[:, : preset.num_classes].argmax(1)
        edges = (
            denoised[:, preset.num_classes:preset.num_classes + 1].round().clamp(0, 1)
            if preset.use_instance_edges else instance_edges(labels).to(denoised)
        )
        return torch.cat([labels[:, None].to(denoised.dtype), edges], dim=1)

    # ----------------------------------------------------------------------------------------------------------------
    # Sampling

    @staticmethod
    def _model_maps(cond: torch.Tensor, scale: float, reuse_modulation: bool):
        """The maps the U-Net sees at every step: ``[null; cond]`` with guidance, ``cond`` without; wrapped in a
        :class:`SemanticModulationCache` when ``reuse_modulation``."""
        maps = guidance_maps(cond, scale)
        return SemanticModulationCache(maps) if reuse_modulation else maps

    def check_inputs(
        self,
        num_inference_steps: int,
        timesteps: Optional[list[int]],
        guidance_scale: float,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str],
    ) -> None:
        """Arguments that would otherwise fail deep inside sampling, or silently do something else."""
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        num_train_timesteps = self.scheduler.config.num_train_timesteps
        if timesteps is None:
            _check_num_steps(num_inference_steps, num_train_timesteps)
        else:
            _check_timesteps(timesteps, num_train_timesteps)
        _check_guidance_scale(guidance_scale)
        for name in callback_on_step_end_tensor_inputs:
            if name not in self._callback_tensor_inputs:
                raise ValueError(f"callback tensor input {name!r} not in {self._callback_tensor_inputs}")

    def prepare_latents(self, batch_size: int, height: int, width: int, dtype, device, generator, latents=None):
        """Initial noise ``(B, 3, H, W)``, scaled to the scheduler's first noise level; with one generator per image,
        image ``i``'s noise comes from generator ``i``."""
        shape = (batch_size, self.unet.config.in_channels, height, width)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        return latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

    def _set_timesteps(self, num_inference_steps: int, timesteps: Optional[list[int]], device) -> torch.Tensor:
        """The scheduler's timesteps. Schedulers check their own limits (LCM: no more steps than its
        ``original_inference_steps``; PNDM: at least 4 steps with its Runge-Kutta warm-up), some with errors deep in
        numpy: they are raised here, before any sampling, naming the scheduler."""
        if timesteps is not None:
            timesteps = _check_timesteps(timesteps, self.scheduler.config.num_train_timesteps)
            num_inference_steps = None
        try:
            return retrieve_timesteps(self.scheduler, num_inference_steps, device, timesteps)[0]
        except Exception as err:
            what = f"num_inference_steps={num_inference_steps}" if timesteps is None else f"timesteps={timesteps}"
            message = " ".join(str(err).split())
            raise ValueError(f"{type(self.scheduler).__name__} cannot run {what}: {message}") from err

    @torch.no_grad()
    def __call__(
        self,
        segmap: MapInput,
        instance_map: Optional[MapInput] = None,
        channel: Optional[nn.Module] = None,
        fds: Union[bool, str, nn.Module, None] = True,
        num_inference_steps: Optional[int] = None,
        timesteps: Optional[list[int]] = None,
        guidance_scale: Optional[float] = None,
        num_images_per_map: int = 1,
        channel_draw: str = "per_map",
        generator: Optional[Union[torch.Generator, list[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[
            Union[Callable[[Any, int, Any, dict], dict], PipelineCallback, MultiPipelineCallbacks]
        ] = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        reuse_semantic_modulation: bool = True,
    ) -> Union[GescoPipelineOutput, tuple]:
        r"""Generate images whose objects follow the (received) semantic map.

        Args:
            segmap, instance_map, channel, fds: see :meth:`prepare_semantic_map`.
            num_inference_steps: denoising steps (ignored when ``timesteps`` is given). Default: the value stored with
                the pipeline (``semantic_config["num_inference_steps"]``), else ``DEFAULT_SAMPLING_STEPS`` (40).
            timesteps: custom strictly descending training timesteps in ``[0, num_train_timesteps)`` (e.g. the
                authors' respacing), if the scheduler supports them.
            guidance_scale: ``s`` of the classifier-free guidance; ``s <= 1`` runs one conditional pass per step.
                Default: the value stored with the pipeline (2 for Cityscapes, 2.5 for COCO-Stuff/ADE20K).
            num_images_per_map: images generated for each map (like diffusers' ``num_images_per_prompt``); images of
                map ``b`` are rows ``b * num_images_per_map ...`` of the output.
            channel_draw: ``"per_map"`` (default): the channel noise is drawn once per map and its images share the
                received map; ``"per_image"``: once per image (:data:`CHANNEL_DRAWS`).
            generator: a generator, or one per image (``B * num_images_per_map``), for the initial noise, the sampler
                and the channel noise. With a list, image ``i`` depends on generator ``i`` only (and, with
                ``"per_map"``, on the generator of its map's first image, which draws the shared channel noise).
            latents: optional initial noise ``(B * num_images_per_map, 3, H, W)``.
            output_type: ``"pil"``, ``"np"`` or ``"pt"``.
            callback_on_step_end: ``fn(pipe, step, timestep, {name: tensor}) -> dict`` called after every step, or a
                diffusers ``PipelineCallback``; returned ``"latents"`` replace the current ones.
            reuse_semantic_modulation: compute the SPADE modulations of the map once and reuse them at every step
                (:class:`~gesco_diffusers.models.SemanticModulationCache`; same result, about a quarter less work per
                step). Costs memory at high resolution (about 4 GB in fp16 for the paper's 256x512 network): pass
                ``False`` to recompute them at each step instead.

        Returns:
            :class:`GescoPipelineOutput` (or ``(images,)`` with ``return_dict=False``).
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        stored = (self.config.semantic_config or {}).get("timesteps")
        if timesteps is None and stored is not None and num_inference_steps in (None, len(stored)):
            # A stored schedule (a few-step student's, chosen by measurement) is the model's schedule for its number
            # of steps; other step counts use the scheduler's own spacing.
            timesteps = stored
        num_inference_steps = self.default_num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance_scale = self.default_guidance_scale if guidance_scale is None else guidance_scale
        self.check_inputs(num_inference_steps, timesteps, guidance_scale, output_type,
                          callback_on_step_end_tensor_inputs)
        takes_variance = self._scheduler_takes_variance()
        guidance_scale = float(guidance_scale)
        self._guidance_scale, self._interrupt = guidance_scale, False
        device = self._execution_device
        timesteps = self._set_timesteps(num_inference_steps, timesteps, device)
        self._num_timesteps = len(timesteps)

        maps = self.prepare_semantic_map(segmap, instance_map, channel, fds, generator, device, num_images_per_map,
                                         channel_draw)
        cond = maps.conditioning.to(device=device, dtype=self.unet.dtype)
        latents = self.prepare_latents(cond.shape[0], *cond.shape[-2:], self.unet.dtype, device, generator, latents)

        step_kwargs = {"generator": generator} if _accepts(self.scheduler.step, "generator") else {}
        model_maps = self._model_maps(cond, guidance_scale, reuse_semantic_modulation)
        for i, t in enumerate(self.progress_bar(timesteps)):
            if self.interrupt:
                continue
            model_input = self.scheduler.scale_model_input(latents, t)
            output = guided_model_output(self.unet, model_input, t, model_maps, guidance_scale)
            if not takes_variance:
                output = output[:, : self.unet.config.in_channels]
            latents = self.scheduler.step(output, t, latents, **step_kwargs).prev_sample

            if callback_on_step_end is not None:
                step_tensors = {"latents": latents}
                callback_kwargs = {name: step_tensors[name] for name in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                latents = callback_outputs.pop("latents", latents)

        images = self.image_processor.postprocess(latents.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return GescoPipelineOutput(images=images, semantic_maps=maps)

    # ----------------------------------------------------------------------------------------------------------------
    # Saving and loading

    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, **kwargs):
        """``DiffusionPipeline.save_pretrained``, with the weight files readable as the umask allows (safetensors
        writes them 0600)."""
        from ..utils.files import give_umask_modes

        result = super().save_pretrained(save_directory, *args, **kwargs)
        give_umask_modes(save_directory)
        return result

    def save_config(self, save_directory: Union[str, os.PathLike], push_to_hub: bool = False, **kwargs):
        """Write ``model_index.json`` and the modules it names for ``DiffusionPipeline.from_pretrained(folder,
        trust_remote_code=True)`` (``pipeline.py``, ``unet/unet_semantic.py``; see :mod:`.loading`)."""
        write_loading_modules(save_directory, json.loads(self.to_json_string()), type(self))
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)

    def to_json_string(self) -> str:
        """The pipeline config as saved: naming the loading modules written by :meth:`save_config`."""
        return json.dumps(loading_names(json.loads(super().to_json_string()), type(self)), indent=2,
                          sort_keys=True) + "\n"

    @classmethod
    def load_config(cls, *args, **kwargs):
        """The saved config with the loading modules mapped back to the package's classes, so that
        ``GescoPipeline.from_pretrained`` runs no code from the folder (no ``trust_remote_code`` needed)."""
        loaded = super().load_config(*args, **kwargs)
        if isinstance(loaded, tuple):
            return (package_names(loaded[0]), *loaded[1:])
        return package_names(loaded)

    # ----------------------------------------------------------------------------------------------------------------
    # Hub

    @classmethod
    def download(cls, pretrained_model_name: str, **kwargs) -> str:
        """Download a pipeline snapshot from the Hub.

        diffusers' own ``download`` refuses components from libraries other than diffusers/transformers when it
        inspects a Hub repo, so the whole snapshot is fetched here (training checkpoints excluded) and loaded from the
        local folder.
        """
        from huggingface_hub import snapshot_download

        return snapshot_download(
            pretrained_model_name,
            revision=kwargs.get("revision"),
            cache_dir=kwargs.get("cache_dir"),
            local_files_only=bool(kwargs.get("local_files_only", False)),
            token=kwargs.get("token"),
            force_download=bool(kwargs.get("force_download", False)),
            proxies=kwargs.get("proxies"),
            ignore_patterns=TRAINING_STATE_PATTERNS,
        )

    @classmethod
    def from_unet_config(
        cls,
        unet_config: Union[str, dict],
        dataset: Union[str, DatasetPreset, None] = None,
        scheduler=None,
        seed: int = 0,
        **semantic_config,
    ) -> "GescoPipeline":
        """A randomly initialised pipeline from a named U-Net configuration (for tests and new trainings).

        The scheduler defaults to the paper's diffusion (1000 linear steps, learned range) sampled with the package's
        default, SDE-DPM-Solver++ (:func:`~gesco_diffusers.diffusion.default_scheduler`).
        """
        from ..models import semantic_unet_config
        from ..presets import get_dataset_preset
        from ..diffusion import default_scheduler

        config = semantic_unet_config(unet_config) if isinstance(unet_config, str) else dict(unet_config)
        preset = get_dataset_preset(dataset) if dataset is not None else None
        if preset is not None:
            config["segmap_channels"] = preset.map_channels
            semantic_config = {"dataset": preset.to_dict(), "guidance_scale": preset.guidance_scale,
                               **semantic_config}
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            unet = SemanticUNet2DModel(**config)
        return cls(unet=unet, scheduler=scheduler or default_scheduler(), semantic_config=semantic_config)


def is_pipeline_folder(path: Union[str, os.PathLike]) -> bool:
    return os.path.isfile(os.path.join(path, "model_index.json"))
