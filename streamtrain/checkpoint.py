"""Model files: one ``.npz`` of parameter arrays plus a JSON metadata entry, written atomically.

Never pickled: loading uses ``allow_pickle=False``, and the metadata is a JSON string
stored as a plain unicode array under the key ``__meta__``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import zipfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from ._errors import DataError

__all__ = ["atomic_write", "is_temp_name", "load_model", "remove_stale_temps", "save_model"]

FORMAT = "streamtrain-model"
VERSION = 2  # 2: the model as a dict and the whole resolved configuration (result.py reads 1 too)
_META = "__meta__"
TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so that readers see either the old file or the whole new one.

    ``write`` fills a temporary file next to ``path`` (see ``temp_name``); it is fsynced,
    renamed over ``path``, and the directory is fsynced so the rename itself survives a crash.
    A new file's mode follows the umask, an existing one keeps its mode. Temporary files of
    ``path`` left by killed processes are removed first.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temps(path)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def temp_name(path: str, pid: int, token: str) -> str:
    """``.NAME.<pid>.<token>.tmp`` next to ``path``: hidden, never taken for a real file, and its
    writer's pid says whether it is still being written."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.{pid}.{token}.tmp")


def is_temp_name(name: str) -> bool:
    """Whether a file name is a temporary file of ``atomic_write`` (or of anything else): never a result."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _create_temp(path: str) -> tuple[int, str]:
    """A new temporary file for ``path``, opened for writing, with the mode the result must have."""
    mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.isfile(path) else None
    while True:
        tmp = temp_name(path, os.getpid(), secrets.token_hex(4))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
            break
        except FileExistsError:
            continue
    if mode is not None:
        os.fchmod(fd, mode)
    return fd, tmp


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Remove the temporary files of ``path`` whose writer is dead (killed mid-write); best effort."""
    directory, name = os.path.split(os.path.abspath(path))
    own = re.compile(rf"\.{re.escape(name)}\.(\d+)\.[^./]+{re.escape(TEMP_SUFFIX)}")
    with contextlib.suppress(OSError):  # an unlistable directory: nothing to clean, the write may still work
        for entry in os.scandir(directory):
            match = own.fullmatch(entry.name)
            if match and not pid_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def save_model(path: str | os.PathLike, params: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Save parameters and JSON-serialisable metadata to ``path`` (an ``.npz`` file)."""
    if _META in params:
        raise ValueError(f"{_META!r} is reserved for metadata")
    header = {"format": FORMAT, "version": VERSION, **meta}
    arrays: dict[str, Any] = {**params, _META: np.array(json.dumps(header))}
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_model(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a model file written by ``save_model``: (params, metadata)."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such model file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a streamtrain model file ({e})") from None
    try:
        meta = json.loads(str(arrays.pop(_META)))
    except (KeyError, json.JSONDecodeError):
        raise DataError(f"{path}: not a streamtrain model file (no readable metadata)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a streamtrain model file (wrong format tag)")
    if meta.get("version", 0) > VERSION:
        raise DataError(f"{path}: written by a newer streamtrain (file version {meta['version']})")
    return arrays, meta
