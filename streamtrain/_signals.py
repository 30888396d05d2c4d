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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Interrupted", "StopRequest", "signals_deferred", "stop_requests"]

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
    with _handled_by(request._handle):
        yield request


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then take effect (in the main thread;
    elsewhere a no-op: only the main thread is interrupted by them).

    The handlers are swapped rather than the signals masked: ``pthread_sigmask`` masks one thread,
    and a signal delivered to another (zarr runs its own) still interrupts the main thread.
    """
    caught: list[int] = []
    with _handled_by(lambda signum, frame: caught.append(signum)):
        yield
    for signum in dict.fromkeys(caught):
        signal.raise_signal(signum)


@contextmanager
def _handled_by(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` while the block runs, in the main thread (Python runs
    handlers there only; elsewhere nothing changes); the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, signal.SIG_DFL if old is None else old)
