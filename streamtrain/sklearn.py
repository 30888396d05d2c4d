"""scikit-learn estimators: ``StreamClassifier`` and ``StreamRegressor``, streamtrain's models in sklearn's API.

>>> from streamtrain.sklearn import StreamClassifier
>>> clf = StreamClassifier(model="mlp", hidden=(32,), optimizer="adam", lr=0.01).fit(X, y)  # doctest: +SKIP
>>> clf.fit_store("data/big.zarr")  # the same estimator, trained out of core            # doctest: +SKIP

Conventions: in memory, X is scikit-learn's (n_samples, n_features) and y (n_samples,) (or
(n_samples, n_outputs) for the regressor). Both are transposed to streamtrain's columns (X.T is a
view) and streamed by ``streamtrain.fit`` from an ``ArraySource``, so ``fit`` takes the same steps as
``streamtrain.fit`` on the same samples; ``fit_store`` trains on a Zarr/HDF5 store out of core.

Hyperparameters are ``FitConfig``'s options of the same names and defaults (``HYPERPARAMETERS``),
plus ``model`` (the choices of each estimator), ``random_state`` (the ``seed`` of every random
choice) and ``chunk_size`` (the units in-memory arrays are shuffled in, as a store's chunks are).
``partial_fit`` is one epoch over the samples it is given (as ``SGDClassifier``'s); successive calls
go on with the optimizer's state (moments, step count and so the learning-rate schedule, epoch
count and so the shuffle, through ``fit(state=...)``): k calls on the same data train exactly as
``fit`` with ``epochs=k``. The options that split, rescale or weigh each run's data (``holdout``,
``early_stopping``, ``standardize``, ``class_weight``) are not hyperparameters: a partial_fit call
would apply them to its block alone. A Pipeline's scaler and sklearn's model selection do those
jobs in memory, and ``streamtrain.fit`` does them on stores.

Classifier labels may be of any type: ``classes_`` holds them sorted, trained as ids 0..K-1; two
classes take the sigmoid output (logistic regression, or an mlp's), more take softmax.

Needs scikit-learn: ``pip install 'streamtrain[sklearn]'``.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import os
from dataclasses import fields
from typing import Any, ClassVar, TypeVar

import numpy as np

from ._errors import ConfigError, DataError, check_choice
from .binding import for_data
from .config import CheckpointConfig, FitConfig
from .models import OUTPUTS, Params, get_model
from .records import EpochRecord
from .result import FitResult
from .sources import ArraySource, ChunkSource, default_chunk_size, opened
from .train import fit as train

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError:
    raise ConfigError("streamtrain.sklearn needs scikit-learn: pip install 'streamtrain[sklearn]'") from None

__all__ = ["HYPERPARAMETERS", "READING", "StreamClassifier", "StreamRegressor"]

# FitConfig's options that are the estimators' hyperparameters, with FitConfig's defaults.
HYPERPARAMETERS = (
    *("hidden", "activation", "batch_size", "epochs", "lr", "optimizer", "beta1", "beta2", "eps"),
    *("lr_schedule", "lr_decay", "lr_step", "lr_per", "l2", "shuffle", "dtype"),
)
# FitConfig's options of how a store is read and where the training runs (--shards on a Dask cluster),
# which fit_store takes.
READING = (
    *("prefetch", "buffer_mb", "missing_chunks", "weights", "eval_exact_every", "scheduler"),
    *("shards", "sync_every"),
)
# streamtrain.fit's keywords fit_store passes on: the options above, checkpoints and what the run reports.
_RUN = {
    *READING,
    *(f.name for f in fields(CheckpointConfig)),
    *(p.name for p in inspect.signature(train).parameters.values() if p.kind is p.KEYWORD_ONLY),
} - {"init", "state"}  # the estimator's own
_DEFAULT: dict[str, Any] = {f.name: f.default for f in fields(FitConfig)}
_FLOATS = (np.float64, np.float32)  # kept as given; other numbers become the first
Estimator = TypeVar("Estimator", bound="_StreamEstimator")


class _StreamEstimator(BaseEstimator):
    """What the classifier and the regressor share: hyperparameters, training, fitted attributes."""

    _models: tuple[str, ...]  # the choices of ``model``; the first is the default

    def __init__(
        self,
        *,
        model: str | None = None,
        hidden: tuple[int, ...] | None = _DEFAULT["hidden"],
        activation: str = _DEFAULT["activation"],
        batch_size: int | str | None = _DEFAULT["batch_size"],
        epochs: int | None = _DEFAULT["epochs"],
        lr: float = _DEFAULT["lr"],
        optimizer: str = _DEFAULT["optimizer"],
        beta1: float = _DEFAULT["beta1"],
        beta2: float = _DEFAULT["beta2"],
        eps: float = _DEFAULT["eps"],
        lr_schedule: str = _DEFAULT["lr_schedule"],
        lr_decay: float | None = _DEFAULT["lr_decay"],
        lr_step: int = _DEFAULT["lr_step"],
        lr_per: str = _DEFAULT["lr_per"],
        l2: float = _DEFAULT["l2"],
        shuffle: str = _DEFAULT["shuffle"],
        dtype: str = _DEFAULT["dtype"],
        random_state: int | np.random.RandomState | None = _DEFAULT["seed"],
        chunk_size: int | None = None,
    ) -> None:
        self.model = model
        self.hidden = hidden
        self.activation = activation
        self.batch_size = batch_size
        self.epochs = epochs
        self.lr = lr
        self.optimizer = optimizer
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.lr_schedule = lr_schedule
        self.lr_decay = lr_decay
        self.lr_step = lr_step
        self.lr_per = lr_per
        self.l2 = l2
        self.shuffle = shuffle
        self.dtype = dtype
        self.random_state = random_state
        self.chunk_size = chunk_size

    # -- training ------------------------------------------------------------------------------

    def fit_store(self: Estimator, data: ChunkSource | str | os.PathLike, **run: Any) -> Estimator:
        """Train on a Zarr/HDF5 store out of core: a path, or a ``ChunkSource`` such as
        ``streamtrain.open_source(path, x="features", y="labels")``. The same steps as ``fit`` on
        the same samples in memory with ``chunk_size`` set to the store's chunks, through
        ``streamtrain.fit``. ``run``: its options of how the store is read (``READING``),
        checkpoints (``checkpoint_dir``, ``resume``...) and reports (``progress``, ``metrics``,
        ``on_epoch``). The store's labels are as ``streamtrain.fit`` reads them (a classifier's
        ``classes_`` are then the ids 0..K-1)."""
        for name in run:
            if name not in _RUN:
                how = "set it with set_params" if name in HYPERPARAMETERS else f"fit_store takes {sorted(_RUN)}"
                raise ConfigError(f"{name!r} is not an option of fit_store: {how}")
        with opened(data, missing_chunks=run.get("missing_chunks")) as source:
            output = self._store_targets(source)
            self.n_features_in_ = source.n_x
            self.__dict__.pop("feature_names_in_", None)  # a store's features have no names
            self._train(source, self._config(source.m, output, epochs=self.epochs), None, **run)
        return self

    def _fit_arrays(self, X: Any, y: Any, *, partial: bool, classes: Any = None) -> None:
        if partial and self.optimizer == "lbfgs":
            raise ConfigError("partial_fit takes gradient steps; lbfgs minimises over all the data at once: use fit")
        going_on: FitResult | None = getattr(self, "result_", None) if partial else None
        X, y = validate_data(self, X, y, reset=going_on is None, dtype=_FLOATS, **self._y_checks)
        output = self._targets(y, first=going_on is None, classes=classes)
        # partial_fit: one epoch more than the state has trained (the first, after L-BFGS's parameters)
        epochs = self.epochs if not partial else going_on.state.epoch if going_on and going_on.state else 1
        config = self._config(len(X), output, epochs=epochs)
        # The default chunks of the training precision, not of X's: float32 and float64 X shuffle alike.
        chunk = self.chunk_size or default_chunk_size(X.shape[1], np.dtype(config.dtype).itemsize)
        source = ArraySource(X.T, self._encode(y, output, config.dtype), chunk_size=chunk)
        self._train(source, config, going_on, progress=False)

    def _train(self, source: ChunkSource, config: FitConfig, going_on: FitResult | None = None, **run: Any) -> None:
        """``streamtrain.fit``, from scratch or going on from where ``going_on`` left off."""
        state = None if going_on is None else going_on.state
        init = going_on.params if going_on is not None and state is None else None  # after L-BFGS: its params
        self.result_ = train(source, config, state=state, init=init, **run)

    def _config(self, m: int, output: str, *, epochs: int | None) -> FitConfig:
        """The training configuration of the hyperparameters, for ``output`` and m samples."""
        name = check_choice(self._models[0] if self.model is None else self.model, self._models, "model")
        model, output_option = ("mlp", output) if name == "mlp" else (OUTPUTS[output].model, None)
        hyper = {k: getattr(self, k) for k in HYPERPARAMETERS}
        options = {**hyper, "model": model, "output": output_option, "epochs": epochs, "seed": self._seed()}
        config = FitConfig.from_options(options)
        if isinstance(config.batch_size, int) and config.batch_size > m:  # as MLPClassifier: at most the samples
            config = dataclasses.replace(config, batch_size=m)
        return config

    def _seed(self) -> int:
        """``random_state`` as streamtrain's seed: an int as it is, else one drawn from it (sklearn's rule)."""
        state = self.random_state
        if isinstance(state, numbers.Integral) and not isinstance(state, bool):
            return int(state)  # FitConfig checks it
        return int(check_random_state(state).randint(np.iinfo(np.int32).max))

    # -- what each estimator says -----------------------------------------------------------------

    _y_checks: ClassVar[dict[str, Any]] = {}  # validate_data's checks of y

    def _targets(self, y: np.ndarray, *, first: bool, classes: Any) -> str:
        """Take y's classes or outputs (on a first fit); the output layer that fits y."""
        raise NotImplementedError

    def _encode(self, y: np.ndarray, output: str, dtype: str) -> np.ndarray:
        """y as streamtrain's labels Y (k, n_samples)."""
        raise NotImplementedError

    def _store_targets(self, source: ChunkSource) -> str:
        """As ``_targets``, for a store's labels."""
        raise NotImplementedError

    # -- the fitted model ------------------------------------------------------------------------

    def _columns(self, X: Any) -> np.ndarray:
        """X checked against the fitted features, as columns (n_features, n_samples)."""
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=_FLOATS).T

    def _output_layer(self, X: Any) -> np.ndarray:
        """The model's own ``predict_proba``: the output layer A[L] (k, n_samples), float64."""
        columns = self._columns(X)
        return self.result_.predict_proba(columns).astype(np.float64)

    @property
    def params_(self) -> Params:
        """The parameters W1, b1, ..., WL, bL (streamtrain's layout: W[l] (n[l], n[l-1]))."""
        check_is_fitted(self)
        return self.result_.params

    @property
    def history_(self) -> list[EpochRecord]:
        """One record per epoch trained (partial_fit: per call), as ``streamtrain.fit`` returns them."""
        check_is_fitted(self)
        return self.result_.history

    @property
    def coef_(self) -> np.ndarray:
        """A 1-layer model's weights W1 (n_outputs, n_features); (n_features,) for one output of a regressor."""
        return self._linear()[0]

    @property
    def intercept_(self) -> np.ndarray | float:
        """A 1-layer model's biases (n_outputs,); a float for one output of a regressor."""
        return self._linear()[1]

    def _linear(self) -> tuple[np.ndarray, Any]:
        check_is_fitted(self)
        if len(self.result_.params) != 2:
            raise AttributeError("coef_ and intercept_ are a 1-layer model's; an mlp's weights are in params_")
        return self.result_.params["W1"], self.result_.params["b1"][:, 0]


