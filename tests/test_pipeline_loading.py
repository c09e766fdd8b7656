"""Saved pipeline folders load with diffusers' generic ``DiffusionPipeline.from_pretrained(folder,
trust_remote_code=True)`` (the folder names its loading modules, diffusers' custom pipeline and component mechanism),
and with ``GescoPipeline.from_pretrained(folder)``, which runs no code from the folder and still loads folders saved
before the loading modules existed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from gesco_diffusers import GescoPipeline
from gesco_diffusers.pipelines.loading import PACKAGE_UNET
from test_pipeline import gen, labels, pipe  # noqa: F401  (pipe is the tiny CamVid pipeline fixture)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def saved(pipe, tmp_path):
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    return folder


def test_save_pretrained_names_its_loading_modules(saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "GescoPipeline"]
    assert index["unet"] == ["unet_semantic", "SemanticUNet2DModel"]
    assert index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    assert "from gesco_diffusers.pipelines.pipeline_gesco import GescoPipeline" in (saved / "pipeline.py").read_text()
    assert "from gesco_diffusers.models.unet_semantic import SemanticUNet2DModel" in \
        (saved / "unet" / "unet_semantic.py").read_text()


def test_diffusion_pipeline_from_pretrained_loads_it_in_a_fresh_interpreter(pipe, saved, tmp_path, single_thread):
    """The user's first line: nothing of gesco_diffusers imported beforehand, offline, the modules cache in tmp.
    Both sides run on one thread: with several, oneDNN may pick other kernels in another process (last-bit noise)."""
    expected = pipe(labels(), num_inference_steps=2, generator=gen(), output_type="np").images
    np.save(tmp_path / "labels.npy", labels().numpy())
    script = (
        "import sys, numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "from diffusers import DiffusionPipeline\n"
        "assert 'gesco_diffusers' not in sys.modules\n"
        "pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "print(type(pipe).__module__, type(pipe).__name__, type(pipe.unet).__name__)\n"
        "images = pipe(torch.from_numpy(np.load(sys.argv[2])), num_inference_steps=2,\n"
        "              generator=torch.Generator().manual_seed(0), output_type='np').images\n"
        "np.save(sys.argv[3], images)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", script, str(saved), str(tmp_path / "labels.npy"),
                          str(tmp_path / "images.npy")], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["gesco_diffusers.pipelines.pipeline_gesco", "GescoPipeline", "SemanticUNet2DModel"]
    np.testing.assert_allclose(np.load(tmp_path / "images.npy"), expected, atol=1e-5, rtol=0)


def test_diffusion_pipeline_asks_for_trust_remote_code(saved):
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(saved)


def test_hub_download_finds_a_module_for_every_component(saved):
    """``DiffusionPipeline.download`` refuses a Hub repo whose components come from a library other than diffusers
    or transformers without their module in the repo; the folder now has one (the old layout did not)."""
    loading_utils = pytest.importorskip("diffusers.pipelines.pipeline_loading_utils")
    check = getattr(loading_utils, "_get_custom_components_and_folders", None)
    if check is None:
        pytest.skip("this diffusers version has no _get_custom_components_and_folders")
    files = [p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()]
    index = json.loads((saved / "model_index.json").read_text())
    components, folders = check("org/gesco", index, files)
    assert components == {"unet": "unet_semantic"} and set(folders) == {"unet", "scheduler"}
    old = {**index, "_class_name": "GescoPipeline", "unet": PACKAGE_UNET}
    with pytest.raises(ValueError, match="does not exist in org/gesco"):
        check("org/gesco", old, [f for f in files if not f.endswith(".py")])


def test_gesco_from_pretrained_runs_no_code_from_the_folder(pipe, saved):
    planted = "raise RuntimeError('code from the folder ran')\n"
    (saved / "pipeline.py").write_text(planted)
    (saved / "unet" / "unet_semantic.py").write_text(planted)
    loaded = GescoPipeline.from_pretrained(saved)
    assert type(loaded) is GescoPipeline and type(loaded.unet).__name__ == "SemanticUNet2DModel"
    for (name, a), b in zip(pipe.unet.state_dict().items(), loaded.unet.state_dict().values()):
        assert torch.equal(a, b), name


def test_folders_saved_before_the_loading_modules_still_load(pipe, saved):
    index = json.loads((saved / "model_index.json").read_text())
    (saved / "model_index.json").write_text(json.dumps({**index, "_class_name": "GescoPipeline",
                                                        "unet": PACKAGE_UNET}))
    (saved / "pipeline.py").unlink()
    (saved / "unet" / "unet_semantic.py").unlink()
    loaded = GescoPipeline.from_pretrained(saved)
    loaded.set_progress_bar_config(disable=True)
    images = [p(labels(), num_inference_steps=2, generator=gen(), output_type="pt").images for p in (loaded, pipe)]
    torch.testing.assert_close(*images, atol=1e-5, rtol=0)


def test_the_shipped_demo_model_loads():
    demo = ROOT / "gesco_diffusers" / "assets" / "demo" / "camvid"
    if not (demo / "model_index.json").is_file():
        pytest.skip("the demo model is not shipped in this checkout")
    pipe = GescoPipeline.from_pretrained(demo)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.dataset_preset.name == "camvid" and pipe.dataset_preset.resolution == (64, 80)
    image = pipe(torch.zeros(64, 80, dtype=torch.long), num_inference_steps=1, output_type="pt").images
    assert image.shape == (1, 3, 64, 80) and torch.isfinite(image).all()


def test_loading_and_saving_again_keeps_the_layout(saved, tmp_path):
    again = GescoPipeline.from_pretrained(saved)
    again.save_pretrained(tmp_path / "again")
    files = lambda folder: sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())  # noqa
    assert files(tmp_path / "again") == files(saved)
    first, second = (json.loads((f / "model_index.json").read_text()) for f in (saved, tmp_path / "again"))
    assert {k: v for k, v in first.items() if k != "_name_or_path"} == \
        {k: v for k, v in second.items() if k != "_name_or_path"}


def test_saved_weight_files_follow_the_umask(tmp_path):
    """safetensors writes its files 0600 whatever the umask; a saved pipeline must be as readable as any file the
    user creates (0644 under the usual umask 022)."""
    import os

    from gesco_diffusers import GescoPipeline

    old = os.umask(0o022)
    try:
        GescoPipeline.from_unet_config("tiny", dataset="camvid").save_pretrained(tmp_path / "pipe")
    finally:
        os.umask(old)
    weights = list((tmp_path / "pipe").rglob("*.safetensors"))
    assert weights and all(path.stat().st_mode & 0o777 == 0o644 for path in weights)


@pytest.mark.parametrize("name", ["demo", "fast", "ablation"])
def test_every_shipped_model_loads_with_diffusers_own_loader(name):
    """The diffusers idiom on the shipped folders themselves (the demo folder was exported before the loading
    modules existed and failed with "module diffusers has no attribute GescoPipeline")."""
    from diffusers import DiffusionPipeline

    from gesco_diffusers.shipped import SHIPPED_MODELS, shipped_model_path

    assert name in SHIPPED_MODELS
    pipe = DiffusionPipeline.from_pretrained(shipped_model_path(name), trust_remote_code=True)
    assert type(pipe).__name__ == "GescoPipeline" and pipe.dataset_preset.name == "camvid"
