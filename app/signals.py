"""SIGTERM and SIGINT become an exception in the main thread, so `finally:` blocks stop the server.

A signal interrupts only while the guard is `armed()` (the cycle runs) and not `shield()`ed (the
server is being stopped); otherwise it is only remembered: a stop must finish, and a result that
is being reported must be reported. A signal remembered inside a shield is acted on as soon as the
shield ends (if the guard is armed and the shielded block did not fail: its failure, e.g. a server
left running, is the more important news). `raise_if_received()` turns a remembered signal into the
interruption at any other safe point.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType

from app.errors import Interrupted

HANDLED = (signal.SIGTERM, signal.SIGINT)

# What holds signals off for a block (`SignalGuard.shield`), as the cycle, its checks and the Lease take it.
Shield = Callable[[], contextlib.AbstractContextManager[None]]


def no_shield() -> contextlib.AbstractContextManager[None]:
    """The shield where no signal handling is installed (a test, a thread): nothing to hold off."""
    return contextlib.nullcontext()


class SignalGuard:
    def __init__(self) -> None:
        self.received: int | None = None
        self.during_cleanup = False
        self._armed = False
        self._shielded = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        # No logging here: the handler runs between any two bytecodes of the main thread, possibly
        # while it holds the log's lock, and logging would then deadlock the process.
        if self.received is not None:
            return
        self.received = signum
        self.during_cleanup = bool(self._shielded)
        if self._armed and not self._shielded:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1
        # Reached only when the block ended normally: the first safe point after it.
        if self._armed and not self._shielded:
            self.raise_if_received()

    def raise_if_received(self) -> None:
        if self.received is not None:
            raise Interrupted(self.received)

    def __enter__(self) -> SignalGuard:
        for signum in HANDLED:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class NoSignals(SignalGuard):
    """Handlers can only be installed in the main thread; elsewhere (a test's thread) run without them."""

    def __enter__(self) -> SignalGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
