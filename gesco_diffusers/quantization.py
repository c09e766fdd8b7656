"""8-bit weights for the GESCO U-Net (the Q-GESCO row, issue #18): quantize, save and load with the pipeline.

    from gesco_diffusers import GescoPipeline
    from gesco_diffusers.quantization import quantize_pipeline, save_quantized

    pipe = quantize_pipeline(GescoPipeline.from_pretrained("gesco_diffusers/assets/demo/camvid"))   # optimum-quanto
    save_quantized(pipe, "camvid-int8")            # safetensors + JSON, like any pipeline folder
    pipe = GescoPipeline.from_pretrained("camvid-int8")    # 8-bit again; nothing else to call

Backends (both are quantization backends of diffusers; choose with ``backend=``):

* ``"quanto"`` (default, ``pip install 'gesco-diffusers[quant]'``): optimum-quanto's int8 weights (symmetric, one
  scale per output channel) in **every** ``Conv2d`` and ``Linear`` of the U-Net. 87 % of the demo U-Net's weights are
  convolutions, which diffusers' own quantizers leave in float (they convert ``nn.Linear`` only), so this route
  quantizes with optimum-quanto directly and stores what it produces -- the int8 ``weight._data`` and float
  ``weight._scale`` of each layer, plain tensors -- through diffusers' ``save_pretrained`` (safetensors). The U-Net's
  ``config.json`` records ``quantization_config`` as diffusers does (``quant_method``, ``weights_dtype``), plus the
  list of quantized layers, from which :meth:`SemanticUNet2DModel.from_pretrained` rebuilds the model (the layout of
  optimum-quanto's ``requantize``). Weights are dequantized layer by layer during the forward: the weights take a
  quarter of the memory, the arithmetic stays float.
* ``"torchao"`` (``pip install torchao``): diffusers' ``TorchAoConfig`` with torchao's ``Int8WeightOnlyConfig`` or,
  with ``activations="int8"``, ``Int8DynamicActivationInt8WeightConfig``. Entirely diffusers' own route (quantized
  while loading, saved with torchao's safetensors flattening, loaded by diffusers), hence ``Linear`` layers only:
  13 % of this U-Net's weights (torchao's int8 tensor has no convolution either).
* ``"quanto"`` with ``layers="linear"``: diffusers' own ``QuantoConfig`` route, ``Linear`` only, for comparison
  (diffusers marks it deprecated).

``benchmarks/quantization.py`` measures all of them side by side (size, memory, CPU time, output error, judge mIoU).
This module imports neither torch nor a backend until a function runs.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

if TYPE_CHECKING:  # heavy: imported where used
    import torch

    from .models import SemanticUNet2DModel
    from .pipelines import GescoPipeline

__all__ = [
    "BACKENDS",
    "QuantizationBackendMissing",
    "is_quantized",
    "load_quantized",
    "quantization_summary",
    "quantize_pipeline",
    "quantize_unet",
    "require_backend",
    "save_quantized",
    "stored_tensors",
    "weight_bytes",
]

#: Backend name -> (module to import, pip requirement, install hint).
BACKENDS = {
    "quanto": ("optimum.quanto", "optimum-quanto", "pip install 'gesco-diffusers[quant]'"),
    "torchao": ("torchao", "torchao", "pip install torchao"),
}
#: Which layers a backend quantizes: ``"all"`` (every Conv2d and Linear) or ``"linear"`` (diffusers' quantizers).
LAYERS = ("all", "linear")
#: ``quantization_config`` key that marks the all-layer optimum-quanto layout (absent from diffusers' own configs).
QUANTIZED_MODULES_KEY = "quantized_modules"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
#: Keyword arguments of ``from_pretrained`` that locate the files (passed on to ``load_config``/the download).
_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")


class QuantizationBackendMissing(ImportError):
    """The quantization backend a call (or a saved U-Net) needs is not installed."""


def require_backend(backend: str, what: str = "quantization") -> Any:
    """The backend's module, or a one-line :class:`QuantizationBackendMissing` saying how to install it."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown quantization backend {backend!r}; choose one of {sorted(BACKENDS)}")
    module, package, hint = BACKENDS[backend]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise QuantizationBackendMissing(
            f"{what} with the {backend!r} backend needs {package}, which is not installed: {hint}") from None


# -- what a quantized model holds ------------------------------------------------------------------------------------


