"""Build a channel model by name, e.g. from a config file or a command line, or for a given pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from .awgn import AWGNChannel
from .base import SemanticChannel
from .registry import CHANNEL_REGISTRY, PSNR_CONVENTIONS

__all__ = [
    "CHANNEL_REGISTRY",
    "PSNR_CONVENTIONS",
    "build_channel",
    "channel_for",
    "channel_summary",
    "describe_channel",
    "resolve_psnr_convention",
    "stored_psnr_convention",
]

def build_channel(name: str, **kwargs: Any) -> SemanticChannel:
    """Instantiate the channel registered as ``name`` with ``kwargs``, e.g. ``build_channel("awgn", psnr_db=10)``.

    Names: ``"awgn"``, ``"poisson"``, ``"mixture"`` (Poisson + Gaussian), ``"rayleigh"``, ``"digital"``.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in CHANNEL_REGISTRY:
        raise ValueError(f"unknown channel {name!r}; choose one of {sorted(CHANNEL_REGISTRY)}")
    return CHANNEL_REGISTRY[key](**kwargs)


def _check_convention(value: Any, where: str) -> str:
    if value not in PSNR_CONVENTIONS:
        raise ValueError(f"{where} must be one of {list(PSNR_CONVENTIONS)}, got {value!r}")
    return value


def stored_psnr_convention(source: Any) -> str:
    """The PSNR convention a pipeline was made for: its ``semantic_config["psnr_convention"]``.

    ``source`` is a pipeline (anything with a ``config`` holding ``semantic_config``, e.g. a ``GescoPipeline``), a
    ``semantic_config`` dict, or ``None``. ``"paper"`` (Eq. 15) when nothing is stored; ``gesco convert`` stores
    ``"official_table"``, the noise the authors' checkpoints were trained and evaluated with.
    """
    if source is None:
        return "paper"
    if isinstance(source, Mapping):
        semantic_config = source
    else:
        config = getattr(source, "config", None)
        if config is None:
            raise TypeError(f"expected a pipeline or a semantic_config dict, got {type(source).__name__}")
        semantic_config = dict(config).get("semantic_config") or {}
    return _check_convention(semantic_config.get("psnr_convention", "paper"), "semantic_config['psnr_convention']")


def resolve_psnr_convention(source: Any = None, psnr_convention: Optional[str] = None) -> str:
    """``psnr_convention`` when given (an explicit override), else the one stored with ``source``."""
    if psnr_convention is not None:
        return _check_convention(psnr_convention, "psnr_convention")
    return stored_psnr_convention(source)


def channel_for(
    source: Any, name: Optional[str], level_db: Optional[float], psnr_convention: Optional[str] = None,
    **kwargs: Any,
) -> Optional[SemanticChannel]:
    """The channel ``name`` at ``level_db`` for the pipeline (or ``semantic_config``) ``source``.

    The level is a PSNR in dB, or Eb/N0 in dB for ``"digital"``; ``name=None`` is the noiseless link (``None``).
    The PSNR follows the convention stored with the pipeline (:func:`stored_psnr_convention`) unless
    ``psnr_convention`` overrides it: a converted checkpoint gets the authors' noise table (10 dB -> sigma 0.36), a
    model trained here Eq. 15 (10 dB -> sigma 0.316). The table defines AWGN only: the other analog channels follow
    Eq. 15 whatever is stored, and asking for the table explicitly with them is an error. Extra ``kwargs`` go to the
    channel's constructor.
    """
    if name is None:
        if level_db is not None:
            raise ValueError(f"a level ({level_db} dB) needs a channel name")
        return None
    key = name.lower() if isinstance(name, str) else name
    if key not in CHANNEL_REGISTRY:
        raise ValueError(f"unknown channel {name!r}; choose one of {sorted(CHANNEL_REGISTRY)}")
    convention = resolve_psnr_convention(source, psnr_convention)
    if key != "awgn" and psnr_convention == "official_table":
        raise ValueError(f"psnr_convention='official_table' (the authors' noise table) is defined for the 'awgn' "
                         f"channel only, not {name!r}")
    if key == "digital":
        return build_channel(key, ebn0_db=level_db, **kwargs)
    if key != "awgn":
        return build_channel(key, psnr_db=level_db, **kwargs)
    try:
        return AWGNChannel(level_db, psnr_convention=convention, **kwargs)
    except ValueError as err:
        if psnr_convention is None and convention == "official_table":
            raise ValueError(
                f"{err} (this pipeline stores psnr_convention='official_table', the authors' noise table; "
                "override it with psnr_convention='paper', --psnr-convention paper, for Eq. 15)"
            ) from err
        raise


def describe_channel(channel: Optional[SemanticChannel]) -> dict[str, Any]:
    """A channel's parameters as a JSON-friendly dict, with the PSNR convention its noise level follows (the analog
    channels; ``"paper"`` for all but an AWGN channel built on the official table)."""
    if channel is None:
        return {"type": "noiseless"}
    info = channel.describe()
    if "psnr_db" in info:
        info.setdefault("psnr_convention", "paper")
    return info


def channel_summary(channel: Optional[SemanticChannel]) -> str:
    """One line for a report: the PSNR convention and the noise level it gives, e.g.
    ``"psnr_convention official_table (the authors' noise table): sigma 0.36"``."""
    info = describe_channel(channel)
    if "psnr_convention" not in info:
        return ""
    label = "the authors' noise table" if info["psnr_convention"] == "official_table" else "Eq. 15"
    sigma = f": sigma {info['sigma']:.4g}" if "sigma" in info else ""
    return f"psnr_convention {info['psnr_convention']} ({label}){sigma}"
