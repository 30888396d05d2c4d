"""Label rules: which label values a model can learn from, checked on every chunk as it is read.

A rule is an argument of each read (``ChunkSource.read(start, stop, labels=rule)``), never state
of the source: the same store can be read for a logistic model (0/1 labels) and a linear one
(any real value) at once. Rules are small frozen objects, so they travel to Dask workers.

Conventions: Y has shape (k, B), one sample per column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._errors import DataError

__all__ = ["BINARY", "ONE_HOT", "ClassIds", "LabelError", "LabelRule", "check_labels"]


class LabelError(DataError):
    """A label the model cannot learn from (``check_labels``); ``binding`` adds which model fits the labels."""


class LabelRule:
    """Base class: ``bad(Y)`` marks the entries of Y (k, B) that break the rule."""

    whole_column: ClassVar[bool] = False  # report the whole column (one-hot), not one entry

    def bad(self, Y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def expected(self) -> str:
        """What a good label is; completes "label ... at sample i (chunk c) ..."."""
        raise NotImplementedError


@dataclass(frozen=True)
class Binary(LabelRule):
    def bad(self, Y: np.ndarray) -> np.ndarray:
        return ~((Y == 0) | (Y == 1))

    def expected(self) -> str:
        return "is outside {0, 1}"


@dataclass(frozen=True)
class ClassIds(LabelRule):
    """One row of class ids 0..classes-1."""

    classes: int

    def bad(self, Y: np.ndarray) -> np.ndarray:
        return ~((Y >= 0) & (self.classes > Y) & (np.floor(Y) == Y))

    def expected(self) -> str:
        return f"is not a class id 0..{self.classes - 1}"


@dataclass(frozen=True)
class OneHot(LabelRule):
    whole_column = True

    def bad(self, Y: np.ndarray) -> np.ndarray:
        return ~((Y == 0) | (Y == 1)) | (Y.sum(axis=0, keepdims=True) != 1)

    def expected(self) -> str:
        return "is not one-hot (0/1, a single 1 per sample)"


BINARY = Binary()
ONE_HOT = OneHot()


def check_labels(Y: np.ndarray, start: int, rule: LabelRule, where: str, chunk_starts: np.ndarray) -> None:
    """Raise DataError naming the first column of ``Y`` (samples from ``start``) that breaks ``rule``."""
    bad = rule.bad(Y)
    if bad.any():
        col = int(np.argmax(bad.any(axis=0)))
        value = Y[:, col].tolist() if rule.whole_column else Y[:, col][bad[:, col]][0].item()
        chunk = int(np.searchsorted(chunk_starts, start + col, side="right") - 1)
        raise LabelError(f"{where}: label {value!r} at sample {start + col} (chunk {chunk}) {rule.expected()}")