def stored_tensors(name: str, tensor: "torch.Tensor") -> Iterator[tuple[str, "torch.Tensor"]]:
    """``(name, plain tensor)`` for what a weight is made of: the tensor itself, or the inner tensors of a quantized
    tensor subclass (torchao's ``Int8Tensor``, optimum-quanto's ``QTensor``: int8 data, scales), recursively."""
    import torch

    if type(tensor) in (torch.Tensor, torch.nn.Parameter) or not hasattr(tensor, "__tensor_flatten__"):
        yield name, tensor
        return
    inner_names, _ = tensor.__tensor_flatten__()
    for inner in inner_names:
        value = getattr(tensor, inner)
        if value is not None:
            yield from stored_tensors(f"{name}.{inner}", value)


def _stored_state(module: "torch.nn.Module") -> Iterator[tuple[str, "torch.Tensor"]]:
    for name, tensor in module.state_dict().items():
        yield from stored_tensors(name, tensor)


def weight_bytes(module: "torch.nn.Module") -> int:
    """Bytes of the module's state (parameters and buffers) as held in memory: quantized weights count their int8
    data and scales, not the float tensor they stand for."""
    return sum(t.numel() * t.element_size() for _, t in _stored_state(module))


def is_quantized(unet: "torch.nn.Module") -> bool:
    return bool(getattr(unet, "is_quantized", False)) or _quantization_config(unet) is not None


def _quantization_config(unet) -> Optional[dict]:
    config = getattr(unet, "config", None)
    qcfg = config.get("quantization_config") if config is not None else None
    if qcfg is not None and not isinstance(qcfg, dict):
        qcfg = qcfg.to_dict()
    return qcfg


def quantization_summary(unet: "torch.nn.Module") -> dict[str, Any]:
    """What is quantized: the backend, the parameters held in 8 bits and in float, and the bytes in memory."""
    import torch

    int8 = floating = 0
    for _, tensor in _stored_state(unet):
        if tensor.dtype in (torch.int8, torch.uint8):
            int8 += tensor.numel()
        elif tensor.is_floating_point():
            floating += tensor.numel()
    qcfg = _quantization_config(unet) or {}
    method = qcfg.get("quant_method")
    layers = None if method is None else ("all" if QUANTIZED_MODULES_KEY in qcfg else "linear")
    return {"backend": None if method is None else str(getattr(method, "value", method)), "layers": layers,
            "int8_values": int8, "float_values": floating, "bytes": weight_bytes(unet)}


# -- quantizing --------------------------------------------------------------------------------------------------


def _check_layers(backend: str, layers: Optional[str], activations: Optional[str]) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown quantization backend {backend!r}; choose one of {sorted(BACKENDS)}")
    if layers is None:
        layers = "all" if backend == "quanto" else "linear"
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {LAYERS}, got {layers!r}")
    if backend == "torchao" and layers == "all":
        raise ValueError("the torchao backend quantizes Linear layers only (diffusers' torchao quantizer converts "
                         "nn.Linear, and torchao's int8 tensor has no convolution): use layers='linear' or "
                         "backend='quanto'")
    if activations not in (None, "int8"):
        raise ValueError(f"activations must be None or 'int8', got {activations!r}")
    if activations is not None and backend != "torchao":
        raise ValueError("int8 activations are the torchao backend's (dynamic, no calibration); optimum-quanto's need "
                         "a calibration pass and are not supported here")
    return layers


def _quanto_targets(unet: "torch.nn.Module", exclude: Sequence[str]) -> list[str]:
    """Names of the Conv2d and Linear layers to quantize (``exclude``: names or fnmatch patterns to keep float)."""
    from fnmatch import fnmatch

    from torch import nn

    return [name for name, module in unet.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear)) and not any(fnmatch(name, p) for p in exclude)]


def _quantize_quanto_all(unet: "SemanticUNet2DModel", weights: str, exclude: Sequence[str]) -> "SemanticUNet2DModel":
    quanto = require_backend("quanto")
    targets = _quanto_targets(unet, exclude)
    if not targets:
        raise ValueError("nothing to quantize: exclude leaves no Conv2d or Linear layer")
    quanto.quantize(unet, weights=_quanto_qtype(quanto, weights), include=targets)
    quanto.freeze(unet)
    _mark_quanto(unet, weights, targets)
    return unet


def _quanto_qtype(quanto, weights: str):
    if weights != "int8":
        raise ValueError(f"weights must be 'int8', got {weights!r}")
    return quanto.qint8


def _mark_quanto(unet, weights: str, targets: Sequence[str]) -> None:
    """Record the quantization as diffusers does (``config.quantization_config``; ``is_quantized`` and
    ``quantization_method``, which make diffusers refuse dtype casts of the model)."""
    unet.register_to_config(quantization_config={
        "quant_method": "quanto", "weights_dtype": weights, "modules_to_not_convert": None,
        QUANTIZED_MODULES_KEY: list(targets),
    })
    unet.is_quantized = True
    unet.quantization_method = "quanto"


