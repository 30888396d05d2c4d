"""Chunks read straight from the store's files: the fast path of ``ChunkSource.read``.

The Zarr and HDF5 specifications say where a chunk's bytes lie and what they are: a local Zarr
chunk is one file, an HDF5 chunk a byte range of the file, each holding the (rows, chunk) block
row-major, raw or compressed by one codec. Reading those bytes with ``readinto`` into a fresh
array, and decoding with the codec itself, skips the storage libraries' Python layers and
releases the interpreter lock for the whole read and decode, so reader threads run beside the
gradient step instead of taking turns with it. The backends build a ``DirectArray`` only when
the array's metadata says it holds nothing else (no filters, shards, other byte orders or
codecs); every other array is read through its library, the slow twin (the contract tests run
both and compare).

A DirectArray is plain data (paths, offsets, a numcodecs codec): it pickles to Dask workers.
Conventions: an array is (rows, m); chunk ``c`` holds samples ``[c*chunk, min((c+1)*chunk, m))``.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .._errors import DataError
from ._integrity import MISSING_FLAG, cause, chunk_span

__all__ = ["ChunkBytes", "DirectArray", "Inflate", "decoded_size", "stage_rows"]

# Bytes of a unit's rows read or copied at once before they are rearranged (``read_rows``, buffer
# shuffle's permutation): a few rows, small enough to stay in the CPU's caches, large enough that
# reader threads seldom need the interpreter lock (every block takes it a few times, and each time
# the gradient step may wait). Measured on 5M raw samples, --shuffle buffer against none, interleaved
# in one process: 512 KiB 1.67x, 1 MiB 1.23-1.33x, 2 MiB 1.12-1.17x, 3 MiB 1.27x, 4 MiB 1.30x.
STAGE_BYTES = 2 * 2**20
# Buffers one preadv call takes at most (POSIX guarantees 16; Linux takes 1024).
IOV_MAX = max(16, os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in getattr(os, "sysconf_names", {}) else 16)


def stage_rows(rows: int, row_bytes: int) -> int:
    """How many of ``rows`` rows of ``row_bytes`` each are staged at once (at least 1)."""
    return max(1, min(rows, STAGE_BYTES // max(row_bytes, 1)))


class ChunkBytes(NamedTuple):
    """Where one chunk's bytes lie: ``size`` bytes of ``path`` from ``offset`` (size -1: to the
    end of the file; offset None: the chunk was never written)."""

    path: str
    offset: int | None = 0
    size: int = -1


def decoded_size(codec: Any, data: bytes) -> int | None:
    """The bytes ``data`` decodes to as its header states them (a Zstd frame's content size, a
    Blosc buffer's nbytes; both formats are public), or None when it does not say."""
    name = getattr(codec, "codec_id", None)
    if name == "blosc" and len(data) >= 16:
        return int.from_bytes(data[4:8], "little")
    if name != "zstd" or len(data) < 6 or data[:4] != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = data[4]  # RFC 8878, 3.1.1.1.1
    single_segment, size_flag = (descriptor >> 5) & 1, descriptor >> 6
    size_bytes = (single_segment, 2, 4, 8)[size_flag]
    if not size_bytes:
        return None
    at = 5 + (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3]  # after the window and dictionary id
    if len(data) < at + size_bytes:
        return None
    size = int.from_bytes(data[at : at + size_bytes], "little")
    return size + 256 if size_bytes == 2 else size


class _RowsAt(NamedTuple):
    """Where the rows of one raw chunk lie: row r's samples are ``nbytes`` at ``first + r * step``
    of the open file ``fd`` (None: a chunk never written, read as ``fill``)."""

    fd: int | None
    first: int
    step: int
    nbytes: int
    fill: Any = None


class Inflate:
    """HDF5's deflate filter: zlib streams (zlib releases the interpreter lock while it inflates)."""

    def decode(self, data: bytes) -> bytes:
        return zlib.decompress(data)


@dataclass(frozen=True, eq=False)
class DirectArray:
    """One stored (rows, m) array, read chunk by chunk from the bytes ``chunks`` locate.

    ``chunk``: samples per stored chunk; every chunk is stored whole, (rows, chunk) row-major,
    the last one padded (both formats do so). ``row_stride``: for an HDF5 contiguous dataset, the
    bytes from one row to the next; its "chunks" are slabs cut from rows, one range per row.
    ``codec``: decodes a stored chunk's bytes (None: raw). ``fill``: what a chunk never written
    reads as (None: it is an error).
    """

    where: str
    rows: int
    m: int
    chunk: int
    dtype: np.dtype
    chunks: tuple[ChunkBytes, ...]
    chunk_starts: np.ndarray
    codec: Any = None
    fill: Any = None
    row_stride: int | None = None

    def read(self, c: int, into: np.ndarray | None = None) -> np.ndarray:
        """Chunk ``c`` as a (rows, width) array (a view of the padded chunk for the last one);
        DataError naming the file, array and chunk when its bytes are missing or damaged.
        ``into``: a C-contiguous array of rows × chunk items of the dtype that a raw chunk, or one
        whose codec says its decoded size up front, is read into instead of a new array (a fresh
        array of tens of MB costs its page faults: as much as decoding it, on a VM)."""
        start = c * self.chunk
        width = min(self.chunk, self.m - start)
        located = self.chunks[c]
        if located.offset is None:
            return self._missing(start, width)
        if self.row_stride is not None:  # rows of a contiguous dataset, each at its own offset
            rows = np.empty((self.rows, width), self.dtype)
            self.read_rows([c], rows)
            return rows
        try:
            stored = self._read_raw(located, into) if self.codec is None else self._decode(located, into)
        except FileNotFoundError as e:
            if located.size < 0:  # a chunk file (Zarr): that chunk is missing
                return self._missing(start, width)
            raise self._damaged(start, width, e) from None  # the file that held the chunk is gone
        except (OSError, ValueError, RuntimeError, zlib.error) as e:
            raise self._damaged(start, width, e) from None
        if stored.size != self.rows * self.chunk:
            raise self._short(start, width, stored.nbytes)
        return stored.reshape(self.rows, self.chunk)[:, :width]

    @property
    def raw(self) -> bool:
        """Whether chunks are stored raw: their rows can be read straight where they are wanted."""
        return self.codec is None

    def read_rows(
        self, chunks: Iterable[int], out: np.ndarray, arrange: Callable[[np.ndarray, np.ndarray], Any] | None = None
    ) -> None:
        """The raw ``chunks`` side by side into ``out`` (rows, their total width): straight into it, or
        with ``arrange`` a few rows at a time through a staging block, which ``arrange(stage,
        out[r : r + k])`` moves into place. The block stays in the CPU's cache, so reading and
        rearranging (buffer shuffle's permutation) cost one pass over the unit, not two."""
        k = self.rows if arrange is None else stage_rows(self.rows, out.shape[1] * self.dtype.itemsize)
        stage = out if arrange is None else np.empty((k, out.shape[1]), self.dtype)
        opened: list[tuple[_RowsAt, slice, int]] = []  # where each chunk's rows lie, its columns, first sample
        try:
            at = 0
            for c in chunks:
                start = int(c) * self.chunk
                width = min(self.chunk, self.m - start)
                opened.append((self._rows_at(int(c), start, width), slice(at, at + width), start))
                at += width
            for r in range(0, self.rows, k):
                block = stage[r : r + k] if arrange is None else stage[: min(k, self.rows - r)]
                for rows_at, columns, start in opened:
                    self._read_block(rows_at, r, block[:, columns], start)
                if arrange is not None:
                    arrange(block, out[r : r + block.shape[0]])
        finally:
            for rows_at, _, _ in opened:
                if rows_at.fd is not None:
                    os.close(rows_at.fd)

    def _rows_at(self, c: int, start: int, width: int) -> _RowsAt:
        """Chunk c's rows (an open file the caller closes), its size checked; DataError as ``read``."""
        located, itemsize = self.chunks[c], self.dtype.itemsize
        if located.offset is None:
            return _RowsAt(None, 0, 0, 0, self._fill_of(start, width))
        if self.row_stride is not None:  # a contiguous dataset: rows of all m samples
            first, step = located.offset + start * itemsize, self.row_stride
        else:
            first, step = located.offset, self.chunk * itemsize
        try:
            fd = os.open(located.path, os.O_RDONLY)
        except FileNotFoundError as e:
            if located.size < 0 and self.row_stride is None:  # a chunk file (Zarr): that chunk is missing
                return _RowsAt(None, 0, 0, 0, self._fill_of(start, width))
            raise self._damaged(start, width, e) from None
        except OSError as e:
            raise self._damaged(start, width, e) from None
        if self.row_stride is None:  # a chunk's size is known: check it as ``read`` does
            expected, size = self.rows * self.chunk * itemsize, os.fstat(fd).st_size - first
            if size < expected or (located.size < 0 and size > expected):
                os.close(fd)
                if size > expected:
                    raise self._damaged(start, width, self._too_long())
                raise self._short(start, width, max(size, 0))
        return _RowsAt(fd, first, step, width * itemsize)

    def _read_block(self, rows_at: _RowsAt, r: int, block: np.ndarray, start: int) -> None:
        """Rows r, r+1, ... of a chunk into the rows of ``block``: a read per IOV_MAX rows, as rows follow
        each other in the file for a chunk (one range per row for a contiguous dataset or a last chunk)."""
        if rows_at.fd is None:
            block[...] = rows_at.fill
            return
        rows = [block[i].data.cast("B") for i in range(block.shape[0])]
        together = IOV_MAX if rows_at.step == rows_at.nbytes else 1
        got = 0
        try:
            for i in range(0, len(rows), together):
                got += os.preadv(rows_at.fd, rows[i : i + together], rows_at.first + (r + i) * rows_at.step)
        except OSError as e:
            raise self._damaged(start, block.shape[1], e) from None
        if got != rows_at.nbytes * len(rows):
            raise self._damaged(
                start, block.shape[1], ValueError(f"row {r + got // rows_at.nbytes} ends early: the file is truncated")
            )

    def will_read(self, c: int) -> None:
        """Ask the kernel to start reading chunk ``c`` from disk (no-op where unsupported)."""
        located = self.chunks[c]
        if located.offset is None or not hasattr(os, "posix_fadvise"):
            return
        size = max(located.size, 0) if self.row_stride is None else self.rows * self.row_stride
        try:
            fd = os.open(located.path, os.O_RDONLY)
        except OSError:
            return  # reading it names the problem
        try:
            os.posix_fadvise(fd, located.offset, size, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    def _read_raw(self, located: ChunkBytes, into: np.ndarray | None) -> np.ndarray:
        out = np.empty(self.rows * self.chunk, self.dtype) if into is None else into.reshape(-1)
        with open(located.path, "rb", buffering=0) as f:
            f.seek(located.offset or 0)
            n = _read_full(f, out.data.cast("B"))
            extra = located.size < 0 and f.read(1)  # a whole-file chunk must end here
        if extra:
            raise self._too_long()
        return out[: n // self.dtype.itemsize]

    def _decode(self, located: ChunkBytes, into: np.ndarray | None) -> np.ndarray:
        with open(located.path, "rb", buffering=0) as f:
            f.seek(located.offset or 0)
            data = f.read() if located.size < 0 else f.read(located.size)
        # A chunk is decoded into ``into`` only when its header says it decodes to exactly its
        # shape (the codec then checks it does); a buffer of the right size would hide a chunk
        # that decodes short. A new buffer gives the true size, checked by ``read``; read-only.
        if into is not None and decoded_size(self.codec, data) == into.nbytes:
            return self.codec.decode(data, out=into.reshape(-1))
        return np.frombuffer(self.codec.decode(data), dtype=self.dtype)

    def _missing(self, start: int, width: int) -> np.ndarray:
        return np.full((self.rows, width), self._fill_of(start, width), dtype=self.dtype)

    def _fill_of(self, start: int, width: int) -> Any:
        """What the chunk never written at ``start`` reads as; DataError when it must not be read."""
        if self.fill is None:
            raise DataError(
                f"{self._span(start, width)} is missing; it would read as fill values, not data; "
                f"{MISSING_FLAG} reads such chunks as the fill value"
            )
        return self.fill

    def _too_long(self) -> ValueError:
        """What a chunk file longer than its shape is (``read`` and ``read_rows`` alike)."""
        return ValueError(f"more than the {self.rows * self.chunk * self.dtype.itemsize} bytes of its shape")

    def _short(self, start: int, width: int, nbytes: int) -> DataError:
        what = f"{nbytes} bytes, not the {self.rows * self.chunk * self.dtype.itemsize} of its shape"
        return DataError(f"{self._span(start, width)} cannot be read: truncated or corrupt ({what})")

    def _damaged(self, start: int, width: int, e: Exception) -> DataError:
        return DataError(f"{self._span(start, width)} cannot be read: {cause(e)}")

    def _span(self, start: int, width: int) -> str:
        return f"{self.where}: {chunk_span(start, start + width, self.chunk_starts)}"


def _read_full(f: Any, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``f`` (one read unless a signal or a short read splits it); bytes read."""
    n = 0
    while n < len(buffer):
        got = f.readinto(buffer[n:])
        if not got:
            break
        n += got
    return n
