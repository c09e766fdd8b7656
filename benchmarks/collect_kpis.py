#!/usr/bin/env python
"""Merge the ``results.json`` of several ``gesco evaluate`` runs into the demo model's KPI table.

    python benchmarks/collect_kpis.py outputs/eval-demo/* --markdown outputs/eval-demo/kpis.md \
        --card-json outputs/eval-demo/kpis.json

``benchmarks/evaluate_demo.sh`` splits the evaluation of the demo model into independent ``gesco evaluate`` calls
(so that two CPU cores can each run one); this script puts their figures back into one table: rows = FDS arm
(and the clean map), columns = PSNR, cells = the judge's mIoU on the generated images (Eq. 16), with the judge on
the real photos as the ceiling and the ratios that issue #7 asks for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

ARM_LABELS = {"none": "FDS off", "paper": "FDS (paper, Eq. 1)", "adaptive": "adaptive FDS"}


def load_records(folders: list[Path]) -> tuple[list[dict], dict, dict]:
    """Every ``ours`` record (later folders win on a repeated run name), the ceiling, and the settings."""
    records: dict[str, dict] = {}
    ceiling, settings = {}, {}
    for folder in folders:
        path = folder / "results.json"
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        ceiling = report.get("ceiling") or ceiling
        settings = report.get("settings") or settings
        for record in report["records"]:
            if record["method"] == "ours" and record.get("noisy_training"):
                records[record["name"]] = record
    return list(records.values()), ceiling, settings


def kpi_table(records: list[dict], ceiling: dict) -> tuple[str, dict]:
    """Markdown table and ``{condition: {kpi: value}}`` for the model card."""
    clean = [r for r in records if r["level_db"] is None]
    noisy = [r for r in records if r["level_db"] is not None]
    levels = sorted({r["level_db"] for r in noisy}, reverse=True)
    arms = [arm for arm in ARM_LABELS if any(r["fds"] == arm for r in noisy)]
    miou = lambda r: r["kpis"].get("miou")  # noqa: E731
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    header = ["map", "clean"] + [f"{level:g} dB" for level in levels]
    rows, card = [], {}
    top = ceiling.get("miou")
    if top is not None:
        rows.append(["real photos (judge ceiling)", fmt(top)] + [""] * len(levels))
        card["real val photos (ceiling)"] = {"judge mIoU": round(top, 4)}
    clean_miou = miou(clean[0]) if clean else None
    if clean_miou is not None:
        card["generated from clean maps"] = {"judge mIoU": round(clean_miou, 4),
                                             "fraction of ceiling": round(clean_miou / top, 3) if top else None}
    for arm in arms:
        by_level = {r["level_db"]: r for r in noisy if r["fds"] == arm}
        row = [ARM_LABELS[arm], fmt(clean_miou)]
        for level in levels:
            value = miou(by_level[level]) if level in by_level else None
            row.append(fmt(value))
            if value is not None:
                card[f"AWGN {level:g} dB, {ARM_LABELS[arm]}"] = {
                    "judge mIoU": round(value, 4),
                    "fraction of clean": round(value / clean_miou, 3) if clean_miou else None}
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines), card


def main(argv: Optional[list[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="gesco evaluate output folders")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--card-json", type=Path, help="write {condition: {kpi: value}} for export_pipeline --kpis")
    args = parser.parse_args(argv)
    records, ceiling, settings = load_records(args.folders)
    if not records:
        raise SystemExit(f"no gesco evaluate results.json with 'ours' runs in {[str(f) for f in args.folders]}")
    table, card = kpi_table(records, ceiling)
    num_images = sorted({r["num_images"] for r in records})
    caption = (f"Judge mIoU (shipped CamVid SegFormer) of images generated from {num_images} CamVid val maps, "
               f"AWGN on the present classes; sampler {settings.get('sampler')}, "
               f"{settings.get('num_inference_steps')} steps, guidance {settings.get('guidance_scale')}.")
    text = f"{caption}\n\n{table}\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.card_json:
        args.card_json.write_text(json.dumps(card, indent=2))
    return text


if __name__ == "__main__":
    main()
