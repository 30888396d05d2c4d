"""Model files: one ``.npz`` of parameter arrays plus a JSON metadata entry, written atomically.

Never pickled: loading uses ``allow_pickle=False``, and the metadata is a JSON string
stored as a plain unicode array under the key ``__meta__``.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from ._errors import DataError

__all__ = ["atomic_write", "load_model", "save_model"]

FORMAT = "streamtrain-model"
VERSION = 2  # 2: the model as a dict and the whole resolved configuration (result.py reads 1 too)
_META = "__meta__"


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so that readers see either the old file or the whole new one.

    ``write`` fills a temporary file next to ``path``; it is fsynced, renamed over
    ``path``, and the directory is fsynced so the rename itself survives a crash.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
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


def save_model(
    path: str | os.PathLike, params: dict[str, np.ndarray], meta: dict[str, Any], *, format: str = FORMAT
) -> None:
    """Save parameters and JSON-serialisable metadata to ``path`` (an ``.npz`` file); ``format``
    tags what kind of file it is (a model, or a training checkpoint)."""
    if _META in params:
        raise ValueError(f"{_META!r} is reserved for metadata")
    header = {"format": format, "version": VERSION, **meta}
    arrays: dict[str, Any] = {**params, _META: np.array(json.dumps(header))}
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_model(path: str | os.PathLike, *, format: str = FORMAT) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by ``save_model`` with this ``format``: (params, metadata)."""
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
    if not isinstance(meta, dict) or meta.get("format") != format:
        raise DataError(f"{path}: not a {format} file (wrong format tag)")
    if meta.get("version", 0) > VERSION:
        raise DataError(f"{path}: written by a newer streamtrain (file version {meta['version']})")
    return arrays, meta
