"""Stamps: a cheap digest of a store's files, to notice a store that changes during a run.

A stamp is built from ``os.stat`` (inode, size, modification time), never from the contents, so
taking one costs a directory listing, not a read. It is a JSON object of named parts (the store
root, each array) mapped to short strings, so a changed stamp can say which part changed; the
same files give the same stamp in any process.

A store at a URL (see ``_remote``) has no inodes to stat: its parts digest a listing of its keys
with each one's size and the version its filesystem reports (S3's ETag, GCS's generation, a
modification time), one listing request per thousand keys on S3 against a read per chunk in an
epoch. A key rewritten with the same size is noticed only where the filesystem reports such a
version (each named here does; memory:// reports when a key was written).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable

from .._errors import DataError

__all__ = ["GONE", "ROOT", "changed_parts", "dir_part", "file_part", "join_parts", "listing_part"]

GONE = "gone"
ROOT = "the store"  # the part that stands for the whole store: its root directory or file


def file_part(path: str, contents: bool = True) -> str:
    """One file: ``inode ... size ... mtime_ns ...``, or ``gone``; only its inode (replaced or
    not) without ``contents`` (for a directory, whose files have parts of their own)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return GONE
    return f"inode {st.st_ino} size {st.st_size} mtime_ns {st.st_mtime_ns}" if contents else f"inode {st.st_ino}"


def dir_part(path: str, recursive: bool = True) -> str:
    """The regular files under a directory: ``N files <digest>`` over each relative path, inode,
    size and modification time, or ``gone``."""
    if not os.path.isdir(path):
        return GONE
    return listing_part(_files(path, "", recursive))


def listing_part(entries: Iterable[str]) -> str:
    """Files, one text each (its relative path and what changes when it is written): ``N files <digest>``."""
    ordered = sorted(entries)
    digest = hashlib.sha256("\n".join(ordered).encode()).hexdigest()[:16]
    return f"{len(ordered)} files {digest}"


def _files(root: str, rel: str, recursive: bool) -> list[str]:
    out: list[str] = []
    try:
        listing = list(os.scandir(os.path.join(root, rel)))
    except FileNotFoundError:  # removed while being listed: the digest differs anyway
        return out
    for entry in listing:
        name = f"{rel}/{entry.name}" if rel else entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    out += _files(root, name, recursive)
                continue
            st = entry.stat()
        except FileNotFoundError:
            continue
        out.append(f"{name} {st.st_ino} {st.st_size} {st.st_mtime_ns}")
    return out


def join_parts(parts: dict[str, str]) -> str:
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


def changed_parts(old: str, new: str) -> list[str]:
    """What differs between two stamps, in words (``X: 5 files, now 4``); DataError when ``old``
    is not a stamp. A replaced or vanished root (``ROOT``) says it all."""
    before, after = _parts(old), _parts(new)
    changed = [k for k in sorted({*before, *after}, key=lambda k: (k != ROOT, k)) if before.get(k) != after.get(k)]
    words = {k: _describe(k, before.get(k, GONE), after.get(k, GONE)) for k in changed}
    if ROOT in words and words[ROOT].endswith(("replaced", "gone")):
        return [words[ROOT]]
    return list(words.values())


def _parts(stamp: str) -> dict[str, str]:
    try:
        parts = json.loads(stamp)
    except (TypeError, ValueError):
        parts = None
    if not isinstance(parts, dict):
        raise DataError(f"not a stamp of a store: {stamp!r}")
    return parts


def _describe(part: str, old: str, new: str) -> str:
    if new == GONE:
        return f"{part} is gone"
    if old == GONE:
        return f"{part} appeared"
    a, b = old.split(), new.split()
    if a[0] == "inode":  # file_part: inode, size, mtime_ns
        if a[1] != b[1]:
            return f"{part} was replaced"
        return f"{part}: size {a[3]}, now {b[3]}" if a[3] != b[3] else f"{part} was modified"
    return f"{part}: {a[0]} files, now {b[0]}" if a[0] != b[0] else f"{part}: files rewritten"
