"""What proves a server this run's, and how old a server or a user may be, by the hub's clock.

The canary stops only a server it can prove it started (never another run's): the hub's own word is
what it answered to the spawn request, the `started` it showed right after, or, the answer lost, that
the hub dates the server between the request's send and its outcome (HubClock: its answers' `Date`
headers bound how far its clock is from this run's). The stale rules of servers (app/cycle.py) and of
--fresh-user's users (app/fresh_user.py) read the same clock: `youngest_age_s`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# How far the hub's clock may be from this run's when a server is recognised as started by a spawn
# request the hub answered 201/202: only where the hub's own `started` could not be read right after.
CLOCK_SLACK = timedelta(seconds=1)


@dataclass
class SpawnRequest:
    """A spawn request of this run that may have started a server, and what proves a server its.

    `sent_at` and `settled_at` are this run's clock (UTC): when the request left, and when its answer (or,
    the answer lost, the server model that decided it) came. `answered`: the hub answered it 201/202, so
    the server it held then was this request's; `started` is that server's `started` as the hub showed
    it right after (its identity: equal to the microsecond, whatever the clocks say). Without it, a
    server is this request's when the hub started it between the send and the answer: by the hub's
    clock against this run's, within CLOCK_SLACK for an answered request; never before the send for a
    request whose answer was lost (a server the hub dates before the request was there already: another
    run's).
    """

    sent_at: datetime
    settled_at: datetime
    answered: bool
    started: datetime | None = None
    # The hub showed no server right after its 201/202: this request's spawn has ended (failed at once,
    # or stopped), and no server found later is its (one in its time window is a later request's).
    ended: bool = False

    def started_it(self, started: datetime, hub_ahead: tuple[timedelta, timedelta] = (timedelta(0), timedelta(0))) -> bool:
        """`hub_ahead`: how far the hub's clock is ahead of this run's, at least and at most (HubClock):
        on this run's clock the server started between `started` minus the most and minus the least.
        A request whose answer was lost claims a server only when it provably started after the send."""
        if self.started is not None:
            return started == self.started
        if self.ended:
            return False
        least, most = hub_ahead
        try:
            earliest_start, latest_start = started - most, started - least  # on this run's clock
        except OverflowError:  # a `started` at an end of the calendar: no request of this run's
            return False
        if not self.answered:
            return self.sent_at <= earliest_start <= self.settled_at + CLOCK_SLACK
        return self.sent_at - CLOCK_SLACK <= latest_start and earliest_start <= self.settled_at + CLOCK_SLACK


def skew_note(hub_ahead: tuple[timedelta, timedelta]) -> str:
    """What a message says of a hub clock that its answers prove off (HubClock.ahead)."""
    least, most = (round(bound.total_seconds(), 1) for bound in hub_ahead)
    if least == most == 0:
        return ""
    return f" (the hub's clock is {least:g} to {most:g} s ahead of this run's, as its answers' Date tells: a second's precision)"


def youngest_age_s(made: datetime | None, now: datetime, hub_ahead: tuple[timedelta, timedelta]) -> float | None:
    """The youngest a server started (a user created) at `made` by the hub's clock may be, in seconds on this
    run's clock (`now`), when the hub's answers prove its clock off by `hub_ahead` (HubClock.ahead); None
    when unknown: no time, or one at an end of the calendar. The stale rules compare it with a run's lifetime."""
    if made is None:
        return None
    try:
        return round((now - (made - hub_ahead[0])).total_seconds(), 1)
    except OverflowError:
        return None
