"""Training checkpoints without pickle, never half-written: ``checkpoint-<step>`` folders committed by an atomic rename.

Why not ``accelerator.save_state``: Accelerate stores the optimizer, the LR scheduler, the RNG states and every object
registered with ``register_for_checkpointing`` (the EMA) as pickles, and ``load_state`` unpickles the registered ones
(``custom_checkpoint_<i>.pkl``) with torch.load's weights-only guard off: resuming from a folder someone else could
write ran any code planted there. Here a checkpoint holds only two formats that cannot run code when read:

* ``<name>.safetensors``: tensors (model weights; the optimizer's moments; the EMA's shadow parameters);
* ``<name>.json``: everything else, with tensors replaced by references into the ``.safetensors`` file of the same
  name (optimizer ``param_groups`` and step counters, LR scheduler state, EMA decay and step, ...);
* ``checkpoint.json``: what the folder holds, the step, the caller's ``extra`` values.

Random-number states are not saved: runs here draw all noise from generators seeded by the seed and the step counters
(:func:`gesco_diffusers.data.seeded_generator`), so a resumed run repeats the uninterrupted one without them. A
script that draws from the global RNG during training would not resume exactly.

``save_checkpoint`` writes into a hidden temporary folder ``.checkpoint-<step>.tmp`` and only then renames it to
``checkpoint-<step>``. A run killed while saving leaves at most the temporary folder, which :func:`list_checkpoints`
(and so ``--resume_from_checkpoint latest``) never considers, and which the next save of that step replaces.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..utils.files import commit_directory

__all__ = [
    "CHECKPOINT_PREFIX",
    "RUN_FILES",
    "check_output_dir",
    "checkpoint_step",
    "commit_directory",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "read_state",
    "resolve_checkpoint",
    "rotate_checkpoints",
    "save_checkpoint",
    "temporary_checkpoint_dir",
    "write_state",
]

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
#: What ``checkpoint.json`` and every ``<name>.json`` state file say they are.
STATE_FORMAT = "gesco-state/1"
_META = "checkpoint"
_SCALER = "grad_scaler"
_RESERVED = (_META, _SCALER)
_VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Tags of the JSON encoding (a dict with one of these as its only key is not a plain dict).
_TAGS = ("__tensor__", "__ndarray__", "__tuple__", "__items__")
#: What a training run writes into its ``--output_dir`` (glob patterns), removed by ``--overwrite_output_dir``.
RUN_FILES = ("checkpoint-*", ".checkpoint-*", "train_log.jsonl", "logs", "validation", "model_index.json", "unet",
             "scheduler")

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint folders


def checkpoint_step(path: PathLike) -> Optional[int]:
    """The step of a committed checkpoint folder name (``checkpoint-1200`` -> 1200), ``None`` for anything else."""
    match = _CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: PathLike) -> list[Path]:
    """Committed checkpoint folders in ``output_dir``, oldest (smallest step) first; temporary folders are ignored."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(output_dir: PathLike) -> Optional[Path]:
    """The committed checkpoint with the largest step, or ``None``."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_checkpoint(spec: Optional[str], output_dir: PathLike) -> Optional[Path]:
    """``--resume_from_checkpoint``: ``None`` -> ``None``; ``"latest"`` -> newest in ``output_dir`` (``None`` if there
    is none, so a first run can pass ``latest`` too); otherwise a folder named ``checkpoint-<step>`` that must exist."""
    if spec is None:
        return None
    if spec == "latest":
        return latest_checkpoint(output_dir)
    path = Path(spec)
    if not path.is_dir() and (Path(output_dir) / spec).is_dir():
        path = Path(output_dir) / spec
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {spec}")
    if checkpoint_step(path) is None:
        raise ValueError(f"{path} is not a committed checkpoint folder (expected a name like checkpoint-1000)")
    return path


def _launcher_rank_is_main() -> bool:
    """Whether this is the main process, from the variables ``accelerate launch`` / ``torchrun`` set (before an
    ``Accelerator`` exists)."""
    return int(os.environ.get("RANK", "0")) == 0


def check_output_dir(output_dir: PathLike, resume_from_checkpoint: Optional[str], overwrite_output_dir: bool, *,
                     is_main_process: Optional[bool] = None, run_files: Sequence[str] = RUN_FILES) -> list[Path]:
    """Make sure a run never writes over another run's files unless asked to; return what was removed.

    * an absent or empty ``output_dir``: a new run, nothing to do;
    * a non-empty one: refused, unless ``resume_from_checkpoint`` (continue that run; ``"latest"`` needs a committed
      checkpoint there, otherwise nothing would be resumed and the run's log and pipeline would be overwritten) or
      ``overwrite_output_dir``, which removes the old run's files (``run_files``, glob patterns: checkpoints, log,
      tensorboard logs, validation images, pipeline) and keeps anything else.

    Every process may call it; only the main one (``is_main_process``; default: ``RANK`` of the launcher) removes.
    Call it before anything is written into ``output_dir`` and let the processes wait for each other afterwards
    (``accelerator.wait_for_everyone()``), so that no process inspects the folder after another has started writing.
    """
    output_dir = Path(output_dir)
    if os.path.lexists(output_dir) and not output_dir.is_dir():
        raise FileExistsError(f"--output_dir {str(output_dir)!r} exists and is not a folder")
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return []
    if overwrite_output_dir and resume_from_checkpoint is not None:
        raise ValueError("--overwrite_output_dir and --resume_from_checkpoint contradict each other: pass one")
    if resume_from_checkpoint == "latest" and latest_checkpoint(output_dir) is None:
        raise FileExistsError(f"--output_dir {str(output_dir)!r} holds files but no committed checkpoint to resume "
                              "from; pass --overwrite_output_dir to start a new run there, or choose another folder")
    if resume_from_checkpoint is not None:
        return []
    if not overwrite_output_dir:
        raise FileExistsError(f"--output_dir {str(output_dir)!r} already holds files (an earlier run?): pass "
                              "--resume_from_checkpoint latest to continue it, or --overwrite_output_dir to delete its "
                              "checkpoints, log and pipeline and start over")
    if not (_launcher_rank_is_main() if is_main_process is None else is_main_process):
        return []
    removed = sorted({path for pattern in run_files for path in output_dir.glob(pattern)})
    for path in removed:
        logger.warning(f"--overwrite_output_dir: removing {path}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return removed


def temporary_checkpoint_dir(output_dir: PathLike, step: int) -> Path:
    """Where the state of ``step`` is written before being committed (hidden, never matched as a checkpoint)."""
    return Path(output_dir) / f".{CHECKPOINT_PREFIX}{step}.tmp"


def rotate_checkpoints(output_dir: PathLike, total_limit: Optional[int], reserve: int = 0) -> list[Path]:
    """Delete the oldest committed checkpoints so that at most ``total_limit - reserve`` remain; return the removed."""
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError(f"checkpoints_total_limit must be >= 1, got {total_limit}")
    checkpoints = list_checkpoints(output_dir)
    excess = len(checkpoints) - (total_limit - reserve)
    removed = checkpoints[: max(0, excess)]
    for path in removed:
        shutil.rmtree(path)
    return removed


# ----------------------------------------------------------------------------------------------------------------------
# State files: safetensors + JSON


class _Encoder:
    """Splits a nested state (dicts, lists, tuples, numbers, strings, tensors) into JSON and a flat tensor dict."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._storages: set[int] = set()

    def encode(self, value: Any, path: str) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if torch.is_tensor(value):
            return {"__tensor__": self._add(value, path)}
        if isinstance(value, np.ndarray):
            return {"__ndarray__": self._add(torch.from_numpy(np.ascontiguousarray(value)), path)}
        if isinstance(value, np.generic):
            return self.encode(value.item(), path)
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            if all(isinstance(k, str) for k in value) and not any(k in _TAGS for k in value):
                return {k: self.encode(v, f"{path}.{k}") for k, v in value.items()}
            return {"__items__": [[self.encode(k, f"{path}.key{i}"), self.encode(v, f"{path}.{k}")]
                                  for i, (k, v) in enumerate(value.items())]}
        raise TypeError(f"{path}: a {type(value).__name__} cannot be stored without pickle (only tensors, arrays, "
                        "numbers, strings, None, lists, tuples and dicts)")

    def _add(self, tensor: torch.Tensor, path: str) -> str:
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage()
        # safetensors refuses tensors that share memory (tied weights, views): store those as copies.
        if storage.data_ptr() in self._storages or storage.nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        self._storages.add(tensor.untyped_storage().data_ptr())
        key, n = path, 1
        while key in self.tensors:
            key, n = f"{path}#{n}", n + 1
        self.tensors[key] = tensor
        return key


