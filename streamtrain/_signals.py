"""SIGINT and SIGTERM during training: finish the step, write a checkpoint, then stop.

A batch job is stopped with SIGTERM (a scheduler's pre-emption, ``kill``) or SIGINT (Ctrl-C).
The first signal only sets a flag; the training loop looks at it after every step, writes a
checkpoint when it has a directory, and raises ``Interrupted``. A second signal aborts at once
(``KeyboardInterrupt``), for a user who will not wait for the step. Handlers are installed only
in the main thread (Python allows no other) and put back afterwards.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Interrupted", "StopRequest", "stop_requests"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal after a whole step; the command exits 128 + ``signum``."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


class StopRequest:
    """The first SIGINT/SIGTERM received, or None."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second one: do not wait for the step
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """A ``StopRequest`` that SIGINT and SIGTERM set while the block runs (main thread only)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request._handle) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
