"""Smoke tests of the benchmark scripts' --quick modes: they run and print figures (values are not checked)."""

import subprocess
import sys
from pathlib import Path

import pytest

from fixture_data import CAMVID

ROOT = Path(__file__).resolve().parents[1]
# Scripts that read CamVid get the repository's fixture (their default is a data folder outside the repository).
DATA_ARGS = {"sampler_quality.py": ["--data-dir", str(CAMVID)]}


@pytest.mark.parametrize(
    "script,expected",
    [
        ("sampling_cost.py", "wall-time ratio authors/ours"),
        ("preprocessing_cost.py", "% of a sampling run"),
        ("sampler_quality.py", "| ddpm (reference) |"),
    ],
)
def test_benchmark_quick_mode_prints_figures(script, expected):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *DATA_ARGS.get(script, [])],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expected in proc.stdout


# Rows of unet_forward.py that reorganise the same float32 computation (no change of precision): "same outputs".
EXACT_UNET_ROWS = ("batched CFG (batch 2)", "shared encoder (1 image, 2 maps)", "+ cached SPADE modulation (default)",
                   "+ channels_last", "default with plain attention (no SDPA)")


def test_unet_forward_quick_exact_speedups_give_the_same_output(tmp_path):
    """The "max abs difference" column backs the README's "same outputs" for the exact speed-ups: each exact row's
    guided output is within 1e-4 of the authors' two separate forwards (outputs are O(0.1..1)), read both from the
    printed table and from --json; the bf16 row shows the column is not blind (it does differ)."""
    import json

    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "unet_forward.py"), "--quick", "--threads", "1",
                           "--json", str(tmp_path / "rows.json")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    header = "| variant | ms / guided step | speed-up vs authors | max abs difference of the guided output |"
    lines = proc.stdout.splitlines()
    assert header in lines
    printed = {}
    for line in lines[lines.index(header) + 2:]:
        if not line.startswith("| "):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 4, line
        printed[cells[0]] = float(cells[3])
    data = json.loads((tmp_path / "rows.json").read_text())
    rows = {row["variant"]: row for row in data["rows"]}
    assert set(printed) == set(rows)
    assert data["reference_abs_max"] > 0.05  # the outputs are not near zero (a 1e-4 bound would then say nothing)
    assert rows["authors: two separate forwards"]["max_abs_diff"] == 0.0
    for name in EXACT_UNET_ROWS:
        assert "error" not in rows[name], rows[name]
        assert rows[name]["max_abs_diff"] < 1e-4, (name, rows[name]["max_abs_diff"])
        assert printed[name] < 1e-4 and abs(printed[name] - rows[name]["max_abs_diff"]) <= 0.01 * printed[name] + 1e-12
        assert rows[name]["speedup"] > 0
    assert rows["+ bf16 autocast"]["max_abs_diff"] > 1e-4  # lower precision: the column sees the difference


def test_few_step_quick_compares_student_teacher_baseline_and_authors(tmp_path):
    from _data import write_camvid_like

    data = write_camvid_like(tmp_path / "camvid", n=4, size=(32, 40))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "few_step.py"), "--quick", "--threads", "1",
                           "--data-dir", str(data), "--json", str(tmp_path / "figures.json"),
                           "--kpis", str(tmp_path / "kpis.json")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json
    rows = json.loads((tmp_path / "figures.json").read_text())["rows"]
    conditions = ("clean", "awgn 10 dB + FDS", "awgn 1 dB + FDS")
    assert sorted({row["condition"] for row in rows}) == sorted(conditions)
    for condition in conditions:
        calls = {row["method"]: row["unet_calls_per_image"] for row in rows if row["condition"] == condition}
        assert calls["student, 1 call"] == 1 and calls["student, 2 calls"] == 2
        assert calls["teacher, 40 steps (default sampler)"] == 80  # guidance 1.5: two maps per step
        assert calls["teacher, guided DDIM 8 steps (what the student imitates)"] == 16  # 4 steps x 2 sub-steps
    for row in rows:
        assert row["seconds_per_image"] > 0 and row["wall_time_ratio_to_authors"] > 0
        if "judge_miou" in row:
            assert 0 <= row["judge_miou"] <= 1 and row["judge_fd"] >= 0
            low, high = row.get("difference_to_teacher_ci95", (0, 0))
            assert low <= high
    authors = [row for row in rows if row["method"].startswith("authors")]
    assert len(authors) == 1 and "quality not measured" in authors[0]["note"]
    assert "| clean | student, 1 call | 1 |" in proc.stdout
    kpis = json.loads((tmp_path / "kpis.json").read_text())  # the card's: the student at its 4 stored steps
    assert sorted(kpis) == ["AWGN 1 dB + FDS (paper)", "AWGN 10 dB + FDS (paper)", "clean maps"]
    four = {row["condition"]: row for row in rows if row["method"] == "student, 4 calls"}
    assert kpis["clean maps"]["judge mIoU"] == round(four["clean"]["judge_miou"], 4)


