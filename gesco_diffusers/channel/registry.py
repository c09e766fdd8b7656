"""The channel models by name, importable without torch: the names a command line offers, and each model's class,
imported on first lookup."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["CHANNEL_REGISTRY", "MODULATIONS", "PSNR_CONVENTIONS"]

#: How a PSNR in dB becomes a noise level: ``"paper"`` (Eq. 15) or ``"official_table"`` (the authors' hard-coded
#: table, :data:`~gesco_diffusers.channel.OFFICIAL_PSNR_TO_SIGMA`; AWGN only).
PSNR_CONVENTIONS: tuple[str, ...] = ("paper", "official_table")

#: The digital link's square Gray M-QAM by name -> order M.
MODULATIONS: dict[str, int] = {"qpsk": 4, "16qam": 16, "64qam": 64, "256qam": 256}


class _LazyClasses(Mapping):
    """``{name: class}`` whose keys are known up front and whose classes are imported when first looked up."""

    def __init__(self, paths: dict[str, str]):
        self._paths, self._classes = paths, {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._classes:
            module, _, attribute = self._paths[name].rpartition(".")
            self._classes[name] = getattr(importlib.import_module(module, __package__), attribute)
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._paths!r})"


#: The channel models of :func:`~gesco_diffusers.channel.build_channel` by name.
CHANNEL_REGISTRY: Mapping[str, type] = _LazyClasses({
    "awgn": ".awgn.AWGNChannel",
    "poisson": ".poisson.PoissonChannel",
    "mixture": ".poisson.PoissonGaussianChannel",
    "rayleigh": ".fading.RayleighFadingChannel",
    "digital": ".digital.DigitalLinkChannel",
})
