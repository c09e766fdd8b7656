"""Convert an official GESCO/SDM checkpoint file into a complete :class:`~gesco_diffusers.GescoPipeline` folder.

The folder holds the U-Net in safetensors (fp32, plus an ``fp16`` variant), the authors' sampler (1000-step ancestral
DDPM with the learned-range variance, ``official_ddpm_scheduler()``), the dataset preset and map encoding in
``semantic_config`` (with the authors' noise-table PSNR convention) and a model card. It is written to a temporary
folder beside the destination and renamed into place, so an interrupted conversion never leaves a half-written
pipeline behind.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import torch

from ..diffusion.schedulers import official_ddpm_scheduler
from ..pipelines import GescoPipeline
from ..presets import DATASET_PRESETS, DatasetPreset, check_image_size, get_dataset_preset
from ..utils.files import check_writable_dir, existing_file, staged_directory
from .official import (
    ConversionReport,
    OfficialUNetArchitecture,
    build_unet,
    convert_official_state_dict,
    infer_official_architecture,
)

PathLike = Union[str, os.PathLike]
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")


def load_official_checkpoint(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a flat official state dict (``ema_0.9999_*.pt``, ``model*.pt`` or a ``.safetensors`` file).

    ``.pt`` files are read with ``torch.load(weights_only=True)``: tensors and containers only, never arbitrary
    unpickling.
    """
    path = existing_file(path, "checkpoint", "the checkpoint file (.pt, .pth, .safetensors)")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"checkpoint {path.name!r}: expected one of {CHECKPOINT_SUFFIXES}")
    try:
        state_dict = _read_checkpoint_file(path)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):
            raise ValueError(f"checkpoint {path.name!r} is not a readable PyTorch checkpoint "
                             f"({_last_line(err)})") from err
        raise ValueError(f"checkpoint {path.name!r} holds objects other than tensors and containers; refusing to "
                         f"unpickle them (weights_only=True): {_last_line(err)}") from err
    except (OSError, MemoryError):
        raise
    except Exception as err:  # torch/safetensors report a foreign or truncated file as KeyError, EOFError, ...
        raise ValueError(f"checkpoint {path.name!r} is not a readable {path.suffix} checkpoint "
                         f"({type(err).__name__}: {_last_line(err)})") from err
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise TypeError(f"checkpoint {path.name!r} holds a {type(state_dict).__name__}, not a non-empty flat state "
                        "dict (dict of tensor names to tensors)")
    bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise TypeError(f"checkpoint {path.name!r} is not a flat state dict: entries {bad[:5]} are not tensors "
                        "(a training-state wrapper? pass the model/EMA state dict itself)")
    return dict(state_dict)


def _read_checkpoint_file(path: Path):
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _last_line(err: BaseException) -> str:
    """The informative line of a multi-line library error (torch puts the reason last)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = next((line for line in lines if "Unsupported global" in line), lines[-1] if lines else "")
    return reason or type(err).__name__


def dataset_for_architecture(arch: OfficialUNetArchitecture, dataset: Union[str, DatasetPreset, None] = None
                             ) -> DatasetPreset:
    """The dataset preset of a checkpoint: ``dataset`` if given (checked against C), else inferred from C
    (36 -> Cityscapes, 184 -> COCO-Stuff, 151 -> ADE20K)."""
    C = arch.segmap_channels
    if dataset is not None:
        preset = get_dataset_preset(dataset)
        if arch.map_encoding == "one_hot" and preset.map_channels != C:
            raise ValueError(f"the checkpoint's SPADE layers read C = {C} map channels, but dataset {preset.name!r} "
                             f"has {preset.map_channels} ({preset.num_classes} classes"
                             f"{' + edges' if preset.use_instance_edges else ''})")
        return preset
    if arch.map_encoding == "label_index_and_edges":
        raise ValueError(f"the checkpoint reads a {C}-channel [label index, edge] map (trained with the authors' "
                         "one_hot_label=False default): the dataset cannot be inferred, pass dataset= / --dataset")
    matches = [p for p in DATASET_PRESETS.values() if p.map_channels == C]
    if len(matches) != 1:
        known = {p.name: p.map_channels for p in DATASET_PRESETS.values()}
        raise ValueError(f"cannot infer the dataset from C = {C} map channels (known: {known}); pass dataset= / "
                         "--classes classes.json (any class count)")
    return matches[0]


def sha256_of(path: PathLike, chunk_size: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _check_output_dir(output_dir: Path, checkpoint: Path, overwrite: bool) -> None:
    """Refuse outputs whose replacement would destroy something else: the input checkpoint (inside the folder that
    ``--overwrite`` replaces) or the current working directory (a folder cannot be renamed while it is in use)."""
    target, source, cwd = output_dir.resolve(), checkpoint.resolve(), Path.cwd().resolve()
    if target == source or target in source.parents:
        raise ValueError(f"output folder {str(output_dir)!r} contains the input checkpoint {str(checkpoint)!r}: "
                         "choose an output folder that does not hold the checkpoint")
    if target == cwd or target in cwd.parents:
        raise ValueError(f"output folder {str(output_dir)!r} is the current directory or one of its parents: "
                         "choose a new folder, e.g. ./converted")
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"output {str(output_dir)!r} exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {str(output_dir)!r} is not empty; pass overwrite=True / --overwrite "
                              "to replace it")
    # The folder is written beside the destination and renamed into place: its parent must take new entries.
    check_writable_dir(target.parent, "the output folder's parent")


def _check_finite(state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{what} has NaN/inf values in {len(bad)} tensors: {bad[:10]}")


def _variance_channels_trained(unet) -> bool:
    """Whether the learned-variance outputs have non-zero weights. GESCO's loss is the epsilon MSE only, so these
    zero-initialised weights never move (reference doc 5); SDM's hybrid loss trains them."""
    start = unet.config.in_channels
    return bool(unet.conv_out.weight[start:].any() or unet.conv_out.bias[start:].any())


