"""Receiver side of GESCO: the fast-denoising semantic block (Eq. 1) and its adaptive, blind variant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ..utils.lazy import lazy_names

if TYPE_CHECKING:
    from torch import nn

# The modules load on first use (diffusers' pattern): the method names below import no torch, and the learned
# denoiser (a diffusers ModelMixin) loads only when asked for.
__getattr__, __dir__, _names = lazy_names(__name__, {
    "adaptive_fds": ("AdaptiveFastDenoisingSemantic", "adaptive_fast_denoise", "estimate_channel_sigma",
                     "estimate_noise_sigma", "potts_mean_field"),
    "fds": ("FastDenoisingSemantic", "fast_denoise"),
    "learned_denoiser": ("MapDenoiser",),
})
__all__ = sorted(_names + ["FDS_METHODS", "LEARNED_RECEIVER", "RECEIVER_METHODS", "build_fds"])

#: Names accepted by :func:`build_fds` (and by ``GescoPipeline(..., fds=<name>)``).
FDS_METHODS = ("paper", "adaptive", "none")
#: The trained receiver denoiser (:class:`MapDenoiser`, Table IX): it needs its weights, so it is passed to the
#: pipeline as a module; commands name it ``learned`` and take the weights' folder separately.
LEARNED_RECEIVER = "learned"
#: Every receiver method a command can run.
RECEIVER_METHODS = FDS_METHODS + (LEARNED_RECEIVER,)


def build_fds(name: str, num_classes: Optional[int] = None, **kwargs: Any) -> Optional[nn.Module]:
    """The receiver denoiser called ``name``; ``None`` for ``"none"``.

    * ``"paper"``: :class:`FastDenoisingSemantic`, Eq. 1 exactly (channel-wise, so ``num_classes`` is not used);
    * ``"adaptive"``: :class:`AdaptiveFastDenoisingSemantic` for maps with ``num_classes`` class channels (plus an
      optional instance-edge channel last);
    * ``"none"``: no denoising (the received map conditions the model as it is).

    ``kwargs`` go to the constructor (e.g. ``avg_kernel_size`` for ``"paper"``, ``beta`` for ``"adaptive"``).
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in FDS_METHODS:
        raise ValueError(f"unknown fds method {name!r}; choose one of {list(FDS_METHODS)}")
    if key == "adaptive":
        from .adaptive_fds import AdaptiveFastDenoisingSemantic

        return AdaptiveFastDenoisingSemantic(num_classes, **kwargs)
    if key == "paper":
        from .fds import FastDenoisingSemantic

        return FastDenoisingSemantic(**kwargs)
    if kwargs:
        raise ValueError(f"FDS method 'none' takes no options, got {sorted(kwargs)}")
    return None
