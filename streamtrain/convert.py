"""``streamtrain convert SRC DST``: a user's data as the column-wise chunked store training streams.

Inputs: a Zarr group or HDF5 file in either layout (``layout``, see ``sources._layout``), a
``.npy`` array (memory-mapped) or ``.npz`` archive, a CSV file (one sample per line, streamed), or
a Parquet file (one sample per row; the ``parquet`` extra).
Labels come from the store's or archive's Y array (``y``), a column of the samples
(``label_column``: its index, or its name in a CSV header), or a separate ``.npy`` file
(``labels``). Per-sample weights, for ``fit --weights W``, come from a column of a file or an
array of a store (``weights``) and are written as the array W. Every input is read in blocks of
samples and written in slabs of whole chunks: memory stays flat in m. The store is built under a
temporary name and swapped in when complete (``outputs.swap_in``), so a half-converted store never
looks complete. ``shuffle`` writes the samples in a random order (``_external_shuffle``: buckets
on disk beside the store, deleted after).

Values are stored exactly as numpy reads them, X in ``dtype`` (float32 by default); labels keep
an integer or boolean dtype, and are float32 otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ._errors import ConfigError, DataError
from ._external_shuffle import shuffled
from ._progress import Progress
from .config import DTYPES, FitConfig
from .declared import Declared, option, positive_int, same_as
from .outputs import check_output, partial_name, remove_leftovers, remove_stale_partials, scratch_name, swap_in
from .sources import FORMATS, default_chunk_size, format_of, is_url, open_source, url_only_zarr
from .writing import CODECS, Column, Shapes, check_codec, reslab, set_attrs, slab_samples, write_store

__all__ = ["ConvertConfig", "convert"]

BLOCK = 65_536  # samples read from the input at a time
WEIGHTS = "W"  # the array convert writes per-sample weights to
SHUFFLE_BYTES = 256 * 2**20  # --shuffle's buckets: each is held in memory once, to permute it
_FILE_SUFFIXES = (".csv", ".txt", ".parquet", ".npy", ".npz")  # inputs read as files (local only), not as stores


@dataclass(frozen=True)
class ConvertConfig(Declared):
    """convert's options (the arrays' names and the input's layout are data options, as for fit)."""

    label_column: str | None = option(
        None,
        "the column of the samples that holds the label: its index (0 = first), or its name in a CSV header; "
        "the other columns are X",
        metavar="J",
    )
    labels: str | None = option(None, "a .npy file of labels, (m,) or (m, k) (with --layout columns: (k, m))")
    weights: str | None = option(
        None,
        "each sample's weight: a column of a CSV, Parquet or array file (its index, or its name in a header), or "
        f"an array of a Zarr/HDF5 store (its name); written as the array {WEIGHTS}, for fit --weights {WEIGHTS}",
        metavar="J|NAME",
    )
    delimiter: str = option(",", "CSV field separator", metavar="C")
    format: str | None = option(None, "output format", choices=FORMATS, derived="hdf5 for *.h5/*.hdf5, else zarr")
    chunk: int | None = option(
        None, "samples per chunk", check=positive_int, parse=int, metavar="C", derived="about 8 MiB of X"
    )
    codec: str = option("none", "compression", choices=CODECS)
    dtype: str = option("float32", "X's stored precision", choices=DTYPES)
    seed: int = same_as(FitConfig, "seed", help="seed of --shuffle's order")


