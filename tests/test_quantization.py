"""8-bit weights (gesco_diffusers.quantization): quantize a tiny pipeline, save it, load it back with
GescoPipeline.from_pretrained; the weights are int8 in memory and on disk (safetensors + JSON, no pickle), the output
stays close to fp32; missing backends and bad options fail with one-line errors; benchmarks/quantization.py --quick
runs."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from gesco_diffusers import GescoPipeline
from gesco_diffusers.quantization import (
    QuantizationBackendMissing,
    quantization_summary,
    quantize_pipeline,
    save_quantized,
    weight_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.quantization import randomize_weights  # noqa: E402

HAS_QUANTO = importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.quanto") is not None
HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
needs_quanto = pytest.mark.skipif(not HAS_QUANTO, reason="optimum-quanto is not installed (pip install "
                                  "'gesco-diffusers[quant]'); the missing-backend errors are tested without it")
needs_torchao = pytest.mark.skipif(not HAS_TORCHAO, reason="torchao is not installed (pip install torchao)")

WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: Largest |U-Net output - fp32 output| allowed, relative to max |fp32 output|: int8 weights with one scale per output
#: channel round each weight by at most half a step (max|w| / 254); measured 0.3-0.5 % on this tiny random U-Net (and
#: 0.35 % on the demo model), so 2 % leaves room without hiding a broken layer (a wrong scale is off by 10-100 %).
RELATIVE_TOLERANCE = 0.02


def tiny_pipeline() -> GescoPipeline:
    pipe = GescoPipeline.from_unet_config("tiny", dataset="camvid", seed=0)
    randomize_weights(pipe.unet)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unet_input():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 11, (2, 16, 16), generator=generator)
    sample = torch.randn(2, 3, 16, 16, generator=generator)
    return sample, torch.tensor([500, 500]), labels


def unet_output(pipe, inputs):
    sample, t, labels = inputs
    cond = pipe.prepare_semantic_map(labels, fds=False).conditioning
    with torch.no_grad():
        return pipe.unet(sample, t, cond).sample


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def check_close(out, reference):
    assert torch.isfinite(out).all()
    scale = reference.abs().max()
    assert scale > 0.1  # random weights everywhere: the output is not trivially zero
    error = float((out - reference).abs().max() / scale)
    assert 0 < error <= RELATIVE_TOLERANCE, error
    return error


def save_roundtrip(pipe, tmp_path) -> tuple[Path, GescoPipeline]:
    folder = tmp_path / "int8"
    save_quantized(pipe, folder)
    assert not [f for f in files_in(folder) if f.endswith(PICKLES)], files_in(folder)
    assert all(f.endswith((".json", ".safetensors", ".py", ".md")) for f in files_in(folder)), files_in(folder)
    loaded = GescoPipeline.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    # (diffusers' QuantoConfig loading leaves the weights' tensor wrappers on the meta device: the pipeline would put
    # its inputs there; from_pretrained moves them to their data's device)
    assert loaded.device.type == "cpu" and all(p.device.type == "cpu" for p in loaded.unet.parameters())
    return folder, loaded


@needs_quanto
def test_quanto_int8_all_layers_saves_and_loads_with_the_pipeline(tmp_path):
    from diffusers import DiffusionPipeline
    from optimum.quanto import QTensor

    pipe, inputs = tiny_pipeline(), unet_input()
    fp32_folder = tmp_path / "fp32"
    pipe.save_pretrained(fp32_folder)
    reference = unet_output(pipe, inputs)
    fp32_bytes = weight_bytes(pipe.unet)

    quantize_pipeline(pipe)
    quantized_out = unet_output(pipe, inputs)
    folder, loaded = save_roundtrip(pipe, tmp_path)

    # Every Conv2d and Linear holds int8 data and a float scale per output channel, in memory ...
    layers = {name: m for name, m in loaded.unet.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert len(layers) > 20
    for name, module in layers.items():
        assert isinstance(module.weight, QTensor), name
        assert module.weight._data.dtype == torch.int8, name
        assert module.weight._scale.shape[0] == module.weight.shape[0], name
    summary = quantization_summary(loaded.unet)
    assert summary["backend"] == "quanto" and summary["layers"] == "all"
    assert summary["int8_values"] > 0.95 * (summary["int8_values"] + summary["float_values"])
    assert weight_bytes(loaded.unet) < 0.3 * fp32_bytes
    # ... and on disk: int8 tensors in the safetensors file, no float copy of those weights.
    with safe_open(folder / WEIGHTS, "pt") as f:
        keys = set(f.keys())
        for name in layers:
            assert f.get_slice(f"{name}.weight._data").get_dtype() == "I8", name
            assert f"{name}.weight" not in keys, name
    assert (folder / WEIGHTS).stat().st_size < 0.45 * (fp32_folder / WEIGHTS).stat().st_size
    config = json.loads((folder / "unet" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "quanto" and config["weights_dtype"] == "int8"
    assert sorted(config["quantized_modules"]) == sorted(layers)

    # The loaded model computes what the quantized one did, close to fp32.
    out = unet_output(loaded, inputs)
    assert torch.equal(out, quantized_out)
    check_close(out, reference)
    images = loaded(inputs[2][:1], num_inference_steps=2, output_type="pt").images
    assert images.shape == (1, 3, 16, 16) and torch.isfinite(images).all()
    # diffusers' generic loader finds the package's class through the folder's module and loads the same weights.
    generic = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert torch.equal(unet_output(generic, inputs), quantized_out)
    # A quantized U-Net refuses a dtype cast (diffusers' rule for quantized models) instead of breaking its weights.
    with pytest.raises(ValueError, match="quantized"):
        loaded.unet.to(torch.float16)


@pytest.mark.parametrize("options", [
    pytest.param(dict(backend="torchao"), marks=needs_torchao, id="torchao-weight-only"),
    pytest.param(dict(backend="torchao", activations="int8"), marks=needs_torchao, id="torchao-dynamic-int8"),
    pytest.param(dict(backend="quanto", layers="linear"), marks=needs_quanto, id="quanto-diffusers-linear"),
])
def test_diffusers_routes_quantize_the_linear_layers_and_reload(tmp_path, options):
    pipe, inputs = tiny_pipeline(), unet_input()
    reference = unet_output(pipe, inputs)
    quantize_pipeline(pipe, **options)
    quantized_out = unet_output(pipe, inputs)
    folder, loaded = save_roundtrip(pipe, tmp_path)

    config = json.loads((folder / "unet" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == options["backend"] and "quantized_modules" not in config
    for name, module in loaded.unet.named_modules():
        if isinstance(module, torch.nn.Linear):
            data = getattr(module.weight, "qdata", getattr(module.weight, "_data", None))
            assert data is not None and data.dtype == torch.int8, name
        elif isinstance(module, torch.nn.Conv2d):  # diffusers' quantizers convert nn.Linear only
            assert type(module.weight) is torch.nn.Parameter and module.weight.dtype == torch.float32, name
    assert quantization_summary(loaded.unet)["layers"] == "linear"
    assert loaded.unet.dtype == torch.float32  # the float layers stay fp32 (not diffusers' torchao default, bf16)
    out = unet_output(loaded, inputs)
    assert torch.equal(out, quantized_out)
    check_close(out, reference)


def test_missing_backends_fail_in_one_line(tmp_path, monkeypatch):
    # A saved all-layer 8-bit folder (made by hand, so that this runs without optimum-quanto) ...
    pipe = tiny_pipeline()
    folder = tmp_path / "int8"
    pipe.save_pretrained(folder)
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"] = {"quant_method": "quanto", "weights_dtype": "int8",
                                     "modules_to_not_convert": None, "quantized_modules": ["conv_in"]}
    config_path.write_text(json.dumps(config))
    # ... and no backend importable.
    for module in ("optimum.quanto", "torchao"):
        monkeypatch.setitem(sys.modules, module, None)

    for call, hint in [
        (lambda: quantize_pipeline(tiny_pipeline()), "pip install 'gesco-diffusers[quant]'"),
        (lambda: quantize_pipeline(tiny_pipeline(), backend="torchao"), "pip install torchao"),
        (lambda: GescoPipeline.from_pretrained(folder), "pip install 'gesco-diffusers[quant]'"),
    ]:
        with pytest.raises(QuantizationBackendMissing) as error:
            call()
        message = str(error.value)
        assert hint in message and "\n" not in message and "not installed" in message, message


def test_bad_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown quantization backend 'int8'"):
        quantize_pipeline(tiny_pipeline(), backend="int8")
    with pytest.raises(ValueError, match="torchao backend quantizes Linear layers only"):
        quantize_pipeline(tiny_pipeline(), backend="torchao", layers="all")
    with pytest.raises(ValueError, match="calibration"):
        quantize_pipeline(tiny_pipeline(), backend="quanto", activations="int8")
    with pytest.raises(ValueError, match="layers must be one of"):
        quantize_pipeline(tiny_pipeline(), layers="conv")
    with pytest.raises(ValueError, match="safetensors only"):
        save_quantized(tiny_pipeline(), tmp_path / "x", safe_serialization=False)


@needs_quanto
def test_quanto_options_and_mismatched_folders(tmp_path):
    pipe = quantize_pipeline(tiny_pipeline(), exclude=["conv_in", "conv_out"])
    assert type(pipe.unet.conv_in.weight) is torch.nn.Parameter and type(pipe.unet.conv_out.weight) is torch.nn.Parameter
    with pytest.raises(ValueError, match="already quantized"):
        quantize_pipeline(pipe)
    with pytest.raises(ValueError, match="weights must be 'int8'"):
        quantize_pipeline(tiny_pipeline(), weights="int4")
    folder = tmp_path / "int8"
    save_quantized(pipe, folder)
    assert type(GescoPipeline.from_pretrained(folder).unet.conv_in.weight) is torch.nn.Parameter
    # A config that names a layer the weights file does not quantize is an error, not a half-loaded model.
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"]["quantized_modules"].append("conv_in")
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match the 8-bit U-Net"):
        GescoPipeline.from_pretrained(folder)
    config["quantization_config"]["quantized_modules"].append("no_such_layer")
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="mixes two models"):
        GescoPipeline.from_pretrained(folder)


def test_importing_the_module_loads_no_backend_and_no_torch():
    code = ("import sys, gesco_diffusers.quantization; "
            "print([m for m in ('torch', 'diffusers', 'optimum.quanto', 'torchao') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_benchmark_quick_prints_every_row(tmp_path):
    out = tmp_path / "quantization.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quantization.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| variant | weights file (MB) |" in proc.stdout
    rows = {row["variant"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"fp32", "fp16 (storage)", "quanto int8, all layers", "quanto int8, Linear only",
                         "torchao int8 weight-only", "torchao int8 dyn. act."}
    if HAS_QUANTO:
        row = rows["quanto int8, all layers"]
        assert row["file_mb"] < 0.5 * rows["fp32"]["file_mb"] and 0 < row["max_abs_diff"]
        assert 0 <= row["judge_miou"] <= 1 and row["cpu_s_per_forward"] > 0
