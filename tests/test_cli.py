"""The `gesco` command line: `transmit` end to end, and one-line errors for bad arguments."""

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from gesco_diffusers.cli import main


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
        (["--map", "does/not/exist.png"], "label map not found"),
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

        import gesco_diffusers.transmit as transmit_module

        def no_model(*args, **kwargs):
            raise AssertionError("the model must not load when the outputs cannot be written")

        # Refused before the model loads: an earlier run's outputs, an output path that is a file.
        monkeypatch.setattr(transmit_module, "load_pipeline", no_model)
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
