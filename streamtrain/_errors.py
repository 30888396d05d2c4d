"""Exceptions for user mistakes: the CLI prints their message on one line and exits 1."""

from __future__ import annotations

import numbers

__all__ = ["ConfigError", "DataError", "DivergedError", "UserError", "check_int"]


class UserError(Exception):
    """Something the user can fix; the message says what and where."""


class DataError(UserError, ValueError):
    """A problem with the data or a file; the message names the file, array and chunk."""


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
