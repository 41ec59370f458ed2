"""The progress follower (app/spawn_progress.py) against the in-process fake hub: it asks for the stream
while the spawn request is in flight, gives up once the request is answered and the stream is still
refused, and stop() ends a live stream at once, leaving no thread behind.

The real hub's side (a 201 spawn with its whole timeline) is in tests/test_timeline.py; the cycle's use
of it under every transport fault in tests/test_faults.py.
"""

from __future__ import annotations

import time

import pytest

from app.deadline import Deadline
from app.hub import HubClient, StreamUnavailable
from app.spawn_progress import MAX_RETRY_PAUSE, RETRY_PAUSE, ProgressFollower
from app.timeline import Timeline
from tests.fakehub import FakeHub

PROGRESS = r"/server/progress$"


def follower(fake: FakeHub, seconds: float = 30.0) -> tuple[ProgressFollower, HubClient, Timeline]:
    client = HubClient(fake.url, "f4k3t0k3n" * 4, request_timeout=10)
    timeline = Timeline()
    return ProgressFollower(client, "canary", "", Deadline(seconds), timeline).start(), client, timeline


def test_a_refused_stream_is_asked_for_again_while_the_request_is_in_flight():
    with FakeHub() as fake:  # no server yet: the stream answers 404, as JupyterHub's does
        progress, client, timeline = follower(fake)
        try:
            time.sleep(1.5)
            tries = fake.count("GET", PROGRESS)
            # Again, soon, then less often: 0, 0.2, 0.6, 1.4 s (fewer when a loaded machine answers
            # slowly); not five a second.
            assert 2 <= tries <= 5, tries
            fake.add_server("canary", ready=False)  # the hub took the spawn in
            progress.request_answered()
            (event, recorded), *_ = progress.events(Deadline(5))
            assert event.message == "Server requested"
            assert timeline.events[0] is recorded
        finally:
            progress.stop()
            client.close()
        assert not progress._thread.is_alive()


def test_once_the_request_is_answered_a_refused_stream_is_refused_for_good():
    with FakeHub() as fake:
        progress, client, _ = follower(fake)
        try:
            progress.request_answered()
            started = time.monotonic()
            with pytest.raises(StreamUnavailable, match="404"):
                list(progress.events(Deadline(5)))
            assert time.monotonic() - started < 2 * MAX_RETRY_PAUSE
            # The end is kept for a later reader too.
            with pytest.raises(StreamUnavailable):
                list(progress.events(Deadline(1)))
        finally:
            progress.stop()
            client.close()


def test_stop_ends_a_live_stream_at_once():
    with FakeHub(keepalive=0.2) as fake:
        fake.add_server("canary", ready=False)  # pending for good: the stream only keeps alive
        progress, client, _ = follower(fake, seconds=60)
        try:
            assert [event.message for event, _ in progress.events(Deadline(0.5))] == ["Server requested"]
            started = time.monotonic()
            progress.stop()
            # Not the join's 2 s: the cut ended the read at once.
            assert time.monotonic() - started < 1.5
            assert not progress._thread.is_alive()
            assert list(progress.events(Deadline(1))) == [], "the stream ended quietly, as at its deadline"
        finally:
            client.close()


def test_the_deadline_ends_the_stream_without_stop():
    with FakeHub(keepalive=0.2) as fake:
        fake.add_server("canary", ready=False)
        progress, client, _ = follower(fake, seconds=1.5)
        try:
            started = time.monotonic()
            assert [e.message for e, _ in progress.events(Deadline(10))] == ["Server requested"]
            assert time.monotonic() - started < 1.5 + RETRY_PAUSE + 1.0
        finally:
            progress.stop()
            client.close()


def test_a_stream_asked_again_that_tells_the_spawn_otherwise_is_recorded_from_where_it_differs():
    """Each stream cut before the request's answer is asked for again and tells the spawn from its start.
    What it tells in the same place as the last telling is not recorded twice; from where it differs
    (a back-off told again with its new time) it is, and the next telling is compared with this one."""
    first, again, new = ("Back-off (1)", 50), ("Back-off (2)", 50), ("Pulled", 60)
    with FakeHub() as fake:
        fake.add_server("canary", ready=False)
        server = fake.servers[("canary", "")]
        fake.progress_extra = [{"message": first[0], "progress": first[1]}]

        def told_otherwise() -> None:
            fake.progress_extra[:] = [{"message": again[0], "progress": again[1]}]

        def then_more() -> None:
            fake.progress_extra.append({"message": new[0], "progress": new[1]})
            server.ready, server.pending = True, None

        fake.fault("GET", PROGRESS, "cut_chunk")
        fake.fault("GET", PROGRESS, "cut_chunk", call=told_otherwise)
        fake.fault("GET", PROGRESS, "signal", call=then_more)
        progress, client, timeline = follower(fake)
        try:
            told = [(event.message, event.progress) for event, _ in progress.events(Deadline(10))]
        finally:
            progress.stop()
            client.close()
        assert fake.count("GET", PROGRESS) == 3
        assert told == [("Server requested", 0), first, again, new, ("Server ready", 100)]
        assert [(e.message, e.progress) for e in timeline.events] == told
