"""``SemanticUNet2DModel``: the semantic diffusion U-Net of GESCO (paper Sec. III-B).

An ADM-style (guided-diffusion) U-Net: an encoder that sees only the noisy image, and a middle block and decoder whose
residual blocks are normalised with SPADE (Eq. 8), so the received semantic map conditions every decoder layer. With
``out_channels = 2 * in_channels`` it also predicts the interpolation value ``v`` of the learned-range variance
(Improved DDPM): ``log sigma_t^2 = frac * log beta_t + (1 - frac) * log beta~_t`` with ``frac = (v + 1) / 2``.

The configuration can express the authors' network exactly (reference doc sections 2-3), so their checkpoints convert
without loss (``gesco_diffusers.convert``); :func:`semantic_unet_config` holds named presets.
"""

from __future__ import annotations

import numbers

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import AttentionMixin
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .spade import SemanticModulationCache
from .unet_semantic_blocks import SemanticDownBlock2D, SemanticMidBlock2D, SemanticUpBlock2D, zero_module

DOWN_BLOCK_TYPES = ("SemanticDownBlock2D", "SemanticAttnDownBlock2D")
UP_BLOCK_TYPES = ("SemanticUpBlock2D", "SemanticAttnUpBlock2D")


@dataclass
class SemanticUNet2DOutput(BaseOutput):
    """Output of :class:`SemanticUNet2DModel`.

    Args:
        sample: ``(batch, out_channels, height, width)``: the epsilon prediction, followed (with learned variance) by
            the variance interpolation value ``v`` in channels ``in_channels:``.
    """

    sample: torch.Tensor


def _repeat_batch(x: torch.Tensor, times: int) -> torch.Tensor:
    """``torch.cat([x] * times)``: row ``j * B + i`` is row ``i`` of ``x``. A batch of one becomes a stride-0 view
    (no copy): the decoder only reads the shared features, in its concatenations and residual sums."""
    if x.shape[0] == 1:
        return x.expand(times, *x.shape[1:])
    return x.repeat(times, *([1] * (x.ndim - 1)))


def _positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _check_config_types(config: dict) -> None:
    """A config file with wrong types (``"8,16"``, ``"1"``, negative sizes) fails at construction with the key's name,
    not at the first forward."""
    for key in ("in_channels", "out_channels", "segmap_channels", "layers_per_block", "attention_head_dim",
                "spade_hidden_channels", "norm_num_groups"):
        if not _positive_int(config[key]):
            raise ValueError(f"{key} must be a positive integer, got {config[key]!r}")
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        if isinstance(config[key], str) or not isinstance(config[key], Sequence) or not config[key]:
            raise ValueError(f"{key} must be a non-empty list, got {config[key]!r}")
    if not all(_positive_int(c) for c in config["block_out_channels"]):
        raise ValueError(f"block_out_channels must hold positive integers, got {config['block_out_channels']!r}")
    size = config["sample_size"]
    if size is not None and not (_positive_int(size) or (isinstance(size, Sequence) and not isinstance(size, str)
                                                         and len(size) == 2 and all(map(_positive_int, size)))):
        raise ValueError(f"sample_size must be a positive integer or (height, width), got {size!r}")


