"""Loading the evaluation networks from a local folder (or a Hub id when online), with errors that say what to do."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from ._inputs import check_batch_size

PathOrId = Union[str, os.PathLike]


def _looks_like_path(source: str) -> bool:
    # A Hub id is "name" or "org/name"; anything absolute, relative-dotted or deeper is meant as a folder.
    return os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1 or os.sep != "/" and os.sep in source


def load_pretrained(loader: Callable[..., Any], source: PathOrId, what: str, **kwargs: Any) -> Any:
    """Call ``loader(source, **kwargs)`` (a ``from_pretrained``), turning "not found" into a clear error.

    ``source`` is a local folder written by ``save_pretrained`` or a Hub id. Nothing is downloaded when the machine
    is offline (``HF_HUB_OFFLINE=1``); then a Hub id only works if it is already in the local Hugging Face cache.
    """
    source = os.fspath(source)
    expanded = os.path.expanduser(source)
    if os.path.exists(expanded):
        if not os.path.isdir(expanded):
            raise ValueError(f"{what}: '{source}' is a file; pass the folder written by save_pretrained")
        return loader(expanded, **kwargs)
    if _looks_like_path(source):
        raise FileNotFoundError(f"{what}: folder '{source}' does not exist")
    try:
        return loader(source, **kwargs)
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0")
        raise OSError(
            f"{what}: '{source}' is not a local folder and could not be loaded as a Hub id (HF_HUB_OFFLINE={offline}). "
            f"On a machine with internet run `huggingface-cli download {source} --local-dir DIR`, copy DIR here and "
            "pass its path."
        ) from error


def read_json(source: PathOrId, name: str) -> Optional[dict]:
    """The JSON file ``name`` of a local folder or of a Hub repository (local cache only when offline); ``None`` when
    the file does not exist. A file that exists but cannot be read is an error naming it, never a silent default."""
    folder = Path(os.path.expanduser(os.fspath(source)))
    if folder.is_dir():
        path = folder / name
        if not path.is_file():
            return None
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            path = Path(hf_hub_download(os.fspath(source), name))
        except (EntryNotFoundError, LocalEntryNotFoundError):  # absent (or not cached offline): optional side file
            return None
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a valid JSON file ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def resolve_device(device: Optional[Union[str, torch.device]]) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def prepare_model(model: torch.nn.Module, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Evaluation networks run in eval mode without gradients; fp16 checkpoints are upcast for CPU inference."""
    model = model.to(device=device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


class PretrainedVisionModel:
    """A ``transformers`` vision model plus its image processor, run batch-wise on ``[0, 1]`` images.

    Subclasses name the model class (``model_class``) and the processor used when a folder has no
    ``preprocessor_config.json`` (``default_processor``), both as attribute names of ``transformers``.
    """

    model_class: str = ""
    default_processor: str = ""
    what: str = "model"

    def __init__(self, model: torch.nn.Module, image_processor: Any, *, batch_size: int = 8):
        self.model = model
        self.image_processor = image_processor
        self.batch_size = check_batch_size(batch_size)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: PathOrId,
        *,
        image_processor: Any = None,
        batch_size: int = 8,
        device: Optional[Union[str, torch.device]] = None,
        dtype: torch.dtype = torch.float32,
    ):
        """Load the model (and its processor, unless given) from a ``save_pretrained`` folder or a Hub id."""
        import transformers

        model = load_pretrained(getattr(transformers, cls.model_class).from_pretrained, path_or_id, cls.what)
        if image_processor is None:
            if read_json(path_or_id, "preprocessor_config.json") is not None:
                image_processor = load_pretrained(
                    transformers.AutoImageProcessor.from_pretrained, path_or_id, f"{cls.what} image processor"
                )
            else:  # the processor's defaults are those of the original checkpoints
                image_processor = getattr(transformers, cls.default_processor)()
        return cls(prepare_model(model, resolve_device(device), dtype), image_processor, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _model_inputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Processor inputs of a ``[0, 1]`` float batch (already scaled, hence ``do_rescale=False``)."""
        inputs = self.image_processor(images=list(images), return_tensors="pt", do_rescale=False)
        dtype = next(self.model.parameters()).dtype
        return {k: v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device) for k, v in inputs.items()}

    def _chunks(self, images: torch.Tensor):
        return torch.split(images, self.batch_size)
