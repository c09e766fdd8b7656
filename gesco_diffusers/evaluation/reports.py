"""Results of ``gesco evaluate`` as files: JSON/CSV, markdown tables in the paper's layouts, matplotlib plots.

The input is an :class:`EvaluationReport`: one :class:`RunRecord` per *run* (a method under one channel condition,
e.g. "Ours, AWGN at PSNR 10 dB") with its KPIs, plus the judge's score on the real photos and free-text notes.
The layouts follow the paper:

* Tables I, II, III: FID, LPIPS, mIoU; rows = method, columns = PSNR (one table per KPI and channel model);
* Table V: detection mAP / mAP50 (DETR) and depth RMSE (DPT) at one PSNR;
* Table VI: rows = channel model (and method), columns = LPIPS, mIoU at one PSNR (10 dB in the paper);
* Table VIII: ablation rows FDS on/off x noisy training on/off, columns LPIPS, mIoU at one PSNR;
* Fig. 7: LPIPS vs bits per pixel, the one-hot map coded losslessly vs the full photo coded lossily;
* Fig. 10 (as a table): GESCO vs DeepJSCC, channel uses per pixel, judge mIoU and judge FD at every PSNR.

Cells are ``mean ± std`` for KPIs that are averages of per-image values (LPIPS, depth RMSE; std over images, N - 1
in the denominator), and single numbers for set-level KPIs (FID over the image set, mIoU from the confusion
matrix accumulated over the split, mAP over all detections). Missing cells read ``–``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..utils.files import atomic_write_text

#: KPI keys of :attr:`RunRecord.kpis` (``*_std`` keys hold the spread of per-image KPIs).
KPI_KEYS = (
    "fid", "judge_fd", "lpips", "lpips_std", "miou", "pixel_accuracy", "map", "map50", "depth_rmse", "depth_rmse_std", "bpp",
    "cpp",
)

#: (title, arrow, decimals, std key) of the KPIs shown in tables and plots.
KPI_FORMATS: dict[str, tuple[str, str, int, Optional[str]]] = {
    "fid": ("FID", "↓", 2, None),
    # Frechet distance of the judge's pooled encoder features: a realism figure, not comparable to FID.
    "judge_fd": ("judge FD (not FID)", "↓", 2, None),
    "lpips": ("LPIPS", "↓", 3, "lpips_std"),
    "miou": ("mIoU", "↑", 3, None),
    "map": ("mAP", "↑", 3, None),
    "map50": ("mAP50", "↑", 3, None),
    "depth_rmse": ("RMSE", "↓", 3, "depth_rmse_std"),
    "bpp": ("BPP", "↓", 4, None),
    "cpp": ("channel uses/pixel", "↓", 3, None),
}

#: Tables I-III: table number -> KPI.
PSNR_TABLES = (("I", "fid"), ("II", "lpips"), ("III", "miou"))

#: Row order of the method tables: the paper lists the classical baseline first and "our method" last.
METHOD_ORDER = ("semantic_map", "full_image", "deepjscc", "ours")
#: Row order of the ``ours`` runs by FDS mode.
FDS_ORDER = ("none", "paper", "adaptive", "learned")
#: The paper's two arms (its FDS on / off): ``gesco evaluate``'s default runs and Table VIII's ablation. ``"adaptive"``
#: (the parameter-free variant of :mod:`gesco_diffusers.receiver.adaptive_fds`) is asked for explicitly.
PAPER_FDS_MODES = ("paper", "none")

DASH = "–"


@dataclass
class RunRecord:
    """One run (a method under one channel condition) and its KPIs.

    Attributes:
        name: the run's folder name under ``images/`` (unique).
        method: ``"ours"`` (the pipeline), ``"full_image"`` (the coded photo sent over the channel) or
            ``"semantic_map"`` (the received map itself, colour-coded).
        label: the row label in tables and plots.
        channel: channel model name, ``"none"`` for the noiseless link.
        level_db: the channel's PSNR in dB (Eb/N0 for the digital link); ``None`` for the noiseless link.
        level_name: ``"PSNR"`` or ``"Eb/N0"``.
        fds: ``"paper"``/``"none"``/``"adaptive"`` for ``ours`` runs, else ``None``.
        noisy_training: ``True`` for the main pipeline, ``False`` for the ablation pipeline, ``None`` for baselines.
        codec, quality: the lossy photo codec and quality of ``full_image`` runs.
        num_images: images scored.
        generated: images produced by this call (the rest were found on disk from an earlier call).
        kpis: ``{key: value}`` over :data:`KPI_KEYS` (only the KPIs that were computed).
    """

    name: str
    method: str
    label: str
    channel: str
    level_db: Optional[float]
    level_name: str
    fds: Optional[str] = None
    noisy_training: Optional[bool] = None
    codec: Optional[str] = None
    quality: Optional[int] = None
    num_images: int = 0
    generated: int = 0
    kpis: dict[str, float] = field(default_factory=dict)

    def value(self, kpi: str) -> Optional[float]:
        value = self.kpis.get(kpi)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


@dataclass
class EvaluationReport:
    """Everything ``gesco evaluate`` measured.

    Attributes:
        records: one per run, in the order they were evaluated.
        ceiling: the judge on the *real* photos against the labels (``miou``, ``pixel_accuracy``): the best mIoU a
            generated image can reach with this judge (empty without a judge).
        per_image: one dict per (run, image) with the per-image KPIs.
        notes: what was skipped and why, and the assumptions behind the tables.
        settings: the evaluation settings (dataset, size, sampler, seeds, ...).
        table_level_db: the PSNR of Tables V, VI and VIII.
        primary_channel: the channel model of Tables V and VIII.
    """

    records: list[RunRecord]
    ceiling: dict[str, float] = field(default_factory=dict)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    table_level_db: float = 10.0
    primary_channel: str = "awgn"

    def record(self, name: str) -> RunRecord:
        for record in self.records:
            if record.name == name:
                return record
        raise KeyError(f"no run named {name!r}; runs: {[r.name for r in self.records]}")

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))


# ----------------------------------------------------------------------------------------------------------------
# Formatting helpers


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: they become ``None`` (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def format_level(level_db: Optional[float]) -> str:
    return "no noise" if level_db is None else f"{level_db:g}"


def format_kpi(record: Optional[RunRecord], kpi: str) -> str:
    """``mean ± std`` (per-image KPIs) or the value, with the KPI's decimals; ``–`` when not measured."""
    if record is None or record.value(kpi) is None:
        return DASH
    _, _, decimals, std_key = KPI_FORMATS[kpi]
    text = f"{record.value(kpi):.{decimals}f}"
    std = record.value(std_key) if std_key else None
    return f"{text} ± {std:.{decimals}f}" if std is not None and record.num_images > 1 else text


