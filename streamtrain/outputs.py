"""Where results go: every output path is checked before any work, and nothing a user made is destroyed.

``check_output(path, kind, data=..., overwrite=...)`` runs before a command reads its data: the
path is local (a store may be read from a URL; nothing is written to one), the directory a file
is written into exists and is writable, the path is not the data being read (nor inside a Zarr
store's directory), and an existing path is written over only when it is a streamtrain output
of that kind (see ``KINDS``). Existing files are recognised cheaply: a model file by its
metadata entry alone, a metrics file by its first line, a store by its header.

A new store is built under ``partial_name(path)`` and put in place by ``swap_in``, so that an
interruption at any moment leaves a complete store at ``path``: the old one or the new one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import re
import shutil
from collections.abc import Callable
from typing import Any, NamedTuple

from ._errors import ConfigError, DataError, lookup
from ._signals import signals_deferred
from .checkpoint import FORMAT, file_format, pid_alive
from .sources import is_hdf5, is_url, local_path

__all__ = [
    "KINDS",
    "OutputKind",
    "aside_name",
    "check_output",
    "is_model_file",
    "partial_name",
    "remove_leftovers",
    "remove_stale_partials",
    "scratch_name",
    "swap_in",
]

_FIRST_LINE_MAX_BYTES = 2**20


class OutputKind(NamedTuple):
    """What may be written at a path, and what of an existing path may be written over.

    ``problem(path)`` says why an existing ``path`` is not an output of this kind (None: it is).
    ``in_place``: written inside the existing path (appended, files added) rather than renamed
    over it, so the path itself must be writable, not its directory.
    """

    problem: Callable[[str], str | None]
    in_place: bool
    needs_overwrite: bool  # an existing one is replaced only with overwrite=True


def check_output(
    path: str | os.PathLike, kind: str, *, data: str | os.PathLike | None = None, overwrite: bool = False
) -> str:
    """``path``, normalised, if an output of ``kind`` (a key of ``KINDS``) may be written there; else DataError.

    ``data`` is the store being read: the output may be neither it nor inside it.
    ``overwrite`` allows replacing an existing output of a kind that needs it (a store).
    """
    spec = lookup(KINDS, kind, "output kind")
    text = _path_text(path, kind)
    if is_url(text):  # stores are read from URLs (see sources._remote), never written to them
        raise ConfigError(f"{text}: the {kind} is written to a local path, not a URL; copy it to its place afterwards")
    path = os.path.normpath(text)
    if data is not None:
        _check_not_data(path, os.fspath(data))
    if not os.path.lexists(path):
        _check_directory(path)
        return path
    if spec.needs_overwrite and not overwrite:
        raise DataError(f"{path}: already exists (pass overwrite=True / --overwrite to replace it)")
    problem = spec.problem(path)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    if spec.in_place:
        _check_writable(path, path)
    else:
        _check_directory(path)
    return path


def _path_text(path: object, kind: str) -> str:
    """``path`` as text, if it can name a file: a str or path-like, not empty, without a NUL byte."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text or "\0" in text:
        raise ConfigError(f"the {kind} path must name a file or directory, got {path!r}")
    return text


def _check_not_data(path: str, data: str) -> None:
    if is_url(data):  # a file:// URL names a local store; another URL, none
        data = local_path(data) or ""
    if not os.path.exists(data):
        return  # nothing there to destroy; opening it will say so
    here, there = os.path.realpath(path), os.path.realpath(data)
    if here == there or (os.path.exists(path) and os.path.samefile(path, data)):
        raise DataError(f"{path}: is the data being read ({data}); choose another path")
    if here.startswith(there.rstrip(os.sep) + os.sep):
        raise DataError(f"{path}: is inside the data store {data}; choose another path")


def _check_directory(path: str) -> None:
    """The directory ``path`` is written into (by create or rename) exists and is writable."""
    parent = os.path.dirname(path) or os.curdir
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise DataError(f"{path}: the directory {parent} {what}")
    _check_writable(path, parent)


def _check_writable(path: str, where: str) -> None:
    if not os.access(where, os.W_OK | (os.X_OK if os.path.isdir(where) else 0)):
        raise DataError(f"{path}: {where} is not writable (permission denied)")


def _model_problem(path: str) -> str | None:
    if os.path.isdir(path):
        return "is a directory; name a model file (.npz)"
    if not is_model_file(path):
        return "exists and is not a streamtrain model file; not replacing it: choose another path"
    return None


