"""Why a spawn failed or timed out: the `cause` of exit 10 (spawn_failed) and 11 (spawn_timeout).

Read from the progress events the hub relayed for the spawn and from the failure's own message.
KubeSpawner relays each of its pod's Kubernetes events as "<time> [<type>] <message>" with the
event itself as `raw_event` (its `reason` is matched too: "FailedScheduling", "BackOff", ...);
other spawners send only text; JupyterHub ends a failed spawn with "Spawn failed: <exception>".

The latest telling event wins: a pod first unschedulable, then scheduled on a new node whose image
pull fails, failed for its image. Within one event the table's order decides: a FailedScheduling
that names a PersistentVolumeClaim is a volume problem, not a capacity one, so `volume` comes before
`unschedulable`; "Back-off pulling image" is an image problem, "Back-off restarting" a crash.

=============  ===========================================================================
cause          what the events say (Kubernetes' own wording; tests/test_spawn_causes.py)
=============  ===========================================================================
quota          a ResourceQuota refused the pod: "exceeded quota: ..." (the apiserver)
image_pull     ErrImagePull, ImagePullBackOff, ErrImageNeverPull, "Failed to pull image",
               "Back-off pulling image" (the kubelet)
volume         FailedMount, FailedAttachVolume, unbound or missing PersistentVolumeClaims
crash          "Back-off restarting failed container", CrashLoopBackOff, OOMKilled
unschedulable  FailedScheduling, "0/N nodes are available", "Insufficient <resource>",
               NotTriggerScaleUp (the cluster autoscaler)
timeout        a spawn timeout whose events tell none of the above
unknown        a spawn failure whose events tell none of the above
=============  ===========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

TIMEOUT = "timeout"
UNKNOWN = "unknown"


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
CAUSES = (*(rule.cause for rule in RULES), TIMEOUT, UNKNOWN)


def cause_of_event(message: str | None, reason: str | None = None) -> str | None:
    """The cause one event tells, or None. The message is matched; so is the event's reason, if any."""
    for rule in RULES:
        if (reason and reason in rule.reasons) or (message and rule.message.search(message)):
            return rule.cause
    return None


def classify(events: Iterable[tuple[str | None, str | None]], failure: str | None, *, timed_out: bool) -> str:
    """The cause of a failed spawn from its events, (message, reason) in order, then the failure's message.

    The failure's own message comes last, as JupyterHub's "Spawn failed: ..." does. Nothing telling:
    `timeout` for a spawn that timed out, else `unknown`.
    """
    told = [*events, (failure, None)]
    for message, reason in reversed(told):
        cause = cause_of_event(message, reason)
        if cause is not None:
            return cause
    return TIMEOUT if timed_out else UNKNOWN