@dataclass
class ConvertedCheckpoint:
    """Result of :func:`convert_official_checkpoint`."""

    path: Path
    architecture: OfficialUNetArchitecture
    report: ConversionReport
    dataset: DatasetPreset
    checkpoint_sha256: str


def convert_official_checkpoint(
    checkpoint: PathLike,
    output_dir: PathLike,
    *,
    dataset: Union[str, DatasetPreset, None] = None,
    num_head_channels: int = 64,
    guidance_scale: Optional[float] = None,
    sample_size: Optional[Sequence[int]] = None,
    fp16_variant: bool = True,
    overwrite: bool = False,
    repo_id: Optional[str] = None,
    verbose: bool = False,
    print_fn: Optional[Callable[[str], None]] = print,
) -> ConvertedCheckpoint:
    """Convert the authors' checkpoint into a :class:`GescoPipeline` folder (see the module docstring).

    Args:
        checkpoint: ``ema_0.9999_*.pt`` / ``model*.pt`` / ``.safetensors`` official state dict.
        output_dir: destination folder (must be absent or empty unless ``overwrite``).
        dataset: dataset preset name or ``classes.json`` file; default: inferred from the map channels C (required for 2-channel
            ``one_hot_label=False`` checkpoints).
        num_head_channels: channels per attention head (``--num_head_channels``, 64 in the official commands).
        guidance_scale: classifier-free guidance stored with the pipeline (default: the dataset's, 2 for Cityscapes,
            2.5 for COCO-Stuff/ADE20K, as in the authors' README).
        sample_size: default ``(height, width)`` of generated images (default: the dataset's resolution).
        fp16_variant: also write ``unet/diffusion_pytorch_model.fp16.safetensors``.
        overwrite: replace a non-empty ``output_dir``.
        repo_id: the Hub repository the folder is meant for (used in the model card's usage snippet).
        verbose: print one line per mapped tensor.
        print_fn: where the mapping summary goes (``None``: silent).
    """
    from ..hub import write_model_card

    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    _check_output_dir(output_dir, checkpoint, overwrite)
    # The options first: reading the checkpoint (gigabytes) must not come before a typo is named.
    requested = get_dataset_preset(dataset) if dataset is not None else None  # a bad classes.json fails here
    if isinstance(num_head_channels, bool) or not isinstance(num_head_channels, int) or num_head_channels < 1:
        raise ValueError("num_head_channels / --num-head-channels must be a positive integer, "
                         f"got {num_head_channels!r}")
    if guidance_scale is not None and not (math.isfinite(guidance_scale) and guidance_scale > 0):
        raise ValueError(f"guidance_scale / --guidance-scale must be a finite number > 0, got {guidance_scale!r}")
    if sample_size is not None:
        sample_size = check_image_size(tuple(sample_size), "sample_size / --sample-size")
    state_dict = load_official_checkpoint(checkpoint)
    arch = infer_official_architecture(state_dict, num_head_channels)
    preset = dataset_for_architecture(arch, requested)
    guidance = preset.guidance_scale if guidance_scale is None else float(guidance_scale)

    unet = build_unet(arch, sample_size=tuple(sample_size or preset.resolution))
    converted, report = convert_official_state_dict(state_dict, arch, unet.state_dict())
    _check_finite(converted, f"checkpoint {checkpoint.name!r}")
    unet.load_state_dict(converted, strict=True)
    if print_fn is not None:
        print_fn(report.summary(verbose=verbose))
    variance_trained = _variance_channels_trained(unet) if arch.learn_sigma else None
    del state_dict, converted

    scheduler = official_ddpm_scheduler(**({} if arch.learn_sigma else {"variance_type": "fixed_large"}))
    semantic_config = {"dataset": preset.to_dict(), "map_encoding": arch.map_encoding,
                       "psnr_convention": "official_table", "guidance_scale": guidance}
    pipe = GescoPipeline(unet=unet, scheduler=scheduler, semantic_config=semantic_config)
    digest = sha256_of(checkpoint)

    with staged_directory(output_dir) as tmp:  # committed whole at the end of the block, or deleted
        pipe.save_pretrained(tmp, safe_serialization=True)
        if fp16_variant:
            half = copy.deepcopy(unet).half()
            _check_finite(half.state_dict(), "the fp16 copy (values beyond the fp16 range)")
            half.save_pretrained(tmp / "unet", variant="fp16", safe_serialization=True)
            del half
        write_model_card(
            tmp, kind="converted", repo_id=repo_id,
            conversion=dict(
                checkpoint_name=checkpoint.name, checkpoint_sha256=digest, source=arch.source,
                architecture=arch.describe(), summary=report.summary(),
                mapped_tensors=len(report.mapped), model_tensors=report.num_model_tensors,
                mapped_parameters=report.mapped_parameters, dropped_tensors=len(report.dropped),
                dropped_parameters=report.dropped_parameters, num_head_channels=arch.num_head_channels,
                fp16_variant=fp16_variant, variance_channels_trained=variance_trained,
            ),
        )
    if print_fn is not None:
        print_fn(f"wrote {output_dir}")
    return ConvertedCheckpoint(path=output_dir, architecture=arch, report=report, dataset=preset,
                               checkpoint_sha256=digest)
