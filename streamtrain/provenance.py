"""How a model was made: what ``streamtrain info MODEL`` prints from its file.

A model file holds the resolved configuration, the training data's fingerprint and the history
(whose last record is the final metrics); ``provenance`` adds the versions of the packages that
computed it and where its warm start came from. From these, ``command_line`` writes the
``streamtrain fit`` command that trains the same model again: every option whose value is not
its declared default, so that defaults derived from other options (the batch size, an mlp's
output) are spelt out and a later release's other defaults cannot change the result.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import shlex
from typing import Any

from .config import FitConfig
from .models import Params, output_of
from .result import FitResult

__all__ = ["IN_MEMORY", "PACKAGES", "command_line", "describe", "provenance", "versions"]

PACKAGES = ("streamtrain", "numpy", "zarr", "h5py", "dask", "numcodecs", "scipy", "numba")  # numerics and reads


def versions() -> dict[str, str]:
    """The versions of Python and of the installed PACKAGES (read from their metadata: nothing is imported)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional package this process does not have
    return found


IN_MEMORY = "parameters given in memory"  # a warm start that no file holds


def provenance(init: Params | str | os.PathLike | None, *, continued: bool = False) -> dict[str, Any]:
    """What a model file records of how it was made, besides its configuration and data: the
    versions, the warm start's file (absolute) when there was one, and whether the run went on
    from an earlier one's state (``fit(state=...)``, as ``partial_fit`` does: no one command)."""
    made: dict[str, Any] = {"versions": versions()}
    if init is not None:
        made["init"] = IN_MEMORY if isinstance(init, dict) else os.path.abspath(init)
    return {**made, "continued": True} if continued else made


def command_line(result: FitResult, out: str | os.PathLike) -> list[str] | None:
    """``streamtrain fit`` with the arguments that train ``result`` again into ``out``; None when its
    data was not a store on disk (arrays given in memory)."""
    data = result.data
    if not data.get("path") or data.get("format") == "memory":
        return None
    argv = ["streamtrain", "fit", str(data["path"])]
    fixed_output = output_of(result.config.model) is not None  # a 1-layer model's output is its name's
    for f in dataclasses.fields(FitConfig):
        value = getattr(result.config, f.name)
        if value is None or value == f.default or value == () or (f.name == "output" and fixed_output):
            continue
        flag = f.metadata["option"].flag or "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else repr(value).strip("'")]
    for name, default in (("x", "X"), ("y", "Y"), ("layout", "columns")):
        if data.get(name, default) != default:
            argv += [f"--{name}", str(data[name])]
    init = result.provenance.get("init")
    if init == IN_MEMORY or result.provenance.get("continued"):
        return None
    if init is not None:
        argv += ["--init", str(init)]
    return [*argv, "--out", os.fspath(out)]


def describe(result: FitResult, path: str) -> dict[str, Any]:
    """What ``info`` reports of the model file at ``path``, as JSON-ready values."""
    argv = command_line(result, path)
    return {
        "model": result.model.to_dict(),
        "parameters": {k: list(v.shape) for k, v in result.params.items()},
        "dtype": str(next(iter(result.params.values())).dtype),
        "data": result.data,
        "config": result.config.to_dict(),
        "final": result.history[-1].to_dict() if result.history else None,
        "epochs": len(result.history),
        **result.provenance,
        "command": None if argv is None else shlex.join(argv),
    }
