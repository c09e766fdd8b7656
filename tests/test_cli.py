"""The `gesco` command line: `transmit` end to end, and one-line errors for bad arguments."""

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from gesco_diffusers.cli import SUBCOMMANDS, main

from fixture_data import DATA_ROOT


def run_transmit(tmp_path, *extra):
    return main(["transmit", "--steps", "2", "--output", str(tmp_path / "out"), "--size", "32", "40", *extra])


def test_transmit_writes_panel_and_prints_figures(tmp_path, capsys):
    assert run_transmit(tmp_path, "--psnr", "5", "--seed", "3") == 0
    out = capsys.readouterr().out
    assert "bpp" in out and "map mIoU:" in out and "generation" in out
    assert "assets/demo/camvid" in out.splitlines()[0] and "UNTRAINED" not in out  # the shipped model, not a placeholder
    received, fds = [float(x) for x in out.split("map mIoU:")[1].split("\n")[0].replace("->", " ").split()
                     if x.replace(".", "").isdigit()]
    assert 0 <= received < fds <= 1  # at 5 dB FDS cleans the map
    panels = list((tmp_path / "out").glob("*_panel.png"))
    assert len(panels) == 1
    with PIL.Image.open(panels[0]) as panel:
        # photo | sent | received | FDS | generated, each 32x40 shown at x5 (180 // 32), captions 14 px high
        assert panel.size == (5 * 40 * 5, 32 * 5 + 14)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


