"""Smoke tests of the benchmark scripts' --quick modes: they run and print figures (values are not checked)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "script,expected",
    [
        ("sampling_cost.py", "wall-time ratio authors/ours"),
        ("unet_forward.py", "| channels_last |"),
        ("preprocessing_cost.py", "% of a sampling run"),
        ("sampler_quality.py", "| ddpm (reference) |"),
    ],
)
def test_benchmark_quick_mode_prints_figures(script, expected):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expected in proc.stdout