def is_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model file written by ``save_model``, read from its metadata entry only."""
    return file_format(path) == FORMAT


def _metrics_problem(path: str) -> str | None:
    if os.path.isdir(path):
        return "is a directory; name a metrics file (.jsonl)"
    if not os.path.isfile(path):
        return None  # a pipe or a device: appending destroys nothing (and reading it would block)
    try:
        with open(path, "rb") as f:
            first = f.readline(_FIRST_LINE_MAX_BYTES)
        record = json.loads(first) if first else {"epoch": None}
    except (OSError, ValueError):
        record = None
    if not (isinstance(record, dict) and "epoch" in record):
        return "exists and is not a streamtrain metrics file (JSON lines of epochs); not appending to it"
    return None


def _store_problem(path: str) -> str | None:
    if os.path.isdir(path) and _is_zarr_group(path):
        return None
    if os.path.isfile(path) and is_hdf5(path):
        return None
    return "is neither a Zarr group nor an HDF5 file; not replacing it: remove it yourself or choose another path"


def _is_zarr_group(path: str) -> bool:
    if os.path.isfile(os.path.join(path, ".zgroup")):  # Zarr v2
        return True
    try:
        with open(os.path.join(path, "zarr.json"), "rb") as f:
            meta = json.loads(f.read(_FIRST_LINE_MAX_BYTES))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("node_type") == "group"


def _checkpoint_dir_problem(path: str) -> str | None:
    return None if os.path.isdir(path) else "exists and is not a directory; name a directory for checkpoints"


KINDS: dict[str, OutputKind] = {
    "model": OutputKind(_model_problem, in_place=False, needs_overwrite=False),
    "metrics": OutputKind(_metrics_problem, in_place=True, needs_overwrite=False),
    "store": OutputKind(_store_problem, in_place=False, needs_overwrite=True),
    "checkpoint-dir": OutputKind(_checkpoint_dir_problem, in_place=True, needs_overwrite=False),
}


# Replacing a store: build it aside, swap it in, delete the old one.


def partial_name(path: str, pid: int | None = None) -> str:
    """Where a new store for ``path`` is built: ``path.partial-<pid>`` (after a swap, the old store)."""
    return f"{path}.partial-{os.getpid() if pid is None else pid}"


def aside_name(path: str, pid: int | None = None) -> str:
    """Where the old store waits between the two renames of a swap without ``renameat2``."""
    return f"{path}.old-{os.getpid() if pid is None else pid}"


def swap_in(new: str, path: str) -> None:
    """Move the complete store ``new`` to ``path``; the store that was there goes to ``new``
    (exchanged) or to ``aside_name(path)``, for ``remove_leftovers`` to delete.

    At every moment a complete store is at ``path``: the two are exchanged in one step where the
    system can (Linux ``renameat2``), else moved by two renames during which SIGINT and SIGTERM
    wait (only a SIGKILL between them leaves ``path`` empty, the old store at its aside name).
    """
    if not os.path.lexists(path):
        os.rename(new, path)
    elif not _exchange(new, path):
        aside = aside_name(path)
        with signals_deferred():
            os.rename(path, aside)
            try:
                os.rename(new, path)
            except BaseException:
                os.rename(aside, path)  # the old store back in place
                raise


def scratch_name(path: str, pid: int | None = None) -> str:
    """A directory of temporary files for building the store at ``path`` (``convert --shuffle``'s buckets)."""
    return f"{path}.scratch-{os.getpid() if pid is None else pid}"


def remove_leftovers(path: str, pid: int | None = None) -> None:
    """After ``make_data`` or ``convert`` of process ``pid`` (this one by default), done or
    interrupted: its partial or old store and its scratch files, never ``path``."""
    _remove(partial_name(path, pid))
    _remove(scratch_name(path, pid))
    if os.path.lexists(path):  # else the aside store may be the only copy left
        _remove(aside_name(path, pid))


def remove_stale_partials(path: str) -> None:
    """The leftovers at ``path`` of processes that died (killed, or the machine went down), and of
    an earlier call in this process that was interrupted while deleting them."""
    directory, name = os.path.split(os.path.abspath(path))
    leftover = re.compile(rf"{re.escape(name)}\.(?:partial|old|scratch)-(\d+)")
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            match = leftover.fullmatch(entry.name)
            pid = int(match.group(1)) if match else None
            if pid is not None and (pid == os.getpid() or not pid_alive(pid)):
                remove_leftovers(path, pid)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # from <fcntl.h> and <linux/fs.h>


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one step (Linux ``renameat2``); False where the system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # an old kernel, or a filesystem without it
        return False
    raise OSError(err, os.strerror(err), b)


@functools.cache
def _renameat2() -> Any:
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError, TypeError):
        return None
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    return renameat2
