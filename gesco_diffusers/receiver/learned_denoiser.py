"""A learned receiver denoiser for noisy one-hot maps, the trained alternative to FDS of the paper's Table IX.

The paper compares FDS (Eq. 1, no parameters) with SUNet, a Swin-UNet image denoiser (99M parameters). This is the
convolutional counterpart at the scale of our CamVid models: a small U-Net that reads the received map (absent
classes are exact zeros, as the receiver pads them) and predicts every pixel's class, trained with cross-entropy on
maps sent over the same PSNR mix as the diffusion model's noisy training. The output is the one-hot map of the
predicted classes, restricted to the transmitted ones (the side information FDS also uses), so it drops into the
pipeline wherever an FDS module does: ``pipe(segmap, channel=..., fds=MapDenoiser.from_pretrained(path))``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..sender.encoding import check_semantic_map, pad_absent_channels

__all__ = ["MapDenoiser"]


class _ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by GroupNorm and SiLU."""

    def __init__(self, cin: int, cout: int, groups: int = 8) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(groups, cout), cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(min(groups, cout), cout), nn.SiLU(),
        )


class MapDenoiser(ModelMixin, ConfigMixin):
    """U-Net from a received ``(B, C, H, W)`` map to per-pixel class logits, and the cleaned one-hot map.

    Args:
        num_classes: class channels of the maps it cleans (the dataset preset's ``num_classes``).
        block_out_channels: widths of the U-Net levels; each level after the first halves the resolution, so ``H``
            and ``W`` must be multiples of ``2 ** (levels - 1)``.
        dataset: the dataset preset it was trained for (checked by the callers against the pipeline's).
    """

    @register_to_config
    def __init__(self, num_classes: int = 12, block_out_channels: Sequence[int] = (32, 64, 128),
                 dataset: str = "camvid") -> None:
        super().__init__()
        widths = [int(w) for w in block_out_channels]
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"block_out_channels must be positive widths, got {block_out_channels}")
        self.down = nn.ModuleList()
        cin = num_classes
        for width in widths:
            self.down.append(_ConvBlock(cin, width))
            cin = width
        self.up = nn.ModuleList(_ConvBlock(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def _check(self, received: torch.Tensor, transmitted: Optional[torch.Tensor]) -> torch.Tensor:
        mask = check_semantic_map(received, transmitted)
        if received.shape[1] != self.config.num_classes:
            raise ValueError(
                f"this denoiser was trained for maps of {self.config.num_classes} class channels "
                f"({self.config.dataset}); got {received.shape[1]} channels"
            )
        height, width = received.shape[-2:]
        if height % self.factor or width % self.factor:
            raise ValueError(f"map size {height}x{width}: both sides must be multiples of {self.factor} for this denoiser")
        return mask

    def logits(self, received: torch.Tensor, transmitted: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, num_classes, H, W)`` class logits; classes outside ``transmitted`` get ``-inf``."""
        mask = self._check(received, transmitted)
        skips, h = [], received.to(self.dtype)
        for level, block in enumerate(self.down):
            if level:
                h = F.max_pool2d(h, 2)
            h = block(h)
            skips.append(h)
        for block in self.up:
            skips.pop()
            skip = skips[-1]
            h = block(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        logits = self.head(h).float()
        return logits.masked_fill(~mask[:, :, None, None], float("-inf"))

    def forward(self, received: torch.Tensor, transmitted: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The cleaned map: one-hot of the most likely transmitted class at each pixel, absent channels zero (the
        interface of :class:`~gesco_diffusers.receiver.FastDenoisingSemantic`)."""
        mask = check_semantic_map(received, transmitted)
        labels = self.logits(received, mask).argmax(1)
        one_hot = F.one_hot(labels, self.config.num_classes).permute(0, 3, 1, 2).to(received.dtype)
        return pad_absent_channels(one_hot, mask)
