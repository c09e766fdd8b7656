"""Common machinery of the channel models: the ``SemanticChannel`` interface and the PSNR of Eq. 15.

Every channel takes the sender's map ``x`` of shape ``(B, C, H, W)`` and the side information ``transmitted``
(``(B, C)`` bool, see :mod:`gesco_diffusers.sender.encoding`). Only transmitted channels go through the channel;
the others come out as exact zeros, because the receiver pads absent classes with clean zero planes
(reference doc 1.4, step 7). Randomness comes only from the ``generator`` argument (or torch's global generator when
it is ``None``), and is drawn on the generator's device, so a seeded CPU generator gives the same noise whatever
device ``x`` lives on.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from ..sender.encoding import check_semantic_map, pad_absent_channels

__all__ = [
    "SemanticChannel",
    "check_psnr",
    "empirical_psnr",
    "gaussian_noise",
    "psnr_to_sigma",
]


def check_psnr(psnr_db: Optional[float], name: str = "psnr_db") -> float:
    """Return the PSNR as a float; ``None`` and ``float('inf')`` both mean a noiseless channel (``inf``)."""
    if psnr_db is None:
        return math.inf
    if isinstance(psnr_db, bool) or not isinstance(psnr_db, (int, float)):
        raise TypeError(f"{name} must be a number (dB) or None, got {type(psnr_db).__name__}")
    psnr_db = float(psnr_db)
    if math.isnan(psnr_db) or psnr_db == -math.inf:
        raise ValueError(f"{name} must be a finite number of dB or +inf (noiseless), got {psnr_db}")
    return psnr_db


def psnr_to_sigma(psnr_db: Optional[float], peak_power: float = 1.0) -> float:
    """Noise standard deviation of Eq. 15: ``PSNR = 10 log10(P / sigma^2)`` => ``sigma = sqrt(P) 10^(-PSNR/20)``.

    ``P`` is the peak power of the map, i.e. the square of its largest amplitude (1 for a one-hot map).
    """
    psnr_db = check_psnr(psnr_db)
    if not peak_power > 0 or not math.isfinite(peak_power):
        raise ValueError(f"peak_power must be a positive finite number, got {peak_power}")
    return 0.0 if psnr_db == math.inf else math.sqrt(peak_power) * 10.0 ** (-psnr_db / 20.0)


def empirical_psnr(clean: torch.Tensor, received: torch.Tensor, peak_power: float = 1.0) -> float:
    """Measured PSNR in dB of ``received`` w.r.t. ``clean``: ``10 log10(P / mean((received - clean)^2))``."""
    if clean.shape != received.shape:
        raise ValueError(f"shapes differ: {tuple(clean.shape)} vs {tuple(received.shape)}")
    mse = float(((received.double() - clean.double()) ** 2).mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak_power / mse)


def _per_example(psnr_db: Union[float, Sequence[float], torch.Tensor], batch: int) -> list[float]:
    """A call-time PSNR as ``batch`` checked floats: one value for every example, or one per example."""
    if isinstance(psnr_db, torch.Tensor):
        psnr_db = psnr_db.tolist()
    if isinstance(psnr_db, (int, float)) and not isinstance(psnr_db, bool):
        return [check_psnr(psnr_db)] * batch
    if not isinstance(psnr_db, (list, tuple)) or len(psnr_db) != batch:
        raise ValueError(f"psnr_db must be a number or one value per example ({batch}), got {psnr_db!r}")
    return [check_psnr(level) for level in psnr_db]


def _noise_device(like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.device:
    return generator.device if generator is not None else like.device


def gaussian_noise(
    like: torch.Tensor, std: float, generator: Optional[torch.Generator] = None, shape: Optional[Sequence[int]] = None
) -> torch.Tensor:
    """``std * N(0, 1)`` samples with the shape of ``like`` (or ``shape``), on ``like``'s device and dtype.

    The samples are drawn on the generator's device, then moved: same seed, same noise, on any device.
    """
    shape = tuple(like.shape) if shape is None else tuple(shape)
    dtype = like.dtype if like.is_floating_point() else torch.float32
    noise = torch.randn(shape, generator=generator, device=_noise_device(like, generator), dtype=dtype)
    return (noise * std).to(like.device)


class SemanticChannel(nn.Module):
    """Base class of the channels that corrupt a transmitted semantic map.

    Subclasses implement :meth:`_corrupt` on the whole ``(B, C, H, W)`` map; :meth:`forward` validates the input,
    calls it and zeroes the channels that were not transmitted, so no subclass can leak noise into absent classes.
    Subclasses list their parameters in :meth:`_params`, which feeds :meth:`describe` and ``repr``.
    """

    def forward(
        self,
        x: torch.Tensor,
        transmitted: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        psnr_db: Union[None, float, Sequence[float], torch.Tensor] = None,
    ) -> torch.Tensor:
        """Send ``x`` (``(B, C, H, W)`` float) through the channel; channels outside ``transmitted`` come out zero.

        Args:
            x: the sender's map, finite floats.
            transmitted: ``(B, C)`` bool side information; ``None`` means every channel is transmitted.
            generator: the source of all randomness (``None``: torch's global generator).
            psnr_db: the noise level as a call argument (Sionna's convention), one PSNR for the batch or one per
                example (``B`` values, broadcast over the map), under the channel's own PSNR definition; ``None``
                uses the level given to the constructor. Channels whose level is not a Gaussian PSNR refuse it.
        """
        mask = check_semantic_map(x, transmitted)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if psnr_db is None:
            return pad_absent_channels(self._corrupt(x, mask, generator), mask)
        sigma = torch.tensor([self._sigma_at(level) for level in _per_example(psnr_db, x.shape[0])],
                             dtype=torch.float64)
        return pad_absent_channels(self._corrupt_with_sigma(x, mask, generator, sigma.view(-1, 1, 1, 1)), mask)

    def _corrupt(
        self, x: torch.Tensor, transmitted: torch.Tensor, generator: Optional[torch.Generator]
    ) -> torch.Tensor:
        """Return the received map for every channel (absent channels are zeroed afterwards by ``forward``)."""
        raise NotImplementedError

    def _sigma_at(self, psnr_db: float) -> float:
        """The noise standard deviation of a PSNR given at call time (channels with a Gaussian level override it)."""
        raise TypeError(f"{type(self).__name__} takes its noise level in the constructor only; psnr_db= at call time "
                        "is for the Gaussian channels (AWGN, Rayleigh)")

    def _corrupt_with_sigma(
        self, x: torch.Tensor, transmitted: torch.Tensor, generator: Optional[torch.Generator], sigma: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`_corrupt` with the noise standard deviation ``sigma`` (``(B, 1, 1, 1)``) instead of the stored one."""
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        """The constructor parameters that define this channel (overridden by every subclass)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """The channel's class name and parameters as a JSON-friendly dict."""
        return {"type": type(self).__name__, **self._params()}

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self._params().items())