def _decode(value: Any, tensors: Mapping[str, torch.Tensor], where: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, where) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and next(iter(value)) in _TAGS:
        tag, content = next(iter(value.items()))
        if tag in ("__tensor__", "__ndarray__"):
            if content not in tensors:
                raise ValueError(f"{where}: tensor {content!r} is missing from its .safetensors file")
            return tensors[content] if tag == "__tensor__" else tensors[content].numpy()
        if tag == "__tuple__":
            return tuple(_decode(v, tensors, where) for v in content)
        return {_decode(k, tensors, where): _decode(v, tensors, where) for k, v in content}
    return {k: _decode(v, tensors, where) for k, v in value.items()}


def write_state(folder: PathLike, name: str, state: Mapping[str, Any]) -> None:
    """Store a ``state_dict()``-like mapping as ``<name>.json`` plus ``<name>.safetensors`` (if it holds tensors)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    encoder = _Encoder()
    encoded = encoder.encode(dict(state), name)
    if encoder.tensors:
        save_file(encoder.tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps({"format": STATE_FORMAT, "state": encoded}, indent=1) + "\n")


def read_state(folder: PathLike, name: str) -> dict[str, Any]:
    """Read what :func:`write_state` stored (tensors on the CPU). Reads JSON and safetensors only, never pickle."""
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the checkpoint is incomplete")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a {STATE_FORMAT} state file")
    weights = folder / f"{name}.safetensors"
    tensors = load_file(str(weights), device="cpu") if weights.is_file() else {}
    return _decode(document["state"], tensors, str(path))


def _tensor_shapes(value: Any, path: str = "") -> Iterator[tuple[str, tuple[int, ...]]]:
    if torch.is_tensor(value):
        yield path, tuple(value.shape)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _tensor_shapes(v, f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensor_shapes(v, f"{path}.{i}")


def _check_same_tensors(current: Mapping, loaded: Mapping, what: str) -> None:
    """An EMA's ``load_state_dict`` takes any list of tensors: check they are the ones of this model."""
    expected, found = dict(_tensor_shapes(current)), dict(_tensor_shapes(loaded))
    if expected and expected != found:
        differing = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]
        raise ValueError(f"{what} does not fit this model: {len(found)} tensors stored, {len(expected)} expected "
                         f"(first difference at {differing[0]!r})")


