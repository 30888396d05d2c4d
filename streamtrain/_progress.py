"""The progress bar on stderr: samples done, samples/s, running loss, time left, share waiting on reads.

Drawn by tqdm: one small pure-Python package with no dependencies of its own, imported only when a
bar is drawn (46 ms), which measures rates and time left, fits the bar to the terminal's width and
redraws at most a few times a second. rich draws richer bars, but brings pygments and
markdown-it with it for one line of text.
"""

from __future__ import annotations

import sys
from typing import Any

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
    """A bar of ``total`` samples labelled ``label``; nothing at all unless ``enabled``."""

    def __init__(self, label: str, total: int, *, enabled: bool, every_s: float = 0.25) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=label, unit=" samples", unit_scale=True, mininterval=every_s,
                file=sys.stderr, leave=False, dynamic_ncols=True,
            )  # fmt: skip

    def update(self, done: int, loss: float | None = None, waited_s: float | None = None, on: str = "reads") -> None:
        """Show ``done`` of ``total`` samples, the running ``loss`` and the seconds so far spent waiting
        ``on`` something (as a share of the time): reads (is the disk or the CPU the limit?), or the
        round barrier of ``--shards``."""
        bar = self._bar
        if bar is None:
            return
        shown = [f"loss {loss:.5f}"] if loss is not None else []
        if waited_s is not None:
            share = read_share(waited_s, bar.format_dict["elapsed"])
            shown.append(share if on == "reads" else share.replace("on reads", on))
        bar.set_postfix_str(", ".join(shown), refresh=False)
        bar.update(done - bar.n)  # redraws when mininterval has passed
        if done >= bar.total:
            bar.refresh()  # the whole epoch, shown even when it took less than mininterval

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()  # leave=False: the line is cleared; the caller prints the epoch summary