class StreamClassifier(ClassifierMixin, _StreamEstimator):
    """A classifier trained by streamtrain: ``model`` is ``logistic`` (the default: logistic
    regression for two classes, multinomial for more), ``softmax`` (a softmax output even for two
    classes) or ``mlp`` (hidden layers). The other hyperparameters are ``FitConfig``'s; see the
    module docstring.

    Fitted attributes: ``classes_``, ``n_features_in_``, ``result_`` (the ``FitResult``: ``.save()``
    writes a model file the command line reads), ``params_``, ``history_``, and ``coef_`` /
    ``intercept_`` for the 1-layer models."""

    _models = ("logistic", "softmax", "mlp")

    def fit(self, X: Any, y: Any) -> StreamClassifier:
        """Train from scratch on X (n_samples, n_features) and labels y (n_samples,) of any type."""
        self._fit_arrays(X, y, partial=False)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> StreamClassifier:
        """One epoch over X, y, going on from the last training; ``classes`` (all of them) on the first call."""
        if classes is None and not hasattr(self, "result_"):
            raise ConfigError("the first call to partial_fit needs classes: every label the calls may bring")
        self._fit_arrays(X, y, partial=True, classes=classes)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), in the order of ``classes_``."""
        A = self._output_layer(X)
        return np.vstack([1.0 - A, A]).T if self._sigmoid else A.T

    def decision_function(self, X: Any) -> np.ndarray:
        """The logits: (n_samples,) for two classes (positive for ``classes_[1]``), else (n_samples, n_classes)."""
        columns = self._columns(X)
        params = self.result_.params
        Z = self.result_.model.scores(params, np.asarray(columns, params["W1"].dtype)).astype(np.float64)
        if len(self.classes_) == 2:
            return Z[0] if self._sigmoid else Z[1] - Z[0]
        return Z.T

    def predict(self, X: Any) -> np.ndarray:
        """The class of each sample, one of ``classes_``."""
        columns = self._columns(X)
        return self.classes_[self.result_.predict(columns)[0]]

    @property
    def _sigmoid(self) -> bool:
        return self.result_.model.output == "sigmoid"

    def _targets(self, y: np.ndarray, *, first: bool, classes: Any) -> str:
        check_classification_targets(y)
        if first:
            found = np.unique(y if classes is None else classes)
            if len(found) < 2:
                raise DataError(f"a classifier needs at least 2 classes; y has one class: {found.tolist()!r}")
            self.classes_ = found
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ConfigError(
                f"classes {np.unique(classes).tolist()} are not those of the first call, {self.classes_.tolist()}"
            )
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise DataError(f"label {y[unknown][:1].tolist()[0]!r} is not one of the classes {self.classes_.tolist()}")
        return "sigmoid" if len(self.classes_) == 2 and self.model != "softmax" else "softmax"

    def _encode(self, y: np.ndarray, output: str, dtype: str) -> np.ndarray:
        ids = np.searchsorted(self.classes_, y)
        if output == "sigmoid":
            return ids[None, :].astype(dtype)
        return (np.arange(len(self.classes_))[:, None] == ids).astype(dtype)  # one-hot: a block may lack a class

    def _store_targets(self, source: ChunkSource) -> str:
        bound = for_data(get_model("mlp"), source)  # an mlp with no output layer takes the one its labels fit
        if bound.output == "identity":
            raise DataError(f"{source.y_where}: the labels are real values, not classes; StreamRegressor fits them")
        self.classes_ = np.arange(bound.n_out(source.k) if bound.output == "softmax" else 2)
        return "sigmoid" if len(self.classes_) == 2 and self.model != "softmax" and source.k == 1 else "softmax"


class StreamRegressor(RegressorMixin, _StreamEstimator):
    """A regressor trained by streamtrain: ``model`` is ``linear`` (the default: least squares,
    J = mean ½‖ŷ - y‖² + L2) or ``mlp`` (hidden layers, identity output). Several outputs at once
    with y (n_samples, n_outputs). The other hyperparameters are ``FitConfig``'s; see the module
    docstring.

    Fitted attributes: ``n_outputs_``, ``n_features_in_``, ``result_``, ``params_``, ``history_``,
    and ``coef_`` / ``intercept_`` for the linear model (as ``LinearRegression``'s)."""

    _models = ("linear", "mlp")
    _y_checks: ClassVar[dict[str, Any]] = {"multi_output": True, "y_numeric": True}

    def fit(self, X: Any, y: Any) -> StreamRegressor:
        """Train from scratch on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_outputs)."""
        self._fit_arrays(X, y, partial=False)
        return self

    def partial_fit(self, X: Any, y: Any) -> StreamRegressor:
        """One epoch over X, y, going on from the last training."""
        self._fit_arrays(X, y, partial=True)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """(n_samples,) for one output, else (n_samples, n_outputs); float64."""
        Y = self._output_layer(X).T
        return Y[:, 0] if self.n_outputs_ == 1 else Y

    def _linear(self) -> tuple[np.ndarray, Any]:
        W, b = super()._linear()
        return (W[0], float(b[0])) if self.n_outputs_ == 1 else (W, b)

    def _targets(self, y: np.ndarray, *, first: bool, classes: Any) -> str:
        outputs = 1 if y.ndim == 1 else y.shape[1]
        if first:
            self.n_outputs_ = outputs
        elif outputs != self.n_outputs_:
            raise DataError(f"y has {outputs} outputs; the regressor was fitted with {self.n_outputs_}")
        return "identity"

    def _encode(self, y: np.ndarray, output: str, dtype: str) -> np.ndarray:
        return np.asarray(y, dtype).reshape(len(y), -1).T

    def _store_targets(self, source: ChunkSource) -> str:
        source.require_labels()
        self.n_outputs_ = source.k
        return "identity"

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
