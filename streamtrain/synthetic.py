"""Generated regression data, written chunk by chunk to Zarr or HDF5.

Conventions: x ~ N(0, I) in R^n_x; the true model is W (r, n_x), b (r, 1), each row of W
of norm w_norm / sqrt(r) so that ||W||_F = w_norm; Z = W x + b.
- logistic  r = 1:        y ~ Bernoulli(sigmoid(z)),       Y (1, m) uint8 in {0, 1}
- softmax   r = classes:  y ~ Categorical(softmax(Z)),     Y (1, m) uint8 class ids 0..classes-1
- linear    r = outputs:  y = Z + noise * N(0, I),         Y (outputs, m) float32
Columns are generated in fixed blocks of BLOCK samples, each from its own seeded stream,
so the same seed gives the same data whatever the format, chunk size or codec (and the same
X whatever the task). The store's attributes record the true model and the Bayes loss: the
mean loss of the true model on these very (stored) samples, the floor a fitted model can
approach (log-loss, cross-entropy, or 0.5 * ||y - W x - b||^2 per sample).
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ._errors import ConfigError, check_int
from ._progress import Progress
from .batches import Prefetcher
from .config import FitConfig
from .declared import Declared, non_negative, option, positive, positive_int, same_as
from .outputs import check_output, partial_name, remove_leftovers, remove_stale_partials, swap_in
from .sources import FORMATS, default_chunk_size, format_of
from .writing import CODECS, Shapes, check_codec, reslab, set_attrs, slab_samples, write_store

__all__ = ["CODECS", "TASKS", "DataConfig", "Task", "make_data"]

BLOCK = 16384


class Truth(NamedTuple):
    """The true model: W (r, n_x), b (r, 1), and the noise's standard deviation (linear only)."""

    task: str
    W: np.ndarray
    b: np.ndarray
    noise: float


Labels = tuple[np.ndarray, np.ndarray]  # Y (k, BLOCK) and the true model's loss per column (1, BLOCK)


def _logistic_labels(rng: np.random.Generator, X: np.ndarray, truth: Truth) -> Labels:
    Z = (truth.W.astype(np.float32) @ X).astype(np.float64) + truth.b  # float32 product: old seeds, same labels
    Y = rng.random((1, BLOCK)) < 0.5 * (1.0 + np.tanh(0.5 * Z))
    return Y.astype(np.uint8), np.logaddexp(0.0, Z) - Y * Z


def _softmax_labels(rng: np.random.Generator, X: np.ndarray, truth: Truth) -> Labels:
    Z = truth.W @ X.astype(np.float64) + truth.b  # (r, BLOCK)
    top = Z.max(axis=0, keepdims=True)
    lse = top + np.log(np.exp(Z - top).sum(axis=0, keepdims=True))  # log sum_c exp(Z_c), (1, BLOCK)
    cdf = np.cumsum(np.exp(Z - lse), axis=0)
    y = (cdf[:-1] < rng.random((1, BLOCK))).sum(axis=0, keepdims=True)  # inverse CDF: ids 0..r-1
    return y.astype(np.uint8), lse - np.take_along_axis(Z, y, axis=0)


def _linear_labels(rng: np.random.Generator, X: np.ndarray, truth: Truth) -> Labels:
    Z = truth.W @ X.astype(np.float64) + truth.b  # (r, BLOCK)
    Y = (Z + truth.noise * rng.standard_normal(Z.shape)).astype(np.float32)
    return Y, 0.5 * ((Y - Z) ** 2).sum(axis=0, keepdims=True)  # the noise as stored


def _true_model(W: np.ndarray, b: np.ndarray) -> tuple[Any, Any]:
    return W.tolist(), b.ravel().tolist()


def _flat_true_model(W: np.ndarray, b: np.ndarray) -> tuple[Any, Any]:
    return W.ravel().tolist(), float(b[0, 0])  # logistic's original w_true and scalar b_true


class Task(NamedTuple):
    """A generated task: the rows r of its true W, its labels, and what the store records."""

    rows: Callable[[DataConfig], int]
    y_rows: Callable[[int], int]  # rows of Y, given r
    y_dtype: str
    labels: Callable[[np.random.Generator, np.ndarray, Truth], Labels]
    attrs: Callable[[DataConfig, int], dict[str, Any]]  # task-specific attributes, given r
    true_model: Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]  # w_true, b_true as recorded


# One task per 1-layer model (models.OUTPUTS), under the model's name.
TASKS = {
    "logistic": Task(lambda c: 1, lambda r: 1, "uint8", _logistic_labels, lambda c, r: {}, _flat_true_model),
    "softmax": Task(
        lambda c: c.classes, lambda r: 1, "uint8", _softmax_labels, lambda c, r: {"classes": r}, _true_model
    ),
    "linear": Task(
        lambda c: c.outputs,
        lambda r: r,
        "float32",
        _linear_labels,
        lambda c, r: {"outputs": r, "noise": c.noise},
        _true_model,
    ),
}


