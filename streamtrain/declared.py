"""Declared options: a dataclass field that carries its own help text, choices, check and parsing.

A ``Declared`` configuration checks every field when built, builds from and to plain dicts, and
names an unknown option with the nearest known one. The command line derives its flags from the
same fields (``cli.add_options``), so an option is declared once, next to the code that uses it
(``config.FitConfig``, ``synthetic.DataConfig``, ``compare``, ``convert``, ``plots``).
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from ._errors import ConfigError, check_choice, check_int, check_number

__all__ = ["Declared", "Names", "Option", "option", "same_as"]


@dataclass(frozen=True)
class Option:
    """How one field is given, checked and shown; kept in the field's metadata."""

    help: str
    choices: Collection[str] | None = None  # the names a registry implements
    check: Callable[[str, Any], Any] | None = None  # (name, value) -> the value to keep, or ConfigError
    parse: Callable[[str], Any] | None = None  # command-line text -> value (see ``option``)
    metavar: str | None = None
    nargs: str | None = None  # "+": several values on the command line
    flag: str | None = None  # when not --name-with-dashes
    derived: str | None = None  # for a default of None: what it becomes, for the help text


def option(default: Any, help: str, **how: Any) -> Any:
    """A dataclass field declared with its ``Option``; the command line parses the default's type
    unless ``parse`` or ``choices`` say otherwise."""
    if how.get("parse") is None and how.get("choices") is None and default is not None:
        how["parse"] = type(default)
    return field(default=default, metadata={"option": Option(help, **how)})


def same_as(owner: type, name: str, default: Any = dataclasses.MISSING, **how: Any) -> Any:
    """The field ``name`` of ``owner`` declared again for another command, with ``how`` changed."""
    f = next(f for f in fields(owner) if f.name == name)
    opt = dataclasses.replace(f.metadata["option"], **how)
    return field(default=f.default if default is dataclasses.MISSING else default, metadata={"option": opt})


class Names(Collection[str]):
    """The names of several registries as one set of choices, live: an entry added to one later
    is a choice too."""

    def __init__(self, *tables: Collection[str]) -> None:
        self.tables = tables

    def __iter__(self) -> Iterator[str]:
        return itertools.chain.from_iterable(self.tables)

    def __contains__(self, name: object) -> bool:
        return any(name in table for table in self.tables)

    def __len__(self) -> int:
        return sum(map(len, self.tables))


Self = TypeVar("Self", bound="Declared")


@dataclass(frozen=True)
class Declared:
    """Base of the declared configurations: checks every field, builds from and to plain dicts."""

    def __post_init__(self) -> None:
        for f in fields(self):
            opt, value = f.metadata["option"], getattr(self, f.name)
            if value is None:  # None is the default: the declared one, or one derived below
                object.__setattr__(self, f.name, f.default)
                continue
            if opt.choices is not None:
                check_choice(value, opt.choices, f.name)
            if opt.check is not None:
                object.__setattr__(self, f.name, opt.check(f.name, value))
        for name, value in self._derived().items():
            object.__setattr__(self, name, value)

    def _derived(self) -> dict[str, Any]:
        """Defaults that depend on other options, and checks that span several."""
        return {}

    @classmethod
    def from_options(cls: type[Self], options: Mapping[str, Any]) -> Self:
        """Built from keyword options; ConfigError names an unknown one (and the nearest known)."""
        known = [f.name for f in fields(cls)]
        for name in options:
            if name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(f"unknown option {name!r}{hint}; the options are {', '.join(known)}")
        return cls(**options)

    from_dict = from_options

    def to_dict(self) -> dict[str, Any]:
        """Every option, as JSON-ready values."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# -- checks: (name, value) -> value -------------------------------------------------------------


def positive_int(name: str, value: Any) -> int:
    check_int(name, value)
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    check_int(name, value, minimum=0)
    return int(value)


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def positive(name: str, value: Any) -> float:
    return check_number(name, value, lambda v: v > 0, "a positive number")


def non_negative(name: str, value: Any) -> float:
    return check_number(name, value, lambda v: v >= 0, "a number >= 0")


def unit_interval(name: str, value: Any) -> float:
    return check_number(name, value, lambda v: 0 <= v < 1, "a number in [0, 1)")


def path(name: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{name} must be a path, got {value!r}")
    return os.fspath(value)
