"""DeepJSCC (Bourtsoulatze, Kurka, Gunduz, IEEE TCCN 2019), the JSCC baseline of the paper's Fig. 10.

The photo itself is sent: a convolutional encoder maps it to ``k`` complex channel symbols (two real latent planes
per complex plane), the symbols are power-normalised, cross the channel, and a mirrored decoder rebuilds the photo.
The whole chain is trained end to end with the pixel MSE.

    x (3, H, W) -> E -> z (c, H/4, W/4) -> normalise -> channel -> D -> x_hat (3, H, W)

Bandwidth ratio (the paper's ``k/n``): ``n = 3 H W`` real source symbols, ``k = (c / 2) (H / 4) (W / 4)`` complex
channel uses, so ``k / n = c / 96``: ``c = 96 k/n`` latent planes, which must be a positive even number.

Channel and SNR: the latent goes through the package's own channel modules
(:class:`~gesco_diffusers.channel.AWGNChannel`, :class:`~gesco_diffusers.channel.RayleighFadingChannel`), each real
latent element being one real dimension of a complex channel use, as the one-hot map's elements are for GESCO. The
latent is normalised to unit average power per real element, the peak power ``P = 1`` of a one-hot map, so Eq. 15
gives the same noise standard deviation per real dimension to both systems at the same PSNR, and for DeepJSCC the
PSNR in dB is also its average SNR ``E|z|^2 / sigma^2``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..channel.base import SemanticChannel

__all__ = ["DeepJSCC", "latent_channels_for"]

#: The encoder halves the resolution twice (the architecture of Bourtsoulatze et al.).
DOWNSAMPLING = 4
_SOURCE_SYMBOLS_PER_PIXEL = 3  # RGB


def latent_channels_for(bandwidth_ratio: float) -> int:
    """The number of real latent planes ``c = 96 k/n`` for the bandwidth ratio ``k/n``; an error unless it is a
    positive even integer (two real planes make one plane of complex channel uses)."""
    if isinstance(bandwidth_ratio, bool) or not isinstance(bandwidth_ratio, (int, float)):
        raise TypeError(f"bandwidth_ratio must be a number, got {type(bandwidth_ratio).__name__}")
    planes = 2 * _SOURCE_SYMBOLS_PER_PIXEL * DOWNSAMPLING**2 * float(bandwidth_ratio)
    rounded = round(planes) if math.isfinite(planes) else 0
    if rounded < 2 or abs(planes - rounded) > 1e-6 or rounded % 2:
        raise ValueError(
            f"bandwidth_ratio {bandwidth_ratio} gives {planes:g} latent planes (96 k/n); choose k/n = m/48 with a "
            f"positive integer m (e.g. 1/48, 1/24, 1/12, 1/6)"
        )
    return rounded


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 5, stride=stride, padding=2), nn.PReLU(cout))


def _deconv(cin: int, cout: int, stride: int, last: bool = False) -> nn.Sequential:
    layer = nn.ConvTranspose2d(cin, cout, 5, stride=stride, padding=2, output_padding=stride - 1)
    return nn.Sequential(layer, nn.Sigmoid() if last else nn.PReLU(cout))


class DeepJSCC(ModelMixin, ConfigMixin):
    """The convolutional DeepJSCC autoencoder with a channel in its bottleneck.

    Args:
        resolution: ``(H, W)`` of the photos it was trained for (each a multiple of 4).
        bandwidth_ratio: ``k/n``, complex channel uses per real source symbol (see the module docstring).
        block_out_channels: widths of the two downsampling stages (16, 32 in the original).
        hidden_channels: width of the three stride-1 layers (32 in the original).
        dataset: the dataset the model was trained on (checked against the evaluation data).
    """

    @register_to_config
    def __init__(
        self,
        resolution: Sequence[int] = (64, 80),
        bandwidth_ratio: float = 1 / 48,
        block_out_channels: Sequence[int] = (16, 32),
        hidden_channels: int = 32,
        dataset: str = "camvid",
    ) -> None:
        super().__init__()
        height, width = (int(v) for v in resolution)
        if height % DOWNSAMPLING or width % DOWNSAMPLING or height <= 0 or width <= 0:
            raise ValueError(f"resolution {height}x{width}: both sides must be positive multiples of {DOWNSAMPLING}")
        c = latent_channels_for(bandwidth_ratio)
        w1, w2 = (int(v) for v in block_out_channels)
        self.encoder = nn.Sequential(
            _conv(3, w1, 2), _conv(w1, w2, 2), _conv(w2, hidden_channels, 1), _conv(hidden_channels, hidden_channels, 1),
            _conv(hidden_channels, c, 1),
        )
        self.decoder = nn.Sequential(
            _deconv(c, hidden_channels, 1), _deconv(hidden_channels, hidden_channels, 1),
            _deconv(hidden_channels, w2, 1), _deconv(w2, w1, 2), _deconv(w1, 3, 2, last=True),
        )

    @property
    def latent_channels(self) -> int:
        return latent_channels_for(self.config.bandwidth_ratio)

    @property
    def channel_uses_per_pixel(self) -> float:
        """Complex channel uses per image pixel: ``3 k/n``."""
        return _SOURCE_SYMBOLS_PER_PIXEL * float(self.config.bandwidth_ratio)

    def check_images(self, images: torch.Tensor) -> None:
        """An error naming the problem unless ``images`` is a finite ``(B, 3, H, W)`` float batch in [0, 1] at the
        trained resolution."""
        expected = tuple(self.config.resolution)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"DeepJSCC expects RGB images of shape (B, 3, H, W), got {shape}")
        if tuple(images.shape[-2:]) != expected:
            raise ValueError(
                f"DeepJSCC was trained for {expected[0]}x{expected[1]} images, got {images.shape[-2]}x{images.shape[-1]}"
            )
        if not images.is_floating_point() or not bool(torch.isfinite(images).all()):
            raise ValueError("DeepJSCC expects finite float images")
        if float(images.min()) < 0 or float(images.max()) > 1:
            raise ValueError(f"DeepJSCC expects images in [0, 1], got [{float(images.min()):.3g}, {float(images.max()):.3g}]")

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Channel input: the latent of ``images`` (``[0, 1]``), scaled to unit average power per real element
        per image (the power constraint ``(1 / 2k) ||z||^2 = 1``)."""
        self.check_images(images)
        z = self.encoder(images * 2 - 1)
        power = z.pow(2).flatten(1).mean(1).clamp_min(1e-12)
        return z / power.sqrt().view(-1, 1, 1, 1)

    def decode(self, symbols: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` from the received latent."""
        return self.decoder(symbols)

    def forward(
        self, images: torch.Tensor, channel: Optional[SemanticChannel] = None, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Encode, send through ``channel`` (``None``: noiseless), decode. ``generator`` drives the channel noise."""
        symbols = self.encode(images)
        if channel is not None:
            symbols = channel(symbols, generator=generator)
        return self.decode(symbols)
