"""Small helpers shared by the commands and the training scripts: atomic writes with the user's permissions, and
the filter that keeps credentials out of cards, configs and logs."""

from .files import (
    atomic_save,
    atomic_write_bytes,
    atomic_write_text,
    check_writable_dir,
    commit_directory,
    current_umask,
    staged_directory,
)
from .secrets import REDACTED, is_secret_key, redact_secrets

__all__ = [
    "REDACTED",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable_dir",
    "commit_directory",
    "current_umask",
    "is_secret_key",
    "redact_secrets",
    "staged_directory",
]
