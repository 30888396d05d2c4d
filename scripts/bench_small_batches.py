"""Small batches: the compiled span path (``streamtrain/small_batches.py``) against the per-batch path.

    python scripts/bench_small_batches.py                       # 300k x 100 in memory, and a zarr store
    python scripts/bench_small_batches.py --m 100000 --rounds 2 --zarr none

Each row is one epoch of ``fit`` (logistic, sgd, shuffle none, float32), the compiled path and
the per-batch path (``STREAMTRAIN_NO_JIT=1``) interleaved round by round in this one process;
samples/s from the epoch record, median [min-max] over the rounds, and their ratio. Also: the
batch-size sweep that sets ``MAX_BATCH``, the compile time (a fresh numba cache, in a child
process) and the load time from the cache, and scikit-learn's ``SGDClassifier.partial_fit`` on
the same samples when it is installed (the same algorithm: one pass of B = 1 SGD, constant rate).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

import streamtrain
from streamtrain import small_batches
from streamtrain.small_batches import NO_JIT

SNIPPET = """
import time, numpy as np, streamtrain
X = np.ones((100, 1000), np.float32); Y = np.ones((1, 1000), np.float32)
t = time.perf_counter()
streamtrain.fit(streamtrain.ArraySource(X, Y), batch_size=1, epochs=1, progress=False)
print(time.perf_counter() - t)
"""


def rate(data: object, jit: bool, batch_size: int = 1, **options: object) -> float:
    """samples/s of one epoch of ``fit`` on ``data``, the compiled path or the per-batch one."""
    os.environ[NO_JIT] = "0" if jit else "1"
    options = {"epochs": 1, "lr": 0.01, "shuffle": "none", "progress": False, **options}
    return streamtrain.fit(data, batch_size=batch_size, **options).history[-1].samples_per_s  # type: ignore[arg-type]


def paths(data: object, batch_size: int = 1, **options: object) -> dict[str, Callable[[], float]]:
    """The compiled and the per-batch path on the same epoch, to time."""
    return {
        jit: functools.partial(rate, data, jit == "compiled", batch_size, **options)
        for jit in ("compiled", "per-batch")
    }


def interleaved(rounds: int, **variants: Callable[[], float]) -> dict[str, list[float]]:
    """Each variant once per round, in alternating order."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name in list(variants)[:: 1 if r % 2 == 0 else -1]:
            results[name].append(variants[name]())
    return results


def row(label: str, results: dict[str, list[float]]) -> None:
    """A table row: each variant's median [min-max] samples/s, and the first's ratio to the second."""
    med = [statistics.median(v) for v in results.values()]
    cells = [f"{m:,.0f} [{min(v):,.0f}-{max(v):,.0f}]" for m, v in zip(med, results.values())]
    print(f"| {label} | {' | '.join(cells)} | {med[0] / med[1]:.2f}x |", flush=True)


def zarr_copy(path: str, m: int) -> str:
    """The first m samples of the store at ``path`` as a store of the same chunks in the temp dir (made once)."""
    import zarr

    copy = os.path.join(tempfile.gettempdir(), f"bench-small-batches-{m}.zarr")
    if not os.path.exists(copy):
        source, out = zarr.open_group(path, mode="r"), zarr.open_group(copy + ".part", mode="w")
        out.attrs.update(source.attrs.asdict())
        for name in ("X", "Y"):
            array = source[name]
            part = out.create_array(
                name, shape=(array.shape[0], m), chunks=array.chunks, dtype=array.dtype, compressors=None
            )
            part[...] = array[:, :m]
        os.rename(copy + ".part", copy)
    return copy


def compile_seconds() -> tuple[float, float]:
    """(first compile, load from the cache): seconds of a tiny B = 1 fit in a child process with a fresh cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, NO_JIT: "0"}
        run = [sys.executable, "-c", SNIPPET]
        first, again = (float(subprocess.run(run, env=env, capture_output=True, check=True).stdout) for _ in "12")
    return first, again


def sklearn_rate(X: np.ndarray, Y: np.ndarray) -> float | None:
    try:
        from sklearn.linear_model import SGDClassifier
    except ImportError:
        return None
    samples, y = np.ascontiguousarray(X.T, dtype=np.float64), Y[0].astype(np.int64)
    model = SGDClassifier(loss="log_loss", penalty=None, learning_rate="constant", eta0=0.01, shuffle=False)
    t = time.perf_counter()
    model.partial_fit(samples, y, classes=[0, 1])
    return X.shape[1] / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, default=300_000, help="in-memory samples (100 features)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--zarr", default="/work/bench-data/raw.zarr", help="a store to copy the first --zarr-m from, or none"
    )
    p.add_argument("--zarr-m", type=int, default=500_000)
    args = p.parse_args()

    first, cached = compile_seconds()
    print(f"compile: {first:.2f} s for a first B = 1 fit with an empty numba cache, {cached:.2f} s from the cache")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, args.m)).astype(np.float32)
    Y = (rng.random((1, args.m)) < 1 / (1 + np.exp(-X[:10].sum(axis=0)))).astype(np.float32)
    memory = streamtrain.ArraySource(X, Y, chunk_size=65_536)
    rate(memory, True)  # numba imported and the kernel loaded before any timing
    print("\n| B = 1, logistic, samples/s | compiled | per-batch | ratio |\n|---|---|---|---|")
    row(
        f"{args.m:,} x 100 in memory",
        interleaved(args.rounds, fast=lambda: rate(memory, True), plain=lambda: rate(memory, False)),
    )
    if args.zarr != "none":
        store = zarr_copy(args.zarr, args.zarr_m)
        row(
            f"{args.zarr_m:,} x 100 raw zarr",
            interleaved(args.rounds, fast=lambda: rate(store, True), plain=lambda: rate(store, False)),
        )
    sk = sklearn_rate(X, Y)
    print(f"\nsklearn SGDClassifier.partial_fit, one pass: {sk:,.0f} samples/s" if sk else "\nsklearn: not installed")

    small_batches.MAX_BATCH = 10**9  # the sweep that chooses it
    print("\n| model, n_x, B (in memory) | compiled | per-batch | ratio |\n|---|---|---|---|")
    for model, n_x, classes, m in (
        ("logistic", 100, 2, 60_000),
        ("softmax", 100, 10, 30_000),
        ("logistic", 1000, 2, 15_000),
    ):
        Xs = rng.standard_normal((n_x, m)).astype(np.float32)
        Ys = rng.integers(0, classes, (1, m)).astype(np.float32)
        data = streamtrain.ArraySource(Xs, Ys, chunk_size=65_536)
        for B in (1, 8, 16, 32, 64):
            row(f"{model}, {n_x}, {B}", interleaved(args.rounds, **paths(data, B, model=model)))


if __name__ == "__main__":
    main()
