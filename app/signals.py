"""SIGTERM and SIGINT become an exception in the main thread, so `finally:` blocks stop the server.

While the server is being stopped (`shield()`), a signal is only remembered: the stop must finish.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

from app import logs
from app.errors import Interrupted

HANDLED = (signal.SIGTERM, signal.SIGINT)


class SignalGuard:
    def __init__(self) -> None:
        self.received: int | None = None
        self._shielded = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        logs.get_logger().warning(
            "signal_received", signal=signal.Signals(signum).name, during_cleanup=bool(self._shielded)
        )
        if first and not self._shielded:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1

    def raise_if_received(self) -> None:
        if self.received is not None:
            raise Interrupted(self.received)

    def __enter__(self) -> "SignalGuard":
        for signum in HANDLED:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
