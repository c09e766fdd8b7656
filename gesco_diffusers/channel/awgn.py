"""Additive white Gaussian noise at a PSNR (paper Eq. 15), with the authors' hard-coded table as an option."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from .base import SemanticChannel, check_psnr, gaussian_noise, psnr_to_sigma
from .registry import PSNR_CONVENTIONS

__all__ = ["AWGNChannel", "OFFICIAL_PSNR_TO_SIGMA"]

# Copied literally from the authors' released code (``image_sample.py`` / ``train_util.py``, reference doc 1.3):
# "PSNR" key -> value used as the noise *standard deviation* (the code's comment calls it a variance, but it
# multiplies ``randn``). It is not a closed-form mapping: under Eq. 15 the 30 "dB" entry is really about 26 dB.
OFFICIAL_PSNR_TO_SIGMA: dict[int, float] = {100: 0.0, 30: 0.05, 25: 0.08, 20: 0.13, 15: 0.22, 10: 0.36, 5: 0.6, 1: 0.9}


class AWGNChannel(SemanticChannel):
    """AWGN on every transmitted element: ``y = x + n``, ``n ~ N(0, sigma^2)`` i.i.d. per channel and pixel.

    SNR definition (paper Eq. 15): ``PSNR = 10 log10(P / sigma^2)`` dB, with ``P`` the peak power of the map (the
    square of its largest amplitude, 1 for a one-hot map) and ``sigma^2`` the noise variance per element, so
    ``sigma = sqrt(P) * 10^(-PSNR / 20)``.

    ``psnr_convention="official_table"`` instead reads ``sigma`` from :data:`OFFICIAL_PSNR_TO_SIGMA`, the table
    hard-coded in the authors' code (copied literally; reference doc 1.3), e.g. ``sigma = 0.36`` at "10 dB". Only
    its keys (100, 30, 25, 20, 15, 10, 5, 1) are allowed, and only for peak-1 (one-hot) maps. Use it to run
    official checkpoints the way they were trained and evaluated.

    ``psnr_db=None`` or ``float('inf')`` gives a noiseless channel under either convention.

    Args:
        psnr_db: the PSNR in dB.
        peak_power: ``P`` of Eq. 15.
        psnr_convention: ``"paper"`` (Eq. 15) or ``"official_table"``.
    """

    def __init__(
        self, psnr_db: Optional[float], peak_power: float = 1.0, psnr_convention: str = "paper"
    ) -> None:
        super().__init__()
        if psnr_convention not in PSNR_CONVENTIONS:
            raise ValueError(f"psnr_convention must be one of {PSNR_CONVENTIONS}, got {psnr_convention!r}")
        self.psnr_db = check_psnr(psnr_db)
        self.peak_power = float(peak_power)
        self.psnr_convention = psnr_convention
        if psnr_convention == "official_table" and self.peak_power != 1.0:
            raise ValueError(
                f"psnr_convention='official_table' is defined for peak-1 one-hot maps only; got peak_power={peak_power}"
            )
        self.sigma = self._sigma_at(self.psnr_db)

    def _sigma_at(self, psnr_db: float) -> float:
        if self.psnr_convention == "paper" or psnr_db == math.inf:
            return psnr_to_sigma(psnr_db, self.peak_power)
        if psnr_db not in OFFICIAL_PSNR_TO_SIGMA:
            raise ValueError(f"PSNR {psnr_db:g} dB is not in the official table; allowed: {sorted(OFFICIAL_PSNR_TO_SIGMA)}")
        return OFFICIAL_PSNR_TO_SIGMA[int(psnr_db)]

    def _corrupt(
        self, x: torch.Tensor, transmitted: torch.Tensor, generator: Optional[torch.Generator]
    ) -> torch.Tensor:
        if self.sigma == 0.0:
            return x.clone()
        return x + gaussian_noise(x, self.sigma, generator)

    def _corrupt_with_sigma(
        self, x: torch.Tensor, transmitted: torch.Tensor, generator: Optional[torch.Generator], sigma: torch.Tensor
    ) -> torch.Tensor:
        return x + gaussian_noise(x, 1.0, generator) * sigma.to(x.device, x.dtype)

    def _params(self) -> dict[str, Any]:
        return {
            "psnr_db": self.psnr_db,
            "peak_power": self.peak_power,
            "psnr_convention": self.psnr_convention,
            "sigma": self.sigma,
        }
