"""Prometheus metrics of one run, pushed to a Pushgateway (--pushgateway-url), blackbox-exporter style.

Grouping key: job="jupyterhub_canary", hub=<hub URL>, user=<user>, probe=<--probe> — stable across
runs, never per pod, so each push replaces the previous run's values of the same probe, and probes
never overwrite each other. The Pushgateway adds the grouping key's labels to every metric.
The push is a POST (`pushadd_to_gateway`), which
replaces only the metrics it carries: `jupyterhub_canary_last_success_timestamp_seconds` is sent only
on success, so a failed run leaves the last success's timestamp in place (a PUT would delete it).
The run's message rides as the label of `jupyterhub_canary_last_result_info` (value 1): each push
replaces that family, so a probe has one such series at a time (a new series per distinct message
over time: messages are few and short, masked as the log is and cut to MESSAGE_LIMIT). The failing
alert's description reads it.

A push that fails is a warning in the log, nothing more: it never changes the outcome or the exit
code. It happens after the result is logged and the termination message written, within a hard
bound. prometheus_client is imported only here, when a push happens (start-up time of every run).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from app import logs, timeline

JOB = "jupyterhub_canary"
PREFIX = "jupyterhub_canary_"
MESSAGE_LIMIT = 200  # characters of the message label: an alert's line, not the whole story

log = logs.get_logger()


@dataclass(frozen=True)
class Group:
    """The Pushgateway group of one probe's runs."""

    hub: str
    user: str
    probe: str

    def grouping_key(self) -> dict[str, str]:
        return {"hub": self.hub, "user": self.user, "probe": self.probe}


@dataclass(frozen=True)
class RunMetrics:
    success: bool
    exit_code: int
    attempts: int
    duration_seconds: float
    # The last attempt's phases that ran, in milliseconds (phases that did not run are left out).
    phases_ms: Mapping[str, int | None] = field(default_factory=dict)
    finished_at: float = field(default_factory=time.time)
    # The result's `reason` ("none" on success): a label of the exit code, for the alert to name.
    reason: str = "none"
    # The result's `cause` ("none" when the failure does not tell one): the exit code's other label.
    cause: str = "none"
    # The spawn's phases as its progress events mark them (app/timeline.py), in milliseconds.
    timeline_phases_ms: Mapping[str, int] = field(default_factory=dict)
    # The result's message: the label of jupyterhub_canary_last_result_info (masked, cut short there).
    message: str = ""


def result_message(message: str) -> str:
    """The message as a label value: masked as the log is, on one printable line (logs.one_line), at most
    MESSAGE_LIMIT characters."""
    return logs.cut(logs.one_line(message), MESSAGE_LIMIT)


def registry_for(metrics: RunMetrics):  # -> prometheus_client.CollectorRegistry
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    Gauge(PREFIX + "success", "1 when the last run spawned, verified and stopped a server, else 0", registry=registry).set(
        1 if metrics.success else 0
    )
    Gauge(
        PREFIX + "exit_code",
        "the last run's exit code (0 healthy; see the exit-code table); reason and cause are the result's",
        ["reason", "cause"],
        registry=registry,
    ).labels(reason=metrics.reason, cause=metrics.cause).set(metrics.exit_code)
    Gauge(PREFIX + "attempts", "attempts the last run made", registry=registry).set(metrics.attempts)
    duration = Gauge(
        PREFIX + "duration_seconds",
        "seconds the last run's last attempt spent per phase; phase=total is the whole run",
        ["phase"],
        registry=registry,
    )
    for phase, ms in metrics.phases_ms.items():
        if ms is not None:
            duration.labels(phase=phase).set(ms / 1000)
    duration.labels(phase="total").set(metrics.duration_seconds)
    spawn_phases = Gauge(
        PREFIX + "phase_duration_seconds",
        "seconds the last run's spawn spent per phase, as its progress events mark them "
        "(spawn; with KubeSpawner also scheduling, image_pull, container_start, server_start)",
        ["phase"],
        registry=registry,
    )
    # Every phase, NaN when this run's events did not mark it: a POST replaces only the samples it
    # carries, and a phase left out would keep an earlier run's value.
    for phase in timeline.PHASES:
        ms = metrics.timeline_phases_ms.get(phase)
        spawn_phases.labels(phase=phase).set(math.nan if ms is None else ms / 1000)
    Gauge(
        PREFIX + "last_result_info",
        "1; its label message is the last run's message (masked, cut short), for the alerts' descriptions",
        ["message"],
        registry=registry,
    ).labels(message=result_message(metrics.message)).set(1)
    if metrics.success:
        Gauge(
            PREFIX + "last_success_timestamp_seconds",
            "when the last successful run ended (Unix time); pushed only on success",
            registry=registry,
        ).set(metrics.finished_at)
    return registry


def push(url: str, group: Group, metrics: RunMetrics, *, timeout: float) -> bool:
    """Push the run's metrics within `timeout` seconds, all of it; True when the Pushgateway took them. Never raises.

    prometheus_client's own timeout is per socket operation: a Pushgateway that trickles its answer
    resets it for ever. So the push runs in a daemon thread that is waited for `timeout` at most; one
    that is still talking then is abandoned (it ends with the process). Only this thread logs.
    """
    started = time.monotonic()
    failure: list[BaseException] = []

    def send() -> None:
        try:
            from prometheus_client import pushadd_to_gateway

            pushadd_to_gateway(
                url, job=JOB, registry=registry_for(metrics), grouping_key=group.grouping_key(), timeout=timeout
            )
        except Exception as exc:  # noqa: BLE001 - any failure to push is only a warning
            failure.append(exc)

    sender = threading.Thread(target=send, name="metrics-push", daemon=True)
    sender.start()
    sender.join(timeout)
    error = None
    if sender.is_alive():
        error = f"no complete answer within {timeout:g}s: abandoned"
    elif failure:
        error = f"{type(failure[0]).__name__}: {failure[0]}"
    if error is not None:
        log.warning("metrics_push_failed", pushgateway=url, error=error, hint="the outcome and exit code are unaffected")
        return False
    log.info("metrics_pushed", pushgateway=url, duration_ms=round((time.monotonic() - started) * 1000))
    return True