# ----------------------------------------------------------------------------------------------------------------------
# save_checkpoint / load_checkpoint


def _named(models: Mapping, optimizers: Mapping, schedulers: Mapping, emas: Mapping) -> dict[str, list[str]]:
    groups = {"models": list(models), "optimizers": list(optimizers), "schedulers": list(schedulers),
              "emas": list(emas)}
    names = [name for group in groups.values() for name in group]
    bad = [n for n in names if not isinstance(n, str) or not _VALID_NAME.match(n) or n in _RESERVED]
    if bad:
        raise ValueError(f"checkpoint entry names {bad} are not usable as file stems (letters, digits, _ . -; "
                         f"not {list(_RESERVED)})")
    if len(set(names)) != len(names):
        raise ValueError(f"checkpoint entry names must be unique across models, optimizers, schedulers and emas: "
                         f"{names}")
    return groups


def _plain_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict safetensors accepts: contiguous CPU tensors, shared ones (tied weights) copied."""
    encoder = _Encoder()
    return {key: encoder.tensors[encoder._add(value, key)] for key, value in state.items()}


def save_checkpoint(accelerator, output_dir: PathLike, step: int, total_limit: Optional[int] = None, *,
                    models: Mapping[str, torch.nn.Module], optimizers: Mapping[str, Any],
                    schedulers: Mapping[str, Any], emas: Optional[Mapping[str, Any]] = None,
                    extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``checkpoint-<step>`` atomically without pickle and keep at most ``total_limit`` checkpoints.

    Args:
        accelerator: the run's ``Accelerator``.
        output_dir: the run's folder.
        step: optimizer steps done (the folder's name).
        total_limit: keep at most this many committed checkpoints (the oldest are deleted after the commit).
        models: ``{name: module}`` (prepared or not), stored as ``<name>.safetensors``.
        optimizers, schedulers, emas: ``{name: object with state_dict()/load_state_dict()}``, stored as
            ``<name>.json`` + ``<name>.safetensors``; ``emas`` are moved back to their device on loading.
        extra: JSON-like values returned by :func:`load_checkpoint` (tensors allowed).

    Every process must call it (gathering a sharded model's weights is collective); the main process writes, commits
    and rotates, and everyone waits for it. The names are file stems: unique, not ``checkpoint``/``grad_scaler``.
    """
    from safetensors.torch import save_file

    emas, extra = dict(emas or {}), dict(extra or {})
    groups = _named(models, optimizers, schedulers, emas)
    final = Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"
    model_states = {name: accelerator.get_state_dict(model) for name, model in models.items()}
    if accelerator.is_main_process:
        tmp = temporary_checkpoint_dir(output_dir, step)
        shutil.rmtree(tmp, ignore_errors=True)  # debris of a save that was killed
        tmp.mkdir(parents=True)
        for name, state in model_states.items():
            save_file(_plain_tensors(state), str(tmp / f"{name}.safetensors"))
        for name, obj in {**optimizers, **schedulers, **emas}.items():
            write_state(tmp, name, obj.state_dict())
        scaler = getattr(accelerator, "scaler", None)
        scaler_state = scaler.state_dict() if scaler is not None else {}
        if scaler_state:
            write_state(tmp, _SCALER, scaler_state)
        write_state(tmp, _META, {**groups, "step": int(step), "accelerator_step": int(getattr(accelerator, "step", 0)),
                                 "grad_scaler": bool(scaler_state), "extra": extra})
        commit_directory(tmp, final)
        # Rotate after the commit: a crash in between leaves one checkpoint too many, never one too few.
        rotate_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def _read_meta(path: Path) -> dict[str, Any]:
    if not (path / f"{_META}.json").is_file():
        raise ValueError(f"{path} has no {_META}.json: not a checkpoint of this version (older ones were Accelerate "
                         "pickles, which are never loaded because unpickling can run code); resume from a newer "
                         "checkpoint or start a new run")
    return read_state(path, _META)


