"""A trained model: its parameters, the network they belong to, how it was trained and on what.

Model files (``FitResult.save`` / ``load``) hold the parameters as arrays and the rest as JSON
(see ``checkpoint.py``): the model (``Model.to_dict``), the resolved configuration
(``FitConfig.to_dict``), the data's fingerprint and the history of epoch records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import ConfigError
from .checkpoint import load_model, save_model
from .config import FitConfig
from .models import Model, Params, get_model
from .outputs import check_output
from .records import EpochRecord

__all__ = ["FitResult", "Fitted", "l2_of", "load", "unpack"]


@dataclass
class FitResult:
    """What ``fit`` returns: the parameters, the model, its configuration and history."""

    params: Params
    model: Model
    config: FitConfig
    history: list[EpochRecord] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # the training store's fingerprint

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The output layer for each column of X (n_x, m): P(y = 1 | x) (1, m) for sigmoid,
        class probabilities (k, m) for softmax, predicted values (k, m) for identity."""
        return self.model.predict_proba(self.params, np.asarray(X, self._dtype))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """0/1 (1, m) for sigmoid, class ids (1, m) for softmax, values (k, m) for identity."""
        return self.model.predict(self.params, np.asarray(X, self._dtype))

    @property
    def _dtype(self) -> np.dtype:
        return next(iter(self.params.values())).dtype

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` model file atomically (see ``streamtrain.load``).

        Only a new file, or a model file, is written over: never another file or the training data.
        """
        path = check_output(path, "model", data=self.data.get("path"))
        meta = {
            "model": self.model.to_dict(),
            "config": self.config.to_dict(),
            "data": self.data,
            "history": [r.to_dict() for r in self.history],
        }
        save_model(path, self.params, meta)


def load(path: str | os.PathLike) -> FitResult:
    """Read a model file written by ``FitResult.save`` (or by streamtrain 0.1, file version 1)."""
    params, meta = load_model(path)
    if meta.get("version") == 1:
        meta = _from_version_1(meta)
    return FitResult(
        params,
        Model.from_dict(meta["model"]),
        FitConfig.from_dict(meta["config"]),
        [EpochRecord.from_dict(r) for r in meta.get("history", [])],
        meta.get("data", {}),
    )


def _from_version_1(meta: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept the model's name apart from its options, and the buffer in bytes."""
    config = {k: v for k, v in meta.get("config", {}).items() if v is not None}  # None: the default
    model = Model.from_dict({"name": meta["model"], **config.pop("model_options", {})})
    config.update(model=model.name, hidden=model.hidden, activation=model.activation, output=model.output)
    if "buffer_bytes" in config:
        config["buffer_mb"] = config.pop("buffer_bytes") / 2**20
    return {**meta, "model": model.to_dict(), "config": config}


# What evaluate and compare accept: a trained model, its file, or bare parameters with a model.
Fitted = FitResult | str | os.PathLike | Params


def unpack(fitted: Fitted, model: str | Model | None = None) -> tuple[Params, Model, FitConfig | None]:
    """The parameters, model and (when known) training configuration of ``fitted``.

    Bare parameters need ``model``: a ``Model``, or the name of a 1-layer model.
    """
    if isinstance(fitted, dict):
        if model is None:
            raise ConfigError("parameters alone do not say which model they belong to: pass model=")
        return fitted, model if isinstance(model, Model) else get_model(model), None
    result = fitted if isinstance(fitted, FitResult) else load(fitted)
    return result.params, result.model, result.config


def l2_of(config: FitConfig | None) -> float:
    """The λ a model was trained with (0 when its configuration is unknown): J's default λ."""
    return config.l2 if config is not None else 0.0
