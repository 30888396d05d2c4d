"""Per-sample weights: ``--weights NAME`` (a (1, m) array of the store) and ``--class-weight balanced``.

The objective becomes the weighted mean loss (see ``streamtrain.models``):

    J = (1/m) Σ_i w̃_i loss_i + (λ / 2m) Σ_l ‖W[l]‖²_F,     w̃_i = w_i · m / Σ_j w_j

The weights are normalised to mean 1 over the samples a pass covers (the samples trained on, the
held-out ones, the store evaluated), so every sum stays a sum over samples: a mini-batch's
(1/B) Σ_batch w̃_i loss_i is an unbiased estimate of J, and B-weighted mini-batch gradients over an
epoch add up to ∇J exactly, as without weights. (Dividing each batch by its own Σ w would not be
unbiased.) ``balanced`` weighs class c by n / (classes present · n_c), scikit-learn's rule, counted
over the samples trained on; with ``--weights`` too, a sample weighs the product.

A ``Weighting`` is an argument of the reads that need it (``BatchStream``, ``FullBatch``,
``metrics``), as the labels' rule is: plain data that pickles to Dask workers, where the stored
weights are opened again by path. The weights are checked once, as the normalising pass reads
them: a NaN, an inf or a negative weight is a DataError naming the sample.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import ConfigError, DataError
from .models import Model
from .sources import ArraySource, ChunkSource, open_source

if TYPE_CHECKING:
    from .config import FitConfig

__all__ = ["CLASS_WEIGHTS", "StoredWeights", "Weighting", "class_ids", "weighting", "weighting_over"]

CLASS_WEIGHTS = {"balanced": "class c weighs n / (classes · n_c): every class counts as much as the others"}


class StoredWeights:
    """The array ``name`` of the store ``source`` is part of, (1, m) (or (m,) / (m, 1) when the store
    is samples-first), read by sample ranges through its own ChunkSource (direct reads). Chunks never
    written follow ``missing_chunks`` and by default read as the fill value, reported once, as labels'
    do: zarr skips writing a chunk of zero weights. Pickled, it keeps only how to open the array again."""

    def __init__(self, source: ChunkSource, name: str, missing_chunks: str | None = None) -> None:
        self.where = f"{source.name}/{name}"
        if source.format == "memory":
            if name not in source.named:
                raise DataError(f"{self.where}: no such array; the arrays given are {sorted(source.named) or 'none'}")
            (a, b), array = source.chunk_bounds[0], source.named[name]  # a view's first chunk may start past 0
            self._open: Callable[[], ChunkSource] = functools.partial(
                ArraySource, array, None, chunk_size=b - a, name=source.name, x=name
            )
        else:
            self._open = functools.partial(
                open_source,
                source.name,
                x=name,
                y=None,
                layout=source.layout,
                missing_chunks=missing_chunks or "fill",
                storage_options=None if source.remote is None else source.remote.storage_options,
            )
        self._source: ChunkSource | None = self._open()
        self._lock = threading.Lock()
        n, m = self._source.n_x, self._source.m
        if n != 1:
            self.close()
            shape = f"(1, {m})" if source.layout == "columns" else f"({m},) or ({m}, 1)"
            raise DataError(f"{self.where}: weights are one value per sample, shaped {shape}; it has {n} rows")

    @property
    def source(self) -> ChunkSource:
        with self._lock:  # opened again after pickling, once, by the first reader thread
            if self._source is None:
                self._source = self._open()
            return self._source

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)``'s weights, (1, stop - start) float64."""
        return np.asarray(self.source.read(start, stop)[0], dtype=np.float64)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def __getstate__(self) -> dict[str, Any]:
        return {"where": self.where, "_open": self._open}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _source=None, _lock=threading.Lock())


def class_ids(Y: np.ndarray) -> np.ndarray:
    """Each column's class: one row of 0/1 or class ids as they are, one-hot rows by their 1."""
    return Y[0].astype(np.intp) if Y.shape[0] == 1 else np.argmax(Y, axis=0)


