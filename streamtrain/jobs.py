"""``streamtrain fit --config job.toml``: a training job written down once, run as a batch job.

A job file is flat TOML, one key per option of ``fit``: every declared option (``FitConfig``,
``CheckpointConfig``) under its own name, and the command's other arguments (``data``, ``out``,
``metrics``, ``init``, ``resume``, the arrays' names and layout, ``progress``). Dashes may stand
for underscores (``batch-size``, as on the command line). Flags given on the command line win
over the file's values; a key that is no option is an error naming it, since a misspelt key
would otherwise be silently ignored and the job run with a default.

    data = "data/big.zarr"
    out = "models/big.npz"
    model = "softmax"
    batch_size = 1000
    hidden = [64, 32]
    checkpoint_dir = "ckpt"
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from typing import Any

from ._errors import ConfigError
from .config import CheckpointConfig, FitConfig

__all__ = ["JOB_KEYS", "read_job"]

# The fit command's arguments that are not training options, and the type each must have.
RUN_KEYS: dict[str, type] = {
    "data": str,
    "out": str,
    "metrics": str,
    "init": str,
    "resume": bool,
    "x": str,
    "y": str,
    "layout": str,
    "storage_option": list,  # ["KEY=VALUE", ...], as --storage-option gives them
    "progress": bool,
    "quiet": bool,
    "log_every": int,
}
JOB_KEYS = (*(f.name for c in (FitConfig, CheckpointConfig) for f in dataclasses.fields(c)), *RUN_KEYS)


def read_job(path: str | os.PathLike) -> dict[str, Any]:
    """The options a job file sets, by their names (see the module docstring); ConfigError names
    a file that cannot be read as TOML, a table where a value belongs, or a key that is no option."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 reads TOML with tomli, tomllib's origin
        import tomli as tomllib
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the job file ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not a TOML job file ({e})") from None
    job = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in JOB_KEYS:
            near = difflib.get_close_matches(name, JOB_KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}; the keys are fit's options: {', '.join(JOB_KEYS)}")
        if isinstance(value, dict):
            raise ConfigError(f"{path}: {key} is a table; a job file is flat: {name} = VALUE")
        kind = RUN_KEYS.get(name)
        if kind is not None and not isinstance(value, kind):
            raise ConfigError(f"{path}: {key} = {value!r} should be a {kind.__name__}")
        job[name] = value
    return job
