"""A one-line progress display on stderr, redrawn at most a few times a second."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "read_share"]


def read_share(waited_s: float, seconds: float, *, verdict: bool = False) -> str:
    """``waiting on reads 12%``: the share of the time the step waited for data; with ``verdict``,
    which of the two is the limit (reads past half the time, else the step's computation)."""
    share = waited_s / max(seconds, 1e-9)
    said = f"waiting on reads {100 * share:.0f}%"
    if verdict:
        said += ": reading is the limit" if share > 0.5 else ": computing is the limit"
    return said


class Progress:
    def __init__(self, label: str, total: int, *, enabled: bool, every_s: float = 0.25) -> None:
        self.label, self.total, self.enabled, self.every_s = label, total, enabled, every_s
        self._t0 = self._last = time.perf_counter()
        self._drawn = False

    def update(self, done: int, loss: float | None = None, waited_s: float | None = None) -> None:
        """Redraw with ``done`` of ``total`` samples, the running ``loss`` and the seconds so far
        spent waiting for data (shown as a share of the time: is the disk or the CPU the limit?)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < self.every_s and done < self.total:
            return
        self._last = now
        rate = done / max(now - self._t0, 1e-9)
        bar = "#" * int(20 * done / self.total)
        shown = f"loss {loss:.5f}  " if loss is not None else ""
        reads = f"  {read_share(waited_s, now - self._t0)}" if waited_s is not None else ""
        line = f"\r{self.label} [{bar:<20}] {100 * done / self.total:5.1f}% {shown}{rate:,.0f} samples/s{reads} "
        sys.stderr.write(line)
        sys.stderr.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\033[K")  # clear the line; the caller prints the epoch summary
            sys.stderr.flush()