@dataclass(frozen=True, eq=False)
class Weighting:
    """What each sample weighs: its stored weight, its class's weight, or their product, times ``scale``
    (``over`` sets it so that the weights have mean 1 over a source's samples)."""

    stored: StoredWeights | None
    classes: np.ndarray | None  # (classes,) float64: each class id's weight
    scale: float = 1.0
    described: str = ""  # for reports: "--weights W", "--class-weight balanced"

    def __call__(self, Y: np.ndarray, start: int, stop: int) -> np.ndarray:
        """The weights (1, stop - start) float64 of samples ``[start, stop)``, whose labels are Y."""
        return self.raw(Y, start, stop) * self.scale

    def raw(self, Y: np.ndarray, start: int, stop: int) -> np.ndarray:
        w = self.stored.read(start, stop) if self.stored is not None else None
        if self.classes is not None:
            per_class = self.classes[class_ids(Y)][None, :]
            w = per_class if w is None else w * per_class
        assert w is not None, "a Weighting weighs by stored weights, classes, or both"
        return w

    def over(self, source: ChunkSource, model: Model) -> Weighting:
        """This weighting normalised to mean 1 over ``source``'s samples: one pass over the weights
        (and labels, for class weights), which checks every weight is finite and >= 0."""
        total = 0.0
        for a, b in source.chunk_bounds:
            Y = source.read_labels(a, b, model.labels) if self.classes is not None else np.empty((1, b - a))
            w = self.raw(Y, a, b)
            bad = np.flatnonzero(~(np.isfinite(w[0]) & (w[0] >= 0)))
            if bad.size:
                where = self.stored.where if self.stored is not None else self.described
                raise DataError(
                    f"{where}: weight {w[0, bad[0]].item()!r} of sample {a + bad[0]:,} is not a finite number >= 0"
                )
            total += float(w.sum())
        if total <= 0:
            raise DataError(f"{self.described}: the weights of all {source.m:,} samples ({source.name}) are 0")
        return dataclasses.replace(self, scale=source.m / total)


@contextmanager
def weighting(
    model: Model,
    source: ChunkSource,
    weights: str | None,
    class_weight: str | None,
    counted: ChunkSource | None = None,
    missing_chunks: str | None = None,
) -> Iterator[Weighting | None]:
    """The weighting of ``weights`` (an array of ``source``'s store, opened with ``missing_chunks``:
    see ``StoredWeights``) and ``class_weight`` (classes counted over ``counted``, by default the whole
    source), not yet normalised (see ``Weighting.over``); None when neither is given. Stored weights
    are open until the block ends."""
    if weights is None and class_weight is None:
        yield None
        return
    table = None if class_weight is None else balanced(model, counted or source)
    stored = None if weights is None else StoredWeights(source, weights, missing_chunks)
    try:
        if stored is not None and stored.source.m != source.m:
            raise DataError(f"{stored.where} holds {stored.source.m:,} weights for the {source.m:,} samples of X")
        described = " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (("weights", weights), ("class_weight", class_weight)) if v
        )
        yield Weighting(stored, table, 1.0, described)
    finally:
        if stored is not None:
            stored.close()


def balanced(model: Model, source: ChunkSource) -> np.ndarray:
    """Each class's weight n / (classes present · n_c) over ``source`` (one pass over its labels)."""
    if not model.has_accuracy:
        raise ConfigError(
            f"--class-weight needs class labels; the {model.name} model's targets are real values (use --weights)"
        )
    classes = 2 if model.output == "sigmoid" else model.n_out(source.k)
    counts = np.zeros(classes, dtype=np.int64)
    for a, b in source.chunk_bounds:
        counts += np.bincount(class_ids(source.read_labels(a, b, model.labels)), minlength=classes)
    present = np.count_nonzero(counts)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, source.m / (present * counts), 0.0)


@contextmanager
def weighting_over(
    model: Model,
    source: ChunkSource,
    trained_with: FitConfig | None,
    weights: str | None = None,
    class_weight: str | None = None,
    unweighted: bool = False,
    missing_chunks: str | None = None,
) -> Iterator[Weighting | None]:
    """The weighting of a pass over a trained model (evaluate, compare, the exact J), normalised over
    ``source``: the one given, else the model's own (``trained_with``), none with ``unweighted``."""
    if unweighted and (weights is not None or class_weight is not None):
        raise ConfigError("--unweighted counts every sample once: leave out --weights and --class-weight")
    if not (unweighted or weights or class_weight) and trained_with is not None:
        weights, class_weight = trained_with.weights, trained_with.class_weight
    with weighting(model, source, weights, class_weight, missing_chunks=missing_chunks) as found:
        yield None if found is None else found.over(source, model)