def kpi_title(kpi: str) -> str:
    title, arrow, _, _ = KPI_FORMATS[kpi]
    return f"{title} {arrow}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _method_key(record: RunRecord) -> tuple:
    """Row order: baselines first, then FDS off, the paper's FDS ("our method" in the paper), the adaptive FDS."""
    return (METHOD_ORDER.index(record.method), FDS_ORDER.index(record.fds) if record.fds else 0, record.quality or 0)


def _rows_by_label(records: Sequence[RunRecord]) -> dict[str, dict[Optional[float], RunRecord]]:
    """``{row label: {level: record}}`` in the table row order."""
    rows: dict[str, dict[Optional[float], RunRecord]] = {}
    for record in sorted(records, key=_method_key):
        rows.setdefault(record.label, {})[record.level_db] = record
    return rows


def _main_noisy(records: Sequence[RunRecord]) -> list[RunRecord]:
    """Runs of Tables I-III and VI: the main pipeline and the baselines (no ablation pipeline)."""
    return [r for r in records if r.noisy_training is not False]


def _channel_name(record: RunRecord) -> str:
    return record.channel.upper() if record.channel in ("awgn",) else record.channel.capitalize()


# ----------------------------------------------------------------------------------------------------------------
# Tables


def kpi_vs_level_table(records: Sequence[RunRecord], kpi: str, channel: str) -> Optional[str]:
    """Tables I-III: one KPI for one channel model, rows = method, columns = PSNR (descending, as in the paper)."""
    selected = [r for r in _main_noisy(records) if r.channel == channel and r.method != "semantic_map"]
    if not selected:
        return None
    levels = sorted({r.level_db for r in selected}, reverse=True)
    rows = [
        [label] + [format_kpi(by_level.get(level), kpi) for level in levels]
        for label, by_level in _rows_by_label(selected).items()
    ]
    header = [f"Method \\ {selected[0].level_name} (dB)"] + [format_level(level) for level in levels]
    return markdown_table(header, rows)


