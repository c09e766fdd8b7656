"""Spatially-adaptive normalisation (SPADE, Park et al. 2019), as used by the GESCO decoder (paper Eq. 8)."""

from __future__ import annotations

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

    def forward(self, hidden_states: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        if segmap.shape[-2:] != hidden_states.shape[-2:]:
            segmap = F.interpolate(segmap, size=hidden_states.shape[-2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return self.norm(hidden_states) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)