def _diffusers_config(backend: str, weights: str, activations: Optional[str], exclude: Sequence[str]):
    """The diffusers quantization config of the Linear-only routes."""
    if weights != "int8":
        raise ValueError(f"weights must be 'int8', got {weights!r}")
    not_convert = list(exclude) or None
    if backend == "torchao":
        require_backend("torchao")
        from diffusers import TorchAoConfig
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

        quant_type = Int8WeightOnlyConfig() if activations is None else Int8DynamicActivationInt8WeightConfig()
        return TorchAoConfig(quant_type, modules_to_not_convert=not_convert)
    require_backend("quanto")
    from diffusers import QuantoConfig

    return QuantoConfig(weights_dtype=weights, modules_to_not_convert=not_convert)


def _quantize_with_diffusers(unet: "SemanticUNet2DModel", qconfig) -> "SemanticUNet2DModel":
    """diffusers' own route: the float U-Net written to a temporary folder and loaded back with ``qconfig``."""
    from diffusers.utils import logging as diffusers_logging

    name = unet.config.get("_name_or_path")
    dtype = unet.dtype
    with tempfile.TemporaryDirectory(prefix="gesco-quantize-") as tmp:
        unet.save_pretrained(tmp)
        verbosity = diffusers_logging.get_verbosity()
        # (torchao's quantizer warns that only bf16 is supported for integer types: fp32 works, it is what we run)
        diffusers_logging.set_verbosity_error()
        try:
            quantized = type(unet).from_pretrained(tmp, quantization_config=qconfig, torch_dtype=dtype)
        finally:
            diffusers_logging.set_verbosity(verbosity)
    quantized.register_to_config(_name_or_path=name)
    return quantized.to(unet.device)


def quantize_unet(
    unet: "SemanticUNet2DModel",
    backend: str = "quanto",
    *,
    weights: str = "int8",
    activations: Optional[str] = None,
    layers: Optional[str] = None,
    exclude: Sequence[str] = (),
) -> "SemanticUNet2DModel":
    """An 8-bit copy of ``unet`` (the ``quanto``/``all`` route quantizes ``unet`` itself, in place).

    Args:
        backend: ``"quanto"`` (optimum-quanto) or ``"torchao"``.
        weights: ``"int8"``.
        activations: ``None`` (weight-only) or ``"int8"`` (torchao's dynamic int8 activations).
        layers: ``"all"`` (every Conv2d and Linear; default for quanto) or ``"linear"`` (diffusers' own route,
            Linear layers only; the only choice for torchao).
        exclude: layer names (or fnmatch patterns, for ``layers="all"``) kept in float.
    """
    if is_quantized(unet):
        raise ValueError("the U-Net is already quantized")
    layers = _check_layers(backend, layers, activations)
    if backend == "quanto" and layers == "all":
        return _quantize_quanto_all(unet, weights, tuple(exclude))
    return _quantize_with_diffusers(unet, _diffusers_config(backend, weights, activations, tuple(exclude)))


def quantize_pipeline(pipe: "GescoPipeline", backend: str = "quanto", **options) -> "GescoPipeline":
    """Quantize the pipeline's U-Net to 8-bit weights (see :func:`quantize_unet` for ``options``); returns the
    pipeline. Save it with :func:`save_quantized` (or ``pipe.save_pretrained``); ``GescoPipeline.from_pretrained``
    loads it back quantized."""
    unet = quantize_unet(pipe.unet, backend, **options)
    if unet is not pipe.unet:
        pipe.register_modules(unet=unet)
    return pipe


#: Files a quantized pipeline folder must never hold: pickles (``torch.save``) instead of safetensors.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def save_quantized(pipe: "GescoPipeline", folder: Union[str, os.PathLike], **kwargs) -> str:
    """``pipe.save_pretrained(folder)`` with safetensors, then a check that no pickle file was written."""
    if kwargs.get("safe_serialization") is False:
        raise ValueError("quantized pipelines are saved as safetensors only (safe_serialization=False writes pickles)")
    pipe.save_pretrained(folder, safe_serialization=True, **kwargs)
    pickles = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
               if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise RuntimeError(f"saving wrote pickle files, which a quantized pipeline must not hold: {pickles}")
    return os.fspath(folder)


def load_quantized(folder: Union[str, os.PathLike], **kwargs) -> "GescoPipeline":
    """``GescoPipeline.from_pretrained(folder)`` (a quantized folder needs nothing more; this is for symmetry)."""
    from .pipelines import GescoPipeline

    return GescoPipeline.from_pretrained(folder, **kwargs)


# -- loading (called by SemanticUNet2DModel.from_pretrained) -----------------------------------------------------


