"""The spawn timeline: each progress event with its time since the spawn request, and the phases
the events mark.

`Timeline` starts at the spawn request and records every event of the hub's progress stream as
{t_ms, progress, message} (and `reason` and `field_path`, the Kubernetes event's reason and
involvedObject.fieldPath, when the spawner relays the event itself, as KubeSpawner does in
`raw_event`). `phases_ms()` derives durations from those events:

=================  ==============================================  =====================================
phase              from                                            to
=================  ==============================================  =====================================
spawn              the spawn request                               the event that says `ready`
scheduling         the spawn request                               KubeSpawner's `Scheduled` event
                                                                   ("Successfully assigned <pod> to ...")
image_pull         the first "Pulling image ..."                   the last "Successfully pulled image"
container_start    the image pulled (or found on the node: "...    "Started container ..." (newer
                   already present on machine"), else scheduled    kubelets: "Container started")
server_start       "Started container ..."                         the event that says `ready`
=================  ==============================================  =====================================

A phase is reported only when both of its events are present: a local spawner's stream
("Server requested", "Spawning server...", "Server ready at ...") has `spawn` alone; a KubeSpawner
stream adds what its pod's events tell. KubeSpawner relays the pod's Kubernetes events as
"<timestamp> [<type>] <message>"; only the message's wording is matched, so the relayed form and
the bare one both count.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from app.deadline import Clock, elapsed_ms
from app.models import ProgressEvent

SPAWN = "spawn"
# The sub-phases of a KubeSpawner spawn, in the order they happen.
KUBESPAWNER_PHASES = ("scheduling", "image_pull", "container_start", "server_start")
PHASES = (SPAWN, *KUBESPAWNER_PHASES)

# The wording of the kubelet's and the scheduler's events (kubernetes/pkg/kubelet/events, scheduler).
_SCHEDULED = re.compile(r"\bSuccessfully assigned \S+ to \S+")
_PULLING = re.compile(r"\bPulling image\b")
_PULLED = re.compile(r"\bSuccessfully pulled image\b")
_PRESENT = re.compile(r"\bContainer image .+ already present on machine\b")
# "Started container <name>" until the kubelet's wording became "Container started" (1.37 says so).
_STARTED = re.compile(r"\b(?:Started container|Container started)\b")


@dataclass(frozen=True)
class Event:
    t_ms: int
    progress: Any
    message: str | None
    ready: bool = False
    # The Kubernetes event's reason, when the spawner relays the event itself (KubeSpawner's `raw_event`).
    reason: str | None = None
    # Its involvedObject.fieldPath: the container it is about ("spec.initContainers{<name>}").
    field_path: str | None = None

    def as_result(self) -> dict[str, Any]:
        result = {"t_ms": self.t_ms, "progress": self.progress, "message": self.message}
        if self.reason is not None:
            result["reason"] = self.reason
        if self.field_path is not None:
            result["field_path"] = self.field_path
        return result


class Timeline:
    """The progress events of one spawn, timed from the spawn request (when this object is made)."""

    def __init__(self, clock: Clock = time.monotonic):
        self._clock = clock
        self._started = clock()
        self.events: list[Event] = []

    def record(self, event: ProgressEvent) -> Event:
        recorded = Event(elapsed_ms(self._started, self._clock), event.progress, event.message, event.ready, event.reason,
                         event.field_path)
        self.events.append(recorded)
        return recorded

    def as_result(self) -> list[dict[str, Any]]:
        return [event.as_result() for event in self.events]

    def phases_ms(self) -> dict[str, int]:
        """The phases whose start and end events were seen (see the module's table), in ms."""
        return derive_phases(self.events)


def _first(events: list[Event], pattern: re.Pattern[str]) -> int | None:
    return next((e.t_ms for e in events if e.message and pattern.search(e.message)), None)


def _last(events: list[Event], pattern: re.Pattern[str]) -> int | None:
    return next((e.t_ms for e in reversed(events) if e.message and pattern.search(e.message)), None)


def derive_phases(events: list[Event]) -> dict[str, int]:
    ready = next((e.t_ms for e in events if e.ready), None)
    scheduled = _first(events, _SCHEDULED)
    pulling, pulled = _first(events, _PULLING), _last(events, _PULLED)
    present = _last(events, _PRESENT)
    image_ready = max((t for t in (pulled, present) if t is not None), default=None)
    started = _first(events, _STARTED)

    bounds: dict[str, tuple[int | None, int | None]] = {
        SPAWN: (0, ready),
        "scheduling": (0, scheduled),
        "image_pull": (pulling, pulled),
        "container_start": (image_ready if image_ready is not None else scheduled, started),
        "server_start": (started, ready),
    }
    return {
        phase: end - start
        for phase, (start, end) in bounds.items()
        if start is not None and end is not None and end >= start
    }
