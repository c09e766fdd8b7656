"""Spatially-adaptive normalisation (SPADE, Park et al. 2019), as used by the GESCO decoder (paper Eq. 8)."""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import nn


class SPADEGroupNorm(nn.Module):
    r"""GroupNorm whose affine parameters are predicted, pixel by pixel, from the semantic map (paper Eq. 8).

    ``out = GroupNorm(x) * (1 + gamma(y)) + beta(y)``, where ``GroupNorm`` has no affine parameters of its own and
    ``gamma``/``beta`` are two 3x3 convolutions over a shared hidden representation ``ReLU(conv3x3(y))`` of the map
    ``y``, resized to the feature resolution with nearest-neighbour interpolation (so class borders stay sharp).

    The official network uses ``hidden_channels=128`` and a plain ``nn.GroupNorm(32, channels, eps=1e-5)``
    (reference doc, section 2.4).

    Args:
        num_channels: channels of the normalised features.
        segmap_channels: channels C of the semantic map.
        hidden_channels: width of the shared convolution.
        num_groups: GroupNorm groups.
        eps: GroupNorm epsilon.
    """

    def __init__(
        self,
        num_channels: int,
        segmap_channels: int,
        hidden_channels: int = 128,
        num_groups: int = 32,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, num_channels, eps=eps, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(segmap_channels, hidden_channels, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden_channels, num_channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden_channels, num_channels, 3, padding=1)

    def modulation(self, segmap: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1 + gamma(y), beta(y))`` of Eq. 8 at feature size ``size``: a function of the map alone."""
        if segmap.shape[-2:] != size:
            segmap = F.interpolate(segmap, size=size, mode="nearest")
        actv = self.mlp_shared(segmap)
        return 1 + self.mlp_gamma(actv), self.mlp_beta(actv)

    def forward(
        self, hidden_states: torch.Tensor, segmap: Union[torch.Tensor, "SemanticModulationCache"]
    ) -> torch.Tensor:
        size = tuple(hidden_states.shape[-2:])
        if isinstance(segmap, SemanticModulationCache):
            scale, shift = segmap.modulation(self, size)
        else:
            scale, shift = self.modulation(segmap, size)
        return self.norm(hidden_states) * scale + shift


class SemanticModulationCache:
    r"""A semantic map whose SPADE modulations are computed once per layer and then reused.

    The map reaches the decoder only through ``gamma(y)`` and ``beta(y)`` of Eq. 8, which depend on neither the noisy
    image nor the timestep. A sampler evaluates the U-Net on the same map at every step, so the authors' code (and a
    plain forward) recomputes the three SPADE convolutions of every decoder layer 25 to 2000 times per image; about a
    quarter of a forward of the CamVid model (``benchmarks/unet_forward.py``). Passing the map wrapped in this cache
    as ``segmap`` computes them at the first step only; later steps read them back. The values are those of the plain
    forward (the same operations on the same inputs).

    Memory: it holds ``(1 + gamma, beta)`` for every SPADE layer, i.e. ``2 * channels * height * width`` values per
    layer at that layer's resolution and batch: a few MB for the CamVid demo at 64x80, about 4 GB in fp16 for the
    paper's Cityscapes network at 256x512 with classifier-free guidance (batch 2). Inference only: it refuses to run
    with gradients enabled, where reusing one graph across forwards would be wrong.

    Args:
        segmap: the semantic map ``(B, C, H, W)`` the U-Net is conditioned on.
    """

    def __init__(self, segmap: torch.Tensor):
        if not torch.is_tensor(segmap) or segmap.ndim != 4:
            raise ValueError(f"segmap must be a (B, C, H, W) tensor, got {getattr(segmap, 'shape', type(segmap))}")
        self.segmap = segmap
        self._modulations: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def shape(self) -> torch.Size:
        return self.segmap.shape

    def modulation(self, layer: SPADEGroupNorm, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.is_grad_enabled():
            raise RuntimeError("SemanticModulationCache is for inference: run the model under torch.no_grad()")
        key = (id(layer), size, layer.mlp_gamma.weight.dtype)
        if key not in self._modulations:
            self._modulations[key] = layer.modulation(self.segmap.to(layer.mlp_gamma.weight.dtype), size)
        return self._modulations[key]

    def clear(self) -> None:
        """Drop the stored modulations (e.g. after changing the model's weights)."""
        self._modulations.clear()
