"""Rayleigh block fading plus AWGN, with and without equalisation (paper Table VII)."""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import torch

from .base import SemanticChannel, check_psnr, gaussian_noise, psnr_to_sigma

__all__ = ["RayleighFadingChannel"]

_BLOCK_MODES = ("plane", "map")


class RayleighFadingChannel(SemanticChannel):
    """Rayleigh block fading plus AWGN; the receiver equalises (coherent zero forcing) or only corrects the phase.

    Real-valued model. Each real map element ``x`` is sent on the in-phase component of a complex symbol through
    a flat block-fading channel:

        ``r = h x + w``,   ``h ~ CN(0, 1)`` (``E|h|^2 = 1``),   ``w = w_I + j w_Q``,   ``w_I, w_Q ~ N(0, sigma^2)``.

    One gain ``h`` is drawn per block of elements (see ``block_size``), independently across blocks, channels and
    samples; ``w`` is i.i.d. per element. The receiver knows ``h`` (coherent detection) and outputs a real map:

        * ``equalize=True`` (zero forcing): ``y = Re(r conj(h)) / |h|^2 = x + n / |h|``;
        * ``equalize=False`` (phase correction only): ``y = Re(r conj(h) / |h|) = |h| x + n``;

    where ``n = Re(w conj(h)) / |h| ~ N(0, sigma^2)``. Without fading (``h = 1``) both reduce to
    :class:`~gesco_diffusers.channel.AWGNChannel`.

    SNR definition: Eq. 15 with ``sigma^2`` the noise variance per real dimension and ``P`` the peak power of the
    map, ``sigma = sqrt(P) 10^(-PSNR/20)``. Since ``E|h|^2 = 1``, this is the *average* received PSNR; a given
    block sees ``PSNR + 10 log10|h|^2``.

    Args:
        psnr_db: the average PSNR in dB (``None``/``inf``: fading without noise).
        block_size: which elements share one gain: ``"plane"`` (default, each ``(H, W)`` channel plane of each
            sample), ``"map"`` (all channels of a sample), or an int ``k``: runs of ``k`` consecutive elements of a
            plane in raster order (the last run of a plane may be shorter).
        equalize: zero-forcing equalisation (True) or phase correction only (False).
        peak_power: ``P`` of Eq. 15.
    """

    def __init__(
        self,
        psnr_db: Optional[float],
        block_size: Union[str, int] = "plane",
        equalize: bool = True,
        peak_power: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(block_size, str):
            if block_size not in _BLOCK_MODES:
                raise ValueError(f"block_size must be one of {_BLOCK_MODES} or a positive int, got {block_size!r}")
        elif isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be one of {_BLOCK_MODES} or a positive int, got {block_size!r}")
        self.psnr_db = check_psnr(psnr_db)
        self.peak_power = float(peak_power)
        self.sigma = psnr_to_sigma(self.psnr_db, self.peak_power)
        self.block_size = block_size
        self.equalize = bool(equalize)

    def sample_gains(
        self, shape: tuple[int, int, int, int], generator: Optional[torch.Generator] = None,
        device: Union[str, torch.device] = "cpu",
    ) -> torch.Tensor:
        """Complex gains ``h ~ CN(0, 1)`` broadcast to ``shape = (B, C, H, W)`` following ``block_size``."""
        batch, channels, height, width = shape
        if self.block_size == "map":
            blocks = (batch, 1, 1, 1)
        elif self.block_size == "plane":
            blocks = (batch, channels, 1, 1)
        else:
            blocks = (batch, channels, math.ceil(height * width / self.block_size))
        like = torch.empty(0, device=device)
        h = torch.complex(*gaussian_noise(like, math.sqrt(0.5), generator, (2, *blocks)).unbind(0))
        if isinstance(self.block_size, int):
            # Element i of a plane (raster order) belongs to block i // block_size.
            index = torch.arange(height * width, device=h.device) // self.block_size
            h = h[:, :, index].reshape(batch, channels, height, width)
        return h.expand(shape)

    def _sigma_at(self, psnr_db: float) -> float:
        return psnr_to_sigma(psnr_db, self.peak_power)

    def _corrupt(
        self, x: torch.Tensor, transmitted: torch.Tensor, generator: Optional[torch.Generator]
    ) -> torch.Tensor:
        return self._corrupt_with_sigma(x, transmitted, generator, self.sigma)

    def _corrupt_with_sigma(
        self, x: torch.Tensor, transmitted: torch.Tensor, generator: Optional[torch.Generator], sigma
    ) -> torch.Tensor:
        h = self.sample_gains(tuple(x.shape), generator, x.device)
        noise = gaussian_noise(x, 1.0, generator, (2, *x.shape)) * (
            sigma.to(x.device, x.dtype) if torch.is_tensor(sigma) else sigma)
        received = h * x + torch.complex(noise[0], noise[1])
        # Coherent receiver: rotate by conj(h)/|h| (phase), then optionally divide by |h| (amplitude).
        derotated = (received * h.conj() / h.abs()).real
        output = derotated / h.abs() if self.equalize else derotated
        return output.to(x.dtype)

    def _params(self) -> dict[str, Any]:
        return {
            "psnr_db": self.psnr_db,
            "block_size": self.block_size,
            "equalize": self.equalize,
            "peak_power": self.peak_power,
            "sigma": self.sigma,
        }
