"""The paper's comparison systems that are not GESCO: DeepJSCC (Fig. 10). Imported lazily (diffusers is heavy)."""

from typing import Any

__all__ = ["DeepJSCC", "latent_channels_for"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import deepjscc

        return getattr(deepjscc, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
