"""Model files: one ``.npz`` of parameter arrays plus a JSON metadata entry, written atomically.

Never pickled: the metadata is a JSON string stored as a plain unicode array under the key
``__meta__``, and loading reads the ``.npy`` headers itself, so a hostile file can neither run
code nor make the loader allocate more than the file holds.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import stat
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Collection
from typing import IO, Any

import numpy as np
from numpy.lib import format as npformat

from ._errors import DataError
from .parameters import PARAM_DTYPES

__all__ = ["atomic_write", "file_format", "is_temp_name", "load_model", "remove_stale_temps", "save_model"]

FORMAT = "streamtrain-model"
VERSION = 3  # 2: the model as a dict and the whole configuration; 3: missing_chunks in it (result.py reads 1 too)
_META = "__meta__"
TEMP_SUFFIX = ".tmp"

# Limits on what an untrusted file may make the loader allocate or parse.
_HEADERS = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}
MAX_HEADER = 10_000  # characters of an .npy header (numpy's own limit)
MAX_META_BYTES = 2**26  # the JSON metadata (a history of 10^5 epochs is about 20 MB)
MAX_DEFLATE_RATIO = 1100  # deflate expands by at most 1032x: a member claiming more is lying
READ_BLOCK = 2**22


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


def remove_stale_temps(path: str | os.PathLike, name: str | None = None) -> None:
    """Remove the temporary files of ``path`` whose writer is dead (killed mid-write); best effort.

    ``name``: a regular expression for the names of several targets in the directory ``path``
    (a directory of checkpoints), instead of the one file ``path``.
    """
    directory = os.fspath(path)
    if name is None:
        directory, target = os.path.split(os.path.abspath(directory))
        name = re.escape(target)
    # The pid by name: ``name`` may hold groups of its own.
    own = re.compile(rf"\.(?:{name})\.(?P<pid>\d+)\.[^./]+{re.escape(TEMP_SUFFIX)}")
    with contextlib.suppress(OSError):  # an unlistable directory: nothing to clean, the write may still work
        for entry in os.scandir(directory):
            match = own.fullmatch(entry.name)
            if match and not pid_alive(int(match.group("pid"))):
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


def load_model(
    path: str | os.PathLike, *, format: str = FORMAT, dtypes: Collection[str] = PARAM_DTYPES
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by ``save_model`` with this ``format`` tag: (params, metadata).

    The file is untrusted: it is read as a zip of ``.npy`` members whose headers are checked
    before anything is allocated. An array must be of one of ``dtypes`` and hold exactly the
    bytes its header claims; nothing is unpickled. Anything else is a one-line DataError.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as z:
            arrays = {_key(info): _read_member(z, info, size, dtypes) for info in z.infolist()}
    except FileNotFoundError:
        raise DataError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a model file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except _Damaged as e:
        raise DataError(f"{path}: not a streamtrain model file ({e})") from None
    except (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zlib.error, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a streamtrain model file ({_reason(e)})") from None
    return arrays, _metadata(path, arrays, format)


def file_format(path: str | os.PathLike) -> str | None:
    """The format tag of a file ``save_model`` wrote (``FORMAT`` for a model file), from its
    metadata entry alone, header checked before it is read; None for any other file."""
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as z:
            meta = json.loads(str(_read_member(z, z.getinfo(_META + ".npy"), size, ())))
    except (_Damaged, OSError, EOFError, KeyError, ValueError, RuntimeError, zlib.error, zipfile.BadZipFile):
        return None  # JSONDecodeError is a ValueError
    return meta.get("format") if isinstance(meta, dict) else None


class _Damaged(Exception):
    """What is wrong with one member of the zip; load_model adds the file's name."""


