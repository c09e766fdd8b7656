"""Poisson (shot) noise and a Poisson + Gaussian mixture at a PSNR (paper Table VI)."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from .awgn import AWGNChannel
from .base import SemanticChannel, check_psnr

__all__ = ["PoissonChannel", "PoissonGaussianChannel"]


class PoissonChannel(SemanticChannel):
    """Shot noise: the map is a photon-count intensity, ``y = (A / lambda) * Poisson(lambda * x / A)``.

    ``A = sqrt(P)`` is the peak amplitude of the map (``P`` its peak power, 1 for one-hot maps) and ``lambda`` the
    mean photon count at the peak. The output is unbiased (``E[y] = x``) with signal-dependent variance
    ``Var[y] = A * x / lambda``: zero where ``x = 0``, ``A^2 / lambda = P / lambda`` at the peak ``x = A``.

    SNR definition: Eq. 15 with ``sigma^2`` the noise variance at the peak, ``PSNR = 10 log10(P / (P / lambda))
    = 10 log10(lambda)``, hence ``lambda = 10^(PSNR / 10)`` photons at the peak (10 photons at 10 dB).
    ``psnr_db=None``/``inf`` is noiseless. The map must be non-negative (an intensity); negative values raise.

    Args:
        psnr_db: the PSNR in dB.
        peak_power: ``P`` of Eq. 15.
    """

    def __init__(self, psnr_db: Optional[float], peak_power: float = 1.0) -> None:
        super().__init__()
        self.psnr_db = check_psnr(psnr_db)
        if not peak_power > 0 or not math.isfinite(peak_power):
            raise ValueError(f"peak_power must be a positive finite number, got {peak_power}")
        self.peak_power = float(peak_power)
        self.peak_photons = math.inf if self.psnr_db == math.inf else 10.0 ** (self.psnr_db / 10.0)

    def _corrupt(
        self, x: torch.Tensor, transmitted: torch.Tensor, generator: Optional[torch.Generator]
    ) -> torch.Tensor:
        # Only the transmitted part must be an intensity: absent channels are discarded anyway.
        negative = (x < 0) & transmitted[:, :, None, None]
        if bool(negative.any()):
            raise ValueError(
                f"PoissonChannel needs a non-negative map (photon intensities); {int(negative.sum())} transmitted "
                f"elements are negative (min {float(x[negative].min()):.4g})"
            )
        if self.peak_photons == math.inf:
            return x.clone()
        amplitude = math.sqrt(self.peak_power)
        rate = (x.clamp_min(0) * (self.peak_photons / amplitude)).to(torch.float64)
        device = generator.device if generator is not None else x.device
        counts = torch.poisson(rate.to(device), generator=generator).to(x.device)
        return (counts * (amplitude / self.peak_photons)).to(x.dtype)

    def _params(self) -> dict[str, Any]:
        return {"psnr_db": self.psnr_db, "peak_power": self.peak_power, "peak_photons": self.peak_photons}


class PoissonGaussianChannel(SemanticChannel):
    """Poisson + Gaussian mixture (paper Table VI): shot noise followed by independent AWGN.

    SNR definition: Eq. 15 with ``sigma^2`` the *total* noise variance at the peak, ``sigma^2 = P 10^(-PSNR/10)``.
    The two independent parts share it: ``poisson_fraction = f`` of it is shot noise and ``1 - f`` is Gaussian,

        * Poisson part: peak variance ``f sigma^2``, i.e. a :class:`PoissonChannel` at ``PSNR - 10 log10(f)``
          (``lambda = 10^(PSNR/10) / f`` photons at the peak);
        * Gaussian part: ``sigma_g^2 = (1 - f) sigma^2``, i.e. an :class:`AWGNChannel` at ``PSNR - 10 log10(1 - f)``.

    Variances of independent noises add, so the total peak variance is ``sigma^2`` and the PSNR is the request.
    ``f = 1`` is pure Poisson, ``f = 0`` pure AWGN. The map must be non-negative (see :class:`PoissonChannel`).

    Args:
        psnr_db: the total PSNR in dB.
        poisson_fraction: the share ``f`` in ``[0, 1]`` of the peak noise power that is shot noise.
        peak_power: ``P`` of Eq. 15.
    """

    def __init__(self, psnr_db: Optional[float], poisson_fraction: float = 0.5, peak_power: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= poisson_fraction <= 1.0:
            raise ValueError(f"poisson_fraction must lie in [0, 1], got {poisson_fraction}")
        self.psnr_db = check_psnr(psnr_db)
        self.poisson_fraction = float(poisson_fraction)
        self.poisson = PoissonChannel(self._share_psnr(self.poisson_fraction), peak_power)
        self.gaussian = AWGNChannel(self._share_psnr(1.0 - self.poisson_fraction), peak_power)

    def _share_psnr(self, fraction: float) -> float:
        """PSNR of a part that carries ``fraction`` of the total peak noise power (``inf`` for none)."""
        return math.inf if fraction == 0.0 or self.psnr_db == math.inf else self.psnr_db - 10.0 * math.log10(fraction)

    def _corrupt(
        self, x: torch.Tensor, transmitted: torch.Tensor, generator: Optional[torch.Generator]
    ) -> torch.Tensor:
        shot = self.poisson._corrupt(x, transmitted, generator)
        return self.gaussian._corrupt(shot, transmitted, generator)

    def _params(self) -> dict[str, Any]:
        return {
            "psnr_db": self.psnr_db,
            "poisson_fraction": self.poisson_fraction,
            "peak_power": self.poisson.peak_power,
            "peak_photons": self.poisson.peak_photons,
            "gaussian_sigma": self.gaussian.sigma,
        }
