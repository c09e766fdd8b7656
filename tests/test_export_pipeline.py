"""training/export_pipeline.py: the fp16 export of a trained pipeline folder (the shipped demo model is made by it)."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from gesco_diffusers import GescoPipeline
from gesco_diffusers.diffusion import default_scheduler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

from export_pipeline import main as export_main  # noqa: E402


@pytest.fixture
def trained(tmp_path):
    pipe = GescoPipeline.from_unet_config("tiny", dataset="camvid")
    pipe.save_pretrained(tmp_path / "run")
    (tmp_path / "run" / "checkpoint-10").mkdir()  # training state next to the pipeline must not be exported
    (tmp_path / "run" / "checkpoint-10" / "optimizer.bin").write_bytes(b"state")
    return pipe, tmp_path


def test_export_writes_fp16_weights_chosen_sampler_and_card(trained):
    pipe, tmp = trained
    os.umask(0o022)
    (tmp / "args.json").write_text(json.dumps({"command": "accelerate launch training/train.py ...", "steps": 10}))
    (tmp / "kpis.json").write_text(json.dumps({"clean map": {"judge mIoU": 0.25}}))
    (tmp / "about.md").write_text("Trained on a 2-core CPU in 142 minutes.")
    export_main([str(tmp / "run"), str(tmp / "out"), "--training-args", str(tmp / "args.json"),
                 "--kpis", str(tmp / "kpis.json"), "--sampler", "dpmsolver++", "--description", str(tmp / "about.md"),
                 "--model-name", "GESCO CamVid tiny"])
    out = tmp / "out"
    assert not (out / "checkpoint-10").exists()
    assert all(path.stat().st_mode & 0o044 == 0o044 for path in [out, *out.rglob("*")])  # readable by all (umask 022)
    exported = GescoPipeline.from_pretrained(out)
    assert pipe.scheduler.config.algorithm_type == "sde-dpmsolver++"  # the default, replaced by the chosen one
    assert type(exported.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert exported.scheduler.config.algorithm_type == "dpmsolver++"
    assert exported.scheduler.config.variance_type == "learned_range"
    weights = next((out / "unet").glob("*.safetensors"))
    from safetensors.torch import load_file
    tensors = load_file(weights)
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    for name, value in pipe.unet.state_dict().items():  # the same weights, rounded to fp16
        torch.testing.assert_close(tensors[name].float(), value.half().float())
    card = (out / "README.md").read_text()
    assert "accelerate launch training/train.py ..." in card and "0.25" in card and "142 minutes" in card
    assert card.count("\n# GESCO CamVid tiny\n") == 1 and 'from_pretrained("your-namespace/gesco-out")' in card


def test_export_replaces_an_old_export_whole_and_refuses_a_non_pipeline(trained, capsys):
    _, tmp = trained
    (tmp / "out").mkdir()
    (tmp / "out" / "stale.txt").write_text("from an older export")
    export_main([str(tmp / "run"), str(tmp / "out")])
    assert not (tmp / "out" / "stale.txt").exists() and (tmp / "out" / "model_index.json").is_file()
    assert "MiB" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="not a pipeline folder"):
        export_main([str(tmp / "run" / "checkpoint-10"), str(tmp / "other")])
    assert not (tmp / "other").exists()


def test_shipped_demo_model_and_its_card():
    """The embedded default (issue #7): fp16 safetensors under 30 MB, the package's default sampler (issue #8), card
    also kept in hub_cards/."""
    demo = ROOT / "gesco_diffusers" / "assets" / "demo" / "camvid"
    if not (demo / "model_index.json").is_file():
        pytest.skip("the demo model is not shipped in this checkout")
    size = sum(p.stat().st_size for p in demo.rglob("*") if p.is_file())
    assert size < 30 * 2**20
    from safetensors import safe_open
    with safe_open(str(demo / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as weights:
        assert {weights.get_slice(name).get_dtype() for name in weights.keys()} == {"F16"}
    stored = json.loads((demo / "scheduler" / "scheduler_config.json").read_text())
    expected = default_scheduler(stored).config
    assert stored["_class_name"] == type(default_scheduler()).__name__
    assert {k: v for k, v in stored.items() if not k.startswith("_")} == {k: v for k, v in expected.items()
                                                                          if not k.startswith("_")}
    card = (demo / "README.md").read_text()
    assert card == (ROOT / "hub_cards" / "demo-camvid.README.md").read_text()
    assert "2038" in card and "training/train.py" in card and "judge mIoU" in card


def test_export_never_replaces_its_own_source(trained):
    _, tmp = trained
    before = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*"))
    for destination in (tmp / "run", tmp):  # the run itself, a folder holding it
        with pytest.raises(ValueError, match="holds the source"):
            export_main([str(tmp / "run"), str(destination)])
    assert sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*")) == before
