"""The small-batch steps compiled with numba: imported only when a run takes that path (``small_batches``).

Conventions
-----------
W (n, n_x), b (n, 1) are a 1-layer model's parameters and vW, vb, sW, sb its optimizer's moments
(arrays of size 0 when the rule keeps none); X (n_x, ·), Y (k, ·) hold the samples, one a
column. One call takes ``len(alphas)`` steps of ``width`` samples from column ``start`` on, each
exactly as ``models.batch_objective`` and ``optim`` take it, updating the arrays in place:

    Z = W @ X + b,  A = g(Z),  dZ = A - Y,  loss = Σ loss_i / B + λ/(2m) ‖W‖²
    g_W = dZ @ X.T / B + (λ/m) W,  g_b = Σ dZ / B,  then the optimizer's rule with α = alphas[j]

Per-sample values are computed in float64 whatever the arrays' dtype; each parameter and moment
is rounded to it once per step. Float sums run in a fixed order, so the same call on the same
arrays gives the same bits: resuming mid-epoch repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numba
import numpy as np
from numba import types

from .divergence import fold_losses

__all__ = ["IDENTITY", "SIGMOID", "SOFTMAX", "fold", "steps_for"]

SIGMOID, SOFTMAX, IDENTITY = 0, 1, 2  # the output layers, by the code ``steps`` takes
# Samples copied at once from X (n_x, ·), where one is strided (by 256 KB in a unit of 65,536 float32
# samples: its features share a cache set and evict each other), into rows of a float64 scratch:
# 16 float32 samples fill a cache line. Reading one sample at a time ran 1.5-4x slower.
GATHER = 16

# nogil: the prefetch thread reads the next unit while a span trains. error_model numpy: a
# division by zero gives inf/NaN (found by the loss check) instead of raising.
_jit = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")

# Sums over features may be reordered (vectorised: 1.2-1.4x faster steps); the order is fixed by the
# compiled code, so the same arrays still give the same bits.
_sums = _jit(fastmath={"reassoc"})
fold = _jit(fold_losses)  # the divergence monitor's rule, the same function compiled


@_jit
def _gather(X, first, count, samples):
    """samples[col] = column first + col of X for col < count, in float64 (see ``GATHER``)."""
    for k in range(samples.shape[1]):
        for col in range(count):
            samples[col, k] = X[k, first + col]


@_sums
def _forward(W, b, samples, col, Z):
    """Z = W @ x + b for the sample x = samples[col]."""
    n, n_x = W.shape
    for i in range(n):
        z = 0.0
        for k in range(n_x):
            z += W[i, k] * samples[col, k]
        Z[i] = z + b[i, 0]


@_jit
def _gradient(W, dZ, samples, first, i, l2_m, G):
    """G = row i of dZ @ X.T / B + (λ/m) W, as ``models.objective`` scales it; X's columns are the rows
    of ``samples`` from ``first`` on."""
    G[:] = 0.0
    for col in range(dZ.shape[1]):
        d = dZ[i, col]
        for k in range(G.shape[0]):
            G[k] += d * samples[first + col, k]
    for k in range(G.shape[0]):
        G[k] = G[k] / dZ.shape[1] + l2_m * W[i, k] if l2_m else G[k] / dZ.shape[1]


@_sums
def _squares(W):
    """‖W‖² in float64."""
    total = 0.0
    for i in range(W.shape[0]):
        for k in range(W.shape[1]):
            total += np.float64(W[i, k]) * W[i, k]
    return total


@_jit
def _target(Y, c, i, class_ids):
    """Row i of sample c's target: its label, or 1.0/0.0 for a class id (one-hot, as ``Model._targets``)."""
    if class_ids:
        return 1.0 if Y[0, c] == i else 0.0
    return np.float64(Y[i, c])


@_jit
def _output(output, Z, Y, c, class_ids, dZ, col):
    """Sample c's loss and whether its prediction is right (as ``models.OUTPUTS``); dZ[:, col] = A - Y."""
    n = Z.shape[0]
    if output == SOFTMAX:
        top, label = 0, 0
        for i in range(n):  # the first largest logit and the first largest target, as argmax
            top = i if Z[i] > Z[top] else top
            label = i if _target(Y, c, i, class_ids) > _target(Y, c, label, class_ids) else label
        shift, total = Z[top], 0.0
        for i in range(n):
            dZ[i, col] = math.exp(Z[i] - shift)  # e^S, until it is divided below
            total += dZ[i, col]
        loss = math.log(total)
        for i in range(n):
            y = _target(Y, c, i, class_ids)
            loss -= y * (Z[i] - shift)
            dZ[i, col] = dZ[i, col] / total - y
        return loss, top == label
    loss, right = 0.0, output == SIGMOID
    for i in range(n):
        z, y = Z[i], _target(Y, c, i, class_ids)
        if output == SIGMOID:  # softplus(z) - y z; class 1 where a >= 0.5
            loss += max(z, 0.0) + math.log1p(math.exp(-abs(z))) - y * z
            a = 0.5 * (1.0 + math.tanh(0.5 * z))
            right = right and (a >= 0.5) == (y == 1.0)
            dZ[i, col] = a - y
        else:  # ½ (z - y)²
            loss += 0.5 * (z - y) * (z - y)
            dZ[i, col] = z - y
    return loss, right


