"""Small batches (B = 1, true SGD, up to ``MAX_BATCH``) for the 1-layer models, compiled: the span path.

A step at B = 1 does about 200 multiply-adds for 100 features; the per-batch path pays ~30 µs of
Python around them (a generator yield, ``Model.totals``, the optimizer's dict update), which caps
it near 30,000 samples/s. No rearranging of numpy calls removes a per-step cost: each step
depends on the one before. So the steps of a *span* (up to ``SPAN_SAMPLES`` samples of whole
batches inside one unit, ``BatchStream.spans``) run in one call of a loop compiled by numba
(``_sgd_kernel``), and Python sees each span once: the epoch's sums, the divergence monitor (its
rule compiled too, ``Monitor.update_many``), the cursor, checkpoints and stop requests.

Why numba, an optional extra (``pip install 'streamtrain[fast]'``): the loop is a few dozen lines
of plain Python over the same formulas as ``models`` and ``optim``, compiled on first use and
cached on disk, with no compiler needed on the user's machine; Cython or C would need one at
install (or wheels per platform) and a second language to read. Without numba (or with
``STREAMTRAIN_NO_JIT=1``) training takes the per-batch path: the same steps, results equal to
~1e-12 in float64 (tested); float32 runs round the same sums differently in the last bits.

Measured with ``scripts/bench_small_batches.py`` (one epoch, logistic, sgd, float32, B = 1; the
two paths interleaved in one process, median of 3 rounds; 2-core AMD EPYC):

    300k x 100 in memory       2.81M samples/s   per-batch 34k    82x
    500k x 100 raw zarr        1.85M             per-batch 33k    56x
    softmax, 10 classes        0.42M             per-batch 24k    17x  (10x the work per sample)
    scikit-learn SGDClassifier.partial_fit, the same pass in float64: 3.5M
    first compile 2.3 s per dtype (then cached: ~0.4 s to import numba and load it)

``MAX_BATCH``: with 100 features the compiled steps are 2.5-25x faster up to B = 64; with 1,000
they are 2x faster at B = 16 and 0.5x at B = 32, where numpy's per-batch step is no longer
dominated by its fixed cost.

Spans stop at steps that a checkpoint is due (``checkpoint_every``), so checkpoints land where
they do on the per-batch path; stop requests and the time-based checkpoints are looked at
between spans (at ~2M samples/s a span is ~30 ms).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import NamedTuple

import numpy as np

from .batches import Span
from .config import FitConfig
from .divergence import Fold
from .models import Model, Params
from .optim import OPTIMIZERS, LearningRate, OptimizerState, lr_steps

__all__ = ["MAX_BATCH", "NO_JIT", "SPAN_SAMPLES", "SmallBatches", "SpanResult", "small_batches"]

MAX_BATCH = 16  # up to it compiled steps win for any width measured (below: the docstring)
SPAN_SAMPLES = 65_536  # samples per compiled call: a stop request waits for one span at most
NO_JIT = "STREAMTRAIN_NO_JIT"  # set (not "0" or empty): always the per-batch path, e.g. to compare


class SpanResult(NamedTuple):
    done: int  # steps taken; fewer than asked when the next one's loss was not finite
    losses: np.ndarray  # each step's loss (J of its batch), and the non-finite one after them
    total: float  # the epoch's Σ loss·B so far, added up step by step as the per-batch path does
    correct: int  # correct predictions over the steps taken


def small_batches(model: Model, config: FitConfig, lr: LearningRate, m: int) -> SmallBatches | None:
    """The compiled path for this run's steps, or None for the per-batch path: the one place the choice
    is made. numba is imported here, only for a run that can use it."""
    batch_size = config.batch_size
    if os.environ.get(NO_JIT, "0") not in ("", "0") or model.hidden or config.optimizer not in OPTIMIZERS:
        return None
    if not isinstance(batch_size, int) or batch_size > MAX_BATCH:
        return None
    try:
        from . import _sgd_kernel
    except ImportError:  # numba is not installed
        return None
    return SmallBatches(_sgd_kernel, model, config, lr, m)


class SmallBatches:
    """One run's compiled steps: its output layer, optimizer rule and hyperparameters, l2 and m."""

    def __init__(self, kernel: ModuleType, model: Model, config: FitConfig, lr: LearningRate, m: int) -> None:
        outputs = {"sigmoid": kernel.SIGMOID, "softmax": kernel.SOFTMAX, "identity": kernel.IDENTITY}
        self.output, self.lr = outputs[model.output], lr
        self.rule = OPTIMIZERS[config.optimizer]
        self.hyper = (config.beta1, config.beta2, config.eps, self.rule.bias_correction)
        self.l2 = (config.l2 / m, config.l2 / (2 * m))  # as models.objective and loss_of scale it
        self.steps = kernel.steps_for(config.dtype)
        self.fold: Fold = kernel.fold

    def own(self, params: Params, opt: OptimizerState) -> tuple[Params, OptimizerState]:
        """Copies of ``params`` and ``opt`` that ``take`` may update in place (no caller's array changes)."""

        def copies(arrays: Params) -> Params:
            return {k: np.array(v, order="C") for k, v in arrays.items()}

        return copies(params), OptimizerState(int(opt.step), copies(opt.v), copies(opt.s))

    def take(self, params: Params, opt: OptimizerState, span: Span, first: int, count: int, total: float) -> SpanResult:
        """Steps ``first`` to ``first + count`` of ``span`` on ``own``'s arrays, in place (``opt.step`` is left
        to the caller); ``total``: the epoch's Σ loss·B before them."""
        W, b = params["W1"], params["b1"]
        none = np.empty((0, 0), W.dtype)
        moments = [opt.v.get(k, none) for k in ("W1", "b1")] + [opt.s.get(k, none) for k in ("W1", "b1")]
        alphas = lr_steps(self.lr, opt.step, count)
        losses = np.empty(count)
        start = span.start + first * span.width
        done, total, correct = self.steps(
            W, b, *moments, span.X, span.Y, start, span.width, alphas, opt.step, *self.hyper, *self.l2, self.output,
            losses, total,
        )  # fmt: skip
        return SpanResult(int(done), losses, float(total), int(correct))
