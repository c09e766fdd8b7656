"""The figures of one run of the transmission chain (:func:`gesco_diffusers.chain.run_chain`), shared by its result
and by ``gesco transmit``'s report. A module of its own, without torch, so that the command's ``--help`` stays light."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChainFigures"]


@dataclass
class ChainFigures:
    """The figures of one run of the chain (what ``gesco transmit`` reports)."""

    codec: str
    bpp: float
    bits_per_element: float
    map_miou_received: float
    map_miou_fds: float
    fds: str
    sampler: str
    steps: int
    guidance_scale: float
    seed: int
    seconds_preprocessing: float  # channel + FDS
    seconds_generation: float
