"""Evaluation of regenerated images: the metrics of Sec. IV (:mod:`.metrics`) and ``gesco evaluate``.

``gesco evaluate`` in one module per concern: what is run (:mod:`.protocol`), the dataset rows (:mod:`.data`), where
the images come from (:mod:`.sources`), the output folders (:mod:`.store`), the KPIs (:mod:`.scoring`), the sender's
bits (:mod:`.rates`), :func:`evaluate` itself (:mod:`.evaluator`), the command line (:mod:`.cli`), the launch's
processes (:mod:`.distributed`) and the report files (:mod:`.reports`).

Names load on first use (diffusers' pattern): importing the package imports no torch.
"""

from ..utils.lazy import lazy_names

# Every name of the metrics (``metrics.__all__``) is found here too.
__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "protocol": ("PAPER_PSNRS", "ChannelCondition", "Method", "Run", "channel_grid", "plan_runs"),
    "data": ("EvaluationData", "EvaluationItem"),
    "scoring": ("KPISuite", "ScoringNetworks"),
    "evaluator": ("EvaluationSettings", "evaluate"),
    "reports": ("EvaluationReport", "RunRecord", "render_tables", "tables_markdown", "write_report"),
}, fallback=".metrics")
