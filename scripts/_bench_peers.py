"""Peers for scripts/bench.py: the same logistic regression by SGD in PyTorch and scikit-learn.

Both are optional (``pip install '.[bench]'``); a missing one raises ``Skipped`` and its rows
say so. Arrays come in streamtrain's layout, X (n_x, m) float32 and Y (1, m); both peers want
samples as rows, so each batch is passed as the transposed view ``X[:, a:b].T`` (no copy here;
whatever copy a peer makes is its own cost).
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import numpy as np


class Skipped(Exception):
    """A row that cannot run here; the message says why."""


def _needs(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise Skipped(f"{package} is not installed (pip install '.[bench]')") from None


def torch_epoch(X: np.ndarray, Y: np.ndarray, batch_size: int, lr: float, threads: int | None = None) -> float:
    """Seconds of one epoch of nn.Linear + BCEWithLogitsLoss + optim.SGD over batches of ``batch_size``,
    on ``threads`` threads (None: torch's default, one per core)."""
    torch = _needs("torch", "torch")
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    try:
        return _torch_epoch(torch, X, Y, batch_size, lr)
    finally:
        torch.set_num_threads(default_threads)


def _torch_epoch(torch: Any, X: np.ndarray, Y: np.ndarray, batch_size: int, lr: float) -> float:
    torch.manual_seed(0)
    model = torch.nn.Linear(X.shape[0], 1)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y.astype(np.float32))
    t0 = time.perf_counter()
    for a in range(0, X.shape[1], batch_size):
        xb, yb = Xt[:, a : a + batch_size].T, Yt[:, a : a + batch_size].T  # (B, n_x), (B, 1) views
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()
    return time.perf_counter() - t0


def torch_loader(store: str, batch_size: int, samples: int, batch_reads: bool) -> float:
    """Seconds a PyTorch DataLoader takes to deliver ``samples`` shuffled samples of a zarr store, as
    its documentation builds one: a map-style Dataset whose items are samples (``batch_reads``
    False: ``X[:, i]`` per sample), or one zarr read per batch of random indices (``batch_reads``:
    ``X.get_orthogonal_selection`` through a BatchSampler). Neither knows the chunks: every read of
    a sample or a batch decodes the whole chunks it touches."""
    torch = _needs("torch", "torch")
    import zarr

    group = zarr.open_group(store, mode="r")
    X, Y = group["X"], group["Y"]
    data = torch.utils.data

    class Samples(data.Dataset):
        def __len__(self) -> int:
            return X.shape[1]

        def __getitem__(self, i: Any) -> tuple[np.ndarray, np.ndarray]:
            if batch_reads:  # a list of indices, sorted so zarr reads each chunk once
                index = np.sort(np.asarray(i))
                return X.get_orthogonal_selection((slice(None), index)).T, Y.get_orthogonal_selection(
                    (slice(None), index)
                ).T
            return X[:, i], Y[:, i]

    generator = torch.Generator().manual_seed(0)
    if batch_reads:
        sampler = data.BatchSampler(data.RandomSampler(Samples(), generator=generator), batch_size, drop_last=False)
        loader = data.DataLoader(Samples(), sampler=sampler, batch_size=None)
    else:
        loader = data.DataLoader(Samples(), batch_size=batch_size, shuffle=True, generator=generator)
    seen, t0 = 0, time.perf_counter()
    for x, _ in loader:
        seen += x.shape[0]
        if seen >= samples:
            break
    return time.perf_counter() - t0


def _sgd_classifier(lr: float) -> Any:
    linear_model = _needs("sklearn.linear_model", "scikit-learn")
    # Plain SGD on the log-loss at a constant rate, no penalty, samples in the order given: the
    # same algorithm as streamtrain's logistic model with --optimizer sgd.
    return linear_model.SGDClassifier(
        loss="log_loss", penalty=None, learning_rate="constant", eta0=lr, shuffle=False, random_state=0
    )


def sklearn_batches(X: np.ndarray, Y: np.ndarray, batch_size: int, lr: float) -> float:
    """Seconds of ``SGDClassifier.partial_fit`` over the same batches (it steps per sample inside each)."""
    clf, y = _sgd_classifier(lr), Y[0]
    classes = np.array([0, 1])
    t0 = time.perf_counter()
    for a in range(0, X.shape[1], batch_size):
        clf.partial_fit(X[:, a : a + batch_size].T, y[a : a + batch_size], classes=classes)
    return time.perf_counter() - t0


def sklearn_sgd(X: np.ndarray, Y: np.ndarray, lr: float) -> float:
    """Seconds of one ``partial_fit`` over the whole block: one epoch of per-sample SGD, B = 1."""
    clf = _sgd_classifier(lr)
    t0 = time.perf_counter()
    clf.partial_fit(X.T, Y[0], classes=np.array([0, 1]))
    return time.perf_counter() - t0
