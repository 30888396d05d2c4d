"""How good are mini-batch gradients at given params? Compared with the exact full-batch one.

For every requested batch size B, a sample of the mini-batches training would see (same
shuffle mode and seed) is compared with the exact gradient ∇J: the cosine between the two
and the relative error ‖g_B − ∇J‖ / ‖∇J‖.

The exact pass also gives the gradient-noise statistics of McCandlish et al. (2018), "An
Empirical Model of Large-Batch Training":

    tr(Σ)    = (1/m) Σ_i ‖g_i − ḡ‖²      variance of the per-sample gradients g_i
    B_noise  = tr(Σ) / ‖∇J‖²             the "simple noise scale" (unbounded, inf, when ∇J = 0)

To reach a given loss, batches of size B need about S_min (1 + B_noise / B) steps and
E_min (1 + B / B_noise) samples: well below B_noise steps are mostly noise but no samples
are wasted; well above it, samples are wasted. For batches drawn at random the expected relative error is
sqrt(tr(Σ) / B · (m − B) / (m − 1)) / ‖∇J‖; a measured error well above that means the
store's sample order is not random.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batches import BatchStream, Cursor
from .binding import bind_fitted
from .config import SCHEDULER_HELP, FitConfig
from .declared import Declared, boolean, option, positive_int, same_as
from .evaluation import check_finite
from .full_batch import DEFAULT_SCHEDULER, FullBatch
from .models import Model, Params, as_float64, batch_objective, norm
from .result import Fitted, l2_of
from .sources import ChunkSource
from .weights import Weighting, weighting_over

__all__ = ["DEFAULT_BATCH_SIZES", "CompareConfig", "advice", "compare"]

DEFAULT_BATCH_SIZES = (16, 64, 256, 1024, 4096, 16384, 65536)
NOISY_ORDER = 1.5  # measured / random-sampling error above this: the store order is not random


def _batch_sizes(name: str, value: Any) -> tuple[int, ...]:
    return tuple(positive_int("batch_size", B) for B in value)


@dataclass(frozen=True)
class CompareConfig(Declared):
    """compare's options; those it shares with training are fit's own declarations."""

    batch_sizes: tuple[int, ...] | None = option(
        None,
        "batch sizes to compare, besides the model's own",
        check=_batch_sizes,
        parse=int,
        nargs="+",
        flag="--batch-size",
        metavar="B",
        derived=f"{' '.join(map(str, DEFAULT_BATCH_SIZES[:3]))} ... {DEFAULT_BATCH_SIZES[-1]}, up to m",
    )
    batches: int = option(32, "mini-batches drawn per batch size", check=positive_int, metavar="N")
    l2: float | None = same_as(FitConfig, "l2", None, help="L2 penalty of J", derived="the model's own")
    shuffle: str = same_as(FitConfig, "shuffle", help="how mini-batches are drawn, as in fit")
    seed: int = same_as(FitConfig, "seed")
    scheduler: str = same_as(FitConfig, "scheduler", DEFAULT_SCHEDULER, help=SCHEDULER_HELP, derived=None)
    missing_chunks: str | None = same_as(FitConfig, "missing_chunks")
    weights: str | None = same_as(
        FitConfig, "weights", help="weigh each sample by this (1, m) array of the store", derived="the model's own"
    )
    class_weight: str | None = same_as(
        FitConfig,
        "class_weight",
        help="balanced: class c weighs n / (classes · n_c), counted over this store (accuracy is then balanced)",
        derived="the model's own",
    )
    unweighted: bool = option(False, "count every sample once, whatever the model was trained with", check=boolean)


def compare(
    data: ChunkSource | str | os.PathLike,
    fitted: Fitted,
    *,
    model: str | Model | None = None,
    train_batch_size: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Exact J, ‖∇J‖ and noise scale at a model's params, and per batch size how mini-batch gradients compare.

    ``fitted`` is what ``fit`` returned, a model file, or bare parameters with their ``model``.
    ``options`` are ``CompareConfig``'s: ``batches`` mini-batches of each of ``batch_sizes`` are
    drawn as epoch 0 of training with this ``shuffle`` and ``seed`` would draw them (only whole
    batches of B samples); ``l2`` is J's λ, by default the model's own. The batch size the
    params were trained with (``train_batch_size``, by default the model's own) is added to the
    sizes and judged in the advice. Returns a JSON-ready dict; ``advice`` holds plain-language
    conclusions.
    """
    config = CompareConfig.from_options(options)
    weighing = (config.weights, config.class_weight, config.unweighted, config.missing_chunks)
    with (
        bind_fitted(data, fitted, model, missing_chunks=config.missing_chunks) as (params, model, trained_with, source),
        weighting_over(model, source, trained_with, *weighing) as weighting,
    ):
        l2 = l2_of(trained_with) if config.l2 is None else config.l2
        if train_batch_size is None and trained_with is not None and trained_with.batch_size != "full":
            train_batch_size = int(trained_with.batch_size)
        m = source.m
        extra = () if train_batch_size is None else (positive_int("batch_size", train_batch_size),)
        sizes = sorted({min(B, m) for B in (*(config.batch_sizes or DEFAULT_BATCH_SIZES), *extra)})
        params = as_float64(params)  # mini-batch gradients too are compared in float64
        t0 = time.perf_counter()
        with FullBatch(source, model, scheduler=config.scheduler, weighting=weighting) as exact:
            loss, grad, totals = exact.objective_with_totals(params, l2=l2, sample_norms=True)
        exact_s = time.perf_counter() - t0
        # Σ‖g_i − ḡ‖²/m = Σ‖g_i‖²/m − ‖ḡ‖², over the data term only: the L2 term is the
        # same for every sample and adds no noise.
        grad_sq, grad_sum = totals.grad_sq, totals.grads
        assert grad_sq is not None and grad_sum is not None  # asked for: sample_norms, gradients
        g_norm = norm(grad)
        check_finite(loss, g_norm, grad_sq)  # nothing below is computed from inf or NaN
        trace = max(0.0, grad_sq / m - norm(grad_sum) ** 2 / m**2)
        b_noise = _ratio(trace, g_norm**2)
        rows = [_batch_row(source, model, params, grad, B, config, l2, trace, weighting) for B in sizes]
    report = {
        "data": source.name,
        "m": m,
        "model": model.name,
        "l2": l2,
        "shuffle": config.shuffle,
        "seed": config.seed,
        "loss": loss,
        "grad_norm": g_norm,
        "trace_cov": trace,
        "noise_scale": b_noise,
        "suggested_batch_size": _suggest(b_noise, m),
        "exact_seconds": exact_s,
        "scheduler": config.scheduler,
        "weighted": None if weighting is None else weighting.described,
        "train_batch_size": train_batch_size,
        "batch_sizes": rows,
    }
    report["advice"] = advice(report)
    return report