def downstream_table(records: Sequence[RunRecord], channel: str, level_db: float) -> Optional[str]:
    """Table V: detection mAP/mAP50 and depth RMSE of every method at one channel condition."""
    selected = [
        r for r in _main_noisy(records)
        if r.channel == channel and r.level_db == level_db
        and any(r.value(k) is not None for k in ("map", "depth_rmse"))
    ]
    if not selected:
        return None
    rows = [[label] + [format_kpi(by_level[level_db], k) for k in ("map", "map50", "depth_rmse")]
            for label, by_level in _rows_by_label(selected).items()]
    return markdown_table(["Model", kpi_title("map"), kpi_title("map50"), kpi_title("depth_rmse")], rows)


def channel_table(records: Sequence[RunRecord], level_db: float) -> Optional[str]:
    """Table VI: rows = channel model x method, columns = LPIPS, mIoU at one PSNR."""
    selected = [r for r in _main_noisy(records)
                if r.level_db == level_db and r.method != "semantic_map" and r.level_name == "PSNR"]
    if not selected:
        return None
    rows = []
    for channel in dict.fromkeys(r.channel for r in selected):
        for label, by_level in _rows_by_label([r for r in selected if r.channel == channel]).items():
            record = by_level[level_db]
            rows.append([_channel_name(record), label, format_kpi(record, "lpips"), format_kpi(record, "miou")])
    return markdown_table(["Noise model", "Method", kpi_title("lpips"), kpi_title("miou")], rows)


def ablation_table(records: Sequence[RunRecord], channel: str, level_db: float) -> Optional[str]:
    """Table VIII: FDS on/off x noisy training on/off, columns LPIPS, mIoU at one PSNR."""
    selected = [r for r in records  # the paper's FDS on / off (an adaptive-FDS run is not part of the ablation)
                if r.method == "ours" and r.fds in PAPER_FDS_MODES and r.channel == channel and r.level_db == level_db]
    if not selected:
        return None
    order = sorted(selected, key=lambda r: (bool(r.noisy_training), r.fds == "paper"))
    mark = {True: "✓", False: "✗"}
    rows = [[mark[r.fds == "paper"], mark[bool(r.noisy_training)], format_kpi(r, "lpips"), format_kpi(r, "miou")]
            for r in order]
    return markdown_table(["FDS", "Noisy training", kpi_title("lpips"), kpi_title("miou")], rows)


def jscc_table(records: Sequence[RunRecord], channel: str) -> Optional[str]:
    """Fig. 10 as a table: every method of one channel with its channel uses per pixel, then judge mIoU and judge FD
    at each PSNR; only when a DeepJSCC network ran."""
    selected = [r for r in _main_noisy(records) if r.channel == channel and r.method != "semantic_map"]
    if not any(r.method == "deepjscc" for r in selected):
        return None
    levels = sorted({r.level_db for r in selected}, reverse=True)
    header = ["Method", kpi_title("cpp")]
    header += [f"mIoU {format_level(level)} dB" for level in levels] + [f"FD {format_level(level)} dB" for level in levels]
    rows = []
    for label, by_level in _rows_by_label(selected).items():
        any_record = next(iter(by_level.values()))
        rows.append([label, format_kpi(any_record, "cpp")] + [format_kpi(by_level.get(level), "miou") for level in levels]
                    + [format_kpi(by_level.get(level), "judge_fd") for level in levels])
    return markdown_table(header, rows)


