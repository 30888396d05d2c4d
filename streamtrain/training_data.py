"""What a run trains and validates on: the store seen through ``--holdout`` (some chunks held out),
``--standardize`` (features scaled) and ``--weights`` / ``--class-weight`` (samples weighed)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from ._errors import ConfigError
from .config import FitConfig
from .holdout import split_holdout
from .models import Model, Params
from .parameters import check_memory, check_params
from .result import load
from .sources import ChunkSource
from .standardize import Scaling, StandardizedSource, feature_scaling
from .weights import Weighting, weighting

__all__ = ["Seen", "initial_params", "training_data"]


class Seen(NamedTuple):
    """What a run trains and validates on: the samples trained on and the held-out ones (``--holdout``),
    as the model sees them (``--standardize``), and what each of their samples weighs (``--weights``,
    ``--class-weight``: normalised over each, see ``streamtrain.weights``)."""

    training: ChunkSource
    validation: ChunkSource | None
    scaling: Scaling | None
    weighting: Weighting | None
    validation_weighting: Weighting | None

    def stamps(self) -> dict[str, str]:
        """Stamps of the files training reads (see ``ChunkSource.stamp``): the store's, and the stored
        weights' (an array of their own, which the store's stamp does not cover)."""
        stored = None if self.weighting is None else self.weighting.stored
        return {"stamp": self.training.stamp(), **({"weights stamp": stored.source.stamp()} if stored else {})}

    def check_unchanged(self, stamps: dict[str, str], since: str) -> None:
        """DataError naming what changed in the files since ``stamps`` (``stamps()``) were taken."""
        self.training.check_unchanged(stamps.get("stamp", ""), since)
        stored = None if self.weighting is None else self.weighting.stored
        if stored is not None:
            stored.source.check_unchanged(stamps.get("weights stamp", ""), since)


@contextmanager
def training_data(model: Model, source: ChunkSource, config: FitConfig) -> Iterator[Seen]:
    check_memory(model, source.n_x, source.k, config.dtype)
    training, held_out = (
        (source, None) if config.holdout is None else split_holdout(source, config.holdout, config.seed)
    )
    if isinstance(config.batch_size, int) and config.batch_size > training.m:
        raise ConfigError(
            f"batch_size {config.batch_size} is larger than m={training.m} (the samples trained on); "
            f"use {training.m} or 'full' for batch gradient descent"
        )
    with weighting(model, source, config.weights, config.class_weight, training, config.missing_chunks) as weigh:
        scaling = feature_scaling(training) if config.standardize else None  # never from the held-out chunks
        yield Seen(
            _scaled(training, scaling),
            None if held_out is None else _scaled(held_out, scaling),
            scaling,
            None if weigh is None else weigh.over(training, model),
            None if weigh is None or held_out is None else weigh.over(held_out, model),
        )


def _scaled(source: ChunkSource, scaling: Scaling | None) -> ChunkSource:
    return source if scaling is None else StandardizedSource(source, scaling)


def initial_params(
    model: Model, source: ChunkSource, init: Params | str | os.PathLike | None, config: FitConfig
) -> Params:
    """The parameters training starts from: ``model``'s own initial ones (from the seed), or a copy of
    ``init`` (parameters, or a model file's), in the training dtype, checked to fit the store."""
    dtype = np.dtype(config.dtype)
    if init is None:
        return model.init(source.n_x, source.k, dtype, config.seed)
    if not isinstance(init, dict):
        warm = load(init)
        if warm.model.name != model.name:
            raise ConfigError(f"warm start from a {warm.model.name!r} model, but training {model.name!r}")
        init = warm.params
    check_params(model, init, source.n_x, source.k)
    return {k: np.array(v, dtype=dtype) for k, v in init.items()}  # a copy: never train in place