class Input(NamedTuple):
    """An input's samples: its shapes, and its columns in blocks (X (n_x, b), Y (k, b)) in order; with
    ``weighted``, each block's X has one more row, the samples' weights (shuffled with them)."""

    m: int
    n_x: int
    k: int
    y_dtype: np.dtype
    blocks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
    weighted: bool = False


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    config: ConvertConfig | None = None,
    /,
    *,
    x: str = "X",
    y: str = "Y",
    layout: str = "columns",
    shuffle: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Write the samples of ``src`` to a new column store at ``dst``; return what was written
    (m, n_x, k, dtypes, format, chunk, codec). See the module docstring. ``shuffle``: in a random
    order drawn from ``seed`` (see ``_external_shuffle``), so that a store sorted by label or time
    trains well from sequential reads. ``storage_options``: for a Zarr ``src`` at a URL (see
    ``open_source``); ``dst`` is a local path."""
    c = ConvertConfig.from_options({**(config.to_dict() if config else {}), **options})
    src = os.fspath(src)
    fmt = c.format or format_of(dst)
    check_codec(fmt, c.codec)
    path = check_output(dst, "store", data=src, overwrite=overwrite)
    samples = _input(src, c, x, y, layout, storage_options)
    chunk = min(c.chunk or default_chunk_size(samples.n_x, np.dtype(c.dtype).itemsize), samples.m)
    shapes = Shapes(samples.m, samples.n_x, samples.k, c.dtype, samples.y_dtype)
    columns = shapes.columns() + ([Column(WEIGHTS, 1, c.dtype)] if samples.weighted else [])
    remove_stale_partials(path)
    tmp = partial_name(path)
    try:
        enabled = sys.stderr.isatty() if progress is None else progress
        bar = Progress(f"converting {os.path.basename(src)}", samples.m, enabled=enabled)
        blocks = samples.blocks()
        if shuffle:
            dtypes = (np.dtype(c.dtype), samples.y_dtype)
            blocks = shuffled(blocks, samples.m, dtypes, scratch_name(path), c.seed, SHUFFLE_BYTES)
        slabs = reslab(blocks, samples.m, slab_samples(chunk, shapes.n_x * np.dtype(c.dtype).itemsize))
        shown = _shown(slabs, bar, c.dtype, samples.y_dtype, samples.weighted)
        write_store(tmp, fmt, shown, columns, shapes.m, chunk, c.codec)
        bar.close()
        origin = {"converted_from": src if is_url(src) else os.path.abspath(src), "layout": layout}
        set_attrs(tmp, fmt, {**origin, **({"shuffled_with_seed": c.seed} if shuffle else {})})
        swap_in(tmp, path)
    finally:
        remove_leftovers(path)
    written = {"format": fmt, "chunk": chunk, "codec": c.codec, "y_dtype": str(samples.y_dtype)}
    return {**shapes._asdict(), **written, "weights": WEIGHTS if samples.weighted else None}


def _shown(slabs: Iterator, bar: Progress, x_dtype: str, y_dtype: np.dtype, weighted: bool) -> Iterator:
    """Slabs as written: X, Y (and the weights, X's last row as read) in their dtypes; progress shown."""
    for start, (X, Y) in slabs:
        X = X.astype(x_dtype, copy=False)
        yield (
            start,
            *((X[:-1], Y.astype(y_dtype, copy=False), X[-1:]) if weighted else (X, Y.astype(y_dtype, copy=False))),
        )
        bar.update(start + X.shape[1])


def _input(src: str, c: ConvertConfig, x: str, y: str, layout: str, storage_options: Any) -> Input:
    """The samples of ``src``, by its kind (see the module docstring)."""
    lower = src.lower()
    if is_url(src) and lower.endswith(_FILE_SUFFIXES):
        raise url_only_zarr(src, "a file of samples")
    if not is_url(src) and not os.path.exists(src):
        raise DataError(f"{src}: no such file or directory")
    if lower.endswith(".csv") or lower.endswith(".txt"):
        return _from_csv(src, c)
    if lower.endswith(".parquet"):
        return _from_parquet(src, c)
    if lower.endswith(".npy"):
        return _from_arrays(src, np.load(src, mmap_mode="r"), None, c, layout)
    if lower.endswith(".npz"):
        with np.load(src) as archive:
            found = ", ".join(archive.files) or "nothing"
            if x not in archive.files:
                raise DataError(f"{src}: no array {x!r} (found: {found})")
            labels = archive[y] if y in archive.files and c.label_column is None and c.labels is None else None
            return _from_arrays(src, archive[x], labels, c, layout)
    if c.label_column is not None or c.labels is not None:
        raise ConfigError(
            f"{src}: a store's labels are its array {y!r} (--y); --label-column and --labels are for files"
        )
    open_array = functools.partial(open_source, src, layout=layout, storage_options=storage_options)
    source = open_array(x=x, y=y)
    weights = None if c.weights is None else open_array(x=c.weights, y=None)
    if weights is not None and (weights.n_x, weights.m) != (1, source.m):
        raise DataError(
            f"{weights.x_where}: expected one weight per sample, (1, {source.m}); got ({weights.n_x}, {weights.m})"
        )

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        with source, weights or contextlib.nullcontext():
            for a, b in source.chunk_bounds:
                X, Y = source.read(a, b)
                yield (X if weights is None else np.vstack([X, weights.read(a, b)[0]])), Y

    y_dtype = _label_dtype(source.arrays()[1].dtype)
    return Input(source.m, source.n_x, source.k, y_dtype, blocks, weights is not None)


def _from_arrays(src: str, A: np.ndarray, Y: np.ndarray | None, c: ConvertConfig, layout: str) -> Input:
    """Samples of an array, as rows (``layout="rows"``) or columns, with their labels (see the module)."""
    if A.ndim != 2:
        raise DataError(f"{src}: expected a 2-D array of samples, got shape {A.shape}")
    rows = layout == "rows"
    m, width = (A.shape[0], A.shape[1]) if rows else (A.shape[1], A.shape[0])
    label = None if c.label_column is None else _column_index(c.label_column, width, src)
    features = _features(width, label, c.weights, src)
    if label is not None:
        Y = A[:, label] if rows else A[label]
    elif c.labels is not None:
        Y = np.load(c.labels, mmap_mode="r")
    if Y is None:
        raise ConfigError(f"{src}: where are the labels? Name them: --label-column J, or --labels FILE.npy")
    Y = Y[:, None] if (Y.ndim == 1 and rows) else (Y[None, :] if Y.ndim == 1 else Y)
    y_samples = Y.shape[0] if rows else Y.shape[1]
    if Y.ndim != 2 or y_samples != m:
        hint = " (or the other --layout)" if Y.ndim == 2 and (Y.shape[1] if rows else Y.shape[0]) == m else ""
        raise DataError(f"{src}: {m} samples but labels shaped {Y.shape}{hint}")
    whole = features == list(range(width))  # no column to leave out or move: slice, do not gather

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for a in range(0, m, BLOCK):
            if rows:
                block = np.asarray(A[a : a + BLOCK])
                yield (block if whole else block[:, features]).T, np.asarray(Y[a : a + BLOCK]).T
            else:
                block = np.asarray(A[:, a : a + BLOCK])
                yield (block if whole else block[features]), np.asarray(Y[:, a : a + BLOCK])

    k = Y.shape[1] if rows else Y.shape[0]
    weighted = c.weights is not None
    return Input(m, len(features) - weighted, k, _label_dtype(Y.dtype), blocks, weighted)


def _from_csv(src: str, c: ConvertConfig) -> Input:
    """Samples as CSV lines: a header line is taken as the columns' names when a field of it is not
    a number; one pass counts the lines, a second parses them in blocks."""
    with open(src, encoding="utf-8") as f:
        first = f.readline()
        fields = [field.strip() for field in first.rstrip("\r\n").split(c.delimiter)]
        header = fields if any(not _is_number(field) for field in fields) else None
        m = sum(1 for line in f if line.strip()) + (0 if header else bool(first.strip()))
    width = len(fields)
    if c.label_column is None:
        raise ConfigError(f"{src}: name the column of labels: --label-column J (or its name in the header)")
    j = _column_index(c.label_column, width, src, header)
    features = _features(width, j, c.weights, src, header)

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        with open(src, encoding="utf-8") as f:
            line_no = 1 + (header is not None)
            if header is not None:
                f.readline()
            lines = (line for line in f if line.strip())
            while chunk := list(itertools.islice(lines, BLOCK)):
                values = _parse(chunk, c.delimiter, width, src, line_no)
                line_no += len(chunk)
                yield values[:, features].T, values[:, [j]].T

    weighted = c.weights is not None
    return Input(m, len(features) - weighted, 1, np.dtype("float32"), blocks, weighted)


def _from_parquet(src: str, c: ConvertConfig) -> Input:
    """Samples as the rows of a Parquet file (the ``parquet`` extra: pyarrow), read a row group batch
    at a time; every column numeric, one of them the labels (``label_column``: name or index)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{src}: reading Parquet needs pyarrow: pip install 'streamtrain[parquet]'") from None
    try:
        schema = pq.ParquetFile(src).schema_arrow
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{src}: not a Parquet file ({e})") from None
    names = list(schema.names)
    if c.label_column is None:
        raise ConfigError(f"{src}: name the column of labels: --label-column NAME (the columns: {', '.join(names)})")
    j = _column_index(c.label_column, len(names), src, names)
    for field in schema:
        if not _is_numeric_arrow(field.type):
            raise DataError(f"{src}: column {field.name!r} is {field.type}, not numeric")
    y_type = schema.field(j).type
    features = [names[i] for i in _features(len(names), j, c.weights, src, names)]

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch in pq.ParquetFile(src).iter_batches(batch_size=BLOCK):
            X = np.vstack([batch.column(name).to_numpy(zero_copy_only=False) for name in features])
            yield X, batch.column(names[j]).to_numpy(zero_copy_only=False)[None, :]

    m = pq.ParquetFile(src).metadata.num_rows
    weighted = c.weights is not None
    return Input(m, len(features) - weighted, 1, _label_dtype(y_type.to_pandas_dtype()), blocks, weighted)


def _is_numeric_arrow(arrow_type: Any) -> bool:
    import pyarrow.types as pt

    return bool(pt.is_integer(arrow_type) or pt.is_floating(arrow_type) or pt.is_boolean(arrow_type))


def _parse(lines: list[str], delimiter: str, width: int, src: str, first_line: int) -> np.ndarray:
    try:
        values = np.loadtxt(io.StringIO("".join(lines)), delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{src}: lines {first_line}..{first_line + len(lines) - 1}: {e}") from None
    if values.shape[1] != width:
        raise DataError(f"{src}: lines from {first_line} hold {values.shape[1]} fields, the first line {width}")
    return values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _features(
    width: int, label: int | None, weights: str | None, src: str, header: list[str] | None = None
) -> list[int]:
    """The columns that are X, in order, then the weights' column (``weights``) when given: X's last
    row as read. The label's and weights' columns are not features."""
    w = None if weights is None else _column_index(weights, width, src, header)
    if w is not None and w == label:
        raise ConfigError(f"{src}: column {weights!r} cannot hold both the labels and the weights")
    return [i for i in range(width) if i not in (label, w)] + ([] if w is None else [w])


def _column_index(column: str | int, width: int, src: str, header: list[str] | None = None) -> int:
    """The index of ``column``: a name in the header, or an index (negative from the end)."""
    if header is not None and str(column) in header:
        return header.index(str(column))
    try:
        j = int(column)
    except (TypeError, ValueError):
        names = f" (the header: {', '.join(header)})" if header else ""
        raise ConfigError(f"{src}: no column {column!r}{names}") from None
    if not -width <= j < width:
        raise ConfigError(f"{src}: column {j} is out of range: the samples have {width} values")
    return j % width


def _label_dtype(dtype: Any) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise DataError(f"labels of dtype {dtype} are not numeric")
    return dtype if dtype.kind in "biu" else np.dtype("float32")