def load_checkpoint(accelerator, path: PathLike, *, models: Mapping[str, torch.nn.Module],
                    optimizers: Mapping[str, Any], schedulers: Mapping[str, Any],
                    emas: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into the given objects; return its ``extra``.

    Reads only ``.json`` and ``.safetensors`` files: anything else in the folder (a planted pickle included) is never
    opened. The names must be those of the save. Every process calls it and reads the files itself.
    """
    from safetensors.torch import load_file

    path, emas = Path(path), dict(emas or {})
    meta = _read_meta(path)
    for group, given in _named(models, optimizers, schedulers, emas).items():
        if sorted(meta.get(group, [])) != sorted(given):
            raise ValueError(f"{path} holds {group} {sorted(meta.get(group, []))}, this run has {sorted(given)}")
    for name, model in models.items():
        accelerator.unwrap_model(model).load_state_dict(load_file(str(path / f"{name}.safetensors"), device="cpu"))
    for name, obj in {**optimizers, **schedulers}.items():
        obj.load_state_dict(read_state(path, name))
    for name, ema in emas.items():
        current, loaded = ema.state_dict(), read_state(path, name)
        _check_same_tensors(current, loaded, f"{path / name}")
        device = next((t.device for t in _tensors(current)), None)
        ema.load_state_dict(loaded)
        if device is not None and hasattr(ema, "to"):
            ema.to(device)  # loaded on the CPU
    scaler = getattr(accelerator, "scaler", None)
    if meta.get("grad_scaler") and scaler is not None:
        scaler.load_state_dict(read_state(path, _SCALER))
    elif meta.get("grad_scaler") or (scaler is not None and scaler.is_enabled()):
        logger.warning(f"{path}: the gradient scaler of the saved run and of this one differ (mixed precision "
                       "changed?); the scaler starts afresh")
    if hasattr(accelerator, "step"):
        accelerator.step = int(meta.get("accelerator_step", 0))
    return dict(meta.get("extra", {}))


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
