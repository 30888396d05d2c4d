"""A trained model: its parameters, the network they belong to, how it was trained and on what.

Model files (``FitResult.save`` / ``load``) hold the parameters as arrays and the rest as JSON
(see ``checkpoint.py``): the model (``Model.to_dict``), the resolved configuration
(``FitConfig.to_dict``), the data's fingerprint, the history of epoch records and how the model
was made (``provenance``: the package versions, the warm start; see ``streamtrain.provenance``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import ConfigError, DataError, check_number
from .checkpoint import load_model, save_model
from .config import FitConfig
from .full_batch import check_scheduler
from .models import Model, Params, get_model
from .outputs import check_output
from .parameters import check_params
from .records import EpochRecord, is_record

if TYPE_CHECKING:
    from .resume import TrainState

__all__ = ["FitResult", "Fitted", "l2_of", "load", "unpack"]


@dataclass
class FitResult:
    """What ``fit`` returns: the parameters, the model, its configuration and history."""

    params: Params
    model: Model
    config: FitConfig
    history: list[EpochRecord] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # the training store's fingerprint
    provenance: dict[str, Any] = field(default_factory=dict)  # package versions, warm start: streamtrain.provenance
    # Where training left off, for ``fit(state=...)`` to go on from; never saved. None after runs that
    # cannot go on (L-BFGS, --standardize) and for loaded models.
    state: TrainState | None = None

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
            "provenance": self.provenance,
        }
        save_model(path, self.params, meta)


def load(path: str | os.PathLike) -> FitResult:
    """Read a model file written by ``FitResult.save`` (or by streamtrain 0.1, file version 1).

    Anything a model file cannot hold is a DataError naming the file: metadata that does not
    describe a model and its configuration, parameters that do not fit the model, NaN or inf.
    """
    path = os.fspath(path)
    params, meta = load_model(path)
    try:
        result = _result(params, meta)
    except ConfigError as e:
        raise DataError(f"{path}: damaged model metadata: {e}") from None
    try:
        _check_fits(result.model, params)
    except ConfigError as e:
        raise DataError(f"{path}: {e}") from None
    return result


def _result(params: Params, meta: dict[str, Any]) -> FitResult:
    """The trained model a file's metadata describes."""
    if meta["version"] == 1:
        meta = _from_version_1(meta)
    model = Model.from_dict(_entry(meta, "model", dict))
    config = _config(_entry(meta, "config", dict))
    if config.model != model.name:
        raise ConfigError(f"the configuration trains a {config.model} model, the file holds a {model.name} model")
    history = [EpochRecord.from_dict(_record(r)) for r in _entry(meta, "history", list, [])]
    data, made = _entry(meta, "data", dict, {}), _entry(meta, "provenance", dict, {})
    return FitResult(params, model, config, history, data, made)


def _check_fits(model: Model, params: Params) -> None:
    """ConfigError unless ``params`` are finite real numbers of the shapes ``model`` has for
    some data (n_x and the output units read from the first and last weights)."""
    first, last = params.get("W1"), params.get(f"W{len(model.hidden) + 1}")
    if first is None or last is None or first.ndim != 2 or last.ndim != 2:
        got = ", ".join(f"{k}{v.shape}" for k, v in params.items())
        raise ConfigError(f"parameters {got or '(none)'} do not fit a {model.name} model")
    check_params(model, params, first.shape[1], last.shape[0])


_MISSING: Any = object()


def _entry(meta: dict[str, Any], key: str, kind: type, default: Any = _MISSING) -> Any:
    """``meta[key]``, which must be a ``kind``; ConfigError naming it otherwise."""
    value = meta.get(key, default)
    if value is _MISSING:
        raise ConfigError(f"no {key!r} entry")
    if not isinstance(value, kind):
        raise ConfigError(f"{key!r} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _record(d: Any) -> dict[str, Any]:
    """One history entry: the fields of an ``EpochRecord``, with its epoch, loss and time."""
    if not is_record(d):
        raise ConfigError(f"history entry {d!r} is not an epoch record")
    return d


def _config(stored: dict[str, Any]) -> FitConfig:
    """The training configuration a file stored, with its scheduler where this process can use it.

    The scheduler says where the exact passes ran, not what was trained: files written before a
    given scheduler had to be used stored the default for runs without exact passes, and an
    inproc:// address lives only in the process that trained. Both give way to the default.
    """
    config = FitConfig.from_dict({k: v for k, v in stored.items() if k != "scheduler"})
    scheduler = stored.get("scheduler")
    if not config.uses_exact_path or scheduler is None:
        return config
    try:
        return FitConfig.from_dict({**stored, "scheduler": check_scheduler(scheduler)})
    except ConfigError:
        return config


def _from_version_1(meta: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept the model's name apart from its options, and the buffer in bytes."""
    config = {k: v for k, v in _entry(meta, "config", dict).items() if v is not None}  # None: the default
    options = _entry(config, "model_options", dict, {})
    config.pop("model_options", None)
    model = Model.from_dict({"name": _entry(meta, "model", str), **options})
    config.update(model=model.name, hidden=model.hidden, activation=model.activation, output=model.output)
    if "buffer_bytes" in config:
        config["buffer_mb"] = check_number("buffer_bytes", config.pop("buffer_bytes"), lambda v: v > 0, "> 0") / 2**20
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
