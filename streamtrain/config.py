"""The training options, declared once: type, default, allowed values, help text and check, in one field each.

``FitConfig`` declares every training option. The library validates with it
(``fit(data, **options)`` builds one), the command line derives its flags from it (name, type,
default, choices, help: ``cli.add_options``), and model files store the resolved configuration
(``to_dict`` / ``from_dict``). ``make_data`` and ``compare`` declare theirs the same way, next to
their code. Adding an option takes one field here plus the code that uses it.

A field's choices come from the registry that implements them (``models.MODELS``,
``optim.OPTIMIZERS``, ``batches.SHUFFLES``, ...), so a new entry there is a new choice everywhere.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ._errors import ConfigError, check_int, check_number
from .batches import DEFAULT_BUFFER_BYTES, SHUFFLES
from .declared import (
    Declared,
    Names,
    boolean,
    non_negative,
    non_negative_int,
    option,
    path,
    positive,
    positive_int,
    unit_interval,
)
from .full_batch import DEFAULT_SCHEDULER, SCHEDULERS, check_scheduler
from .lbfgs import LBFGS, MAX_ITER
from .models import ACTIVATIONS, DEFAULT_ACTIVATION, DEFAULT_HIDDEN, MODELS, OUTPUTS
from .optim import OPTIMIZERS, SCHEDULES, check_decay
from .sources import MISSING_CHUNKS
from .weights import CLASS_WEIGHTS

ROUND_SAMPLES = 2**20  # --sync-every's default: about a million samples a round, a second or two of steps

__all__ = ["DTYPES", "MAX_BUFFER_MB", "MAX_PREFETCH", "CheckpointConfig", "FitConfig"]

DTYPES = ("float32", "float64")
DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS = 256, 5
MAX_PREFETCH = 64  # chunks read ahead: more only holds memory, the reads stay sequential
MAX_BUFFER_MB = 2**30  # a petabyte: beyond any machine, and still a whole number of bytes


# -- checks: (name, value) -> value -------------------------------------------------------------


def _holdout(name: str, value: Any) -> float:
    return check_number(name, value, lambda v: 0 < v < 1, "a fraction between 0 and 1")


def _buffer_mb(name: str, value: Any) -> float:
    return check_number(name, value, lambda v: 0 < v <= MAX_BUFFER_MB, f"a positive number of MB up to {MAX_BUFFER_MB}")


def _prefetch(name: str, value: Any) -> int:
    check_int(name, value, minimum=0)
    if value > MAX_PREFETCH:
        raise ConfigError(f"{name} must be at most {MAX_PREFETCH} chunks, got {value!r}")
    return int(value)


def _array_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip("/"):
        raise ConfigError(f"{name} must name an array of the store, got {value!r}")
    return value


def sizes(text: str) -> tuple[int, ...]:
    """Command-line sizes: "64,32" -> (64, 32)."""
    try:
        return tuple(int(n) for n in text.split(","))
    except ValueError:
        raise ValueError(f"expected sizes like 64,32, got {text!r}") from None


def _hidden(name: str, value: Any) -> tuple[int, ...]:
    try:
        sizes = tuple(value) if isinstance(value, Collection) and not isinstance(value, (str, bytes)) else None
    except TypeError:  # a 0-d numpy array is a Collection with no length
        sizes = None
    if sizes is None:
        raise ConfigError(f"{name} must be a list of layer sizes like [64, 32], got {value!r}")
    return tuple(positive_int("hidden layer size", n) for n in sizes)


def batch_size(text: str) -> int | str:
    """Command-line batch size: a whole number or 'full'."""
    return text if text == "full" else int(text)


def _batch_size(name: str, value: Any) -> int | str:
    return value if value == "full" else positive_int(name, value)


def _learning_rate(name: str, value: Any) -> float:
    return positive("learning rate", value)


def _scheduler(name: str, value: Any) -> str:
    return check_scheduler(value)


SCHEDULER_HELP = (
    f"where exact full-data passes run: {', '.join(f'{k} ({v})' for k, v in SCHEDULERS.items())}, "
    f"or tcp://HOST:PORT (a running Dask scheduler)"
)
EXACT_PASSES = "--batch-size full, --optimizer lbfgs or --eval-exact-every N"
ROUNDS = "--shards K, --sync-every H"


def _makes_exact_passes(batch_size: int | str, eval_exact_every: int | None) -> bool:
    """Whether a run with this batch size and exact evaluations passes exactly over all the data."""
    return batch_size == "full" or eval_exact_every is not None


_CLASS_WEIGHT_HELP = ", ".join(f"{k}: {v}" for k, v in CLASS_WEIGHTS.items())
_MISSING_HELP = ", ".join(f"{k} ({v})" for k, v in MISSING_CHUNKS.items())


@dataclass(frozen=True)
class FitConfig(Declared):
    """Every training option. A field left None takes a default derived from the others."""

    model: str = option(
        "logistic",
        "logistic (0/1 labels), softmax (one-hot or class-id labels), linear (real values, squared error), "
        "mlp (hidden layers)",
        choices=MODELS,
    )
    hidden: tuple[int, ...] = option(
        None,
        "mlp hidden layer sizes, e.g. 64,32",
        check=_hidden,
        parse=sizes,
        metavar="N,N,...",
        derived=",".join(map(str, DEFAULT_HIDDEN)),
    )
    activation: str = option(DEFAULT_ACTIVATION, "mlp hidden activation", choices=ACTIVATIONS)
    output: str | None = option(
        None,
        "mlp output layer",
        choices=OUTPUTS,
        derived="from the data: make-data's task, else what the labels are (0/1: sigmoid; class ids or one-hot: "
        "softmax; other values: identity)",
    )
    batch_size: int | str = option(
        None,
        "samples per step: 1 = SGD, m = batch gradient descent, 'full' = exact full-batch steps",
        check=_batch_size,
        parse=batch_size,
        metavar="B",
        derived=f"{DEFAULT_BATCH_SIZE}; full with --optimizer {LBFGS}",
    )
    epochs: int = option(
        None,
        f"passes over the data; for {LBFGS}, the most iterations",
        check=positive_int,
        parse=int,
        metavar="E",
        derived=f"{DEFAULT_EPOCHS}; {LBFGS} {MAX_ITER}",
    )
    lr: float = option(0.1, "learning rate", check=_learning_rate, metavar="A")
    optimizer: str = option(
        "sgd",
        f"{', '.join(OPTIMIZERS)}: steps of size --lr; {LBFGS}: L-BFGS on the exact full-batch objective, "
        "the reference optimum (needs scipy)",
        choices=Names(OPTIMIZERS, (LBFGS,)),
    )
    beta1: float = option(0.9, "momentum's and adam's first-moment decay", check=unit_interval)
    beta2: float = option(0.999, "rmsprop's and adam's second-moment decay", check=unit_interval)
    eps: float = option(1e-8, "rmsprop's and adam's epsilon", check=positive)
    lr_schedule: str = option(
        "constant",
        "constant: A; inverse-time: A/(1 + decay*t); exponential: A*decay^t; step: A*decay^floor(t/step), "
        "t counted in epochs or steps (--lr-per)",
        choices=SCHEDULES,
    )
    lr_decay: float | None = option(
        None,
        "the schedule's decay",
        parse=float,
        metavar="D",
        derived=", ".join(f"{s.default_decay} for {k}" for k, s in SCHEDULES.items() if s.default_decay),
    )
    lr_step: int = option(1, "step schedule: decay every N epochs or steps", check=positive_int, metavar="N")
    lr_per: str = option("epoch", "what t counts in the schedule", choices=("epoch", "step"))
    l2: float = option(
        0.0, "L2 penalty: J = mean loss + LAMBDA/(2m) * sum of squared weights", check=non_negative, metavar="LAMBDA"
    )
    shuffle: str = option(
        "buffer",
        "none: store order; chunks: new chunk order each epoch; buffer: also shuffle samples inside a "
        "memory-bounded buffer of chunks (trains well on stores sorted by label)",
        choices=SHUFFLES,
    )
    buffer_mb: float = option(
        DEFAULT_BUFFER_BYTES // 2**20,
        "memory for the chunks in flight with --shuffle buffer",
        check=_buffer_mb,
        parse=float,
        metavar="MB",
    )
    prefetch: int = option(
        2,
        f"units of chunks read ahead by reader threads, at most {MAX_PREFETCH}; 0 reads inline",
        check=_prefetch,
        metavar="N",
    )
    seed: int = option(0, "seed of every random choice", check=non_negative_int, metavar="S")
    dtype: str = option("float32", "training precision", choices=DTYPES)
    holdout: float | None = option(
        None,
        "hold out this fraction of the chunks (whole chunks, drawn from --seed), never trained on; every epoch's "
        "record has the exact loss over them",
        check=_holdout,
        parse=float,
        metavar="F",
    )
    early_stopping: bool = option(
        False,
        "with --holdout: stop when the validation loss has not been lower for --patience epochs, and keep the "
        "parameters of the epoch where it was lowest",
        check=boolean,
    )
    patience: int = option(
        3, "epochs without a lower validation loss before --early-stopping stops", check=positive_int, metavar="P"
    )
    standardize: bool = option(
        False,
        "train on each feature scaled to mean 0 and variance 1 (mean and variance from one streamed pass, "
        "float64); the model is written for the data as stored",
        check=boolean,
    )
    weights: str | None = option(
        None,
        "weigh each sample by this (1, m) array of the store: J becomes the weighted mean loss (the weights "
        "normalised to mean 1, so mini-batch gradients stay unbiased)",
        check=_array_name,
        parse=str,
        metavar="NAME",
    )
    class_weight: str | None = option(
        None,
        f"{_CLASS_WEIGHT_HELP}; counted over the samples trained on (one pass over the labels), times --weights "
        "when given",
        choices=CLASS_WEIGHTS,
    )
    shards: int = option(
        1,
        "data-parallel training: K logical shards, each every K-th chunk of the epoch, stepping on its own and "
        "averaged every --sync-every steps (local SGD); the rounds run on --scheduler. 1: one process (in rounds "
        "on --scheduler when --sync-every is given)",
        check=positive_int,
        metavar="K",
    )
    sync_every: int | None = option(
        None,
        "steps each shard takes between averages (1: every step one global batch of K·B samples); with --shards 1, "
        "the steps of a round",
        check=positive_int,
        parse=int,
        metavar="H",
        derived="about a million samples a round: 2^20 / B steps",
    )
    eval_exact_every: int | None = option(
        None,
        "also compute the exact loss and gradient norm over all the data every N epochs and after the last "
        "(one extra pass each)",
        check=positive_int,
        parse=int,
        metavar="N",
    )
    scheduler: str | None = option(
        None,
        f"{SCHEDULER_HELP}; only for runs that make exact passes ({EXACT_PASSES}) or rounds ({ROUNDS})",
        check=_scheduler,
        parse=str,
        metavar="S",
        derived=f"{DEFAULT_SCHEDULER} when the run makes exact passes",
    )
    missing_chunks: str | None = option(
        None,
        f"what chunks never written become (zarr and HDF5 read them as the fill value): {_MISSING_HELP}",
        choices=MISSING_CHUNKS,
        derived="error for features (X), fill for labels (Y)",
    )

    def _derived(self) -> dict[str, Any]:
        lbfgs = self.optimizer == LBFGS
        batch = self.batch_size if self.batch_size is not None else "full" if lbfgs else DEFAULT_BATCH_SIZE
        if lbfgs and batch != "full":
            raise ConfigError("L-BFGS takes exact full-batch steps: leave batch_size unset or use 'full'")
        if self.early_stopping and (self.holdout is None or lbfgs):
            what = "gradient descent (not L-BFGS)" if lbfgs else "--holdout F: the validation loss it watches"
            raise ConfigError(f"--early-stopping needs {what}")
        hidden = self.hidden if self.hidden is not None else DEFAULT_HIDDEN if self.model == "mlp" else ()
        sharded = self._sharding(batch, lbfgs)
        return {
            "sync_every": sharded,
            "batch_size": batch,
            "epochs": self.epochs if self.epochs is not None else MAX_ITER if lbfgs else DEFAULT_EPOCHS,
            "lr_decay": check_decay(self.lr_schedule, self.lr_decay),
            "hidden": hidden,
            "scheduler": self._scheduler_for(_makes_exact_passes(batch, self.eval_exact_every) or sharded is not None),
        }

    def _sharding(self, batch: int | str, lbfgs: bool) -> int | None:
        """sync_every for a run in rounds (its default from the batch size); None for one process.

        One shard runs in rounds only when asked (``sync_every``): the same steps as one process, bit
        for bit, each round a task on the scheduler (a cluster's worker) and a checkpoint."""
        if self.shards == 1 and self.sync_every is None:
            return None
        refused = {
            "L-BFGS": lbfgs,
            "--batch-size full": batch == "full",
            "--holdout": self.holdout is not None,
            "--standardize": self.standardize,
        }
        what = next((name for name, given in refused.items() if given), None)
        if what is not None:
            raise ConfigError(
                f"training in rounds (--shards, --sync-every) takes mini-batch steps on the whole store; "
                f"it does not take {what}"
            )
        return self.sync_every or max(1, ROUND_SAMPLES // int(batch))

    def _scheduler_for(self, exact: bool) -> str | None:
        """The scheduler of exact passes (the default when none is given); None for a run without
        them, where a given scheduler would silently go unused."""
        if exact:
            return self.scheduler or DEFAULT_SCHEDULER
        if self.scheduler is not None:
            raise ConfigError(
                f"scheduler {self.scheduler!r} would be unused: this run makes no exact pass over the data and "
                f"no rounds; the scheduler runs exact passes ({EXACT_PASSES}) and rounds ({ROUNDS}) only"
            )
        return None

    @property
    def uses_exact_path(self) -> bool:
        """Whether training needs the exact full-batch path (batch GD, L-BFGS, exact evaluations)."""
        return _makes_exact_passes(self.batch_size, self.eval_exact_every)

    @property
    def buffer_bytes(self) -> int:
        return int(self.buffer_mb * 2**20)


@dataclass(frozen=True)
class CheckpointConfig(Declared):
    """Where and how often training writes checkpoints (see ``streamtrain.resume``).

    Not part of the training configuration: checkpoints never change the result, so a run may
    be resumed with other checkpoint options.
    """

    checkpoint_dir: str | None = option(
        None,
        "write checkpoints here (at the end of every epoch, and see below) so that --resume can continue",
        check=path,
        parse=str,
        metavar="DIR",
    )
    checkpoint_every: int | None = option(
        None, "also write a checkpoint every N steps", check=positive_int, parse=int, metavar="N"
    )
    checkpoint_seconds: float = option(600.0, "also write a checkpoint every S seconds", check=positive, metavar="S")
    keep_checkpoints: int = option(3, "how many of the newest checkpoints to keep", check=positive_int, metavar="K")

    def _derived(self) -> dict[str, Any]:
        if self.checkpoint_dir is None and self.checkpoint_every is not None:
            raise ConfigError("checkpoint_every needs checkpoint_dir: the directory to write checkpoints to")
        return {}