def rate_distortion_table(records: Sequence[RunRecord]) -> Optional[str]:
    """Fig. 7 data: BPP and LPIPS of the noiseless runs (the map vs the full photo at each quality)."""
    selected = [r for r in records if r.level_db is None and r.value("bpp") is not None]
    if not selected:
        return None
    rows = [[r.label, format_kpi(r, "bpp"), format_kpi(r, "lpips")] for r in sorted(selected, key=_method_key)]
    return markdown_table(["Method (noiseless link)", kpi_title("bpp"), kpi_title("lpips")], rows)


def render_tables(report: EvaluationReport) -> dict[str, str]:
    """``{file stem: markdown}`` of every table that has data, each with its caption."""
    records = report.records
    level, primary = report.table_level_db, report.primary_channel
    tables: dict[str, str] = {}
    channels = list(dict.fromkeys(r.channel for r in records if r.channel != "none"))
    for number, kpi in PSNR_TABLES:
        for channel in channels:
            body = kpi_vs_level_table(records, kpi, channel)
            if body is None or all(r.value(kpi) is None for r in records if r.channel == channel):
                continue
            caption = f"**Table {number}.** {kpi_title(kpi)} of the generated images, {channel} channel."
            if kpi == "miou" and report.ceiling.get("miou") is not None:
                caption += f" Judge on the real photos (ceiling): mIoU {report.ceiling['miou']:.3f}."
            tables[f"table_{number}_{kpi}_{channel}"] = caption + "\n\n" + body
    specials: list[tuple[str, str, Callable[[], Optional[str]]]] = [
        ("table_V_downstream", f"**Table V.** Detection (DETR) and depth (DPT) on the images, {primary} channel at "
         f"{level:g} dB.", lambda: downstream_table(records, primary, level)),
        ("table_VI_channels", f"**Table VI.** Results for different channel noises with PSNR = {level:g} dB.",
         lambda: channel_table(records, level)),
        ("table_VIII_ablation", f"**Table VIII.** Ablation, {primary} channel at PSNR = {level:g} dB.",
         lambda: ablation_table(records, primary, level)),
        ("fig_7_rate_distortion", "**Fig. 7 data.** LPIPS vs bits per pixel on a noiseless link.",
         lambda: rate_distortion_table(records)),
        ("fig_10_jscc", f"**Fig. 10 data.** GESCO vs DeepJSCC, {primary} channel: complex channel uses per pixel, "
         "judge mIoU (↑) and judge-feature Fréchet distance (↓, not FID) at each PSNR.",
         lambda: jscc_table(records, primary)),
    ]
    for stem, caption, make in specials:
        body = make()
        if body is not None:
            tables[stem] = caption + "\n\n" + body
    return tables


