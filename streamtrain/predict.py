"""``streamtrain predict MODEL DATA --out PRED``: a trained model's predictions for every sample of a
store, streamed chunk by chunk into a column-wise store of their own.

The store read needs no labels (it is opened with ``y=None`` unless ``y`` is given; its labels
are not read). The output holds one array ``P`` of shape (r, m), one column per sample, chunked as
the input: the predicted class (0/1 for sigmoid, the class id for softmax; uint8, or int32 past
255 classes) or value (identity), or with ``proba`` the output layer itself (probabilities of
class 1, or of each class; values). It is built under a temporary name and swapped in when
complete, like every store streamtrain writes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ._errors import DataError
from ._progress import Progress
from .models import Model, Params
from .outputs import check_output, partial_name, remove_leftovers, remove_stale_partials, swap_in
from .parameters import check_values
from .result import Fitted, unpack
from .sources import ChunkSource, format_of, nonfinite_error, open_source
from .writing import Column, check_codec, set_attrs, write_store

__all__ = ["predict"]


def predict(
    fitted: Fitted,
    data: ChunkSource | str | os.PathLike,
    out: str | os.PathLike,
    *,
    proba: bool = False,
    model: str | Model | None = None,
    x: str = "X",
    layout: str = "columns",
    format: str | None = None,
    codec: str = "none",
    overwrite: bool = False,
    progress: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the predictions of ``fitted`` (a model file, a FitResult, or parameters with ``model``)
    for every sample of ``data`` to a new store at ``out``; return its shape, dtype and format.
    ``storage_options``: for ``data`` at a URL (see ``open_source``); ``out`` is a local path."""
    fmt = format or format_of(out)
    check_codec(fmt, codec)
    path = check_output(
        out, "store", data=data if not isinstance(data, ChunkSource) else data.name, overwrite=overwrite
    )
    params, model, _ = unpack(fitted, model)
    check_values(params)
    source = (
        data
        if isinstance(data, ChunkSource)
        else open_source(data, x=x, y=None, layout=layout, storage_options=storage_options)
    )
    try:
        n_in = params["W1"].shape[1]
        if n_in != source.n_x:
            raise DataError(f"{source.x_where}: the model takes {n_in} features per sample, the data has {source.n_x}")
        column = _column(model, params, proba)
        chunk = source.chunk_bounds[0][1] - source.chunk_bounds[0][0]
        remove_stale_partials(path)
        tmp = partial_name(path)
        try:
            enabled = sys.stderr.isatty() if progress is None else progress
            bar = Progress(f"predicting {os.path.basename(path)}", source.m, enabled=enabled)
            slabs = _predictions(source, model, params, proba, column.dtype, bar)
            write_store(tmp, fmt, slabs, [column], source.m, chunk, codec)
            bar.close()
            set_attrs(tmp, fmt, {"predictions_of": source.name, "proba": proba, "output": model.output})
            swap_in(tmp, path)
        finally:
            remove_leftovers(path)
    finally:
        if source is not data:
            source.close()
    return {"m": source.m, "rows": column.rows, "dtype": str(np.dtype(column.dtype)), "format": fmt, "chunk": chunk}


def _column(model: Model, params: Params, proba: bool) -> Column:
    """The output array: one row per output unit (probabilities, values), or one row of classes."""
    n_out = params[f"W{len(params) // 2}"].shape[0]
    if proba or model.output == "identity":
        return Column("P", n_out, "float32")
    return Column("P", 1, "uint8" if n_out <= 255 else "int32")


def _predictions(
    source: ChunkSource, model: Model, params: Params, proba: bool, dtype: Any, bar: Progress
) -> Iterator[tuple[int, np.ndarray]]:
    for a, b in source.chunk_bounds:
        X, _ = source.read(a, b)
        error = nonfinite_error(X, a, source.x_where, source.chunk_starts)  # a NaN would predict class 0
        if error is not None:
            raise error
        with np.errstate(over="ignore", invalid="ignore"):
            P = model.predict_proba(params, X) if proba else model.predict(params, X)
        if not np.isfinite(P).all():
            raise DataError(f"{source.x_where}: a prediction for the samples {a}..{b} is not finite: X too large")
        yield a, P.astype(dtype)
        bar.update(b)