def test_sampler_quality_reuses_its_cached_reference(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "sampler_quality.py"), "--quick", "--data-dir", str(CAMVID),
               "--reference-cache", str(tmp_path), "--json", str(tmp_path / "figures.json")]
    outputs = []
    for _ in range(2):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs.append(proc.stdout)
    assert "0 of 2 maps read from the cache" in outputs[0] and "2 of 2 maps read from the cache" in outputs[1]
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and not list(tmp_path.glob("*.tmp"))
    import json
    rows = json.loads((tmp_path / "figures.json").read_text())["rows"]
    low, high = rows[1]["difference_ci95"]
    assert low <= high


def _report(tmp_path, name, records, ceiling=None):
    import json
    folder = tmp_path / name
    folder.mkdir()
    settings = {"sampler": "DDPMScheduler", "num_inference_steps": 25, "guidance_scale": 1.5}
    (folder / "results.json").write_text(json.dumps({"records": records, "ceiling": ceiling or {},
                                                     "settings": settings}))
    return folder


def _ours(fds, level, miou):
    return {"name": f"{level}-{fds}", "method": "ours", "fds": fds, "level_db": level, "noisy_training": True,
            "num_images": 101, "kpis": {"miou": miou}}


def test_collect_kpis_merges_evaluate_runs(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from collect_kpis import main as collect

    first = _report(tmp_path, "a", [_ours("paper", 10.0, 0.30), _ours("paper", 1.0, 0.20),
                                    {**_ours("paper", 10.0, 0.9), "noisy_training": False},  # ablation: not a row
                                    {**_ours(None, 10.0, 0.9), "method": "full_image"}], ceiling={"miou": 0.40})
    second = _report(tmp_path, "b", [_ours("none", None, 0.32), _ours("none", 10.0, 0.10),
                                     _ours("adaptive", 10.0, 0.31)])
    text = collect([str(first), str(second), "--card-json", str(tmp_path / "card.json")])
    lines = text.splitlines()
    assert "| map | clean | 10 dB | 1 dB |" in lines
    assert "| real photos (judge ceiling) | 0.400 |  |  |" in lines
    assert "| FDS off | 0.320 | 0.100 | – |" in lines
    assert "| FDS (paper, Eq. 1) | 0.320 | 0.300 | 0.200 |" in lines
    assert "| adaptive FDS | 0.320 | 0.310 | – |" in lines
    import json
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["generated from clean maps"] == {"judge mIoU": 0.32, "fraction of ceiling": 0.8}
    assert card["AWGN 10 dB, FDS (paper, Eq. 1)"]["fraction of clean"] == 0.938
    with pytest.raises(SystemExit, match="no gesco evaluate"):
        collect([str(tmp_path / "missing")])


def test_table_ix_counts_the_cost_of_a_known_layer_and_runs_quick(tmp_path):
    """The cost columns of Table IX on a layer whose figures are known: a 1x1 convolution 12 -> 12 on one 64x80
    map is 2 * 12 * 12 * 64 * 80 FLOPs, holds 12 * 12 + 12 parameters, and allocates at least its float output."""
    import json

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from table_ix import cost, main as table_ix

    conv = torch.nn.Conv2d(12, 12, 1)
    received = torch.rand(1, 12, 64, 80)

    class Receiver(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x, transmitted):
            return self.conv(x)

    figures = cost(Receiver(), received, torch.ones(1, 12, dtype=torch.bool), repeats=1)
    assert figures["flops"] == 2 * 12 * 12 * 64 * 80
    assert figures["params"] == 12 * 12 + 12 and figures["weight_bytes"] == 4 * (12 * 12 + 12)
    assert figures["peak_bytes"] >= 4 * 12 * 64 * 80
    result = table_ix(["--quick", "--out", str(tmp_path)])
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["none"]["params"] == rows["paper"]["params"] == rows["adaptive"]["params"] == 0
    assert rows["learned"]["params"] > 0 and rows["learned"]["flops"] > 0 and rows["paper"]["peak_bytes"] > 0
    assert all(0 <= r["map_miou"] <= 1 for r in rows.values())
    assert json.loads((tmp_path / "table_ix.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    assert "Learned denoiser" in (tmp_path / "table_ix.md").read_text()


def test_photo_heuristic_separates_the_fixture_maps_from_their_photos():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from photo_heuristic import main as photo_heuristic

    result = photo_heuristic(["--data-dir", str(CAMVID)])
    assert result["label_maps"] == 10 and result["photos"] == 10
    assert result["label_max"] < result["threshold"] < result["photo_min"]
