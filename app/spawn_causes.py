"""Why a spawn failed or timed out: the `cause` of exit 10 (spawn_failed) and 11 (spawn_timeout).

Read from the progress events the hub relayed for the spawn and from the failure's own message.
KubeSpawner relays each of its pod's Kubernetes events as "<time> [<type>] <message>" with the
event itself as `raw_event` (its `reason` is matched too: "FailedScheduling", "BackOff", ...; and
`involvedObject.fieldPath`, which names the container an event is about: "spec.initContainers{x}"
or "spec.containers{notebook}"); other spawners send only text; JupyterHub ends a failed spawn with
"Spawn failed: <exception>".

The latest telling event wins: a pod first unschedulable, then scheduled on a new node whose image
pull fails, failed for its image. Within one event the table's order decides: a FailedScheduling
that names a PersistentVolumeClaim is a volume problem, not a capacity one, so `volume` comes before
`unschedulable`; "Back-off pulling image" is an image problem, "Back-off restarting" a crash.

A failure that the pod got past is no longer the cause: an event that moves the pod on (MOVED_ON)
supersedes the failures of the steps before it. On a pool scaled from zero a pod is first
unschedulable (FailedScheduling), then the autoscaler adds a node (TriggeredScaleUp), the pod is
Scheduled and its image pulled: a spawn that times out while the image is still pulling did not
time out for want of a node. The steps, in the order a pod takes them:

=========  =========================  =====================================================
step       its failures               passed once the pod is (the kubelet's reasons, words)
=========  =========================  =====================================================
0 create   quota [1]                  Scheduled ("Successfully assigned <pod> to <node>")
1 schedule unschedulable, volume [2]  Scheduled
2 mount    volume                     Pulling ("Pulling image"): the kubelet pulls after mounting
3 image    image_pull                 Pulled ("Successfully pulled image", "Container image ...
                                      already present on machine"), Created, Started
4 init     init_container             Created, Started of a container in spec.containers (the
                                      kubelet starts them once every init container succeeded)
5 run      crash                      never: a crashing container is started again and again
=========  =========================  =====================================================

[1] Also the user's PersistentVolumeClaim (KubeSpawner's storage_pvc_ensure), created before the
pod: the apiserver's 403 fails the spawn at once, "Spawn failed: ... exceeded quota".
[2] A PersistentVolumeClaim that is unbound or missing fails the scheduling (FailedScheduling).
"Pulling image" after a failed pull is the kubelet trying the same pull again: it does not
supersede `image_pull`, nor does "Started" a crash, nor the start of an init container tried
again its failure.

==============  ===========================================================================
cause           what the events say (Kubernetes' own wording; tests/test_spawn_causes.py)
==============  ===========================================================================
quota           a ResourceQuota refused the pod or the user's PersistentVolumeClaim:
                "exceeded quota: ..." (the apiserver)
image_pull      ErrImagePull, ImagePullBackOff, ErrImageNeverPull, "Failed to pull image",
                "Back-off pulling image" (the kubelet)
volume          FailedMount, FailedAttachVolume, unbound or missing PersistentVolumeClaims
init_container  a crash's words (below) in an event about an init container (its field path
                "spec.initContainers{<name>}"): a chown or a gitpuller that fails on a new
                home. Only KubeSpawner's raw_event tells it; from the text alone it is crash
crash           "Back-off restarting failed container", CrashLoopBackOff, OOMKilled
unschedulable   FailedScheduling, "0/N nodes are available", "Insufficient <resource>",
                NotTriggerScaleUp (the cluster autoscaler)
timeout         a spawn timeout whose events tell none of the above
unknown         a spawn failure whose events tell none of the above
==============  ===========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

TIMEOUT = "timeout"
UNKNOWN = "unknown"
INIT_CONTAINER = "init_container"
# KubeSpawner's raw_event: involvedObject.fieldPath of an event about one of the pod's containers.
_INIT_CONTAINER_PATH = re.compile(r"^spec\.initContainers\{")
_CONTAINER_PATH = re.compile(r"^spec\.containers\{")


@dataclass(frozen=True)
class Rule:
    cause: str
    reasons: frozenset[str]  # Kubernetes event reasons (raw_event.reason), matched exactly
    message: re.Pattern[str]  # the event's text, anywhere in the message


def _rule(cause: str, reasons: tuple[str, ...], *patterns: str) -> Rule:
    return Rule(cause, frozenset(reasons), re.compile("|".join(patterns), re.IGNORECASE))


# The one table. Order matters within an event (see the module's docstring).
RULES: tuple[Rule, ...] = (
    _rule("quota", (), r"\bexceeded quota\b"),
    _rule(
        "image_pull",
        ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"),
        r"\bErrImagePull\b",
        r"\bImagePullBackOff\b",
        r"\bErrImageNeverPull\b",
        r"\bFailed to pull image\b",
        r"\bBack-off pulling image\b",
        r"\bis not present with pull policy of Never\b",
    ),
    _rule(
        "volume",
        ("FailedMount", "FailedAttachVolume"),
        r"\bunbound (immediate )?PersistentVolumeClaims\b",
        r"\bpersistentvolumeclaim \S+ not found\b",
        r"\bMountVolume\.\w+ failed\b",
        r"\bUnable to attach or mount volumes\b",
        r"\bAttachVolume\.Attach failed\b",
        r"\bMulti-Attach error for volume\b",
    ),
    _rule(
        "crash",
        ("CrashLoopBackOff", "OOMKilled"),
        r"\bBack-off restarting failed container\b",
        r"\bCrashLoopBackOff\b",
        r"\bOOMKilled\b",
    ),
    _rule(
        "unschedulable",
        ("FailedScheduling", "NotTriggerScaleUp"),
        r"\bnodes are available\b",
        r"\bInsufficient [\w./-]+",
        r"\bdidn't trigger scale-up\b",
        r"\bFailedScheduling\b",
    ),
)
# The table's order, with init_container where the third table has it: a crash of an init container.
CAUSES = ("quota", "image_pull", "volume", INIT_CONTAINER, "crash", "unschedulable", TIMEOUT, UNKNOWN)

# The step of the pod's start each cause fails at (the module's second table).
STEP = {"quota": 0, "unschedulable": 1, "volume": 2, "image_pull": 3, INIT_CONTAINER: 4, "crash": 5}
# A container of spec.containers created or started: every init container has succeeded.
_PAST_INIT = re.compile(r"\b(?:Created|Started) container\b|\bContainer (?:created|started)\b")


@dataclass(frozen=True)
class MovedOn:
    """An event that says the pod got past every step up to `passed`."""

    passed: int
    reasons: frozenset[str]
    message: re.Pattern[str]


# Kubernetes' own wording (the scheduler's Scheduled; the kubelet's Pulling, Pulled, Created, Started),
# matched case-sensitively: "Back-off pulling image" is a failure, not a pull.
MOVED_ON: tuple[MovedOn, ...] = (
    MovedOn(2, frozenset({"Scheduled"}), re.compile(r"\bSuccessfully assigned \S+ to \S+")),
    MovedOn(2, frozenset({"Pulling"}), re.compile(r"\bPulling image\b")),
    MovedOn(
        3,
        frozenset({"Pulled", "Created", "Started"}),
        re.compile(
            r"\bSuccessfully pulled image\b|\bContainer image .+ already present on machine\b"
            r"|\b(?:Created|Started) container\b|\bContainer (?:created|started)\b"
        ),
    ),
)


def cause_of_event(message: str | None, reason: str | None = None, field_path: str | None = None) -> str | None:
    """The cause one event tells, or None. The message is matched; so is the event's reason, if any,
    and its field path (a crash of an init container is `init_container`)."""
    for rule in RULES:
        if (reason and reason in rule.reasons) or (message and rule.message.search(message)):
            if rule.cause == "crash" and field_path and _INIT_CONTAINER_PATH.match(field_path):
                return INIT_CONTAINER
            return rule.cause
    return None


def passed_by_event(message: str | None, reason: str | None = None, field_path: str | None = None) -> int:
    """The last step of the pod's start that an event shows it got past (-1: none)."""
    passed = max(
        (
            moved.passed
            for moved in MOVED_ON
            if (reason and reason in moved.reasons) or (message and moved.message.search(message))
        ),
        default=-1,
    )
    if field_path and _CONTAINER_PATH.match(field_path) and (
        reason in ("Created", "Started") or (message and _PAST_INIT.search(message))
    ):
        passed = max(passed, STEP[INIT_CONTAINER])
    return passed


Told = tuple[str | None, str | None] | tuple[str | None, str | None, str | None]


def classify(events: Iterable[Told], failure: str | None, *, timed_out: bool) -> str:
    """The cause of a failed spawn from its events, (message, reason) or (message, reason, field path)
    in order, then the failure's message.

    The failure's own message comes last, as JupyterHub's "Spawn failed: ..." does. The latest telling
    event wins, unless a later event shows the pod got past its step. Nothing telling: `timeout` for a
    spawn that timed out, else `unknown`.
    """
    told = [(*event, None)[:3] for event in events] + [(failure, None, None)]
    passed = -1  # the furthest step a later event shows the pod got past
    for message, reason, field_path in reversed(told):
        cause = cause_of_event(message, reason, field_path)
        if cause is not None and STEP[cause] > passed:
            return cause
        if cause is None:
            passed = max(passed, passed_by_event(message, reason, field_path))
    return TIMEOUT if timed_out else UNKNOWN
