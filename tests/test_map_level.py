"""Map-level experiment: the confusion-matrix mIoU and a --quick smoke run of the CLI (three FDS arms)."""

import csv
import json
import pytest

from gesco_diffusers.experiments.map_level import default_settings, main, run_map_level

from fixture_data import DATA_ROOT as DATA  # camvid/ (4 val maps) and coco_stuff_samples/


def test_unknown_channel_label():
    with pytest.raises(ValueError, match="unknown channel labels"):
        default_settings(channels=["awgn", "bsc"])


def test_quick_cli_run_writes_tables_json_csv_and_plot(tmp_path, capsys):
    results = main(["--dataset", "camvid", "--quick", "--out", str(tmp_path), "--data-root", str(DATA),
                    "--channels", "awgn", "rayleigh", "digital-multipath"])
    out_dir = tmp_path / "camvid"
    for name in ("results.json", "results.csv", "tables.md", "miou_vs_snr.png"):
        assert (out_dir / name).is_file() and (out_dir / name).stat().st_size > 0
    saved = json.loads((out_dir / "results.json").read_text())
    assert saved["num_maps"] == 4 and saved["dataset"] == "camvid"
    rows = {(r["channel"], r["snr_db"]): r for r in saved["rows"]}
    assert len(rows) == 2 * 3 + 2  # two analog channels at 3 PSNRs, one digital link at 2 Eb/N0
    assert rows["awgn", 100.0]["miou_no_fds"] == 1.0  # sigma = 1e-5 never flips an argmax
    assert rows["awgn", 1.0]["miou_no_fds"] < 0.5
    assert rows["awgn", 10.0]["miou_fds"] > rows["awgn", 10.0]["miou_no_fds"]
    # The adaptive arm: exact on a clean channel (the paper's FDS is not), better than the paper's when noisy.
    assert rows["awgn", 100.0]["miou_adaptive_fds"] == 1.0 > rows["awgn", 100.0]["miou_fds"]
    assert rows["awgn", 10.0]["miou_adaptive_fds"] > rows["awgn", 10.0]["miou_fds"]
    assert rows["rayleigh", 10.0]["miou_adaptive_fds"] > rows["rayleigh", 10.0]["miou_fds"]
    assert abs(rows["awgn", 10.0]["received_psnr_db"] - 10.0) < 0.1  # measured on the transmitted elements
    with open(out_dir / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows)
    assert {"miou_no_fds", "miou_fds", "miou_adaptive_fds"} <= set(table[0])
    printed = capsys.readouterr().out
    assert all(f"| awgn | {arm} |" in printed for arm in ("none", "paper", "adaptive")) and "Eb/N0" in printed
    assert results[0]["markdown"] in printed


def test_coco_run_with_edges_is_seeded_and_calls_the_codec_hook():
    calls = []

    def codec_table(labels, preset):
        calls.append((len(labels), preset.name))
        return "| codec | bpp |\n|---|---|\n| fake | 1.0 |"

    kwargs = dict(psnrs=(10,), ebn0s=(), channels=["awgn"], limit=1, resize="preset", data_root=DATA,
                  verbose=False)
    first = run_map_level("coco-stuff", codec_table_fn=codec_table, **kwargs)
    second = run_map_level("coco-stuff", **kwargs)
    assert calls == [(1, "coco-stuff")]
    assert first["markdown"].endswith("| fake | 1.0 |") and "fake" not in second["markdown"]
    assert first["map_sizes"] == [(256, 256)]
    assert first["rows"][0]["miou_fds"] == second["rows"][0]["miou_fds"]  # same seed, same result
    assert 0.0 < first["rows"][0]["miou_no_fds"] < first["rows"][0]["miou_fds"] <= 1.0
    # With an instance-edge channel the adaptive arm still decides among the 183 class channels only.
    assert first["rows"][0]["miou_fds"] < first["rows"][0]["miou_adaptive_fds"] <= 1.0


def test_codecs_flag_appends_the_bpp_table(tmp_path):
    results = main(["--dataset", "camvid", "--quick", "--limit", "2", "--codecs", "--channels", "awgn",
                    "--psnrs", "10", "--out", str(tmp_path), "--data-root", str(DATA)])
    markdown = results[0]["markdown"]
    assert "Bits per pixel of the codecs" in markdown
    assert "| map | png | one_hot |" in markdown and "| photo | hevc | quality 0 |" in markdown
