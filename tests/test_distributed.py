"""`gesco evaluate` / `gesco generate` with several processes: torchrun on the CPU (gloo ranks, PartialState(cpu=True)).

Tiny networks (the tiny U-Net and judge of test_evaluate), 4 CamVid fixture maps at 32x40, 2 sampling steps. Every
launch runs with OMP_NUM_THREADS=1, so 1- and 2-process runs use the same kernels.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from gesco_diffusers.cli import main

from fixture_data import CAMVID
from test_evaluate import assets  # noqa: F401  (the module fixture: tiny pipeline, ablation pipeline, judge, LPIPS)

REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    (tmp_path / "torch_home").mkdir(exist_ok=True)  # no FID weights: FID skipped, judge FD reported
    env.update(OMP_NUM_THREADS="1", TORCH_HOME=str(tmp_path / "torch_home"), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _torchrun(nproc: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "gesco_diffusers", *args]


def _evaluate_args(assets: Path, out: Path, batch_size: int, limit: int = 4) -> list[str]:
    return ["evaluate", "--model", str(assets / "pipe"), "--data-dir", str(CAMVID), "--limit", str(limit),
            "--size", "32", "40", "--psnrs", "10", "--fds", "paper", "--steps", "2", "--judge", str(assets / "judge"),
            "--lpips-weights", str(assets / "alexnet.pth"), "--no-rate-distortion", "--batch-size", str(batch_size),
            "--device", "cpu", "--out", str(out), "--quiet"]


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _images(out: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(out)): np.asarray(PIL.Image.open(p))
            for p in sorted((out / "images").rglob("*.png"))}


@pytest.fixture(scope="module")
def one_and_two(assets, tmp_path_factory):  # noqa: F811
    """The same evaluation with 1 and with 2 processes (batch size 1), and with 2 processes at batch size 2."""
    root = tmp_path_factory.mktemp("distributed")
    env = _env(root)
    outs = {}
    for name, nproc, batch_size in (("one", 1, 1), ("two", 2, 1), ("two_b2", 2, 2)):
        outs[name] = root / name
        result = _run(_torchrun(nproc, _evaluate_args(assets, outs[name], batch_size)), env)
        outs[name + "_stdout"] = result.stdout
    return root, env, outs


def test_two_processes_give_the_same_images_figures_and_tables(one_and_two):
    _, _, outs = one_and_two
    one, two = (json.loads((outs[k] / "results.json").read_text()) for k in ("one", "two"))
    assert one["settings"]["num_processes"] == 1 and two["settings"]["num_processes"] == 2
    # Every image bit for bit (same global batches, seeds from the global item index).
    images_one, images_two = _images(outs["one"]), _images(outs["two"])
    assert len(images_one) == 8 and images_one.keys() == images_two.keys()
    assert all(np.array_equal(images_one[k], images_two[k]) for k in images_one)
    # Per-image figures exactly (gathered, not recomputed); the same tables and ceiling.
    assert one["per_image"] == two["per_image"] and len(one["per_image"]) == 8
    assert one["ceiling"] == two["ceiling"]
    assert (outs["one"] / "tables.md").read_text() == (outs["two"] / "tables.md").read_text()
    for a, b in zip(one["records"], two["records"]):
        assert a["name"] == b["name"] and a["generated"] == b["generated"] == 4
        for key, value in a["kpis"].items():
            if key == "judge_fd":  # float64 sums added across processes: float rounding only
                assert b["kpis"][key] == pytest.approx(value, rel=1e-9, abs=1e-12)
            else:
                assert b["kpis"][key] == value, key
    # One process prints the tables and writes the files; nothing temporary is left.
    assert outs["two_stdout"].count("Table III") == 1
    assert not list(outs["two"].rglob(".*"))


def test_batch_size_changes_no_image_beyond_one_level(one_and_two):
    """Another batch size (2 processes, batches of 2): the same seeds per item; the sampler's batched convolutions
    may round differently, at most one 8-bit level (test_evaluate allows the same for 1 vs 4)."""
    _, _, outs = one_and_two
    images_one, images_b2 = _images(outs["one"]), _images(outs["two_b2"])
    assert images_one.keys() == images_b2.keys()
    for key in images_one:
        assert np.abs(images_one[key].astype(np.int16) - images_b2[key].astype(np.int16)).max() <= 1, key
    full = [k for k in images_one if "full-image" in k]  # no network: exactly the same
    assert full and all(np.array_equal(images_one[k], images_b2[k]) for k in full)


def _worker_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            environ = dict(kv.split("=", 1) for kv in (entry / "environ").read_text().split("\0") if "=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in environ:
            ranks[int(environ["RANK"])] = int(entry.name)
    return ranks


def test_resume_after_killing_a_rank_with_another_process_count(one_and_two, assets):  # noqa: F811
    """Kill rank 1 of a 2-process launch once the first image is written; rerun with 1 process: the folder is
    completed and the results equal the uninterrupted run's."""
    root, env, outs = one_and_two
    out = root / "killed"
    launch = subprocess.Popen(_torchrun(2, _evaluate_args(assets, out, 1)), env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = False
    deadline = time.monotonic() + 240
    try:
        while launch.poll() is None and time.monotonic() < deadline:
            if (out / "images").is_dir() and any((out / "images").rglob("*.png")):
                ranks = _worker_pids(launch.pid)
                if 1 in ranks:
                    os.kill(ranks[1], signal.SIGKILL)
                    killed = True
                    break
            time.sleep(0.01)
        launch.wait(timeout=120)
    finally:
        if launch.poll() is None:
            launch.kill()
    assert killed and launch.returncode != 0
    made = _images(out)
    assert 0 < len(made) and not (out / "results.json").exists()
    result = _run(_torchrun(1, _evaluate_args(assets, out, 1)), env)
    assert "Table III" in result.stdout
    resumed, reference = (json.loads((o / "results.json").read_text()) for o in (out, outs["one"]))
    assert resumed["settings"]["num_processes"] == 1
    assert sum(r["generated"] for r in resumed["records"]) == 8 - len(made)
    assert resumed["per_image"] == reference["per_image"]
    images = _images(out)
    assert images.keys() == _images(outs["one"]).keys()
    assert all(np.array_equal(images[k], v) for k, v in _images(outs["one"]).items())
    assert not list(out.rglob(".*"))


def test_second_launch_on_the_same_folder_is_refused(one_and_two, assets, capsys):  # noqa: F811
    """While a launch holds the folder's lock, another one fails in one line before loading anything."""
    root, _, outs = one_and_two
    out = root / "locked"
    out.mkdir()
    with open(out / ".gesco.lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("otherhost pid 1234 (2 processes)\n")
        held.flush()
        assert main(_evaluate_args(assets, out, 1)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after the weight-loading progress bars)
    assert err.startswith("gesco evaluate: error: another gesco evaluate is writing to") and "pid 1234" in err
    assert not (out / "images").exists()


def test_folder_of_another_model_is_refused_before_generation(one_and_two, assets, capsys):  # noqa: F811
    root, _, outs = one_and_two
    before = {p: p.stat().st_mtime_ns for p in (outs["one"] / "images").rglob("*")}
    args = _evaluate_args(assets, outs["one"], 1)
    args[args.index("--model") + 1] = str(assets / "ablation")
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("gesco evaluate: error:") and "holds images of another model" in err
    assert {p: p.stat().st_mtime_ns for p in (outs["one"] / "images").rglob("*")} == before
