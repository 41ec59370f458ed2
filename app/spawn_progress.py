"""A spawn's progress stream, followed in a thread from the moment the spawn request is sent.

Why a thread: JupyterHub holds the spawn request (POST) open for up to its `slow_spawn_timeout`
(10 s by default) and answers 201 when the server is ready by then. The spawn's events (KubeSpawner's
scheduling, image pull, container start) are told only by the progress stream, and only while the
spawn is pending, that is while the POST is still in flight. Opened after the answer, the stream of a
fast spawn (a KubeSpawner pod ready in ~2 s) says only "ready": the timeline would be empty nearly
always on a healthy cluster.

So the main thread sends the POST (sent once, as app/hub.py rules; it also takes the signals), and
this follower only reads the stream (GETs): each event is recorded in the timeline the moment it
arrives, so its time is right although the main thread reads it later, from a queue. Until the hub
has taken the spawn in, the stream answers 404 (no server yet) or 400 ("not starting"): the follower
asks again while the request is in flight (soon, then less often: a hub that refuses the stream for
good is not asked 5 times a second for as long as it holds the request), and once more right after
its answer. It reads one whole stream, which ends with the spawn (ready or failed).

What a stream opened before the request's answer says may not be about this spawn: the hub answers a
stream that comes before the new spawn is pending with the *previous* spawn's end ("Spawn failed: …",
"Spawn cancelled": JupyterHub's SpawnProgressAPIHandler). `opened_before_answer` says which kind of
stream the event just read came on (its own stream's, kept with it in the queue), and `reopened()`
follows the same spawn on a stream opened after the answer: the cycle (app/cycle.py) believes a
failure only from such a stream.

Bounds: the stream is cut at the spawn's deadline by its watchdog (app/hub.py); `stop()` cuts it at
once and joins the thread, so nothing is left running when the spawn phase ends.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from app import logs
from app.deadline import Deadline
from app.hub import HubClient, StreamUnavailable
from app.models import ProgressEvent
from app.timeline import Event, Timeline

# s between tries to open the stream before the hub has taken the spawn in: doubled after each, up to
# the most. The first events are timed when they arrive, so the first tries come soon.
RETRY_PAUSE, MAX_RETRY_PAUSE = 0.2, 1.0
JOIN_TIMEOUT = 2.0  # s to wait for the thread once its stream is cut

log = logs.get_logger()


@dataclass(frozen=True)
class _End:
    """The last item of the queue: the stream ended (error None) or could not be read."""

    error: StreamUnavailable | None = None


class ProgressFollower:
    def __init__(self, client: HubClient, user: str, server_name: str, deadline: Deadline, timeline: Timeline):
        self._client = client
        self._user = user
        self._server_name = server_name
        self._deadline = deadline
        self._timeline = timeline
        # Each event, as recorded, and whether the stream it came on was asked for before the request's answer.
        self._queue: queue.Queue[tuple[ProgressEvent, Event, bool] | _End] = queue.Queue()
        self._answered = threading.Event()  # the spawn request has its answer (or will get none)
        self._stopping = threading.Event()
        self._wake = threading.Event()  # ends a pause between tries: the answer came, or stop()
        self._lock = threading.Lock()
        self._cut: Callable[[], None] | None = None
        # Whether the stream the last event read by events() came on was asked for before the spawn request
        # had its answer: each event's own stream's, not the latest try's (an early stream cut after it told
        # the previous spawn's end is asked for again, maybe after the answer).
        self.opened_before_answer = True
        # What the stream told so far, in order. A stream asked for again (one cut before the request's
        # answer, or reopened()) tells the spawn from its start, then what happened since: what it tells
        # again in the same place is not recorded twice; from its first event that is new or differs, all
        # is (a spawner may say the same thing twice: KubeSpawner's back-offs, BatchSpawner's "Pending in
        # queue..."). Written by the thread only, read by reopened() once the thread is stopped.
        self._told: list[ProgressEvent] = []
        # The thread logs with the attempt's bound context (hub, user, attempt).
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._follow,), name="spawn-progress", daemon=True
        )

    def start(self) -> ProgressFollower:
        self._thread.start()
        return self

    def reopened(self, set_aside: ProgressEvent) -> ProgressFollower:
        """A follower of the same spawn whose stream is asked for now, after the request's answer (started);
        this one is stopped. Its events are recorded in the same timeline.

        `set_aside` is the end this one told that was not this spawn's (the cycle took it out of the
        timeline). What this one's streams told after it and was not read yet is read first from the new
        one, and what they told is not recorded again when the new stream tells the spawn from its start.
        """
        self.stop()
        follower = ProgressFollower(self._client, self._user, self._server_name, self._deadline, self._timeline)
        follower._told = [event for event in self._told if event is not set_aside]
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, _End):
                follower._queue.put(item)
        follower.request_answered()
        return follower.start()

    def request_answered(self) -> None:
        """The spawn request is answered: a stream refused from now on is refused for good."""
        self._answered.set()
        self._wake.set()

    def _opened(self, cut: Callable[[], None]) -> None:
        with self._lock:
            self._cut = cut
            if self._stopping.is_set():
                cut()

    def _follow(self) -> None:
        end = _End()
        pause = RETRY_PAUSE
        told = self._told
        try:
            while not self._stopping.is_set() and not self._deadline.expired():
                answered = self._answered.is_set()  # before the try: its answer may come meanwhile
                before_answer = not answered
                replayed: int | None = 0  # events this try told again, in order; None once it tells anew
                try:
                    for event in self._client.progress_events(
                        self._user, self._server_name, self._deadline, on_open=self._opened
                    ):
                        if replayed is not None:
                            if replayed < len(told) and event == told[replayed]:
                                replayed += 1
                                continue
                            del told[replayed:]  # told otherwise this time: a next try would tell it this way
                            replayed = None
                        told.append(event)
                        self._queue.put((event, self._timeline.record(event), before_answer))
                    return
                except StreamUnavailable as exc:
                    if answered:
                        end = _End(exc)
                        return
                    # Not pending yet: the hub has not taken the request in. Again, after a pause that
                    # the request's answer or stop() cut short.
                    self._wake.wait(min(pause, self._deadline.remaining()))
                    pause = min(pause * 2, MAX_RETRY_PAUSE)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the main thread polls instead
            end = _End(StreamUnavailable(f"following the progress stream failed: {type(exc).__name__}: {exc}"))
        finally:
            self._queue.put(end)

    def events(self, deadline: Deadline) -> Iterator[tuple[ProgressEvent, Event]]:
        """Each event (as sent, and as recorded) until the stream ends or `deadline` passes;
        `opened_before_answer` tells, for the event just yielded, which kind of stream it came on.

        Raises StreamUnavailable when the stream could not be read. Can be called again: it goes on
        where the last call stopped, and an ended stream stays ended.
        """
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline.remaining()))
            except queue.Empty:
                return
            if isinstance(item, _End):
                self._queue.put(item)  # for the next reader
                if item.error is not None:
                    raise item.error
                return
            event, recorded, self.opened_before_answer = item
            yield event, recorded

    def stop(self) -> None:
        """End the stream now and wait for the thread. Idempotent."""
        self._stopping.set()
        self._answered.set()
        self._wake.set()
        with self._lock:
            cut = self._cut
        if cut is not None:
            cut()
        if self._thread.is_alive():
            self._thread.join(JOIN_TIMEOUT)
        if self._thread.is_alive():
            # Blocked in a request the hub has not answered: that request's own timeout ends it.
            log.warning("progress_follower_still_running", hint="ends at its request's timeout")
