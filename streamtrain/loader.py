"""``iter_batches``: the trainer's batch stream as a data loader for any training loop.

The batches are exactly those ``fit`` steps on for the same options (``batch_size``, ``shuffle``,
``seed``, ``dtype``, ``prefetch``, ``buffer_mb``, declared once in ``FitConfig``): chunk-aware
shuffling with sequential reads only, reads ahead in threads, and a cursor after every batch
from which the rest of the epoch is rebuilt exactly. A PyTorch or JAX loop gets them as numpy
arrays, samples first if it asks (``samples_first``: X (B, n_x), Y (B, k), transposed views, no
copy), to hand to ``torch.from_numpy`` or ``jax.numpy.asarray``:

    for epoch in range(3):
        for batch in streamtrain.iter_batches("data/big.zarr", epoch=epoch, samples_first=True):
            x, y = torch.from_numpy(batch.X), torch.from_numpy(batch.Y)
            ...
            state = batch.cursor.to_dict()  # with the model's own checkpoint: resume with cursor=

A batch's arrays are views into buffers that are reused once nothing refers to them: keep a
batch, or a tensor made from it, and its buffer stays yours.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ._errors import ConfigError
from .batches import Batch, BatchStream, Cursor
from .config import FitConfig
from .sources import ChunkSource, opened

__all__ = ["STREAM_OPTIONS", "iter_batches"]

STREAM_OPTIONS = ("batch_size", "shuffle", "seed", "dtype", "prefetch", "buffer_mb", "missing_chunks")


def iter_batches(
    data: ChunkSource | str | os.PathLike,
    *,
    epoch: int = 0,
    cursor: Cursor | dict[str, int] | None = None,
    samples_first: bool = False,
    **options: Any,
) -> Iterator[Batch]:
    """The mini-batches of epoch ``epoch`` (0-based: ``fit``'s epoch ``epoch + 1``) of a store (path)
    or ChunkSource, as ``Batch(X, Y, cursor)``: X (n_x, B) and Y (k, B) in the training dtype, and the
    cursor where the next batch starts. ``cursor`` (a ``Cursor`` or its ``to_dict()``) continues an
    epoch from there instead. ``options`` are fit's streaming options (STREAM_OPTIONS), with fit's
    defaults; ``batch_size="full"`` is one batch of all m. Labels are given as stored (class ids stay ids)."""
    unknown = sorted(set(options) - set(STREAM_OPTIONS))
    if unknown:
        raise ConfigError(f"iter_batches takes no option {unknown[0]!r}; its options are {', '.join(STREAM_OPTIONS)}")
    config = FitConfig.from_options(options)
    if cursor is None:
        start = Cursor(config.seed, epoch)
    else:
        start = cursor if isinstance(cursor, Cursor) else Cursor.from_dict(cursor)
    with opened(data, missing_chunks=config.missing_chunks) as source:
        source.require_labels()
        B = source.m if config.batch_size == "full" else int(config.batch_size)
        stream = BatchStream(
            source,
            B,
            start,
            shuffle=config.shuffle,
            dtype=config.dtype,
            prefetch=config.prefetch,
            buffer_bytes=config.buffer_bytes,
        )
        for batch in stream:
            yield batch._replace(X=batch.X.T, Y=batch.Y.T) if samples_first else batch
