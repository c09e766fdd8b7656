"""The output folders of ``gesco evaluate`` and ``gesco generate``: images written whole, resumable reruns.

Every image is written atomically (:mod:`gesco_diffusers.utils.files`) as ``<folder>/<stem>.png``; a rerun skips the
images already there, and every KPI is computed from the PNG files, so an interrupted and resumed run gives the same
numbers as an uninterrupted one. Each folder also holds ``settings.json`` (what determines its images); a rerun with
other settings into the same folder is refused rather than mixing images.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import PIL.Image
import torch

from ..utils.files import atomic_save, atomic_write_text
from .data import EvaluationItem

if TYPE_CHECKING:  # the pipeline stack is heavy: only its type is needed here
    from ..pipelines import GescoPipeline

__all__ = [
    "check_folder",
    "load_images",
    "model_fingerprint",
    "module_fingerprint",
    "remove_stale_temporaries",
    "save_png",
    "write_settings",
]


def save_png(picture: np.ndarray, path: Path) -> None:
    """Write an 8-bit ``(H, W, 3)`` picture as ``path`` (a PNG), whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda tmp: PIL.Image.fromarray(picture).save(tmp, format="PNG"))


def _read_png(path: Path) -> torch.Tensor:
    with PIL.Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def load_images(folder: Path, items: Sequence[EvaluationItem]) -> torch.Tensor:
    """The items' images of ``folder`` as one ``(B, 3, H, W)`` float batch in ``[0, 1]``."""
    images = torch.stack([_read_png(folder / f"{item.stem}.png") for item in items]).float() / 255.0
    if tuple(images.shape[-2:]) != tuple(items[0].labels.shape):
        raise ValueError(
            f"{folder}: images are {tuple(images.shape[-2:])}, the evaluation size is {tuple(items[0].labels.shape)}"
        )
    return images


def _canonical(settings: dict) -> dict:
    """``settings`` as it reads back from JSON (tuples become lists), so stored and new settings compare equal."""
    return json.loads(json.dumps(settings, sort_keys=True))


def write_settings(folder: Path, settings: dict) -> None:
    """Write ``folder/settings.json`` atomically."""
    atomic_write_text(folder / "settings.json", json.dumps(_canonical(settings), indent=2, sort_keys=True) + "\n")


def check_folder(folder: Path, settings: dict) -> bool:
    """Check that an existing ``folder`` was made with ``settings`` (read only); return whether its ``settings.json``
    is still to be written."""
    path = folder / "settings.json"
    canonical = _canonical(settings)
    if not path.is_file():
        return True
    try:
        stored = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); write to another --out or delete that folder") from None
    if stored != canonical:
        changed = sorted(k for k in set(stored) | set(canonical) if stored.get(k) != canonical.get(k))
        if "model" in changed:
            raise ValueError(
                f"{folder} holds images of another model (fingerprint {stored.get('model')}, this model "
                f"{canonical.get('model')}); write to another --out or delete that folder"
            )
        raise ValueError(
            f"{folder} holds images made with other settings (differences: {changed}); write to another --out "
            "or delete that folder"
        )
    return False


def remove_stale_temporaries(folder: Path) -> None:
    """Hidden temporaries a killed writer left (``.<stem>.png.<random>.tmp.png``, see ``utils.files``); called by the
    main process while it holds the output folder's lock, so no writer of this launch is running yet."""
    for path in folder.glob(".*.tmp.png"):
        path.unlink(missing_ok=True)


def _hash_config(digest, config) -> None:
    # diffusers' bookkeeping keys ("_name_or_path", "_diffusers_version", "_use_default_values") do not change the
    # images, and "_use_default_values" lists a set in hash-seed order: hashing it made the fingerprint of the same
    # model differ between processes (a resumed run refused its own folder).
    settings = {key: value for key, value in dict(config).items() if not key.startswith("_")}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())


def _hash_weights(digest, module: torch.nn.Module) -> None:
    from ..quantization import stored_tensors  # an 8-bit weight is hashed through its int8 data and scales

    for key, weight in sorted(module.state_dict().items()):
        for name, tensor in stored_tensors(key, weight):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def model_fingerprint(pipe: "GescoPipeline") -> str:
    """A short hash of what determines the generated images: the U-Net's configuration, the bytes of every weight
    tensor with its name and dtype, and the scheduler's class and configuration."""
    digest = hashlib.sha1()
    _hash_config(digest, pipe.unet.config)
    _hash_config(digest, {"scheduler": type(pipe.scheduler).__name__, **dict(pipe.scheduler.config)})
    _hash_weights(digest, pipe.unet)
    return digest.hexdigest()[:16]


def module_fingerprint(module: torch.nn.Module) -> str:
    """The same kind of hash for a baseline or receiver network (a diffusers ``ModelMixin``): its configuration and
    weight bytes."""
    digest = hashlib.sha1()
    _hash_config(digest, module.config)
    _hash_weights(digest, module)
    return digest.hexdigest()[:16]
