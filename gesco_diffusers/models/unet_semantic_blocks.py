"""Building blocks of :class:`SemanticUNet2DModel` (paper Sec. III-B, reference doc section 2).

The encoder is a plain guided-diffusion U-Net encoder built from diffusers' ``ResnetBlock2D`` (GroupNorm, SiLU, conv,
timestep scale-shift; no semantic input). The middle and decoder blocks replace both GroupNorms of each residual block
with :class:`SPADEGroupNorm`, so the semantic map steers every decoder layer (Eq. 8). Self-attention is diffusers'
``Attention`` over the flattened feature map.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from torch import nn

from .spade import SPADEGroupNorm


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters. Output convolutions of residual and attention blocks start at zero, so every
    block is the identity at initialisation (guided-diffusion's ``zero_module``)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class SPADEResnetBlock2D(nn.Module):
    r"""Residual block with SPADE normalisation and timestep conditioning (the official ``SDMResBlock``).

    ``h = conv1(SiLU(SPADE_in(x, y)))``, then with ``time_embedding_norm="scale_shift"``
    ``h = SPADE_out(h, y) * (1 + scale(t)) + shift(t)``, otherwise ``h = SPADE_out(h + proj(t), y)``; then
    ``h = conv2(dropout(SiLU(h)))`` (``conv2`` zero-initialised) and ``out = skip(x) + h``.
    With ``up=True`` the block upsamples (nearest x2) both paths after the first SPADE norm and activation.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        segmap_channels: int,
        spade_hidden_channels: int = 128,
        groups: int = 32,
        eps: float = 1e-5,
        dropout: float = 0.0,
        time_embedding_norm: str = "scale_shift",
        up: bool = False,
    ):
        super().__init__()
        if time_embedding_norm not in ("scale_shift", "default"):
            raise ValueError(f"time_embedding_norm must be 'scale_shift' or 'default', got {time_embedding_norm!r}")
        self.time_embedding_norm = time_embedding_norm
        spade = dict(segmap_channels=segmap_channels, hidden_channels=spade_hidden_channels, num_groups=groups, eps=eps)
        self.norm1 = SPADEGroupNorm(in_channels, **spade)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        proj_channels = 2 * out_channels if time_embedding_norm == "scale_shift" else out_channels
        self.time_emb_proj = nn.Linear(temb_channels, proj_channels)
        self.norm2 = SPADEGroupNorm(out_channels, **spade)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.nonlinearity = nn.SiLU()
        self.upsample = Upsample2D(in_channels, use_conv=False) if up else None
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        hidden_states = self.nonlinearity(self.norm1(input_tensor, segmap))
        if self.upsample is not None:
            input_tensor = self.upsample(input_tensor)
            hidden_states = self.upsample(hidden_states)
        hidden_states = self.conv1(hidden_states)

        temb = self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
        if self.time_embedding_norm == "scale_shift":
            scale, shift = temb.chunk(2, dim=1)
            hidden_states = self.norm2(hidden_states, segmap) * (1 + scale) + shift
        else:
            hidden_states = self.norm2(hidden_states + temb, segmap)

        hidden_states = self.conv2(self.dropout(self.nonlinearity(hidden_states)))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        return input_tensor + hidden_states


def self_attention(channels: int, head_dim: int, groups: int, eps: float) -> Attention:
    """Spatial self-attention with a residual connection (the official ``AttentionBlock``).

    ``heads = channels // head_dim``; scaled dot-product attention with softmax in fp32 and a zero-initialised output
    projection. diffusers' ``Attention`` keeps separate q/k/v projections; the official fused per-head ``qkv`` conv maps
    onto them losslessly (see ``gesco_diffusers.convert``).
    """
    if channels % head_dim != 0:
        raise ValueError(f"attention channels {channels} are not divisible by attention_head_dim={head_dim}")
    attention = Attention(
        channels,
        heads=channels // head_dim,
        dim_head=head_dim,
        eps=eps,
        norm_num_groups=groups,
        residual_connection=True,
        bias=True,
        upcast_softmax=True,
        _from_deprecated_attn_block=True,
    )
    zero_module(attention.to_out[0])
    return attention


def attention_layers(add_attention: bool, count: int, channels: int, head_dim: int, groups: int, eps: float):
    """``count`` self-attention layers (one after each residual block of a level), or none."""
    return nn.ModuleList(
        [self_attention(channels, head_dim, groups, eps) for _ in range(count)] if add_attention else []
    )


def resampler(add: bool, resnet_updown: bool, residual: Callable[[], nn.Module], conv: Callable[[], nn.Module]):
    """The level's down/upsampler: a residual block that resamples inside (official ``resblock_updown``) or a plain
    (strided / nearest + 3x3) convolution; none at the last level."""
    if not add:
        return nn.ModuleList()
    return nn.ModuleList([residual() if resnet_updown else conv()])


class _CheckpointedBlock(nn.Module):
    """Runs a sub-module under gradient checkpointing when the owning model enabled it (diffusers convention)."""

    gradient_checkpointing = False

    def _run(self, module: nn.Module, *args):
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)