def _batch_row(
    source: ChunkSource,
    model: Model,
    params: Params,
    grad: Params,
    B: int,
    config: CompareConfig,
    l2: float,
    trace: float,
    weighting: Weighting | None,
) -> dict[str, Any]:
    """Cosine and relative error of the first ``config.batches`` whole mini-batches of size B."""
    m, g_norm = source.m, norm(grad)
    cursor = Cursor(config.seed, 0)
    stream = BatchStream(
        source, B, cursor, shuffle=config.shuffle, dtype=np.float64, labels=model.labels, weighting=weighting
    )
    cosines, errors = [], []
    with closing(iter(stream)) as it:
        for batch in itertools.islice((b for b in it if b.X.shape[1] == B), config.batches):
            _, g, _ = batch_objective(model, params, batch.X, batch.Y, l2=l2, m=m, weights=batch.weights)
            dot, scale = sum(float(np.vdot(g[k], grad[k])) for k in grad), norm(g) * g_norm
            cosines.append(dot / scale if scale > 0 else 0.0)  # a zero gradient has no direction
            errors.append(_ratio(norm({k: g[k] - grad[k] for k in grad}), g_norm))
    fpc = (m - B) / (m - 1) if m > 1 else 0.0  # sampling without replacement from m samples
    return {
        "batch_size": B,
        "batches": len(errors),
        # At ∇J = 0 there is no direction to compare with: None, shown as n/a.
        "cosine_mean": float(np.mean(cosines)) if g_norm > 0 else None,
        "cosine_min": float(np.min(cosines)) if g_norm > 0 else None,
        "rel_error_mean": float(np.mean(errors)),
        "rel_error_rms": math.sqrt(float(np.mean(np.square(errors)))),
        "rel_error_random": _ratio(math.sqrt(trace / B * fpc), g_norm),
    }