@dataclass(frozen=True)
class DataConfig(Declared):
    """make-data's options. ``classes`` is read only for softmax, ``outputs`` and ``noise`` only
    for linear; other tasks ignore them unchecked."""

    task: str = option(
        "logistic",
        "logistic: Y (1, m) of 0/1; softmax: Y (1, m) class ids; linear: Y (outputs, m) real values with "
        "Gaussian noise",
        choices=TASKS,
    )
    classes: int = option(3, "softmax classes", metavar="K")
    outputs: int = option(1, "linear outputs", metavar="K")
    noise: float = option(1.0, "linear noise std")
    m: int = option(200_000, "samples", check=positive_int)
    n_x: int = option(100, "features", check=positive_int)
    format: str | None = option(None, "store format", choices=FORMATS, derived="hdf5 for *.h5/*.hdf5, else zarr")
    chunk: int | None = option(
        None, "samples per chunk", check=positive_int, parse=int, metavar="C", derived="about 8 MiB of X"
    )
    codec: str = option("none", "compression", choices=CODECS)
    seed: int = same_as(FitConfig, "seed")
    w_norm: float = option(3.0, "norm of the true weights", check=non_negative)

    def _derived(self) -> dict[str, Any]:
        if self.task == "softmax":
            check_int("classes", self.classes)
            if not 2 <= self.classes <= 255:  # class ids are stored as uint8
                raise ConfigError(f"classes must be an integer from 2 to 255, got {self.classes!r}")
            return {"classes": int(self.classes)}
        if self.task == "linear":
            return {"outputs": positive_int("outputs", self.outputs), "noise": positive("noise", self.noise)}
        return {}

    def format_for(self, path: str | os.PathLike) -> str:
        """``format``, or the one the path's suffix names."""
        return self.format or format_of(path)


def make_data(
    path: str | os.PathLike,
    config: DataConfig | None = None,
    /,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Write a dataset X (n_x, m) float32, Y for its task (see the module) to ``path``; return its attributes.

    ``options`` are ``DataConfig``'s (or pass a whole ``config``); the format defaults to the
    path's suffix. An existing ``path`` is replaced only with ``overwrite``, and only if it is a
    store (a Zarr group or an HDF5 file). The store is built under a temporary name and swapped
    into place when complete, so an interruption at any moment leaves a complete store at
    ``path`` (the old or the new one) and never a half-written one.
    ``progress`` draws a progress line on stderr (default: only when stderr is a terminal).
    """
    c = DataConfig.from_options({**(config.to_dict() if config else {}), **options})
    fmt = c.format_for(path)
    check_codec(fmt, c.codec)
    path = check_output(path, "store", overwrite=overwrite)
    remove_stale_partials(path)
    task = TASKS[c.task]
    chunk = min(c.chunk or default_chunk_size(c.n_x, 4), c.m)
    rows = task.rows(c)  # of W, b
    W, b = true_weights(rows, c.n_x, c.seed, c.w_norm)
    truth = Truth(c.task, W, b, c.noise)
    tmp = partial_name(path)
    losses: list[float] = []
    try:
        enabled = sys.stderr.isatty() if progress is None else progress
        bar = Progress(f"writing {os.path.basename(path)}", c.m, enabled=enabled)
        slabs = _shown(_slabs(c.m, c.n_x, chunk, c.seed, truth, losses), bar)
        shapes = Shapes(c.m, c.n_x, task.y_rows(rows), "float32", task.y_dtype)
        write_store(tmp, fmt, slabs, shapes.columns(), c.m, chunk, c.codec)
        loss_sum = sum(losses)
        bar.close()
        w_true, b_true = task.true_model(W, b)
        attrs = {
            "task": c.task,
            "m": c.m,
            "n_x": c.n_x,
            **task.attrs(c, rows),
            "seed": c.seed,
            "w_norm": c.w_norm,
            "w_true": w_true,
            "b_true": b_true,
            "bayes_loss": loss_sum / c.m,
        }
        set_attrs(tmp, fmt, attrs)
        swap_in(tmp, path)  # the old store, if any, now at tmp or its aside name
    finally:
        remove_leftovers(path)
    return attrs


def true_weights(rows: int, n_x: int, seed: int, w_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """W (rows, n_x), each row of norm w_norm / sqrt(rows), and a small intercept b (rows, 1)."""
    rng = np.random.default_rng([seed, 0])
    W = rng.standard_normal((rows, n_x))
    # Row norms one at a time, as np.linalg.norm(w) always did: the same bits for logistic.
    norms = np.array([[np.linalg.norm(row)] for row in W])
    W *= w_norm / (math.sqrt(rows) * norms)
    return W, rng.normal(0.0, 0.5, (rows, 1))


def block(j: int, n_x: int, seed: int, truth: Truth) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block j: X (n_x, BLOCK) float32, Y (k, BLOCK), and the true model's loss per column (1, BLOCK)."""
    rng = np.random.default_rng([seed, 1, j])
    X = rng.standard_normal((n_x, BLOCK), dtype=np.float32)
    return (X, *TASKS[truth.task].labels(rng, X, truth))


def _slabs(
    m: int, n_x: int, chunk: int, seed: int, truth: Truth, losses: list[float]
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start, X, Y) for consecutive slabs of whole chunks covering [0, m); each slab's sum of the
    true model's losses goes to ``losses``."""
    blocks = Prefetcher((functools.partial(block, j, n_x, seed, truth) for j in range(-(-m // BLOCK))), depth=2)
    try:
        for start, (X, Y, slab_losses) in reslab(blocks, m, slab_samples(chunk, 4 * n_x)):
            losses.append(float(slab_losses.sum()))
            yield start, X, Y
    finally:
        blocks.close()


def _shown(slabs: Iterator, bar: Progress) -> Iterator:
    for slab in slabs:
        yield slab
        bar.update(slab[0] + slab[1].shape[1])  # after the slab is written
