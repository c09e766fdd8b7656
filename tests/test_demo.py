"""`gesco demo`: the app's pure functions (colour maps, the Transmit and Sweep handlers) with the shipped fast model,
and one click-through in a real browser (Debian's Chromium, headless, driven by Playwright; nothing downloaded).

The browser test is skipped, saying why, when gradio, playwright or /usr/bin/chromium is missing (`.ci/run` installs
Chromium; `pip install -e ".[demo,dev]"` the two packages).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from gesco_diffusers.chain import label_map_from_image, read_label_map
from gesco_diffusers.presets import get_dataset_preset
from gesco_diffusers.shipped import sample_maps
from gesco_diffusers.visualize import colorize, labels_from_colors

CHROMIUM = "/usr/bin/chromium"
#: Browser waits (ms): generous, the CPU may be shared with other jobs (Playwright's `expect` waits 5 s by default).
WAIT_MS = 60_000
CAMVID = get_dataset_preset("camvid")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def core():
    from gesco_diffusers.demo import core

    return core


@pytest.fixture(scope="module")
def cache(core):
    return core.PipelineCache("cpu")


@pytest.fixture
def colour_png(tmp_path) -> Path:
    """The first sample map coloured with the CamVid palette, as a user would upload it."""
    labels = read_label_map(sample_maps()[0], CAMVID)
    path = tmp_path / "coloured.png"
    colorize(labels, CAMVID.palette).save(path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Colour maps


def test_colour_map_round_trip_and_unknown_colours():
    labels = np.arange(12).reshape(3, 4) % CAMVID.num_classes
    rgb = np.asarray(colorize(labels, CAMVID.palette)).copy()
    assert np.array_equal(labels_from_colors(rgb, CAMVID.palette), labels)
    rgb[0, :2] = (1, 2, 3)
    rgb[2, 3] = (9, 9, 9)
    with pytest.raises(ValueError, match=r"2 colour\(s\) not in the palette: \(1, 2, 3\) \(2 pixels\), "
                                         r"\(9, 9, 9\) \(1 pixels\)"):
        labels_from_colors(rgb, CAMVID.palette)
    # A colour shared by several ids (Cityscapes draws ids 0-3 black) reads as the first of them.
    cityscapes = get_dataset_preset("cityscapes")
    assert labels_from_colors(np.zeros((1, 1, 3), np.uint8), cityscapes.palette).item() == 0


def test_label_map_from_image_reads_ids_and_palette_colours():
    labels = (np.arange(20).reshape(4, 5) % CAMVID.num_classes).astype(np.uint8)
    ids = PIL.Image.fromarray(labels, mode="L")
    colours = colorize(labels, CAMVID.palette)
    for image in (ids, colours, colours.convert("RGBA")):
        assert np.array_equal(label_map_from_image(image, CAMVID), labels)
    with pytest.raises(ValueError, match=r"up\.png: ids \[12, 200\] are not camvid classes"):
        label_map_from_image(PIL.Image.fromarray(np.array([[12, 200]], np.uint8), mode="L"), CAMVID, what="up.png")
    with pytest.raises(ValueError, match="not in the camvid palette"):
        label_map_from_image(PIL.Image.new("RGB", (2, 2), (1, 2, 3)), CAMVID)
    with pytest.raises(ValueError, match="mode 'F' is neither"):
        label_map_from_image(PIL.Image.new("F", (2, 2)), CAMVID)


def test_uploaded_colour_map_equals_the_sample(core, colour_png, tmp_path):
    sample = core.sample_names()[0]
    from_sample, photo, _ = core.load_input_map(sample, None, CAMVID)
    from_upload, no_photo, name = core.load_input_map(sample, colour_png, CAMVID)  # the upload wins
    assert np.array_equal(from_upload, from_sample) and name == "coloured.png"
    assert photo is not None and no_photo is None
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="notes.png is not an image file"):
        core.load_input_map(None, tmp_path / "notes.png", CAMVID)
    with pytest.raises(ValueError, match="choose a shipped sample or upload"):
        core.load_input_map(None, None, CAMVID)


# ---------------------------------------------------------------------------------------------------------------------
# Handlers (the fast model: 4 U-Net calls at 64x80)


def test_transmit_map_outputs_and_figures(core, cache, colour_png):
    out = core.transmit_map(sample=core.sample_names()[0], model="fast", channel="awgn", psnr_db=5, fds="paper",
                            seed=3, cache=cache)
    for image in (out.sent, out.received, out.denoised, out.generated):
        assert image.size == (80, 64) and image.mode == "RGB"
    assert out.photo is not None
    r = out.result
    assert r.steps == 4 and r.guidance_scale == 1.0  # the fast model's own
    assert r.bpp > 0 and 0 <= r.map_miou_received < r.map_miou_fds <= 1  # FDS helps at 5 dB
    summary = out.summary()
    for text in ("BPP", f"{r.bpp:.4f}", f"{r.map_miou_received:.3f}", f"{r.map_miou_fds:.3f}", "PSNR 5.0 dB",
                 "generation"):
        assert text in summary
    # The sweep scores the same map, channel draw and receivers: the same mIoU figures.
    rows = core.psnr_sweep(sample=core.sample_names()[0], model="fast", channel="awgn", levels="5", seed=3)
    by_receiver = {row["receiver"]: row["miou"] for row in rows}
    assert by_receiver["no FDS"] == pytest.approx(r.map_miou_received)
    assert by_receiver["FDS (paper)"] == pytest.approx(r.map_miou_fds)

    # An uploaded colour map, the digital link, the adaptive FDS, another sampler at 2 steps; deterministic per seed.
    kwargs = dict(upload=colour_png, model="fast", channel="digital", ebn0_db=4, modulation="16qam", fds="adaptive",
                  sampler="euler", steps=2, seed=1, cache=cache)
    first, again = core.transmit_map(**kwargs), core.transmit_map(**kwargs)
    assert first.photo is None and first.result.steps == 2 and "euler" in first.result.sampler
    assert "16QAM" in first.channel
    assert np.array_equal(np.asarray(first.generated), np.asarray(again.generated))
    # The sampler was swapped for that request only.
    pipe, _ = cache.get("fast")
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"  # the fast model's own


def test_psnr_sweep_rows(core):
    rows = core.psnr_sweep(sample=core.sample_names()[1], model="demo", channel="awgn", levels="10, 1 30", seed=0)
    assert [row["level_db"] for row in rows[::3]] == [1, 10, 30]
    assert [row["receiver"] for row in rows[:3]] == list(core.SWEEP_RECEIVERS.values())
    mious = {(row["level_db"], row["receiver"]): row["miou"] for row in rows}
    assert mious[1, "no FDS"] < mious[1, "FDS (paper)"] and mious[1, "no FDS"] < mious[30, "no FDS"]
    for bad, message in (("10, abc", "'abc' is not a number"), ("", "at least one PSNR"), ("inf", "finite")):
        with pytest.raises(ValueError, match=message):
            core.psnr_sweep(sample=core.sample_names()[0], model="fast", levels=bad)
    with pytest.raises(ValueError, match="choose a channel to sweep"):
        core.psnr_sweep(sample=core.sample_names()[0], model="fast", channel="noiseless", levels="10")


def test_handlers_turn_bad_input_into_one_line_gr_errors(tmp_path, cache):
    gr = pytest.importorskip("gradio")
    pytest.importorskip("pandas")
    from gesco_diffusers.demo.app import on_sweep, on_transmit

    bad = tmp_path / "odd.png"
    colour = np.asarray(colorize(np.zeros((4, 5), np.int64), CAMVID.palette)).copy()
    colour[0, 0] = (1, 2, 3)
    PIL.Image.fromarray(colour).save(bad)
    args = [None, str(bad), "fast", "awgn", 10.0, 6.0, "qpsk", "paper", "default", 0, 0]
    with pytest.raises(gr.Error) as err:
        on_transmit(*args, cache=cache)
    assert "\n" not in err.value.message and "(1, 2, 3)" in err.value.message and "camvid palette" in err.value.message
    args[1], args[9] = None, -1
    with pytest.raises(gr.Error, match="steps must be an integer >= 0"):
        on_transmit(*args, cache=cache)
    with pytest.raises(gr.Error, match="'x' is not a number"):
        on_sweep("0016E5_07959", None, "fast", "awgn", "10, x", "qpsk", 0)
    plot, table = on_sweep("0016E5_07959", None, "fast", "awgn", "20, 5", "qpsk", 0)
    assert list(table.columns) == ["dB", "no FDS", "FDS (paper)", "adaptive FDS"] and list(table["dB"]) == [5, 20]
    assert len(plot["value"]) == 6 and plot["x_title"] == "PSNR (dB)"


def test_demo_help_imports_neither_gradio_nor_torch():
    code = ("import sys; from gesco_diffusers.cli import main; rc = main(['demo', '--help']); "
            "print('RC', rc, sorted(m for m in ('gradio', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert "--port" in proc.stdout and "--share" in proc.stdout and "RC 0 []" in proc.stdout


# ---------------------------------------------------------------------------------------------------------------------
# A real browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_demo():
    pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
    pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright: pip install -e '.[dev]'")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium (Debian's package; .ci/run installs it)")
    from gesco_diffusers.demo.app import build_demo

    demo = build_demo(model="fast", device="cpu")
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def test_browser_click_through_generation_sweep_and_error(served_demo, colour_png, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    bad = tmp_path / "odd_colours.png"
    PIL.Image.new("RGB", (8, 6), (1, 2, 3)).save(bad)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            page.goto(served_demo)
            page.wait_for_selector("#transmit-button")
            assert page.locator("#generated-image img").count() == 0  # nothing before the click
            # Transmit: one generation with the fast model (selected at start), its own 4 steps.
            page.click("#transmit-button")
            image = page.wait_for_selector("#generated-image img")
            assert "file=" in (image.get_attribute("src") or "")  # served by the app
            expect(page.locator("#transmit-summary")).to_contain_text("map mIoU", timeout=WAIT_MS)
            expect(page.locator("#transmit-summary")).to_contain_text("bits per pixel", timeout=WAIT_MS)

            # PSNR sweep: the table fills in.
            page.get_by_role("tab", name="PSNR sweep").click()
            page.fill("#sweep-levels textarea, #sweep-levels input", "20, 5, 1")
            page.click("#sweep-button")
            expect(page.locator("#sweep-table")).to_contain_text("adaptive FDS", timeout=WAIT_MS)

            # Bad input: an upload with colours outside the palette shows a one-line error.
            page.get_by_role("tab", name="Transmit").click()
            page.set_input_files("#transmit-upload input[type=file]", str(bad))
            # Uploaded once the file is served back (its name shows already while it uploads: clicking then would
            # send no file).
            page.wait_for_selector("#transmit-upload a[href*='odd_colours.png']")
            page.click("#transmit-button")
            expect(page.get_by_text("not in the camvid palette").first).to_be_visible(timeout=WAIT_MS)
        finally:
            browser.close()


def test_the_demo_offers_the_demo_and_fast_models_not_the_ablation(core):
    # The Table VIII ablation is shipped for the benchmark; the demo's list offers the two models users should pick.
    assert core.MODELS == ("demo", "fast")


def test_write_space_writes_a_gradio_space_and_replaces_nothing_unasked(tmp_path, capsys):
    from huggingface_hub import RepoCard

    from gesco_diffusers import __version__
    from gesco_diffusers.cli import main
    from gesco_diffusers.demo.space import APP_PY

    assert (Path(__file__).resolve().parents[1] / "app.py").read_text() == APP_PY  # one entry point, two places
    space = tmp_path / "space"
    (space / ".git").mkdir(parents=True)
    assert main(["demo", "--write-space", str(space)]) == 0
    assert sorted(p.name for p in space.iterdir()) == [".git", "README.md", "app.py", "requirements.txt"]
    card = RepoCard((space / "README.md").read_text()).data
    assert card.sdk == "gradio" and card.app_file == "app.py" and len(card.short_description) <= 60
    assert (space / "requirements.txt").read_text() == f"gesco-diffusers[demo]=={__version__}\n"
    compile((space / "app.py").read_text(), "app.py", "exec")
    (space / "README.md").write_text("my own card")
    capsys.readouterr()
    assert main(["demo", "--write-space", str(space)]) == 1
    assert "app.py exists; pass --overwrite to replace the Space's app.py, README.md" in capsys.readouterr().err
    assert (space / "README.md").read_text() == "my own card"
    assert main(["demo", "--write-space", str(space), "--overwrite"]) == 0
    assert (space / "README.md").read_text().startswith("---\ntitle: ")
