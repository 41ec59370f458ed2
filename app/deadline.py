"""Time budgets on an injectable monotonic clock."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class Deadline:
    def __init__(self, seconds: float, clock: Clock = time.monotonic):
        self._clock = clock
        self.seconds = seconds
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def within(self, seconds: float) -> Deadline:
        """A shorter budget that starts now and never outlives this one."""
        return Deadline(min(seconds, self.remaining()), self._clock)


def elapsed_ms(since: float, clock: Clock = time.monotonic) -> int:
    return round((clock() - since) * 1000)
