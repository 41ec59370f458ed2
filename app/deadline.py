"""Time budgets on an injectable monotonic clock, and the one statement of what may outlive them.

What may outlive the run's --deadline, and by how much (every other bound is derived from this):
- the stop of the canary's own server, and with --fresh-user the deletion of the user it created, by
  at most --stop-timeout for both: a server or a user left behind costs more than a late result
  (app/cycle.py, `Canary.cleanup`);
- LAST_LOOK: a wait that begins with its budget spent still gets this long for one answer (the
  stop's last look at the user model, the metrics push after the result is written, then the run's
  Event on its Job: at most two LAST_LOOKs after the result). No other
  floor exists: a request, a stream, the Kubernetes API, a websocket and the kernel's DELETE each
  end with their budget (`Deadline.for_wait`), cut by a watchdog (app/transport.py) when the peer
  keeps talking.
A check that must clean up after itself (its kernel, its file in the home) keeps CLEANUP_SHARE of its
own budget for that cleanup, so that the cleanup still happens after the work timed out, and within
the budget all the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]

LAST_LOOK = 1.0  # s; see above
CLEANUP_SHARE = 0.25  # of a check's budget, kept for its cleanup; see above
# The longest budget any option may give (a year): beyond it, timers overflow (threading's
# TIMEOUT_MAX) and no run means it. app/config.py rejects longer values with exit 78.
MAX_SECONDS = 365 * 86400.0


class Deadline:
    def __init__(self, seconds: float, clock: Clock = time.monotonic):
        self._clock = clock
        self.seconds = seconds
        self._end = clock() + seconds

    @property
    def clock(self) -> Clock:
        """The clock this budget runs on: what is timed within it uses the same one."""
        return self._clock

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def within(self, seconds: float) -> Deadline:
        """A shorter budget that starts now and never outlives this one."""
        return Deadline(min(seconds, self.remaining()), self._clock)

    def before_cleanup(self) -> Deadline:
        """The part of this budget for the work, CLEANUP_SHARE of it left over for the cleanup after it."""
        return self.within(self.remaining() * (1 - CLEANUP_SHARE))

    def for_wait(self, cap: float | None = None) -> float:
        """Seconds for one wait (a timeout, a watchdog): what is left, at most `cap`, at least LAST_LOOK
        (unless `cap` is shorter still)."""
        seconds = max(LAST_LOOK, self.remaining())
        return seconds if cap is None else min(cap, seconds)


def elapsed_ms(since: float, clock: Clock = time.monotonic) -> int:
    return round((clock() - since) * 1000)