def _key(info: zipfile.ZipInfo) -> str:
    if not info.filename.endswith(".npy"):
        raise _Damaged(f"unexpected member {info.filename!r}")
    return info.filename[: -len(".npy")]


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, file_size: int, dtypes: Collection[str]) -> np.ndarray:
    """One ``.npy`` member, its header checked before its array is allocated."""
    name = info.filename
    stored = info.compress_type == zipfile.ZIP_STORED and info.file_size == info.compress_size
    deflated = info.compress_type == zipfile.ZIP_DEFLATED and info.file_size <= MAX_DEFLATE_RATIO * info.compress_size
    if not (stored or deflated) or info.compress_size > file_size:
        raise _Damaged(f"{name}: a member of {info.file_size:,} bytes stored in {info.compress_size:,}")
    with z.open(info) as f:
        try:
            read_header = _HEADERS[npformat.read_magic(f)]
            shape, fortran, dtype = read_header(f, max_header_size=MAX_HEADER)
        # numpy parses a header as Python literals: broken text raises tokenize's and ast's errors too.
        except (KeyError, ValueError, EOFError, SyntaxError, tokenize.TokenError):
            raise _Damaged(f"{name}: not a valid .npy array header") from None
        _check_header(name, shape, dtype, info.file_size - f.tell(), dtypes)
        try:
            array = np.empty(shape, dtype, order="F" if fortran else "C")
        except ValueError as e:  # too many dimensions, or a zero-size array whose other axes overflow
            raise _Damaged(f"{name}: its header claims a {shape} array: {e}") from None
        _read_into(f, (array.T if fortran else array).reshape(-1).view(np.uint8), name)
    return array


def _check_header(name: str, shape: tuple, dtype: np.dtype, data_bytes: int, dtypes: Collection[str]) -> None:
    """The array a header describes is of an allowed dtype and holds exactly ``data_bytes``."""
    meta = name == _META + ".npy"
    if meta and not (dtype.kind == "U" and shape == () and dtype.itemsize <= MAX_META_BYTES):
        raise _Damaged(f"{name}: metadata must be one JSON string, not a {shape} {dtype} array")
    if not meta and dtype.name not in dtypes:
        raise _Damaged(f"{name}: an array of {dtype}; parameters are real floating-point ({', '.join(dtypes)})")
    if any(n < 0 for n in shape) or math.prod(shape) * dtype.itemsize != data_bytes:
        claimed = f"{math.prod(shape) * dtype.itemsize:,} bytes" if all(n >= 0 for n in shape) else "a negative size"
        raise _Damaged(f"{name}: its header claims a {shape} {dtype} array ({claimed}), the file holds {data_bytes:,}")


def _read_into(f: IO[bytes], out: np.ndarray, name: str) -> None:
    """Fill the byte array ``out`` from ``f``, a block at a time (no second copy of a large array)."""
    done = 0
    while done < len(out):
        block = f.read(min(READ_BLOCK, len(out) - done))
        if not block:
            raise _Damaged(f"{name}: truncated")
        out[done : done + len(block)] = np.frombuffer(block, np.uint8)
        done += len(block)


def _metadata(path: str, arrays: dict[str, np.ndarray], format: str) -> dict[str, Any]:
    """The JSON metadata entry: a dict with our format tag and a version this loader knows."""
    try:
        meta = json.loads(str(arrays.pop(_META)))
    except (KeyError, ValueError, RecursionError):
        raise DataError(f"{path}: not a streamtrain model file (no readable metadata)") from None
    if not isinstance(meta, dict) or meta.get("format") != format:
        raise DataError(f"{path}: not a {format.replace('-', ' ')} file (wrong format tag)")
    version = meta.get("version")
    if type(version) is not int or version < 1:
        raise DataError(f"{path}: damaged model metadata: version {version!r} is not a file version")
    if version > VERSION:
        raise DataError(
            f"{path}: written by a newer streamtrain (file version {version}; this one reads 1 to {VERSION})"
        )
    return meta


def _reason(e: BaseException) -> str:
    """The zip library's reason, as one line."""
    text = (getattr(e, "strerror", None) or str(e) or type(e).__name__).splitlines()
    return text[0] if text else type(e).__name__
