"""Noisy-map training (paper Sec. IV-A): which channel condition each training batch is conditioned on.

Paper: "for each batch, we sample a certain amount of noise that we apply to the transmitted semantic maps.
Specifically, in 30% of the cases, the maps are transmitted without noise, while in other cases equal probability is
assigned to PSNR equal to 30, 25, 20, 15, 10, and 1." The noise comes from the very channel module used at inference
(:mod:`gesco_diffusers.channel`, AWGN of Eq. 15 by default): i.i.d. noise on the transmitted channels (present classes
and the edge channel), exact zeros on the others.

The authors' released code trains differently (reference doc 1.2): one sigma per batch from
``[0.6, 0.36, 0.22, 0.13, 0.08, 0.05, 0, 0, 0]`` (the hard-coded table's "5 ... 30 dB", each 1/9, clean 3/9).
:meth:`NoisyMapSchedule.official` reproduces that *distribution* with ``psnr_convention="official_table"``, but still
draws the noise with the inference channel (i.i.d. per channel, absent classes untouched) rather than the official
``(B, 1, H, W)`` noise broadcast over all channels, so training and inference see the same kind of corruption.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..channel import CHANNEL_REGISTRY, build_channel

__all__ = [
    "OFFICIAL_CLEAN_PROBABILITY",
    "OFFICIAL_TRAINING_PSNRS",
    "PAPER_CLEAN_PROBABILITY",
    "PAPER_TRAINING_PSNRS",
    "NoisyMapSchedule",
]

#: Paper Sec. IV-A: noisy batches draw one of these PSNRs (dB) with equal probability; 30% of batches are clean.
PAPER_TRAINING_PSNRS: tuple[float, ...] = (30.0, 25.0, 20.0, 15.0, 10.0, 1.0)
PAPER_CLEAN_PROBABILITY = 0.3

#: The authors' training draw (reference doc 1.2): keys of the official table, each 1/9; sigma = 0 with 3/9.
OFFICIAL_TRAINING_PSNRS: tuple[float, ...] = (30.0, 25.0, 20.0, 15.0, 10.0, 5.0)
OFFICIAL_CLEAN_PROBABILITY = 1.0 / 3.0

# The keyword through which each registered channel takes its noise level (PSNR in dB, or Eb/N0 for the digital link).
_LEVEL_KEYWORDS = ("psnr_db", "ebn0_db")


def _level_keyword(channel_name: str) -> str:
    params = inspect.signature(CHANNEL_REGISTRY[channel_name].__init__).parameters
    for key in _LEVEL_KEYWORDS:
        if key in params:
            return key
    raise ValueError(f"channel {channel_name!r} takes no noise level ({' or '.join(_LEVEL_KEYWORDS)})")


class NoisyMapSchedule(nn.Module):
    """Draws a channel condition per batch and applies it to the sender's one-hot maps.

    ``sample(generator)`` returns ``None`` (clean map) with probability ``clean_probability`` and otherwise one of
    ``psnrs``, chosen with ``probabilities`` (default: equal). ``apply`` sends the batch through the channel at that
    level; with ``fds=True`` the noisy maps also go through the receiver's FDS block (off in the paper).

    Args:
        psnrs: the noise levels of noisy batches (dB; Eb/N0 in dB for ``channel="digital"``).
        clean_probability: probability of a clean batch.
        probabilities: relative weights of ``psnrs`` (normalised; default uniform).
        channel: a name from :data:`gesco_diffusers.channel.CHANNEL_REGISTRY` (``"awgn"``, ``"poisson"``, ...).
        psnr_convention: ``"paper"`` (Eq. 15) or ``"official_table"`` (AWGN only; sigma from the authors' table).
        fds: apply FDS (Eq. 1) to the noisy maps.
        channel_kwargs: extra constructor arguments of the channel (e.g. ``poisson_fraction``).
    """

    def __init__(
        self,
        psnrs: Sequence[float] = PAPER_TRAINING_PSNRS,
        clean_probability: float = PAPER_CLEAN_PROBABILITY,
        probabilities: Optional[Sequence[float]] = None,
        channel: str = "awgn",
        psnr_convention: str = "paper",
        fds: bool = False,
        channel_kwargs: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        psnrs = tuple(float(p) for p in psnrs)
        if not 0.0 <= clean_probability <= 1.0 or math.isnan(clean_probability):
            raise ValueError(f"clean_probability must lie in [0, 1], got {clean_probability}")
        if not psnrs and clean_probability < 1.0:
            raise ValueError("psnrs is empty: give at least one noise level, or clean_probability=1")
        if any(math.isnan(p) for p in psnrs):
            raise ValueError(f"psnrs must be numbers, got {psnrs}")
        if probabilities is None:
            weights = torch.ones(len(psnrs), dtype=torch.float64)
        else:
            weights = torch.as_tensor([float(w) for w in probabilities], dtype=torch.float64)
            if weights.numel() != len(psnrs):
                raise ValueError(f"got {weights.numel()} probabilities for {len(psnrs)} psnrs")
            if bool((weights < 0).any()) or not math.isfinite(float(weights.sum())) or float(weights.sum()) <= 0:
                raise ValueError(f"probabilities must be non-negative with a positive sum, got {list(probabilities)}")
        key = channel.lower()
        if key not in CHANNEL_REGISTRY:
            raise ValueError(f"unknown channel {channel!r}; choose one of {sorted(CHANNEL_REGISTRY)}")
        if psnr_convention != "paper" and key != "awgn":
            raise ValueError(f"psnr_convention={psnr_convention!r} is defined for the 'awgn' channel only")
        self.psnrs = psnrs
        self.clean_probability = float(clean_probability)
        self.probabilities = tuple(float(w) for w in weights / weights.sum()) if psnrs else ()
        self.channel_name = key
        self.psnr_convention = psnr_convention
        self.channel_kwargs = dict(channel_kwargs or {})
        if key == "awgn":
            self.channel_kwargs["psnr_convention"] = psnr_convention
        self._level_keyword = _level_keyword(key)
        # Outcome i = 0 is "clean"; i >= 1 is psnrs[i - 1]. One categorical draw per batch.
        self.register_buffer(
            "_outcome_probabilities",
            torch.tensor([self.clean_probability] + [(1.0 - self.clean_probability) * p for p in self.probabilities],
                         dtype=torch.float64),
            persistent=False,
        )
        # Build every channel now: a bad level (e.g. a PSNR missing from the official table) fails before training.
        self.channels = nn.ModuleDict(
            {str(i): build_channel(key, **{self._level_keyword: p}, **self.channel_kwargs) for i, p in enumerate(psnrs)}
        )
        self.fds = None
        if fds:
            from ..receiver import FastDenoisingSemantic

            self.fds = FastDenoisingSemantic()

    @classmethod
    def official(cls, **kwargs) -> "NoisyMapSchedule":
        """The authors' training distribution: sigma from the official table at "30 ... 5 dB", each 1/9, clean 3/9."""
        return cls(psnrs=OFFICIAL_TRAINING_PSNRS, clean_probability=OFFICIAL_CLEAN_PROBABILITY,
                   psnr_convention="official_table", **kwargs)

    @property
    def outcome_probabilities(self) -> dict[Optional[float], float]:
        """``{None: P(clean), psnr: P(psnr), ...}``: the distribution :meth:`sample` draws from."""
        probs = self._outcome_probabilities.tolist()
        return {None: probs[0], **{p: q for p, q in zip(self.psnrs, probs[1:])}}

    def sample(self, generator: Optional[torch.Generator] = None) -> Optional[float]:
        """Draw the condition of one batch: ``None`` (clean) or a PSNR in dB."""
        index = self._draw_index(generator)
        return None if index == 0 else self.psnrs[index - 1]

    def _draw_index(self, generator: Optional[torch.Generator]) -> int:
        device = generator.device if generator is not None else torch.device("cpu")
        probs = self._outcome_probabilities.to(device)
        return int(torch.multinomial(probs, 1, generator=generator))

    def corrupt(
        self,
        one_hot: torch.Tensor,
        transmitted: torch.Tensor,
        psnr: Optional[float],
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Send ``one_hot`` ``(B, C, H, W)`` through the channel at ``psnr`` (one of ``psnrs``; ``None``: clean).

        Channels outside ``transmitted`` ``(B, C)`` come out as exact zeros (they are zero in a one-hot map anyway).
        """
        if psnr is None:
            return one_hot
        if float(psnr) not in self.psnrs:
            raise ValueError(f"psnr {psnr} is not one of this schedule's levels {self.psnrs}")
        received = self.channels[str(self.psnrs.index(float(psnr)))](one_hot, transmitted, generator=generator)
        return self.fds(received, transmitted) if self.fds is not None else received

    def apply(
        self, one_hot: torch.Tensor, transmitted: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """``corrupt(one_hot, transmitted, sample(generator), generator)``: one draw for the whole batch."""
        return self.corrupt(one_hot, transmitted, self.sample(generator), generator)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description (stored with trained pipelines)."""
        return {
            "psnrs": list(self.psnrs),
            "probabilities": list(self.probabilities),
            "clean_probability": self.clean_probability,
            "channel": self.channel_name,
            "psnr_convention": self.psnr_convention,
            "fds": self.fds is not None,
            "channel_kwargs": {k: v for k, v in self.channel_kwargs.items() if k != "psnr_convention"},
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