def tables_markdown(report: EvaluationReport) -> str:
    """All tables in one document, followed by the notes."""
    parts = ["# GESCO evaluation", ""]
    settings = report.settings
    if settings:
        parts += [
            f"Dataset `{settings.get('dataset')}` ({settings.get('split')}, {settings.get('num_items')} maps at "
            f"{settings.get('size')}), model `{settings.get('model')}`, {settings.get('sampler')} with "
            f"{settings.get('num_inference_steps')} steps, guidance {settings.get('guidance_scale')}, seed "
            f"{settings.get('seed')} + item index.",
            "",
        ]
    for body in render_tables(report).values():
        parts += [body, ""]
    if report.notes:
        parts += ["## Notes", ""] + [f"- {note}" for note in report.notes] + [""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# Plots (matplotlib's object-oriented API with the Agg canvas: no global backend switch, no display needed)


def _new_figure(width: float = 5.0, height: float = 3.6):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ModuleNotFoundError("plots need matplotlib: pip install gesco-diffusers[metrics]") from error
    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def _save_figure(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, format="png")


def plot_kpi_vs_level(records: Sequence[RunRecord], kpi: str, level_name: str, path: Path) -> bool:
    """One line per (channel, method): ``kpi`` against the channel level. Returns False if there is no data."""
    selected = [r for r in _main_noisy(records)
                if r.level_name == level_name and r.level_db is not None and r.value(kpi) is not None
                and r.method != "semantic_map"]
    if not selected:
        return False
    figure, axes = _new_figure()
    styles = ("-", "--", ":", "-.")
    channels = list(dict.fromkeys(r.channel for r in selected))
    colors = {label: f"C{i}" for i, label in enumerate(_rows_by_label(selected))}  # one colour per method
    for c, channel in enumerate(channels):  # one line style per channel model
        for label, by_level in _rows_by_label([r for r in selected if r.channel == channel]).items():
            levels = sorted(by_level)
            name = label if len(channels) == 1 else f"{label}, {channel}"
            axes.plot(levels, [by_level[x].value(kpi) for x in levels], styles[c % len(styles)], marker="o",
                      color=colors[label], label=name)
    axes.set_xlabel(f"{level_name} (dB)")
    axes.set_ylabel(kpi_title(kpi))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    _save_figure(figure, path)
    return True


def plot_rate_distortion(records: Sequence[RunRecord], path: Path) -> bool:
    """Fig. 7: LPIPS against BPP on a noiseless link; the full photo at several qualities is a curve, each map
    method a point. Returns False if there is no data."""
    selected = [r for r in records
                if r.level_db is None and r.value("bpp") is not None and r.value("lpips") is not None]
    if not selected:
        return False
    figure, axes = _new_figure()
    photos = sorted((r for r in selected if r.method == "full_image"), key=lambda r: r.value("bpp"))
    if photos:
        axes.plot([r.value("bpp") for r in photos], [r.value("lpips") for r in photos], "-s",
                  label=f"Full image ({photos[0].codec}, quality {photos[0].quality}..{photos[-1].quality})")
    for record in selected:
        if record.method != "full_image":
            axes.plot([record.value("bpp")], [record.value("lpips")], "*", markersize=12, label=record.label)
    axes.set_xscale("log")
    axes.set_xlabel("bits per pixel")
    axes.set_ylabel(kpi_title("lpips"))
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize="small")
    _save_figure(figure, path)
    return True


# ----------------------------------------------------------------------------------------------------------------
# Files


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)  # utils.files: a unique temporary name, the umask's mode


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buffer.getvalue()


RECORD_COLUMNS = ("name", "method", "label", "channel", "level_name", "level_db", "fds", "noisy_training", "codec",
                  "quality", "num_images", "generated")


def write_report(report: EvaluationReport, out_dir: os.PathLike | str) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv`` (one row per run), ``per_image.csv``, ``tables.md``,
    ``tables/<table>.md`` and ``plots/*.png`` under ``out_dir``; return ``{what: path}``."""
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def put(key: str, path: Path, text: str) -> None:
        _atomic_write_text(path, text)
        written[key] = path

    put("json", out / "results.json", json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    flat = [{**{k: getattr(r, k) for k in RECORD_COLUMNS}, **r.kpis} for r in report.records]
    put("csv", out / "results.csv", _csv_text(flat, RECORD_COLUMNS + KPI_KEYS))
    image_columns = list(dict.fromkeys(k for row in report.per_image for k in row))
    put("per_image_csv", out / "per_image.csv", _csv_text(report.per_image, image_columns))
    put("tables", out / "tables.md", tables_markdown(report))
    for stem, body in render_tables(report).items():
        put(stem, out / "tables" / f"{stem}.md", body + "\n")

    for level_name, tag in (("PSNR", "psnr"), ("Eb/N0", "ebn0")):
        for kpi in ("fid", "lpips", "miou"):
            path = out / "plots" / f"{kpi}_vs_{tag}.png"
            if plot_kpi_vs_level(report.records, kpi, level_name, path):
                written[f"plot_{kpi}_vs_{tag}"] = path
    path = out / "plots" / "lpips_vs_bpp.png"
    if plot_rate_distortion(report.records, path):
        written["plot_lpips_vs_bpp"] = path
    return written
