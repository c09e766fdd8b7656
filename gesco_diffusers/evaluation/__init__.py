"""Evaluation of regenerated images: the metrics of Sec. IV (:mod:`.metrics`) and ``gesco evaluate``.

``gesco evaluate`` in one module per concern: what is run (:mod:`.protocol`), the dataset rows (:mod:`.data`), where
the images come from (:mod:`.sources`), the output folders (:mod:`.store`), the KPIs (:mod:`.scoring`), the sender's
bits (:mod:`.rates`), :func:`evaluate` itself (:mod:`.evaluator`), the command line (:mod:`.cli`), the launch's
processes (:mod:`.distributed`) and the report files (:mod:`.reports`).

Names load on first use (diffusers' pattern): importing the package imports no torch.
"""

import importlib
from typing import TYPE_CHECKING, Any

# name -> submodule; the metric names (``metrics.__all__``) are found in ``.metrics`` on first use as well.
_LAZY_IMPORTS = {
    "PAPER_PSNRS": ".protocol", "ChannelCondition": ".protocol", "Method": ".protocol", "Run": ".protocol",
    "channel_grid": ".protocol", "plan_runs": ".protocol",
    "EvaluationData": ".data", "EvaluationItem": ".data",
    "KPISuite": ".scoring", "ScoringNetworks": ".scoring",
    "EvaluationSettings": ".evaluator", "evaluate": ".evaluator",
    "EvaluationReport": ".reports", "RunRecord": ".reports", "render_tables": ".reports",
    "tables_markdown": ".reports", "write_report": ".reports",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .data import EvaluationData, EvaluationItem
    from .evaluator import EvaluationSettings, evaluate
    from .metrics import *  # noqa: F401,F403
    from .protocol import PAPER_PSNRS, ChannelCondition, Method, Run, channel_grid, plan_runs
    from .reports import EvaluationReport, RunRecord, render_tables, tables_markdown, write_report
    from .scoring import KPISuite, ScoringNetworks


def __getattr__(name: str) -> Any:
    if name.startswith("__"):  # (dunder probes of tools must not import the metrics)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _LAZY_IMPORTS:
        value = getattr(importlib.import_module(_LAZY_IMPORTS[name], __name__), name)
    else:
        metrics = importlib.import_module(".metrics", __name__)
        if name not in metrics.__all__:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(metrics, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_IMPORTS))


__all__ = sorted(_LAZY_IMPORTS)