def test_transmit_takes_every_receiver_fds_method(tmp_path, capsys):
    """The FDS names come from the receiver (was a second list in transmit that refused 'adaptive')."""
    assert run_transmit(tmp_path, "--psnr", "5", "--fds", "adaptive", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fds"] == "adaptive" and report["map_miou_fds"] > report["map_miou_received"]


def test_transmit_json_noiseless_and_digital(tmp_path, capsys):
    assert run_transmit(tmp_path, "--psnr", "inf", "--fds", "none", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["map_miou_received"] == 1.0 and report["map_miou_fds"] == 1.0
    assert report["bpp"] > 0 and report["channel"] == "noiseless"
    assert report["extra"]["channel"] == {"type": "noiseless"}
    assert run_transmit(tmp_path, "--channel", "digital", "--ebn0", "8", "--overwrite") == 0  # same map, same folder


def test_transmit_reports_the_psnr_convention_and_takes_an_override(tmp_path, capsys):
    # The demo model was trained here: Eq. 15 unless told otherwise (a converted checkpoint: see test_convert.py).
    for extra, convention, sigma in [((), "paper", 10 ** (-10 / 20)),
                                     (("--psnr-convention", "official_table"), "official_table", 0.36)]:
        assert run_transmit(tmp_path, "--json", "--overwrite", *extra) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["extra"]["channel"] == {"type": "AWGNChannel", "psnr_db": 10.0, "peak_power": 1.0,
                                              "psnr_convention": convention, "sigma": pytest.approx(sigma)}
        assert f"awgn at PSNR 10.0 dB, psnr_convention {convention} " in report["channel"]
    assert run_transmit(tmp_path, "--channel", "rayleigh", "--psnr-convention", "official_table", "--overwrite") == 1
    assert "is defined for the 'awgn' channel only, not 'rayleigh'" in one_line_error(capsys)


def write_map(path, values):
    PIL.Image.fromarray(values.astype(np.uint8), mode="L").save(path)
    return path


@pytest.mark.parametrize(
    "args,message",
    [
        (["--steps", "-3"], "--steps must be a positive integer"),
        (["--map", "does/not/exist.png"], "--map not found"),
        (["--codec", "jpeg"], "not an available lossless codec"),
    ],
)
def test_bad_arguments_one_line_error(tmp_path, capsys, args, message):
    assert main(["transmit", "--output", str(tmp_path), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_foreign_ids_one_line_error(tmp_path, capsys):
    path = write_map(tmp_path / "map.png", np.full((32, 40), 200))
    assert main(["transmit", "--map", str(path), "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "ids [200] are not camvid classes" in err and len(err.splitlines()) == 1


def test_unknown_channel_is_a_usage_error_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "gesco_diffusers", "transmit", "--channel", "bsc"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "invalid choice: 'bsc'" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_transmit_never_replaces_earlier_outputs_silently(tmp_path, capsys, monkeypatch):
    old_umask = os.umask(0o022)
    try:
        assert run_transmit(tmp_path, "--seed", "1") == 0
        capsys.readouterr()
        outputs = sorted((tmp_path / "out").iterdir())
        assert [p.name.split("_")[-1] for p in outputs] == ["generated.png", "panel.png"]
        assert {p.stat().st_mode & 0o777 for p in outputs} == {0o644}  # the umask's mode, not mkstemp's 0600
        before = {p: p.read_bytes() for p in outputs}

        import gesco_diffusers.chain as chain_module

        def no_model(*args, **kwargs):
            raise AssertionError("the model must not load when the outputs cannot be written")

        # Refused before the model loads: an earlier run's outputs, an output path that is a file.
        monkeypatch.setattr(chain_module, "load_pipeline", no_model)
        assert run_transmit(tmp_path, "--seed", "2") == 1
        err = one_line_error(capsys)
        assert "exists (an earlier run on this map)" in err and "--overwrite" in err
        assert {p: p.read_bytes() for p in outputs} == before
        (tmp_path / "file").write_text("not a folder")
        assert main(["transmit", "--output", str(tmp_path / "file")]) == 1
        assert "exists and is not a folder" in one_line_error(capsys)
        assert main(["transmit", "--output", str(tmp_path / "file" / "sub")]) == 1
        assert "is a file" in one_line_error(capsys)
        assert main(["transmit", "--map", str(tmp_path), "--output", str(tmp_path / "o")]) == 1
        assert "is a folder; give one label map PNG" in one_line_error(capsys)
        monkeypatch.undo()

        assert run_transmit(tmp_path, "--seed", "2", "--overwrite") == 0
        assert sorted((tmp_path / "out").iterdir()) == outputs  # replaced in place, no temporary files
        assert {p: p.read_bytes() for p in outputs} != before
    finally:
        os.umask(old_umask)


# ---------------------------------------------------------------------------------------------------------------------
# Error paths of convert (see test_convert.py), publish and map-level through gesco_diffusers.cli.main: one line on
# stderr and the exit status (1: error, 2: usage, 130: interrupted).


def test_usage_errors_and_help_return_their_status(capsys):
    assert main(["map-level", "--dataset", "cityscapes"]) == 2
    assert "invalid choice: 'cityscapes'" in one_line_error(capsys)
    assert main(["publish", "only-a-folder"]) == 2
    assert "the following arguments are required: repo_id" in one_line_error(capsys)
    assert main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in one_line_error(capsys)
    assert main(["map-level", "--help"]) == 0
    assert "--data-root" in capsys.readouterr().out


def test_map_level_runs_the_readme_command(tmp_path, capsys):
    # The README's `gesco map-level --dataset camvid --out DIR`: leading options reach the experiment.
    assert main(["map-level", "--dataset", "camvid", "--out", str(tmp_path), "--data-root", str(DATA_ROOT),
                 "--limit", "2", "--channels", "awgn", "--psnrs", "10"]) == 0
    results = json.loads((tmp_path / "camvid" / "results.json").read_text())
    assert results["num_maps"] == 2 and [(r["channel"], r["snr_db"]) for r in results["rows"]] == [("awgn", 10.0)]
    assert "| awgn | paper |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,status,message",
    [
        (["--limit", "0"], 1, "limit must be a positive number of maps, got 0"),
        (["--batch-size", "0"], 1, "batch_size must be a positive integer, got 0"),
        (["--channels", "bsc"], 1, "unknown channel labels ['bsc']"),
        (["--psnrs", "nan"], 1, "must be a finite number of dB"),
        (["--data-root", "{tmp}/nowhere"], 1, "no label maps found under"),
        (["--out", "{tmp}/file/sub"], 1, "cannot be created"),
        (["--limit", "two"], 2, "invalid int value: 'two'"),
    ],
)
def test_map_level_errors_are_one_line(tmp_path, capsys, monkeypatch, args, status, message):
    import gesco_diffusers.experiments.map_level as map_level

    (tmp_path / "file").write_text("not a folder")
    refused_early = args[0] in ("--out", "--limit", "--batch-size")  # checked before any map is loaded
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "out")]
    if "--data-root" not in args:
        args = [*args, "--data-root", str(DATA_ROOT)]
    scored = []
    real = map_level._evaluate_setting
    monkeypatch.setattr(map_level, "_evaluate_setting", lambda *a, **k: scored.append(1) or real(*a, **k))
    assert main(["map-level", "--quick", *[a.replace("{tmp}", str(tmp_path)) for a in args]]) == status
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists()
    if refused_early:
        assert scored == []


def test_map_level_names_the_missing_default_data_root(tmp_path, capsys, monkeypatch):
    import gesco_diffusers.experiments.map_level as map_level

    monkeypatch.setattr(map_level, "default_data_root", lambda: tmp_path / "no_data")
    assert main(["map-level", "--out", str(tmp_path / "out"), "--quick"]) == 1
    err = one_line_error(capsys)
    assert f"no label maps found under {tmp_path / 'no_data' / 'camvid'}" in err and "pass --data-root" in err


class _NoHub:
    """Stands in for huggingface_hub.HfApi: an error test must never reach the Hub."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("the Hub was contacted")


@pytest.fixture
def pipeline_folder(tmp_path):
    from gesco_diffusers import GescoPipeline

    folder = tmp_path / "pipe"
    GescoPipeline.from_unet_config("tiny", dataset="camvid", seed=0).save_pretrained(folder)
    return folder


def test_publish_errors_are_one_line(tmp_path, capsys, monkeypatch, pipeline_folder):
    import gesco_diffusers.hub as hub

    monkeypatch.setattr(hub, "HfApi", _NoHub)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "missing"), "org/name"], "is not a pipeline folder (no model_index.json)"),
        ([str(tmp_path / "missing"), "org/name", "--dry-run"], "is not a pipeline folder (no model_index.json)"),
        ([str(tmp_path / "empty"), "org/name", "--card-kind", "camvid", "--dry-run"], "is not a pipeline folder"),
        ([str(pipeline_folder), "org/name"], "has no model card (README.md)"),
        ([str(pipeline_folder), "org/name", "--kpis", str(tmp_path / "none.json")], "--kpis not found: "),
        ([str(pipeline_folder), "org/name", "--kpis", str(tmp_path / "bad.json")], "is not valid JSON"),
        ([str(pipeline_folder), "not a repo id", "--card-kind", "camvid"], "Repo id must use alphanumeric chars"),
        ([str(pipeline_folder), "name-only", "--card-kind", "camvid"], "repo_id must be 'namespace/name'"),
    ]
    for args, message in cases:
        assert main(["publish", *args]) == 1, args
        assert message in one_line_error(capsys), args
    assert not (tmp_path / "missing").exists() and not list((tmp_path / "empty").iterdir())
    assert not (pipeline_folder / "README.md").exists()  # a refused upload writes no card either


def test_ctrl_c_in_publish_and_map_level_exits_130(tmp_path, capsys, monkeypatch, pipeline_folder):
    import gesco_diffusers.experiments.map_level as map_level
    import gesco_diffusers.hub as hub

    class InterruptedUpload:
        def __init__(self, *args, **kwargs):
            pass

        def create_repo(self, *args, **kwargs):
            return None

        def upload_folder(self, *args, **kwargs):
            raise KeyboardInterrupt  # Ctrl-C during the upload

    monkeypatch.setattr(hub, "HfApi", InterruptedUpload)
    assert main(["publish", str(pipeline_folder), "org/name", "--card-kind", "camvid"]) == 130
    assert one_line_error(capsys) == "gesco publish: interrupted"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(map_level, "_evaluate_setting", interrupted)
    assert main(["map-level", "--quick", "--data-root", str(DATA_ROOT), "--out", str(tmp_path / "ml")]) == 130
    assert one_line_error(capsys) == "gesco map-level: interrupted"
    assert not (tmp_path / "ml" / "camvid" / "results.json").exists()


def test_gesco_help_imports_no_torch():
    """`gesco --help` lists the subcommands without importing their implementations (torch, diffusers)."""
    code = ("import sys; from gesco_diffusers.cli import main; rc = main(['--help']); "
            "print('RC', rc, sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RC 0 []" in result.stdout
    for name in ("transmit", "convert", "publish", "map-level", "evaluate"):
        assert name in result.stdout


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_subcommand_help_imports_no_torch(command):
    """`gesco <command> --help` builds that command's arguments from light modules (names, not models)."""
    code = (f"import sys; from gesco_diffusers.cli import main; rc = main([{command!r}, '--help']); "
            "print('RC', rc, sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RC 0 []" in result.stdout and "--help" in result.stdout, result.stdout[-2000:]


def test_channel_receiver_and_sender_import_without_diffusers():
    code = ("import sys, gesco_diffusers.channel, gesco_diffusers.receiver, gesco_diffusers.sender; "
            "print(sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
