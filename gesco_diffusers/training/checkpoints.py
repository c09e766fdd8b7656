"""Training checkpoints that are never half-written: ``checkpoint-<step>`` folders committed by an atomic rename.

``save_checkpoint`` lets Accelerate write the whole state (model, optimizer, scheduler, grad scaler, registered
objects such as the EMA) into a hidden temporary folder ``.checkpoint-<step>.tmp`` and only then renames it to
``checkpoint-<step>``. A run killed while saving leaves at most the temporary folder, which :func:`list_checkpoints`
(and so ``--resume_from_checkpoint latest``) never considers, and which the next save of that step replaces.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Optional, Union

__all__ = [
    "CHECKPOINT_PREFIX",
    "checkpoint_step",
    "commit_directory",
    "latest_checkpoint",
    "list_checkpoints",
    "resolve_checkpoint",
    "rotate_checkpoints",
    "save_checkpoint",
    "temporary_checkpoint_dir",
]

CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")

PathLike = Union[str, os.PathLike]


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


def temporary_checkpoint_dir(output_dir: PathLike, step: int) -> Path:
    """Where the state of ``step`` is written before being committed (hidden, never matched as a checkpoint)."""
    return Path(output_dir) / f".{CHECKPOINT_PREFIX}{step}.tmp"


def commit_directory(tmp: PathLike, final: PathLike) -> None:
    """Atomically make ``tmp`` appear as ``final`` (same file system); an existing ``final`` is replaced."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        # rename() cannot overwrite a non-empty folder: move the old one aside first, then drop it.
        trash = final.with_name(f".{final.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


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


def save_checkpoint(accelerator, output_dir: PathLike, step: int, total_limit: Optional[int] = None) -> Path:
    """``accelerator.save_state`` into ``checkpoint-<step>``, atomically, keeping at most ``total_limit`` checkpoints.

    Must be called by every process (Accelerate's save is collective); the main process commits and rotates.
    """
    final = Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"
    tmp = temporary_checkpoint_dir(output_dir, step)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # debris of a save that was killed
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        commit_directory(tmp, final)
        # Rotate after the commit: a crash in between leaves one checkpoint too many, never one too few.
        rotate_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final