class SemanticUNet2DModel(ModelMixin, ConfigMixin, AttentionMixin):
    r"""A U-Net that denoises an image conditioned on a semantic map through SPADE decoder blocks.

    Args:
        sample_size: default ``(height, width)`` (or side) of generated images; informative, any size whose sides are
            divisible by ``2 ** (len(block_out_channels) - 1)`` works.
        in_channels: image channels (3 for RGB).
        out_channels: ``in_channels`` for a fixed variance, ``2 * in_channels`` for the learned-range variance.
        segmap_channels: channels C of the semantic map (classes, plus an instance-edge channel where used).
        down_block_types: one per level, ``"SemanticDownBlock2D"`` or ``"SemanticAttnDownBlock2D"`` (with attention).
        up_block_types: one per level from the deepest, ``"SemanticUpBlock2D"`` or ``"SemanticAttnUpBlock2D"``.
        block_out_channels: channels per level (the official ``model_channels * channel_mult``).
        layers_per_block: residual blocks per encoder level (the decoder has one more per level).
        attention_head_dim: channels per attention head (official ``num_head_channels``, 64).
        resnet_updown: down/upsample with residual blocks (official ``resblock_updown``) instead of (strided) convs.
        time_embedding_norm: ``"scale_shift"`` (official ``use_scale_shift_norm``) or ``"default"`` (additive).
        time_embedding_dim: width of the timestep MLP, default ``4 * block_out_channels[0]``.
        flip_sin_to_cos: sinusoidal embedding as ``[cos | sin]`` (official order).
        freq_shift: frequency shift of the sinusoidal embedding (0 in the official network).
        spade_hidden_channels: width of the SPADE shared convolution (128).
        norm_num_groups: GroupNorm groups (32).
        norm_eps: GroupNorm epsilon (1e-5).
        dropout: dropout inside the residual blocks.
        mid_block_attention: self-attention in the middle block.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["SPADEResnetBlock2D", "ResnetBlock2D", "Attention"]

    @register_to_config
    def __init__(
        self,
        sample_size: Optional[Union[int, Sequence[int]]] = None,
        in_channels: int = 3,
        out_channels: int = 6,
        segmap_channels: int = 36,
        down_block_types: Sequence[str] = ("SemanticDownBlock2D",) * 3 + ("SemanticAttnDownBlock2D",) * 3,
        up_block_types: Sequence[str] = ("SemanticAttnUpBlock2D",) * 3 + ("SemanticUpBlock2D",) * 3,
        block_out_channels: Sequence[int] = (256, 256, 512, 512, 1024, 1024),
        layers_per_block: int = 2,
        attention_head_dim: int = 64,
        resnet_updown: bool = True,
        time_embedding_norm: str = "scale_shift",
        time_embedding_dim: Optional[int] = None,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        spade_hidden_channels: int = 128,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        dropout: float = 0.0,
        mid_block_attention: bool = True,
    ):
        super().__init__()
        _check_config_types(locals())
        if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
            raise ValueError(
                f"down_block_types ({len(down_block_types)}), up_block_types ({len(up_block_types)}) and "
                f"block_out_channels ({len(block_out_channels)}) must have one entry per level"
            )
        for kind in down_block_types:
            if kind not in DOWN_BLOCK_TYPES:
                raise ValueError(f"unknown down block type {kind!r}; choose from {DOWN_BLOCK_TYPES}")
        for kind in up_block_types:
            if kind not in UP_BLOCK_TYPES:
                raise ValueError(f"unknown up block type {kind!r}; choose from {UP_BLOCK_TYPES}")
        if out_channels not in (in_channels, 2 * in_channels):
            raise ValueError(f"out_channels must be in_channels ({in_channels}) or 2*in_channels, got {out_channels}")

        temb_channels = time_embedding_dim or 4 * block_out_channels[0]
        common = dict(temb_channels=temb_channels, attention_head_dim=attention_head_dim, groups=norm_num_groups,
                      eps=norm_eps, dropout=dropout, time_embedding_norm=time_embedding_norm)
        spade = dict(segmap_channels=segmap_channels, spade_hidden_channels=spade_hidden_channels)

        # Timestep embedding: sinusoidal [cos | sin] features, then a 4x-wide SiLU MLP.
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], temb_channels)

        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)

        # Encoder; remember the channels of every skip tensor in push order.
        skip_channels = [block_out_channels[0]]
        self.down_blocks = nn.ModuleList()
        channels = block_out_channels[0]
        num_levels = len(block_out_channels)
        for level, (kind, out_ch) in enumerate(zip(down_block_types, block_out_channels)):
            is_last = level == num_levels - 1
            self.down_blocks.append(
                SemanticDownBlock2D(in_channels=channels, out_channels=out_ch, num_layers=layers_per_block,
                                    add_attention=kind == "SemanticAttnDownBlock2D", add_downsample=not is_last,
                                    resnet_updown=resnet_updown, **common)
            )
            skip_channels += [out_ch] * layers_per_block + ([] if is_last else [out_ch])
            channels = out_ch

        self.mid_block = SemanticMidBlock2D(channels=channels, add_attention=mid_block_attention, **spade, **common)

        # Decoder: each level pops layers_per_block + 1 skips.
        self.up_blocks = nn.ModuleList()
        for i, (kind, out_ch) in enumerate(zip(up_block_types, reversed(block_out_channels))):
            popped = [skip_channels.pop() for _ in range(layers_per_block + 1)]
            self.up_blocks.append(
                SemanticUpBlock2D(in_channels=channels, skip_channels=popped, out_channels=out_ch,
                                  add_attention=kind == "SemanticAttnUpBlock2D", add_upsample=i < num_levels - 1,
                                  resnet_updown=resnet_updown, **spade, **common)
            )
            channels = out_ch

        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = zero_module(nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> "SemanticUNet2DModel":
        """diffusers' loading, then a check that every weight is finite: a corrupt file (NaN/inf, or random bytes
        behind a valid safetensors header) is an error naming a tensor, not a model that draws black images.

        8-bit folders (:mod:`gesco_diffusers.quantization`) load quantized: those of diffusers' quantizers through
        diffusers, the all-layer optimum-quanto layout (which diffusers cannot rebuild) through that module."""
        from ..quantization import finish_loading, prepare_loading, stored_tensors

        model = prepare_loading(cls, pretrained_model_name_or_path, kwargs)
        if model is None:
            model = finish_loading(super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs))
        # Quantized weights are checked through what they are stored as (int8 data, float scales).
        bad = [name for key, weight in model.state_dict().items() for name, tensor in stored_tensors(key, weight)
               if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        if bad:
            raise ValueError(f"{cls.__name__} weights hold NaN or inf values in {len(bad)} tensor(s), first "
                             f"{bad[0]!r}: the weights file is corrupt")
        return model

    @property
    def downsampling_factor(self) -> int:
        """Input sides must be divisible by this (one halving per level but the last)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def learned_variance(self) -> bool:
        return self.config.out_channels == 2 * self.config.in_channels

    def check_inputs(self, sample: torch.Tensor, segmap: Union[torch.Tensor, SemanticModulationCache]) -> None:
        """Shape checks shared by the model and the pipeline; errors name the problem."""
        cfg = self.config
        if sample.ndim != 4 or sample.shape[1] != cfg.in_channels:
            raise ValueError(f"sample must be (B, {cfg.in_channels}, H, W), got {tuple(sample.shape)}")
        if len(segmap.shape) != 4 or segmap.shape[1] != cfg.segmap_channels:
            raise ValueError(
                f"segmap must be (B, {cfg.segmap_channels}, H, W) (the model's segmap_channels), "
                f"got {tuple(segmap.shape)}"
            )
        if segmap.shape[0] % sample.shape[0]:
            raise ValueError(
                f"segmap batch {segmap.shape[0]} must equal the sample batch {sample.shape[0]} or be a multiple of it"
            )
        factor = self.downsampling_factor
        height, width = sample.shape[-2:]
        if height % factor or width % factor:
            raise ValueError(
                f"spatial size {height}x{width} is not divisible by the network's downsampling factor {factor}"
            )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float, int],
        segmap: Union[torch.Tensor, SemanticModulationCache],
        return_dict: bool = True,
    ) -> Union[SemanticUNet2DOutput, tuple]:
        """Predict the noise (and the variance interpolation value) of ``sample`` at ``timestep`` given ``segmap``.

        Args:
            sample: noisy images ``(B, in_channels, H, W)``.
            timestep: original diffusion step indices (0..T-1), a scalar or ``(B,)``.
            segmap: the semantic map ``(k * B, segmap_channels, H', W')``, or the same wrapped in a
                :class:`SemanticModulationCache` to reuse its SPADE modulations across calls (sampling); resized with
                nearest interpolation inside each SPADE layer, normally at the image resolution. With ``k > 1`` maps
                per image (map ``j * B + i`` goes with image ``i``) the encoder, which never sees the map, runs once
                per image and its features are shared by the ``k`` decoder passes: classifier-free guidance gets its
                unconditional half at the cost of the middle block and decoder only. The output has ``k * B`` rows.
        """
        self.check_inputs(sample, segmap)
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=sample.device)
        elif timestep.ndim == 0:
            timestep = timestep[None].to(sample.device)
        timestep = timestep.expand(sample.shape[0])
        maps_per_image = segmap.shape[0] // sample.shape[0]

        # The sinusoidal features are computed in fp32 and then cast, so fp16/bf16 models embed exactly.
        temb = self.time_embedding(self.time_proj(timestep).to(dtype=self.dtype))
        if torch.is_tensor(segmap):
            segmap = segmap.to(dtype=self.dtype)

        hidden_states = self.conv_in(sample.to(dtype=self.dtype))
        skips = (hidden_states,)
        for block in self.down_blocks:
            hidden_states, res = block(hidden_states, temb)
            skips += res
        if maps_per_image > 1:
            hidden_states, temb = _repeat_batch(hidden_states, maps_per_image), _repeat_batch(temb, maps_per_image)
            skips = tuple(_repeat_batch(skip, maps_per_image) for skip in skips)

        hidden_states = self.mid_block(hidden_states, temb, segmap)

        for block in self.up_blocks:
            res = skips[-len(block.resnets):]
            skips = skips[: -len(block.resnets)]
            upsample_size = skips[-1].shape[-2:] if skips else None
            hidden_states = block(hidden_states, res, temb, segmap, upsample_size=upsample_size)

        output = self.conv_out(self.conv_act(self.conv_norm_out(hidden_states)))
        if not return_dict:
            return (output,)
        return SemanticUNet2DOutput(sample=output)
