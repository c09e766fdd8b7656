"""Files and folders that appear whole or not at all, with the permissions the user's umask asks for.

Every writer here works on a temporary sibling of the target (same folder, so the final rename is atomic on one file
system) and renames it into place only once it is complete: a killed process leaves the old file or nothing, never
half of a new one. ``mkstemp`` and ``mkdtemp`` create their entries owner-only (0600 / 0700) whatever the umask, and
so do some writers (safetensors 0.8 writes its files 0600), which is right while the entry is private and wrong once it
becomes the user's file, so the commit gives it the mode a plain ``open()`` / ``mkdir()`` would have had:
``0o666 & ~umask`` for files, ``0o777 & ~umask`` for folders (and for files that had an execute bit).

This is the one place of the package that writes that way; the commands, the converter, the hub helpers and the
training checkpoints use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Union

__all__ = [
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable_dir",
    "commit_directory",
    "current_umask",
    "staged_directory",
]

PathLike = Union[str, os.PathLike]


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (``os.umask`` can only set it, so the
    fallback sets and restores it, which is not thread-safe)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _file_mode() -> int:
    return 0o666 & ~current_umask()


def _dir_mode() -> int:
    return 0o777 & ~current_umask()


def atomic_save(path: PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp)`` to write a temporary sibling of ``path``, then rename it onto ``path``.

    The temporary name keeps ``path``'s suffix, so writers that infer the format from it (PIL, ``torch.save``) work.
    The parent folder must exist. An existing ``path`` is replaced whole or left untouched.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        writer(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_save`)."""
    return atomic_save(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically, without newline translation (see :func:`atomic_save`)."""
    return atomic_save(path, lambda tmp: tmp.write_bytes(text.encode(encoding)))


def _apply_umask_modes(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes the umask would have given (symbolic links are left alone)."""
    file_mode, dir_mode = _file_mode(), _dir_mode()
    for root, dirs, files in os.walk(folder):
        os.chmod(root, dir_mode)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, dir_mode if os.stat(path).st_mode & 0o111 else file_mode)


def give_umask_modes(folder: PathLike, pattern: str = "*.safetensors") -> None:
    """Give the files matching ``pattern`` under ``folder`` the mode the umask gives new files: safetensors writes its
    files 0600 whatever the umask, so a pipeline saved for a team or a web server would be unreadable to others."""
    for path in Path(folder).rglob(pattern):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, _file_mode())


def commit_directory(tmp: PathLike, final: PathLike) -> None:
    """Make the finished folder ``tmp`` appear as ``final`` (same file system), its entries with the umask's modes.

    An existing ``final`` is first moved into a hidden sibling and deleted only after the new folder is in place; if
    the second rename fails, the old folder is put back. Nothing is left beside ``final`` either way.
    """
    tmp, final = Path(tmp), Path(os.path.abspath(final))
    _apply_umask_modes(tmp)
    if not os.path.lexists(final):
        os.replace(tmp, final)
        return
    # rename() cannot replace a non-empty folder: move the old one aside first, then drop it.
    trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    try:
        os.replace(final, trash / final.name)
    except BaseException:
        shutil.rmtree(trash, ignore_errors=True)
        raise
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(trash / final.name, final)
        shutil.rmtree(trash, ignore_errors=True)
        raise
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(final: PathLike) -> Iterator[Path]:
    """A temporary folder beside ``final`` to write into; committed to ``final`` (:func:`commit_directory`) when the
    block ends normally, deleted when it raises."""
    final = Path(os.path.abspath(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        commit_directory(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def existing_file(path: PathLike, what: str, expected: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is a file; otherwise a one-line error naming ``what`` (a folder:
    "give ``expected``"; nothing there: not found). The readers of user files call it before opening them."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; give {expected}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_json_file(path: PathLike, what: str, allow_constants: bool = False) -> Any:
    """The JSON document of a user file (``what`` names it in errors, e.g. ``"--kpis"``): one-line errors for a folder,
    a missing file, text that is not JSON and, unless ``allow_constants`` (diffusers writes ``-Infinity`` into
    scheduler configs), the NaN/Infinity constants Python's reader would otherwise accept."""
    path = existing_file(path, what, "a JSON file")

    def no_constants(name: str):
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(path.read_text(), parse_constant=None if allow_constants else no_constants)
    except (ValueError, UnicodeDecodeError) as err:  # truncated, binary, not JSON, NaN
        raise ValueError(f"{what} {path} is not valid JSON ({err})") from None


def check_writable_dir(path: PathLike, what: str = "output folder") -> None:
    """Raise a one-line error unless ``path`` is a folder we can write into, or can be created as one.

    Meant to run before expensive work (loading a model, generating), so a bad output path costs nothing.
    """
    path = Path(os.path.abspath(path))
    if os.path.lexists(path) and not path.is_dir():
        raise FileExistsError(f"{what} {str(path)!r} exists and is not a folder")
    existing = path
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{what} {str(path)!r} cannot be created: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {str(path)!r} is not writable (no write permission on {str(existing)!r})")
