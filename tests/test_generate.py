"""`gesco generate`: a folder of label maps in, a folder of images out; 1 vs 2 torchrun CPU processes, resume, errors.

Tiny U-Net of test_evaluate, 3 CamVid fixture maps at 32x40, 2 sampling steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from gesco_diffusers.cli import main

from fixture_data import CAMVID
from test_distributed import _env, _images, _run, _torchrun
from test_evaluate import assets  # noqa: F401  (module fixture: the tiny pipeline folder)

torch.set_num_threads(1)


def _write_maps(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for path in sorted((CAMVID / "val" / "labels").glob("*.png"))[:count]:
        with PIL.Image.open(path) as image:
            image.resize((40, 32), PIL.Image.NEAREST).save(folder / path.name)
    return folder


def _args(assets: Path, maps: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", str(maps), str(out), "--model", str(assets / "pipe"), "--steps", "2", "--batch-size", "2",
            "--device", "cpu", "--quiet", *extra]


def _pictures(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(PIL.Image.open(p)) for p in sorted(out.glob("*.png"))}


def test_one_and_two_processes_make_the_same_images_and_resume(assets, tmp_path):  # noqa: F811
    maps = _write_maps(tmp_path / "maps", 3)
    env = _env(tmp_path)
    _run(_torchrun(1, _args(assets, maps, tmp_path / "one")), env)
    result = _run(_torchrun(2, _args(assets, maps, tmp_path / "two")), env)
    assert result.stdout.count("images written") == 1 and "3 images written" in result.stdout
    one, two = _pictures(tmp_path / "one"), _pictures(tmp_path / "two")
    assert sorted(one) == sorted(p.name for p in maps.glob("*.png")) and one.keys() == two.keys()
    assert all(np.array_equal(one[k], two[k]) and one[k].shape == (32, 40, 3) for k in one)
    assert len({one[k].tobytes() for k in one}) == 3  # three maps, three images
    settings = json.loads((tmp_path / "two" / "settings.json").read_text())
    assert settings["steps"] == 2 and settings["channel"] == "awgn at PSNR 10 dB" and settings["fds"] == "paper"
    assert not list((tmp_path / "two").glob(".*"))

    # Resume in this process: only the missing image is made, the same one; the others are not touched.
    out = tmp_path / "two"
    missing = sorted(one)[1]
    (out / missing).unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    (out / f".{missing}.abc.tmp.png").write_bytes(b"half")  # what a killed writer leaves
    assert main(_args(assets, maps, out)) == 0
    assert _pictures(out).keys() == one.keys() and np.array_equal(_pictures(out)[missing], one[missing])
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if p.name != missing} == kept
    assert not list(out.glob(".*"))

    # Other settings into the same folder: refused before anything is made.
    assert main(_args(assets, maps, out, "--seed", "1")) == 1


def test_more_processes_than_maps(assets, tmp_path):  # noqa: F811
    maps = _write_maps(tmp_path / "maps", 1)
    _run(_torchrun(2, _args(assets, maps, tmp_path / "out")), _env(tmp_path))
    assert len(_images_flat(tmp_path / "out")) == 1


def _images_flat(out: Path) -> list[Path]:
    return sorted(out.glob("*.png"))


def test_bad_maps_are_refused_in_one_line(assets, tmp_path, capsys):  # noqa: F811
    maps = _write_maps(tmp_path / "maps", 1)
    PIL.Image.new("RGB", (40, 32)).save(maps / "photo.png")
    assert main(_args(assets, maps, tmp_path / "out")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("gesco generate: error:")
    assert "photo.png: a label map must be a single-channel PNG of class ids, got mode RGB" in err
    (maps / "photo.png").unlink()
    PIL.Image.fromarray(np.full((32, 40), 40, np.uint8)).save(maps / "ids.png")
    assert main(_args(assets, maps, tmp_path / "out")) == 1
    assert "ids.png: ids [40] are not camvid classes (0..11)" in capsys.readouterr().err
    assert main(_args(assets, tmp_path / "nope", tmp_path / "out")) == 1
    assert "map folder not found" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True


def test_shipped_model_name(tmp_path):
    """--model demo: the shipped CamVid model through resolve_model."""
    maps = _write_maps(tmp_path / "maps", 1)
    out = tmp_path / "out"
    assert main(["generate", str(maps), str(out), "--model", "demo", "--steps", "1", "--device", "cpu",
                 "--quiet"]) == 0
    assert len(_images_flat(out)) == 1