def prepare_loading(cls, pretrained_model_name_or_path, kwargs: dict) -> Optional["SemanticUNet2DModel"]:
    """For ``SemanticUNet2DModel.from_pretrained``: the U-Net when its folder holds the all-layer optimum-quanto
    layout (diffusers cannot rebuild it); ``None`` for any other folder, after defaulting ``torch_dtype`` to fp32 for
    a torchao-quantized one (diffusers' default there, bf16, would change the float layers)."""
    try:
        config = cls.load_config(pretrained_model_name_or_path,
                                 **{k: kwargs[k] for k in (*_HUB_KWARGS, "dduf_entries") if kwargs.get(k) is not None})
    except (OSError, ValueError):
        return None  # not found / not a config: diffusers' own loading reports it
    qcfg = config.get("quantization_config")
    if not isinstance(qcfg, dict):
        return None
    if qcfg.get("quant_method") == "torchao" and kwargs.get("torch_dtype") is None and kwargs.get("dtype") is None:
        kwargs["torch_dtype"] = _torch().float32
    if QUANTIZED_MODULES_KEY not in qcfg:
        return None
    return _load_quanto_all(cls, pretrained_model_name_or_path, config, kwargs)


def finish_loading(model: "SemanticUNet2DModel") -> "SemanticUNet2DModel":
    """For ``SemanticUNet2DModel.from_pretrained``, after diffusers loaded a folder: diffusers' pre-quantized quanto
    loading (``QuantoConfig``) fills the int8 data and scales of each quantized weight but leaves the weight's tensor
    wrapper on the meta device, so ``model.device`` says ``meta`` and a pipeline puts its inputs there. Moving the
    model to the device of its data rebuilds the wrappers."""
    for name, param in model.named_parameters():
        if param.device.type == "meta":
            devices = {t.device for _, t in stored_tensors(name, param) if t.device.type != "meta"}
            if len(devices) == 1:
                return model.to(devices.pop())
    return model


def _torch():
    import torch

    return torch


def _load_quanto_all(cls, path, config: dict, kwargs: dict) -> "SemanticUNet2DModel":
    quanto = require_backend("quanto", what="loading this 8-bit U-Net")
    import torch
    from accelerate import init_empty_weights
    from diffusers.utils import _get_model_file
    from safetensors.torch import load_file

    qcfg = config["quantization_config"]
    if kwargs.get("quantization_config") is not None:
        raise ValueError("this U-Net is already quantized (its config.json has a quantization_config): load it "
                         "without quantization_config")
    if kwargs.get("variant") is not None or kwargs.get("use_safetensors") is False:
        raise ValueError("an 8-bit U-Net is stored as one diffusion_pytorch_model.safetensors (no variant, no pickle)")
    dtype = kwargs.get("torch_dtype") or kwargs.get("dtype")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    hub = {k: kwargs[k] for k in _HUB_KWARGS if kwargs.get(k) is not None}
    weights_file = _get_model_file(path, weights_name=WEIGHTS_NAME, **hub)
    state_dict = load_file(weights_file)
    if dtype is not None:  # float parts (scales, biases, norms) in the asked dtype; the int8 data stays
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}

    with init_empty_weights():
        model = cls.from_config({k: v for k, v in config.items() if k != "quantization_config"})
    targets = list(qcfg[QUANTIZED_MODULES_KEY])
    modules = dict(model.named_modules())
    unknown = [name for name in targets if not isinstance(modules.get(name), (torch.nn.Conv2d, torch.nn.Linear))]
    if unknown:
        raise ValueError(f"quantization_config lists {len(unknown)} layer(s) that are not Conv2d/Linear layers of "
                         f"this U-Net, first {unknown[0]!r}: the folder mixes two models")
    quanto.quantize(model, weights=_quanto_qtype(quanto, qcfg.get("weights_dtype", "int8")), include=targets)
    result = model.load_state_dict(state_dict, strict=False, assign=True)
    missing = [name for name, tensor in _stored_state(model) if tensor.device.type == "meta"]
    missing += [f"{name}.weight" for name in targets if not isinstance(model.get_submodule(name).weight, quanto.QTensor)]
    if missing or result.unexpected_keys:
        raise ValueError(f"{WEIGHTS_NAME} does not match the 8-bit U-Net of config.json: "
                         f"{len(missing)} missing tensor(s) {missing[:3]}, "
                         f"{len(result.unexpected_keys)} unexpected {result.unexpected_keys[:3]}")
    _mark_quanto(model, qcfg.get("weights_dtype", "int8"), targets)
    model.register_to_config(_name_or_path=os.fspath(path))
    device_map = kwargs.get("device_map")
    if isinstance(device_map, dict):
        raise ValueError("an 8-bit U-Net loads on one device: pass device_map as a device name, or none")
    if device_map is not None:
        model.to(device_map)
    return model.eval()
