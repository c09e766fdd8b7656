"""Evaluation of regenerated images: the metrics of Sec. IV (see :mod:`gesco_diffusers.evaluation.metrics`)."""

from .metrics import *  # noqa: F401,F403  (the public metric API, listed in metrics.__all__)
from .metrics import __all__ as _metrics_all

__all__ = list(_metrics_all)

# ``gesco evaluate`` (the evaluation protocol of Sec. IV) and its reports.
from .evaluator import (  # noqa: E402
    PAPER_PSNRS,
    ChannelCondition,
    EvaluationData,
    EvaluationItem,
    KPISuite,
    Method,
    Run,
    ScoringNetworks,
    channel_grid,
    evaluate,
)
from .reports import EvaluationReport, RunRecord, render_tables, tables_markdown, write_report  # noqa: E402

__all__ += [
    "PAPER_PSNRS",
    "ChannelCondition",
    "EvaluationData",
    "EvaluationItem",
    "EvaluationReport",
    "KPISuite",
    "Method",
    "Run",
    "RunRecord",
    "ScoringNetworks",
    "channel_grid",
    "evaluate",
    "render_tables",
    "tables_markdown",
    "write_report",
]
