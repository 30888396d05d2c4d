"""A one-line progress display on stderr, redrawn at most a few times a second."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    def __init__(self, label: str, total: int, *, enabled: bool, every_s: float = 0.25) -> None:
        self.label, self.total, self.enabled, self.every_s = label, total, enabled, every_s
        self._t0 = self._last = time.perf_counter()
        self._drawn = False

    def update(self, done: int, loss: float | None = None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < self.every_s and done < self.total:
            return
        self._last = now
        rate = done / max(now - self._t0, 1e-9)
        bar = "#" * int(20 * done / self.total)
        shown = f"loss {loss:.5f}  " if loss is not None else ""
        sys.stderr.write(f"\r{self.label} [{bar:<20}] {100 * done / self.total:5.1f}% {shown}{rate:,.0f} samples/s ")
        sys.stderr.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\033[K")  # clear the line; the caller prints the epoch summary
            sys.stderr.flush()
