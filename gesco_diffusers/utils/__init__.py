"""Small helpers shared by the commands and the training scripts (atomic writes with the user's permissions)."""

from .files import (
    atomic_save,
    atomic_write_bytes,
    atomic_write_text,
    check_writable_dir,
    commit_directory,
    current_umask,
    staged_directory,
)

__all__ = [
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable_dir",
    "commit_directory",
    "current_umask",
    "staged_directory",
]
