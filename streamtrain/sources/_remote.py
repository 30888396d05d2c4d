"""Zarr stores at URLs (``s3://``, ``gs://``, ``memory://``, ``file://``...), read through fsspec.

A URL is opened by zarr's ``FsspecStore`` with the user's ``storage_options`` (credentials, an
endpoint, ``anon=true``...), given to fsspec as they are. What a local path has and a URL has not:

- no chunk files: chunks are read through zarr, never by the direct path (``source.read_path``
  says ``zarr library over fsspec (PROTOCOL)``);
- no inodes to stat: the stamp lists the keys instead (see ``_stamp``);
- no HDF5: h5py reads local files; a URL names a Zarr group;
- no outputs: models, predictions and converted stores are written to local paths.

fsspec is an optional dependency (``pip install 'streamtrain[remote]'``), imported once a URL is
opened; the filesystem of a protocol (s3fs for ``s3://``, gcsfs for ``gs://``) is the user's to install.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError, DataError
from ._integrity import brief
from ._stamp import GONE, listing_part

__all__ = ["Remote", "check_storage_options", "is_url", "local_path", "parse_storage_options", "url_only_zarr"]

# scheme://..., or fsspec's chained form cache::s3://...: a path with a colon is no URL without "://".
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")
INSTALL = "pip install 'streamtrain[remote]'"
# What a filesystem reports of a key that changes when it is written again: S3's ETag, GCS's
# generation, Azure's etag, a modification time, the local inode; memory:// has only its creation time.
VERSION_KEYS = ("ETag", "etag", "generation", "LastModified", "last_modified", "updated", "mtime", "ino", "created")


def is_url(path: object) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return isinstance(path, str) and _URL.match(path) is not None


def url_only_zarr(url: str, what: str) -> DataError:
    """The error for a URL naming something else than a Zarr group (``what``: an HDF5 file, a CSV file...)."""
    return DataError(f"{url}: {what}; only Zarr stores are read from URLs: copy it to a local path to read it")


def local_path(url: str) -> str | None:
    """The local path a ``file://`` or ``local://`` URL names; None for another protocol (or without fsspec)."""
    if not url.startswith(("file://", "local://")):
        return None
    try:
        from fsspec.implementations.local import LocalFileSystem
    except ImportError:
        return None
    return str(LocalFileSystem._strip_protocol(url))


def parse_storage_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` texts (``--storage-option``) as a dict: each value read as JSON when it parses
    (``true``, ``3``, ``{"endpoint_url": "..."}``), else kept as text; ConfigError for a text
    without ``=`` or a key given twice."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--storage-option {pair!r}: expected KEY=VALUE, such as anon=true")
        key = key.strip()
        if key in options:
            raise ConfigError(f"--storage-option {key} is given twice")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options


def check_storage_options(path: str, options: object) -> dict[str, Any] | None:
    """``options`` as a dict for a URL (None: none given, or a local path); ConfigError when they
    are not a mapping of names, or are given for a local path, where nothing would use them."""
    if options is None:
        return None
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"storage_options must be a mapping of option names to values, got {options!r}")
    if options and not is_url(path):
        raise ConfigError(f"{path}: storage options are for URLs (s3://..., gs://..., memory://...), not local paths")
    return dict(options) if is_url(path) else None


@dataclass(frozen=True, eq=False)
class Remote:
    """Where a store at a URL lives: its filesystem (``fs``) and the path there (``root``), opened
    with ``storage_options`` (kept: reopening the store by name needs them)."""

    url: str
    storage_options: Mapping[str, Any]
    fs: Any
    root: str
    protocol: str

    @classmethod
    def open(cls, url: str, storage_options: Mapping[str, Any] | None = None) -> Remote:
        """The filesystem of ``url``; ConfigError without fsspec, for a protocol unknown or not
        installed or options it refuses; DataError when nothing is there, or a file is."""
        options = dict(storage_options or {})
        try:
            import fsspec.core
        except ImportError:
            raise ConfigError(f"{url}: reading a store from a URL needs fsspec: {INSTALL}") from None
        try:
            fs, root = fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError) as e:  # "Protocol not known: foo", "Install s3fs to access S3"
            raise ConfigError(f"{url}: {e}") from None
        except TypeError as e:  # an option the filesystem does not take
            raise ConfigError(f"{url}: storage options {sorted(options)} not accepted ({brief(e)})") from None
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        remote = cls(url, options, fs, root.rstrip("/"), protocol)
        try:
            kind = fs.info(remote.root).get("type")
        except FileNotFoundError:
            raise DataError(f"{url}: no such store") from None
        except Exception as e:  # network, credentials: each filesystem raises its own
            raise DataError(f"{url}: cannot be reached ({brief(e)})") from None
        if kind == "file":
            raise url_only_zarr(url, "is a file, not a Zarr group")
        return remote

    def join(self, *keys: str) -> str:
        """The URL of a key under the store (``url/X/zarr.json``), for messages."""
        return "/".join([self.url.rstrip("/"), *(k for k in keys if k)])

    def _path(self, *keys: str) -> str:
        return "/".join([self.root, *(k for k in keys if k)])

    def isfile(self, *keys: str) -> bool:
        try:
            return bool(self.fs.isfile(self._path(*keys)))
        except Exception:  # only asked to name a file in a message: unknown is "no"
            return False

    def listing(self, key: str = "", recursive: bool = True) -> dict[str, dict[str, Any]]:
        """The files under ``key`` (the whole tree, or its own files only) by path relative to it,
        with what the filesystem reports of each (size, version); DataError when it cannot be listed."""
        base = self._path(key)
        try:
            found = self.fs.find(base, maxdepth=None if recursive else 1, detail=True)
        except FileNotFoundError:
            return {}
        except Exception as e:  # network, credentials
            raise DataError(f"{self.join(key)}: cannot be listed ({brief(e)})") from None
        return {name[len(base) :].lstrip("/"): info for name, info in found.items()}

    def tree_bytes(self, key: str) -> int:
        """Bytes of the files under ``key`` (an array's metadata and chunks)."""
        return sum(int(info.get("size") or 0) for info in self.listing(key).values())

    def stamp_part(self, key: str = "", recursive: bool = True) -> str:
        """The stamp's part for the files under ``key``: each one's path, size and version (see
        ``VERSION_KEYS``), or ``gone`` when there are none."""
        files = self.listing(key, recursive)
        if not files:
            return GONE
        return listing_part(
            f"{name} {info.get('size')} " + " ".join(str(info[k]) for k in VERSION_KEYS if info.get(k) is not None)
            for name, info in files.items()
        )