def _ratio(a: float, b: float) -> float:
    """a / b for a, b >= 0, where a / 0 is unbounded (inf) and 0 / 0 is 0: a quantity measured
    relative to a zero gradient has no bound unless it is zero itself."""
    return a / b if b > 0 else math.inf if a > 0 else 0.0


def _suggest(b_noise: float, m: int) -> int:
    """A power of two near B_noise, within [1, m]."""
    if not math.isfinite(b_noise) or b_noise >= m:
        return m
    return int(min(m, 2 ** math.floor(math.log2(max(b_noise, 1.0)) + 0.5)))


def advice(report: dict[str, Any]) -> list[str]:
    """Plain-language conclusions from a ``compare`` report."""
    b_noise, m, out = report["noise_scale"], report["m"], []
    if math.isinf(b_noise):
        return [
            "The exact gradient is zero at these params (a stationary point, such as the optimum): B_noise is "
            "unbounded and every mini-batch step only adds noise. Decay the learning rate to zero, or use "
            "full-batch L-BFGS (--optimizer lbfgs), which stops here."
        ]
    if b_noise >= m:
        out.append(
            f"B_noise ({b_noise:,.0f}) is larger than the data (m = {m:,}): the exact gradient is small "
            f"next to the per-sample noise, as near an optimum. Mini-batch steps mostly add noise here: "
            f"decay the learning rate, use large batches, or finish with full-batch L-BFGS "
            f"(--optimizer lbfgs)."
        )
    else:
        out.append(
            f"B_noise is about {b_noise:,.0f}. Batches well below it waste no samples but their steps are "
            f"mostly noise; near it, reaching a given loss takes about twice the fewest possible steps and "
            f"twice the fewest samples; well above it, samples are wasted. When an epoch's time is mostly "
            f"reading, as on one machine, B below B_noise costs nothing extra. Balance point at these "
            f"params: B = {report['suggested_batch_size']:,} (B_noise grows as training converges)."
        )
    trained = next((r for r in report["batch_sizes"] if r["batch_size"] == report.get("train_batch_size")), None)
    if trained is not None and trained["batch_size"] < m:
        B, ratio = trained["batch_size"], b_noise / trained["batch_size"]
        if ratio > 4:
            out.append(
                f"These params were trained with B = {B:,}, {ratio:,.0f}x below B_noise: such batches have a "
                f"mean cosine of only {trained['cosine_mean']:.2f} with the exact gradient, so training settles "
                f"at a noise floor set by the learning rate. To get closer to the optimum, lower the learning "
                f"rate for the last epochs or raise B at the same rate (--init continues from this model)."
            )
        elif ratio < 0.25:
            out.append(
                f"These params were trained with B = {B:,}, {1 / ratio:,.0f}x above B_noise: a smaller batch "
                f"would reach the same loss from fewer samples."
            )
        else:
            out.append(f"These params were trained with B = {B:,}, near B_noise: a balance of steps and samples.")
    for row in report["batch_sizes"]:
        B, measured, random = row["batch_size"], row["rel_error_rms"], row["rel_error_random"]
        if m > B and random > 0 and measured > NOISY_ORDER * random:
            out.append(
                f"At B = {B:,} the mini-batch gradients are {measured / random:.1f}x noisier than random "
                f"samples of the same size would be: the store's sample order is not random. Train with "
                f"--shuffle buffer, or shuffle the store once."
            )
            break
    return out
