"""Exact loss, gradient and accuracy of a model over a whole store, in one call each.

Both open the store (or take a ``ChunkSource``), bind the model to it, check the parameters'
shapes and run one exact pass (``full_batch.FullBatch``) with the scheduler asked for.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ._errors import DivergedError
from .binding import bind_fitted
from .full_batch import DEFAULT_SCHEDULER, FullBatch
from .metrics import metrics
from .models import Model, Params, norm
from .result import Fitted, l2_of
from .sources import ChunkSource
from .weights import weighting_over

__all__ = ["check_finite", "evaluate", "exact_fields", "loss_and_grad", "validation_fields"]


def check_finite(loss: float, *more: float) -> float:
    """``loss``, if it and the other results of an exact pass (a gradient norm, ...) are finite.

    The parameters were checked to be finite and the data is checked as it is read, so a
    non-finite result comes from parameters so large that the arithmetic overflows: a diverged
    model. A result that is not a number must never be reported as one.
    """
    if not all(math.isfinite(x) for x in (loss, *more)):
        shown = loss if not math.isfinite(loss) else next(x for x in more if not math.isfinite(x))
        what = "loss" if not math.isfinite(loss) else "gradient"
        raise DivergedError(f"the model's {what} is {shown}: its parameters are too large (a diverged model?)")
    return loss


def loss_and_grad(
    data: ChunkSource | str | os.PathLike,
    fitted: Fitted,
    *,
    model: str | Model | None = None,
    l2: float | None = None,
    scheduler: str | None = DEFAULT_SCHEDULER,
    weights: str | None = None,
    class_weight: str | None = None,
    unweighted: bool = False,
) -> tuple[float, Params]:
    """Exact J = (1/m) Σ loss + (λ/2m) Σ ‖W‖² and ∇J over a whole store, in one pass (float64).

    ``fitted`` is what ``fit`` returned, a model file, or bare parameters with their ``model``
    (a ``Model``, or the name of a 1-layer model). ``l2`` is λ: by default the one the model
    was trained with, 0 for bare parameters. The samples are weighed by ``weights`` (an array of
    the store) and ``class_weight``, by default as the model was trained; ``unweighted=True``
    counts each once (see ``streamtrain.weights``).
    """
    with (
        bind_fitted(data, fitted, model) as (params, model, config, source),
        weighting_over(model, source, config, weights, class_weight, unweighted) as weighting,
        FullBatch(source, model, scheduler=scheduler, weighting=weighting) as exact,
    ):
        loss, grads = exact.loss_and_grad(params, l2=l2_of(config) if l2 is None else l2)
    return check_finite(loss, norm(grads)), grads


def evaluate(
    data: ChunkSource | str | os.PathLike,
    fitted: Fitted,
    *,
    model: str | Model | None = None,
    scheduler: str | None = DEFAULT_SCHEDULER,
    missing_chunks: str | None = None,
    weights: str | None = None,
    class_weight: str | None = None,
    unweighted: bool = False,
) -> dict[str, Any]:
    """Exact mean loss (no L2 term) and, for classifiers, accuracy of a model over a whole store,
    and the metrics of its kind (``streamtrain.metrics``: ROC-AUC; confusion, precision and
    recall; RMSE and R²) from one more pass.

    ``fitted`` is what ``fit`` returned, a model file, or bare parameters with their ``model``.
    One chunk at a time; ``scheduler="sync"`` streams the chunks without Dask. A store given by
    its path is opened with ``missing_chunks`` (see ``sources.open_source``).

    Samples are weighed as the model was trained (``--weights``, ``--class-weight``), unless
    ``weights=NAME``, ``class_weight="balanced"`` (accuracy is then balanced accuracy) or
    ``unweighted=True`` say otherwise; ``"weighted"`` in the result says how.
    """
    with (
        bind_fitted(data, fitted, model, missing_chunks=missing_chunks) as (params, model, config, source),
        weighting_over(model, source, config, weights, class_weight, unweighted, missing_chunks) as weighting,
        FullBatch(source, model, scheduler=scheduler, weighting=weighting) as exact,
    ):
        t = exact.totals(params, grad=False)
        result: dict[str, Any] = {"loss": check_finite(t.loss / t.samples), "m": t.samples}
        if model.has_accuracy:
            result["accuracy"] = t.correct / t.samples
        if weighting is not None:
            result["weighted"] = weighting.described
        result.update(metrics(source, model, params, weighting))
    return result


def exact_fields(exact: FullBatch, params: Params, l2: float) -> dict[str, Any]:
    """Exact J, ‖∇J‖ and accuracy over the whole store (one pass), for a mini-batch epoch's record."""
    loss, grads, totals = exact.objective_with_totals(params, l2=l2)
    accuracy = totals.correct / totals.samples if exact.model.has_accuracy else None
    return {"exact_loss": loss, "exact_grad_norm": norm(grads), "exact_accuracy": accuracy}


def validation_fields(held_out: FullBatch, params: Params) -> dict[str, Any]:
    """The mean loss (no L2 term, as evaluate) and accuracy over the held-out chunks (one pass)."""
    totals = held_out.totals(params, grad=False)
    accuracy = totals.correct / totals.samples if held_out.model.has_accuracy else None
    return {"validation_loss": totals.loss / totals.samples, "validation_accuracy": accuracy}
