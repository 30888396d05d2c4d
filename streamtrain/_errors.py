"""Exceptions for user mistakes: the CLI prints their message on one line and exits 1."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

__all__ = [
    "ConfigError",
    "DataError",
    "DataWarning",
    "DivergedError",
    "UserError",
    "check_choice",
    "check_int",
    "check_number",
    "lookup",
]


class UserError(Exception):
    """Something the user can fix; the message says what and where."""


class DataError(UserError, ValueError):
    """A problem with the data or a file; the message names the file, array and chunk."""


class DataWarning(UserWarning):
    """Data that can be used but not as stored (e.g. label chunks never written, read as the fill value)."""


class ConfigError(UserError, ValueError):
    """An option value that cannot work (batch size, learning rate, shapes of a warm start...)."""


class DivergedError(UserError, ArithmeticError):
    """Training produced a non-finite loss."""


def check_int(name: str, value: object, minimum: int = 1) -> None:
    """Raise ConfigError unless ``value`` is a whole number >= ``minimum`` (0 or 1); bools are not."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    whole = whole or (isinstance(value, float) and value.is_integer())
    if not whole or value < minimum:  # type: ignore[operator]
        kind = "positive" if minimum == 1 else "non-negative"
        raise ConfigError(f"{name} must be a {kind} integer, got {value!r}")


T = TypeVar("T")


def check_choice(name: object, choices: Collection[str], what: str) -> str:
    """``name`` if it is one of ``choices``; else ConfigError naming ``what`` and the choices."""
    if isinstance(name, str) and name in choices:
        return name
    raise ConfigError(f"unknown {what} {name!r}; choose from {', '.join(choices)}")


def lookup(table: Mapping[str, T], name: object, what: str) -> T:
    """The entry of a registry called ``name`` (see ``check_choice``)."""
    return table[check_choice(name, table, what)]


def check_number(name: str, x: object, ok: Callable[[float], bool], expected: str) -> float:
    """``x`` as a Python float, if it is a finite real number that passes ``ok``; else ConfigError.

    A Python float, not a NumPy one: a NumPy float64 scalar would promote float32 arrays to float64.
    """
    if not (isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and ok(float(x))):
        raise ConfigError(f"{name} must be {expected}, got {x!r}")
    return float(x)
