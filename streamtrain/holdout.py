"""``--holdout F``: whole chunks set aside for validation, chosen by the seed, never trained on.

Whole chunks, so that both parts are read as the store lays them out (no per-sample selection);
``ceil(F · chunks)`` of them, at least one left on each side. Training and validation each see
the store through a ``ChunkSubset``; the validation loss of every epoch is exact (one pass over
the held-out chunks, without the L2 term, as ``evaluate`` reports). A resumed run draws the same
chunks from the same seed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._errors import ConfigError
from .sources import ChunkSource, SourceView

__all__ = ["ChunkSubset", "split_holdout"]


def split_holdout(source: ChunkSource, fraction: float, seed: int) -> tuple[ChunkSubset, ChunkSubset]:
    """(training, validation): the chunks of ``source`` not held out, and ``fraction`` of them held out."""
    n = source.n_chunks
    held = math.ceil(fraction * n)
    if not 1 <= held <= n - 1:
        raise ConfigError(
            f"--holdout {fraction:g} of {n} chunks leaves none to train or validate on; store more chunks"
        )
    order = np.random.default_rng([seed, 3]).permutation(n)
    validation = np.sort(order[:held])
    training = np.setdiff1d(np.arange(n), validation)
    return ChunkSubset(source, training), ChunkSubset(source, validation)


class ChunkSubset(SourceView):
    """``source`` seen as some of its chunks (in store order), read through the source."""

    def __init__(self, source: ChunkSource, chunks: np.ndarray) -> None:
        super().__init__(source)
        self.chunks = [int(c) for c in chunks]
        self.chunk_bounds = tuple(source.chunk_bounds[c] for c in self.chunks)
        self.m = sum(b - a for a, b in self.chunk_bounds)
        self.direct = None  # direct arrays number the source's chunks; reads go through the source

    def read_labels(self, start: int, stop: int, labels: Any = None) -> np.ndarray:
        return self.source.read_labels(start, stop, labels)

    @property
    def raw_x(self) -> bool:
        return self.source.raw_x

    @property
    def chunk_items(self) -> int | None:
        return self.source.chunk_items

    def read_x_rows(self, chunks: Any, out: np.ndarray, arrange: Any = None) -> np.ndarray:
        return self.source.read_x_rows([self.chunks[int(c)] for c in chunks], out, arrange)

    def will_read(self, c: int) -> None:
        self.source.will_read(self.chunks[c])