class SemanticDownBlock2D(_CheckpointedBlock):
    """One encoder level: ``num_layers`` ``ResnetBlock2D`` (each optionally followed by self-attention), then a
    downsampler unless it is the last level. The map does not enter the encoder (paper Sec. III-B).

    The downsampler is a ``ResnetBlock2D(down=True)`` (average pooling inside the block) when ``resnet_updown``, else a
    strided 3x3 convolution.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        add_attention: bool,
        add_downsample: bool,
        attention_head_dim: int,
        resnet_updown: bool,
        groups: int,
        eps: float,
        dropout: float,
        time_embedding_norm: str,
    ):
        super().__init__()
        resnet = dict(temb_channels=temb_channels, groups=groups, eps=eps, dropout=dropout,
                      time_embedding_norm=time_embedding_norm)
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_channels=in_channels if i == 0 else out_channels, out_channels=out_channels, **resnet)
             for i in range(num_layers)]
        )
        self.attentions = attention_layers(add_attention, num_layers, out_channels, attention_head_dim, groups, eps)
        self.downsamplers = resampler(
            add_downsample, resnet_updown,
            lambda: ResnetBlock2D(in_channels=out_channels, out_channels=out_channels, down=True, **resnet),
            lambda: Downsample2D(out_channels, use_conv=True, padding=1, name="op"),
        )
        for block in list(self.resnets) + list(self.downsamplers):
            if isinstance(block, ResnetBlock2D):
                zero_module(block.conv2)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        output_states = ()
        for i, resnet in enumerate(self.resnets):
            hidden_states = self._run(resnet, hidden_states, temb)
            if self.attentions:
                hidden_states = self._run(self.attentions[i], hidden_states)
            output_states += (hidden_states,)
        for downsampler in self.downsamplers:
            if isinstance(downsampler, ResnetBlock2D):
                hidden_states = self._run(downsampler, hidden_states, temb)
            else:
                hidden_states = downsampler(hidden_states)
            output_states += (hidden_states,)
        return hidden_states, output_states


class SemanticMidBlock2D(_CheckpointedBlock):
    """The bottleneck: SPADE residual block, self-attention, SPADE residual block."""

    def __init__(self, *, channels: int, temb_channels: int, segmap_channels: int, spade_hidden_channels: int,
                 attention_head_dim: int, add_attention: bool, groups: int, eps: float, dropout: float,
                 time_embedding_norm: str):
        super().__init__()
        resnet = dict(in_channels=channels, out_channels=channels, temb_channels=temb_channels,
                      segmap_channels=segmap_channels, spade_hidden_channels=spade_hidden_channels, groups=groups,
                      eps=eps, dropout=dropout, time_embedding_norm=time_embedding_norm)
        self.resnets = nn.ModuleList([SPADEResnetBlock2D(**resnet), SPADEResnetBlock2D(**resnet)])
        self.attentions = attention_layers(add_attention, 1, channels, attention_head_dim, groups, eps)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        hidden_states = self._run(self.resnets[0], hidden_states, temb, segmap)
        if self.attentions:
            hidden_states = self._run(self.attentions[0], hidden_states)
        return self._run(self.resnets[1], hidden_states, temb, segmap)


class SemanticUpBlock2D(_CheckpointedBlock):
    """One decoder level: ``num_layers`` SPADE residual blocks, each fed the concatenation of the running features
    and one encoder skip (popped in reverse order), each optionally followed by self-attention; then an upsampler
    unless it is the last level (a ``SPADEResnetBlock2D(up=True)`` when ``resnet_updown``, else nearest x2 + conv).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        skip_channels: list[int],
        out_channels: int,
        temb_channels: int,
        segmap_channels: int,
        spade_hidden_channels: int,
        add_attention: bool,
        add_upsample: bool,
        attention_head_dim: int,
        resnet_updown: bool,
        groups: int,
        eps: float,
        dropout: float,
        time_embedding_norm: str,
    ):
        super().__init__()
        resnet = dict(temb_channels=temb_channels, segmap_channels=segmap_channels,
                      spade_hidden_channels=spade_hidden_channels, groups=groups, eps=eps, dropout=dropout,
                      time_embedding_norm=time_embedding_norm)
        resnets = []
        channels = in_channels
        for skip in skip_channels:
            resnets.append(SPADEResnetBlock2D(in_channels=channels + skip, out_channels=out_channels, **resnet))
            channels = out_channels
        self.resnets = nn.ModuleList(resnets)
        self.attentions = attention_layers(add_attention, len(skip_channels), out_channels, attention_head_dim,
                                           groups, eps)
        self.upsamplers = resampler(
            add_upsample, resnet_updown,
            lambda: SPADEResnetBlock2D(in_channels=out_channels, out_channels=out_channels, up=True, **resnet),
            lambda: Upsample2D(out_channels, use_conv=True),
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        res_hidden_states_tuple: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        segmap: torch.Tensor,
        upsample_size: Optional[tuple[int, int]] = None,
    ) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            skip = res_hidden_states_tuple[-1]
            res_hidden_states_tuple = res_hidden_states_tuple[:-1]
            hidden_states = self._run(resnet, torch.cat([hidden_states, skip], dim=1), temb, segmap)
            if self.attentions:
                hidden_states = self._run(self.attentions[i], hidden_states)
        for upsampler in self.upsamplers:
            if isinstance(upsampler, SPADEResnetBlock2D):
                hidden_states = self._run(upsampler, hidden_states, temb, segmap)
            else:
                hidden_states = upsampler(hidden_states, output_size=upsample_size)
        return hidden_states