@_jit
def _descend(P, V, S, i, G, alpha, beta1, beta2, eps, c1, c2):
    """Row i of P takes the optimizer's step on its gradient G (V, S: its moments, size 0 when unused;
    c1, c2: Adam's bias corrections, 1.0 without), in ``optim._compose``'s order of operations.
    A row per call: a call per element, which passes three arrays, made a B = 1 step 4x slower."""
    for k in range(G.shape[0]):
        g, direction = G[k], G[k]
        if V.size:
            V[i, k] = beta1 * V[i, k] + (1.0 - beta1) * g
            direction = V[i, k] / c1
        if S.size:
            S[i, k] = beta2 * S[i, k] + (1.0 - beta2) * (g * g)
            P[i, k] = P[i, k] - alpha * direction / (math.sqrt(S[i, k] / c2) + eps)
        else:
            P[i, k] = P[i, k] - alpha * direction


def _steps(
    W, b, vW, vb, sW, sb, X, Y, start, width, alphas, step, beta1, beta2, eps, bias, l2_m, l2_2m, output, losses, total
):
    """Take ``len(alphas)`` steps (see the module docstring); ``step``: updates taken before them, ``l2_m``
    and ``l2_2m``: λ/m and λ/(2m), ``total``: the epoch's Σ loss·B so far. Each step's loss goes to
    ``losses``. Returns (steps taken, total, correct predictions); fewer steps than asked when a loss
    is not finite: that step's parameters stay as they were, its loss is in ``losses``."""
    n, n_x = W.shape
    class_ids = Y.shape[0] == 1 and n > 1
    per_gather = max(1, GATHER // width)  # steps whose samples are gathered at once
    samples, Z, dZ = np.empty((per_gather * width, n_x)), np.empty(n), np.empty((n, width))
    G, G_b = np.empty(n_x), np.empty(1)
    steps, correct = alphas.shape[0], 0
    for j in range(steps):
        first, row, loss, right = start + j * width, (j % per_gather) * width, 0.0, 0
        if row == 0:
            _gather(X, first, min(per_gather, steps - j) * width, samples)
        for col in range(width):
            _forward(W, b, samples, row + col, Z)
            sample_loss, hit = _output(output, Z, Y, first + col, class_ids, dZ, col)
            loss, right = loss + sample_loss, right + hit
        loss = loss / width
        if l2_2m:
            loss += l2_2m * _squares(W)
        losses[j] = loss
        if not math.isfinite(loss):
            return j, total, correct
        total, correct = total + loss * width, correct + right
        t = float(step + j + 1)
        c1, c2 = (1.0 - beta1**t, 1.0 - beta2**t) if bias else (1.0, 1.0)
        for i in range(n):  # row by row: the gradient of W[i] and b[i], then their step
            G_b[0] = 0.0
            for col in range(width):
                G_b[0] += dZ[i, col]
            G_b[0] /= width
            _gradient(W, dZ, samples, row, i, l2_m, G)
            _descend(W, vW, sW, i, G, alphas[j], beta1, beta2, eps, c1, c2)
            _descend(b, vb, sb, i, G_b, alphas[j], beta1, beta2, eps, c1, c2)
    return steps, total, correct


@functools.cache
def steps_for(dtype: str) -> Callable[..., tuple[int, float, int]]:
    """``_steps`` compiled for parameters of ``dtype`` (float32 or float64) on first use: one signature
    whose X and Y take any layout (a unit, a view of one, a joined batch) and may be read-only (a chunk
    read directly is), so each dtype compiles once."""
    P = types.Array(numba.from_dtype(np.dtype(dtype)), 2, "C")  # parameters and moments
    D = types.Array(numba.from_dtype(np.dtype(dtype)), 2, "A", readonly=True)  # data
    f64, i64, vector = types.float64, types.int64, types.Array(types.float64, 1, "C")
    signature = types.Tuple((i64, f64, i64))(
        P, P, P, P, P, P, D, D, i64, i64, vector, i64, f64, f64, f64, types.boolean, f64, f64, i64, vector, f64
    )
    return _jit(signature)(_steps)
