"""The run's outcome as a Kubernetes Event on its own Job, as Kuberhealthy records its checks.

`kubectl describe job` and `kubectl get events --field-selector involvedObject.name=JOB` then tell
the story of a run, and `kubectl get events --field-selector reason=CanaryFailed` the history of
the failed ones.

- One core/v1 Event per run, written after the `canary_result` line and the metrics push (cli.py):
  `Normal CanaryPassed` for exit 0, else `Warning CanaryFailed`, its message the exit code, reason,
  cause and message of the result, masked as the log is, on one printable line (app/logs.py `one_line`)
  and cut to MESSAGE_LIMIT.
- The Job is named by --job-name (the chart sets it from the Pod's `batch.kubernetes.io/job-name`
  label through the downward API, and --job-uid from `batch.kubernetes.io/controller-uid`): never
  guessed. Without a Job name (the `helm test` Pod, a run outside Kubernetes) no Event is written.
- Through app/kube.py: bounded by what is left of the run's deadline (at least LAST_LOOK,
  app/deadline.py), like the push. Whatever happens (a refusal, RBAC's 403, no API at hand, a lost
  answer) is logged once as `event_not_recorded` and changes nothing: not the outcome, not the exit code.
- A create whose answer is lost is not resent: the Event may exist, and a resend could record the
  run twice; `event_not_recorded` says the outcome is unknown. (Reading it back would need `get` on
  events, which RBAC cannot limit by name either: not worth a wider Role for a record.)
"""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime
from typing import Any

from app import logs
from app.config import Config
from app.deadline import Deadline
from app.exit_codes import ExitCode
from app.kube import KubeApi, WriteOutcomeUnknown

COMPONENT = "jupyterhub-canary"
PASSED, FAILED = "CanaryPassed", "CanaryFailed"
MESSAGE_LIMIT = 1024  # characters: an Event is a note, the log holds the whole result
log = logs.get_logger()


def event_message(result: dict[str, Any]) -> str:
    """The Event's message: exit code, reason, cause, message; masked, on one printable line (an ESC in it
    would reach the terminal of whoever runs `kubectl describe job`), cut to MESSAGE_LIMIT."""
    parts = [f"exit code {result['exit_code']}"]
    if result.get("probe"):
        parts.append(f"probe {result['probe']}")
    if result.get("reason"):
        parts.append(f"reason {result['reason']}")
    if result.get("cause"):
        parts.append(f"cause {result['cause']}")
    return logs.cut(logs.one_line(", ".join(parts) + f": {result['message']}"), MESSAGE_LIMIT)


def event_body(config: Config, result: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The Event, as the API takes it (camelCase JSON)."""
    passed = result["exit_code"] == ExitCode.OK
    involved = {"apiVersion": "batch/v1", "kind": "Job", "name": config.job_name, "namespace": config.job_namespace}
    if config.job_uid:
        involved["uid"] = config.job_uid
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        # As the Event recorders of Kubernetes name theirs: the object, then something unique.
        "metadata": {"name": f"{config.job_name}.{uuid.uuid4().hex[:16]}", "namespace": config.job_namespace},
        "involvedObject": involved,
        "type": "Normal" if passed else "Warning",
        "reason": PASSED if passed else FAILED,
        "message": event_message(result),
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def record(config: Config, result: dict[str, Any], deadline: Deadline) -> bool:
    """Write the run's Event on its Job (--job-name); True when the apiserver took it. Never raises."""
    if not config.job_name:
        return False
    where = f"Event on Job {config.job_namespace}/{config.job_name}"
    kube = None
    try:
        from kubernetes import client

        body = event_body(config, result, datetime.now(UTC))
        kube = KubeApi(where, deadline, request_timeout=config.request_timeout, relaxed_x509=config.kube_relaxed_x509,
                       needs="on events (the chart's Role grants it; events.enabled=false turns Events off)")
        api = client.CoreV1Api(kube.client)
        kube.call("create", lambda timeout: api.create_namespaced_event(config.job_namespace, body,
                                                                         _request_timeout=timeout))
        log.info("event_recorded", event_name=body["metadata"]["name"], job=config.job_name, reason=body["reason"])
    except WriteOutcomeUnknown as exc:
        _not_recorded(where, f"{exc} (not resent: it may have been recorded)")
        return False
    except Exception as exc:  # noqa: BLE001 - an Event is a record: no failure of it changes the run
        _not_recorded(where, str(exc) if str(exc) else type(exc).__name__)
        return False
    finally:
        if kube is not None:
            kube.close()
    return True


def _not_recorded(where: str, error: str) -> None:
    log.warning("event_not_recorded", where=where, error=logs.mask(error),
                hint="the outcome and exit code are unaffected")
