"""A model bound to a store: the model completed for the store's labels, and the store opened.

``models.py`` is pure maths and knows nothing of stores; this is where the two meet, for
training, the exact path and compare alike. What the labels must be is then the model's
``labels`` rule, which every read is given (``ChunkSource.read(..., labels=model.labels)``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from ._errors import ConfigError, DataError
from .config import FitConfig
from .labels import LabelError
from .models import OUTPUTS, Model, Params, output_of
from .parameters import check_params
from .result import Fitted, unpack
from .sources import ChunkSource, opened

__all__ = ["LabelsSeen", "bind", "bind_fitted", "for_data", "labels_seen"]


@contextmanager
def bind(
    model: Model, data: ChunkSource | str | os.PathLike, *, missing_chunks: str | None = None
) -> Iterator[tuple[Model, ChunkSource]]:
    """``model`` completed for a store (``for_data``) and the store, opened here if given as a
    path (see ``sources.open_source`` for ``missing_chunks``) and closed after the block. A label
    the model cannot learn from, met in the block, is a LabelError that names the model option
    the store's labels fit, when there is one."""
    with opened(data, missing_chunks=missing_chunks) as source:
        bound = for_data(model, source)
        try:
            yield bound, source
        except LabelError as e:
            raise LabelError(f"{e}{_fitting_option(bound, source)}") from None


@contextmanager
def bind_fitted(
    data: ChunkSource | str | os.PathLike,
    fitted: Fitted,
    model: str | Model | None = None,
    *,
    missing_chunks: str | None = None,
) -> Iterator[tuple[Params, Model, FitConfig | None, ChunkSource]]:
    """The parameters of a trained model (see ``result.unpack``), the model bound to a store,
    its training configuration when known, and the store; ConfigError unless the parameters
    fit the model on this store."""
    params, model, config = unpack(fitted, model)
    with bind(model, data, missing_chunks=missing_chunks) as (model, source):
        check_params(model, params, source.n_x, source.k)
        yield params, model, config, source


def for_data(model: Model, source: ChunkSource) -> Model:
    """``model`` completed for ``source``'s labels: an mlp's output, softmax's class count.

    An mlp without an output takes the store's generated task (make-data records it), else the
    output its labels fit (``labels_seen``: one streamed pass over Y). Raises ConfigError when the
    labels' shape cannot fit the output.
    """
    source.require_labels()
    k = source.k
    name = model.output or output_of(source.attrs.get("task", "")) or labels_seen(source).output
    output, classes = OUTPUTS[name], None  # None: one-hot rows hold k classes, or no classes at all
    if output.one_row and k != 1:
        raise ConfigError(f"{source.y_where} has {k} rows; the {model.name} model needs Y shaped (1, m)")
    if output.class_ids and k == 1:
        classes = model.classes or _class_count(source)
    return dataclasses.replace(model, output=name, classes=classes)


def _class_count(source: ChunkSource) -> int:
    """The classes of class-id labels (1, m): the count make-data recorded, else the largest label + 1."""
    stored = source.attrs.get("classes")
    if stored is not None:
        if type(stored) is not int or stored < 2:
            raise DataError(f"{source.name}: its attribute classes={stored!r} is not a number of classes (>= 2)")
        return stored
    top = source.label_max()  # finite: NaN or inf is a DataError naming the sample
    if top < 1:
        raise ConfigError(f"{source.y_where}: softmax needs at least 2 classes; the largest label is {top:g}")
    if top >= source.m:  # a label that is no class id (a sentinel such as 10^9) would make a huge model
        raise DataError(
            f"{source.y_where}: the largest label is {top:g}, but class ids run 0, 1, ..., classes - 1 with "
            f"at most as many classes as samples (m={source.m:,})"
        )
    return int(top) + 1


class LabelsSeen(NamedTuple):
    output: str  # the output layer these labels fit: sigmoid, softmax or identity
    described: str  # what they are, for messages


def labels_seen(source: ChunkSource) -> LabelsSeen:
    """What the store's labels are, from one pass over Y: one row of 0/1 (sigmoid), one row of class
    ids or rows of 0/1 (softmax: one-hot columns), or other real values (identity)."""
    binary = class_ids = one_hot = True
    top = 0.0
    for _, Y in source.label_chunks():
        if source.k == 1:
            binary = binary and bool(np.all((Y == 0) | (Y == 1)))
            class_ids = class_ids and bool(np.all((Y >= 0) & (np.floor(Y) == Y)))
            top = max(top, float(np.max(Y)))
        else:  # 0/1 rows: one-hot columns, or one-hot with a broken column the rule will name
            one_hot = one_hot and bool(np.all((Y == 0) | (Y == 1)))
    if source.k > 1:
        return LabelsSeen("softmax", f"one-hot over {source.k} classes") if one_hot else _REAL_VALUES
    if binary:
        return LabelsSeen("sigmoid", "0/1")
    if class_ids and top < source.m:  # class ids run 0..classes-1, with fewer classes than samples
        return LabelsSeen("softmax", f"class ids 0..{int(top)}")
    return _REAL_VALUES


_REAL_VALUES = LabelsSeen("identity", "real values")


def _fitting_option(model: Model, source: ChunkSource) -> str:
    """ "; the labels are ...: --model M fits them" (--output for an mlp), or "" when the model's own
    output is the one that fits, or the labels cannot be read."""
    try:
        seen = labels_seen(source)
    except DataError:
        return ""
    if seen.output == model.output:
        return ""
    option = f"--output {seen.output}" if model.name == "mlp" else f"--model {OUTPUTS[seen.output].model}"
    return f"; the labels are {seen.described}: {option} fits them"
