"""Package names that load on first use, as diffusers' ``_LazyModule`` does, through a module ``__getattr__``: a
package can list what it offers without importing torch or diffusers until a name is used."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping, Optional, Sequence

__all__ = ["lazy_names"]


def lazy_names(
    package: str, submodules: Mapping[str, Sequence[str]], fallback: Optional[str] = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``, whose public names are defined in its ``submodules``
    (``{submodule: names}``) and imported on first use; ``fallback``: a submodule whose ``__all__`` names are
    found there as well (imported on the first name that is in no list)."""
    where = {name: f".{module}" for module, names in submodules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None and fallback is not None and not name.startswith("__"):  # (dunder probes of tools)
            module = fallback if name in importlib.import_module(fallback, package).__all__ else None
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, sorted(where)
