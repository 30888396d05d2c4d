"""The declared options: one declaration each, from which the library, the command line, the
model file and the README all follow.

Checked here: every declared option has a flag whose default, choices and help come from the
declaration, and a README row; fit and the command line give identical models for the same
options; the registries are the choices; defaults that depend on other options; model files
store the resolved configuration and version-1 files still load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

import streamtrain
from streamtrain import CheckpointConfig, CompareConfig, ConfigError, ConvertConfig, DataConfig, FitConfig
from streamtrain.cli import _parser, main
from streamtrain.optim import OPTIMIZERS, SCHEDULES, Rule, Schedule

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
COMMANDS = {
    "fit": (FitConfig, CheckpointConfig),
    "compare": (CompareConfig,),
    "make-data": (DataConfig,),
    "convert": (ConvertConfig,),
}


def _declared(command: str) -> list[dataclasses.Field]:
    return [f for config in COMMANDS[command] for f in dataclasses.fields(config)]


def _subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _flag(f: dataclasses.Field) -> str:
    return f.metadata["option"].flag or "--" + f.name.replace("_", "-")


def _argv(config: type, options: dict) -> list[str]:
    """The command line that gives ``options``, spelled from the declarations."""
    argv = []
    for f in dataclasses.fields(config):
        if f.name in options:
            value = options[f.name]
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            argv += [_flag(f), text]
    return argv


# -- one declaration: flags, defaults, choices and help ---------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_declared_option_has_a_flag_made_from_its_declaration(command):
    actions = {a.dest: a for a in _subparser(command)._actions}
    for f in _declared(command):
        opt, action = f.metadata["option"], actions[f.name]
        assert _flag(f) in action.option_strings, f.name
        assert action.default == f.default, f.name
        assert action.choices == opt.choices, f.name
        assert action.help.startswith(opt.help), f.name
        shown = "%(default)s" if f.default is not None else opt.derived
        assert (f"(default: {shown})" in action.help) == bool(shown), f.name


def test_fit_has_no_flag_for_a_training_option_that_is_not_declared():
    run_options = {"help", "data", "init", "out", "metrics", "x", "y", "layout", "storage_option", "progress", "resume"}
    flags = {a.dest for a in _subparser("fit")._actions} - run_options
    assert flags == {f.name for f in (*dataclasses.fields(FitConfig), *dataclasses.fields(CheckpointConfig))}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_declared_option_has_a_readme_row(command):
    rows = [line for line in README.splitlines() if line.startswith("| ")]
    synopsis = [line for line in README.splitlines() if line.startswith(f"`streamtrain {command} ")]
    for f in _declared(command):
        flag = re.compile(re.escape(_flag(f)) + r"\b(?!-)")
        where = rows if command == "fit" else synopsis
        assert any(flag.search(line) for line in where), f"{_flag(f)} of {command} is not in the README"


def test_help_lists_the_defaults_a_user_gets(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    config = FitConfig()
    assert f"learning rate (default: {config.lr})" in text
    assert f"(default: {config.buffer_mb:g})" in text
    assert "(default: 256; full with --optimizer lbfgs)" in text and config.batch_size == 256
    assert "(default: 5; lbfgs 100)" in text and config.epochs == 5
    assert "0.95 for exponential" in text and FitConfig(lr_schedule="exponential").lr_decay == 0.95


# -- the library and the command line give the same models -------------------------------------


EVERY_OPTION = dict(
    model="mlp",
    hidden=(5, 3),
    activation="tanh",
    output="sigmoid",
    batch_size=37,
    epochs=2,
    lr=0.05,
    optimizer="adam",
    beta1=0.8,
    beta2=0.99,
    eps=1e-6,
    lr_schedule="step",
    lr_decay=0.7,
    lr_step=3,
    lr_per="step",
    l2=0.3,
    shuffle="buffer",
    buffer_mb=0.03,
    prefetch=1,
    seed=4,
    dtype="float64",
    eval_exact_every=1,
    scheduler="sync",
)


@pytest.mark.parametrize(
    "options",
    [
        EVERY_OPTION,
        dict(model="softmax", batch_size="full", epochs=3, lr=2.0, optimizer="momentum", scheduler="sync"),
        dict(model="linear", optimizer="rmsprop", lr=0.01, lr_schedule="inverse-time", shuffle="none"),
        dict(optimizer="lbfgs", l2=0.5, epochs=4, scheduler="sync"),
    ],
    ids=["every option", "batch GD", "defaults of linear", "lbfgs"],
)
def test_fit_and_the_command_line_give_identical_models(capsys, tmp_path, options):
    if options.get("optimizer") == "lbfgs":
        pytest.importorskip("scipy")
    task = {"softmax": "softmax", "linear": "linear"}.get(options.get("model"), "logistic")
    data = tmp_path / "d.zarr"
    streamtrain.make_data(data, task=task, m=1500, n_x=4, chunk=256, seed=1)
    assert set(options) <= {f.name for f in dataclasses.fields(FitConfig)}
    code = main(["fit", str(data), *_argv(FitConfig, options), "--out", str(tmp_path / "m.npz")])
    assert code == 0, capsys.readouterr().err
    cli = streamtrain.load(tmp_path / "m.npz")
    lib = streamtrain.fit(data, **options)
    assert list(cli.params) == list(lib.params)
    for k in lib.params:
        np.testing.assert_array_equal(cli.params[k], lib.params[k])
    assert cli.config == lib.config and cli.model == lib.model
    assert [r.loss for r in cli.history] == [r.loss for r in lib.history]


def test_a_config_object_and_keyword_options_are_the_same_fit():
    X, Y = np.random.default_rng(0).standard_normal((3, 200)), np.zeros((1, 200))
    Y[0, ::3] = 1
    source = streamtrain.ArraySource(X, Y, chunk_size=64)
    config = FitConfig(epochs=2, batch_size=16, lr=0.3, seed=2)
    a = streamtrain.fit(source, config)
    b = streamtrain.fit(source, **config.to_dict())
    c = streamtrain.fit(source, FitConfig(epochs=2, batch_size=16, lr=0.9), lr=0.3, seed=2)
    for r in (b, c):
        np.testing.assert_array_equal(r.params["W1"], a.params["W1"])
        assert r.config == a.config


# -- the declarations themselves -----------------------------------------------------------------


def test_defaults_that_depend_on_other_options():
    assert (FitConfig().epochs, FitConfig().batch_size) == (5, 256)
    lbfgs = FitConfig(optimizer="lbfgs")
    assert (lbfgs.epochs, lbfgs.batch_size) == (100, "full")
    assert FitConfig(model="mlp").hidden == (64,) and FitConfig().hidden == ()
    decays = {name: FitConfig(lr_schedule=name).lr_decay for name in SCHEDULES}
    assert decays == {"constant": None, "inverse-time": 1.0, "exponential": 0.95, "step": 0.5}
    assert FitConfig(lr_schedule="constant", lr_decay=7.0).lr_decay is None  # ignored, as before


def test_none_means_the_default_and_values_are_normalised():
    assert FitConfig(lr=None, scheduler=None, hidden=None) == FitConfig()
    config = FitConfig(model="mlp", hidden=[8, 4], lr=1, seed=np.int64(3), epochs=2.0)
    assert config.hidden == (8, 4) and config.lr == 1.0 and type(config.lr) is float
    assert type(config.seed) is int and type(config.epochs) is int


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(learning_rate=0.1), r"unknown option 'learning_rate'"),
        (dict(lr_decya=0.5), r"unknown option 'lr_decya' \(did you mean 'lr_decay'\?\)"),
        (dict(model="svm"), "unknown model 'svm'; choose from logistic, softmax, linear, mlp"),
        (dict(optimizer="adamw"), "unknown optimizer 'adamw'; choose from sgd, momentum, rmsprop, adam, lbfgs"),
        (dict(lr=0), "learning rate must be a positive number"),
        (dict(beta1=1.0), r"beta1 must be a number in \[0, 1\)"),
        (dict(buffer_mb=-1), "buffer_mb must be a positive number"),
        (dict(prefetch=65), "prefetch must be at most 64 chunks"),
        (dict(prefetch=-1), "prefetch must be a non-negative integer"),
        (dict(hidden="64"), "hidden must be a list of layer sizes"),
        (dict(hidden=np.array(3)), "hidden must be a list of layer sizes"),  # was a TypeError: a 0-d array
        (dict(hidden=["3"]), "hidden layer size must be a positive integer, got '3'"),  # was accepted as it was
        (dict(hidden=[0]), "hidden layer size must be a positive integer, got 0"),
        (dict(lr_schedule="step", lr_decay=2.0), r"decay must be a number in \(0, 1\] for the step schedule"),
        (dict(optimizer="lbfgs", batch_size=64), "L-BFGS takes exact full-batch steps"),
    ],
)
def test_bad_options_are_one_line_config_errors(options, message):
    with pytest.raises(ConfigError, match=message) as e:
        FitConfig.from_options(options)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value", [False, 3, ["d"], b"d"])
def test_a_checkpoint_dir_that_is_not_a_path_is_a_config_error(value):
    # fit(checkpoint_dir=False) was a TypeError from os.fspath.
    with pytest.raises(ConfigError, match=f"checkpoint_dir must be a path, got {re.escape(repr(value))}"):
        CheckpointConfig.from_options({"checkpoint_dir": value})


# -- 14. Option values that cannot work are one-line ConfigErrors, before the data is opened ----------


BAD_OPTION_VALUES = {
    "--buffer-mb": ["0", "-5", "nan", "inf", "1e308", str(2**30 + 1)],
    "--prefetch": ["-1", "1000000", "65"],
    "--scheduler": ["foo://bar", "tcp://", "tcp://host:notaport", "tcp://host", "inproc://x", "ucx://10.0.0.1:8786"],
}


@pytest.mark.parametrize("flag, value", [(f, v) for f, values in BAD_OPTION_VALUES.items() for v in values])
def test_option_values_that_cannot_work_fail_at_once(capsys, tmp_path, flag, value):
    name = flag[2:].replace("-", "_")
    with pytest.raises(ConfigError, match=name if name != "buffer_mb" else "buffer_mb must be a positive number"):
        FitConfig.from_options(
            {name: {"buffer_mb": float, "prefetch": int}.get(name, str)(value), "batch_size": "full"}
        )
    exact = ["--batch-size", "full"] if flag == "--scheduler" else []
    # The data does not exist: the option is checked first, so the message is about the option.
    code = main(["fit", str(tmp_path / "none.zarr"), f"{flag}={value}", *exact])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.count("\n") == 1 and "none.zarr" not in err, err
    assert err.startswith(f"streamtrain: error: {'scheduler' if name == 'scheduler' else name}")


def test_option_limits_are_in_the_help_and_the_limits_themselves_work(capsys):
    assert FitConfig(prefetch=64).prefetch == 64 and FitConfig(buffer_mb=2**30).buffer_bytes == 2**50
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "at most 64" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("options", [dict(), dict(batch_size=64), dict(shuffle="buffer", epochs=2)])
def test_a_scheduler_that_would_go_unused_is_refused(capsys, tmp_path, options):
    with pytest.raises(ConfigError, match="scheduler 'sync' would be unused: this run makes no exact pass") as e:
        FitConfig(scheduler="sync", **options)
    assert "--batch-size full, --optimizer lbfgs or --eval-exact-every N" in str(e.value)
    assert FitConfig(**options).scheduler is None  # none given: none used
    code = main(["fit", str(tmp_path / "none.zarr"), "--scheduler", "sync", *_argv(FitConfig, options)])
    assert code == 1 and "would be unused" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options", [dict(batch_size="full"), dict(optimizer="lbfgs"), dict(eval_exact_every=2)], ids=str
)
def test_runs_with_exact_passes_take_a_scheduler_or_the_default(options):
    assert FitConfig(scheduler="sync", **options).scheduler == "sync"
    assert FitConfig(**options).scheduler == "threads"


def test_model_files_that_stored_a_scheduler_a_run_did_not_use_still_load(tmp_path):
    data = tmp_path / "d.zarr"
    streamtrain.make_data(data, m=300, n_x=3, seed=0)
    result = streamtrain.fit(data, epochs=1)
    for stored, batch_size in (("threads", 256), ("sync", 256), ("inproc://10.0.0.1/1/1", "full")):
        config = {**result.config.to_dict(), "scheduler": stored, "batch_size": batch_size}
        meta = {"format": "streamtrain-model", "version": 2, "model": result.model.to_dict(), "config": config}
        np.savez(tmp_path / "old.npz", **result.params, __meta__=np.array(json.dumps(meta)))
        old = streamtrain.load(tmp_path / "old.npz")
        assert old.config.scheduler == (None if batch_size != "full" else "threads")
        assert old.config.batch_size == batch_size


def test_configurations_are_frozen_and_round_trip_through_json():
    config = FitConfig(**{**EVERY_OPTION, "scheduler": "tcp://10.0.0.1:8786"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]
    assert FitConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert DataConfig.from_dict(DataConfig(task="linear", outputs=2).to_dict()) == DataConfig(task="linear", outputs=2)


def test_shared_options_are_declared_once():
    fit_fields = {f.name: f for f in dataclasses.fields(FitConfig)}
    for config in (CompareConfig, DataConfig):
        for f in dataclasses.fields(config):
            # compare's l2 defaults to the model's own; its exact pass always needs a scheduler
            if f.name in fit_fields and f.name not in ("l2", "scheduler"):
                assert f.default == fit_fields[f.name].default, (config.__name__, f.name)
                assert f.metadata["option"].check is fit_fields[f.name].metadata["option"].check


# -- registries are the choices ------------------------------------------------------------------


def test_a_schedule_added_to_its_table_is_a_choice_everywhere(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(SCHEDULES, "halving", Schedule(lambda lr, d, t, n: lr / 2**t, None, lambda d: True, ""))
    data = tmp_path / "d.zarr"
    streamtrain.make_data(data, m=500, n_x=3, seed=0)
    constant = streamtrain.fit(data, epochs=1, batch_size=500, lr=0.4)  # one step: α = lr / 2**0
    halving = streamtrain.fit(data, epochs=1, batch_size=500, lr=0.4, lr_schedule="halving")
    np.testing.assert_array_equal(halving.params["W1"], constant.params["W1"])
    assert main(["fit", str(data), "--lr-schedule", "halving", "--epochs", "1", "--out", str(tmp_path / "m.npz")]) == 0
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "halving" in capsys.readouterr().out


def test_an_optimizer_added_to_its_table_is_a_choice_of_fit(monkeypatch, tmp_path):
    monkeypatch.setitem(OPTIMIZERS, "adam-uncorrected", Rule(v=True, s=True))
    data = tmp_path / "d.zarr"
    streamtrain.make_data(data, m=500, n_x=3, seed=0)
    raw = streamtrain.fit(data, epochs=1, optimizer="adam-uncorrected", lr=0.01)
    adam = streamtrain.fit(data, epochs=1, optimizer="adam", lr=0.01)
    assert raw.config.optimizer == "adam-uncorrected"
    assert not np.array_equal(raw.params["W1"], adam.params["W1"])  # the bias correction is the difference


# -- model files store the resolved configuration ---------------------------------------------------


def test_the_model_file_holds_the_resolved_configuration_and_the_model(tmp_path):
    data = tmp_path / "c.zarr"
    streamtrain.make_data(data, task="softmax", classes=4, m=600, n_x=3, seed=0)
    result = streamtrain.fit(data, model="mlp", hidden=[6], epochs=1)
    assert result.config.output == "softmax"  # from the data's task
    assert result.model == streamtrain.Model("mlp", (6,), "relu", "softmax", classes=4)
    result.save(tmp_path / "m.npz")
    _, meta = streamtrain.load_model(tmp_path / "m.npz")
    assert meta["config"] == result.config.to_dict() and meta["model"] == result.model.to_dict()
    assert meta["config"]["epochs"] == 1 and meta["config"]["batch_size"] == 256 and meta["config"]["hidden"] == [6]
    again = streamtrain.fit(data, streamtrain.load(tmp_path / "m.npz").config)
    np.testing.assert_array_equal(again.params["W2"], result.params["W2"])


def test_a_version_1_model_file_still_loads(tmp_path):
    data = tmp_path / "d.zarr"
    streamtrain.make_data(data, m=300, n_x=3, seed=0)
    result = streamtrain.fit(data, epochs=1, shuffle="chunks")  # the default then
    config = {
        "batch_size": 256,
        "epochs": 1,
        "lr": 0.1,
        "optimizer": "sgd",
        "lr_decay": None,
        "shuffle": "chunks",
        "seed": 0,
        "dtype": "float32",
        "scheduler": None,
        "prefetch": 2,
        "buffer_bytes": 201326592,
        "model_options": {"hidden": [], "activation": "relu", "output": "sigmoid", "classes": None},
    }
    meta = {"format": "streamtrain-model", "version": 1, "model": "logistic", "config": config, "data": {}}
    meta["history"] = [{"epoch": 1, "loss": 0.5, "seconds": 0.1, "samples": 300, "steps": 2}]
    np.savez(tmp_path / "v1.npz", **result.params, __meta__=np.array(json.dumps(meta)))
    old = streamtrain.load(tmp_path / "v1.npz")
    assert old.model == result.model and old.config == result.config
    assert old.history[0].loss == 0.5 and old.history[0].accuracy is None
    assert streamtrain.evaluate(data, old) == streamtrain.evaluate(data, result)
