"""L-BFGS on the exact objective: the reference optimum J* that stochastic runs are measured against.

A solver on top of the exact-pass engine (``full_batch.FullBatch``): every evaluation of J and
∇J is one pass over the store. Needs scipy (``pip install 'streamtrain[lbfgs]'``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ._errors import ConfigError, DivergedError
from .full_batch import FullBatch
from .models import Params, norm
from .records import EpochRecord

__all__ = ["LBFGS", "MAX_ITER", "lbfgs"]

LBFGS = "lbfgs"  # its name among the optimizers
MAX_ITER = 100  # iterations when no number of epochs is given


def lbfgs(
    exact: FullBatch,
    params: Params,
    *,
    l2: float,
    max_iter: int,
    callback: Callable[[EpochRecord], None] | None = None,
) -> Params:
    """Minimise J with scipy's L-BFGS-B on exact losses and gradients (one pass per evaluation).

    Stops after ``max_iter`` iterations or when J stops improving at float64 precision. Each
    iteration's record (J, ‖∇J‖, passes so far, the samples its own passes read) goes to
    ``callback``; the last one also says whether and why L-BFGS stopped. Returns params in the
    dtype they came in.
    """
    try:
        from scipy.optimize import minimize
    except ImportError:
        raise ConfigError("optimizer 'lbfgs' needs scipy: pip install 'streamtrain[lbfgs]'") from None
    keys, dtype = list(params), next(iter(params.values())).dtype
    sizes = np.cumsum([params[k].size for k in keys])[:-1]

    def unravel(theta: np.ndarray) -> Params:
        return {k: v.reshape(params[k].shape) for k, v in zip(keys, np.split(theta, sizes))}

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grads = exact.loss_and_grad(unravel(theta), l2=l2)
        if not math.isfinite(loss):
            raise DivergedError(f"exact loss is {loss} during L-BFGS: the data holds NaN/inf")
        last["grad_norm"] = norm(grads)
        return loss, np.concatenate([grads[k].ravel() for k in keys])

    last: dict[str, float] = {"t": time.perf_counter(), "passes": exact.passes}
    records: list[EpochRecord] = []

    def on_iteration(intermediate_result: Any) -> None:
        # Held back one iteration, so the last record can also say why L-BFGS stopped.
        if records and callback is not None:
            callback(records[-1])
        now, passes = time.perf_counter(), exact.passes
        # L-BFGS-B reports the point it accepted, which is the one it evaluated last. Its samples
        # are the ones read since the last record: m per pass, and a line search may make more than one.
        records.append(
            EpochRecord(
                epoch=len(records) + 1,
                loss=float(intermediate_result.fun),
                grad_norm=last["grad_norm"],
                passes=passes,
                seconds=now - last["t"],
                samples=int(passes - last["passes"]) * exact.source.m,
            )
        )
        last["t"], last["passes"] = now, passes

    theta0 = np.concatenate([np.asarray(params[k], np.float64).ravel() for k in keys])
    result = minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        callback=on_iteration,
        options={"maxiter": max_iter, "gtol": 1e-10, "ftol": 1e-15},
    )
    if records and callback is not None:
        callback(dataclasses.replace(records[-1], converged=bool(result.success), stop=str(result.message)))
    return {k: v.astype(dtype) for k, v in unravel(result.x).items()}
