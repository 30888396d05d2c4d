"""Exceptions for user mistakes: the CLI prints their message on one line and exits 1."""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "DivergedError", "UserError"]


class UserError(Exception):
    """Something the user can fix; the message says what and where."""


class DataError(UserError, ValueError):
    """A problem with the data or a file; the message names the file, array and chunk."""


class ConfigError(UserError, ValueError):
    """An option value that cannot work (batch size, learning rate, shapes of a warm start...)."""


class DivergedError(UserError, ArithmeticError):
    """Training produced a non-finite loss."""
