"""Build a channel model by name, e.g. from a config file or a command line."""

from __future__ import annotations

from typing import Any

from .awgn import AWGNChannel
from .base import SemanticChannel
from .digital import DigitalLinkChannel
from .fading import RayleighFadingChannel
from .poisson import PoissonChannel, PoissonGaussianChannel

__all__ = ["CHANNEL_REGISTRY", "build_channel"]

CHANNEL_REGISTRY: dict[str, type[SemanticChannel]] = {
    "awgn": AWGNChannel,
    "poisson": PoissonChannel,
    "mixture": PoissonGaussianChannel,
    "rayleigh": RayleighFadingChannel,
    "digital": DigitalLinkChannel,
}


def build_channel(name: str, **kwargs: Any) -> SemanticChannel:
    """Instantiate the channel registered as ``name`` with ``kwargs``, e.g. ``build_channel("awgn", psnr_db=10)``.

    Names: ``"awgn"``, ``"poisson"``, ``"mixture"`` (Poisson + Gaussian), ``"rayleigh"``, ``"digital"``.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in CHANNEL_REGISTRY:
        raise ValueError(f"unknown channel {name!r}; choose one of {sorted(CHANNEL_REGISTRY)}")
    return CHANNEL_REGISTRY[key](**kwargs)
