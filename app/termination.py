"""The termination message: a one-line JSON summary Kubernetes shows in the pod's status.

Read it with
  kubectl get pod POD -o jsonpath='{.status.containerStatuses[0].state.terminated.message}'
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from app import logs

MAX_BYTES = 4096  # the kubelet keeps no more than this


def summary(outcome: str, exit_code: int, message: str, cause: str | None = None) -> str:
    record = {
        "outcome": outcome,
        "exit_code": exit_code,
        **({"cause": cause} if cause else {}),
        "message": logs.mask(message),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    line = json.dumps(record)
    while len(line.encode("utf-8")) >= MAX_BYTES:
        record["message"] = record["message"][: len(record["message"]) // 2] + "..."
        line = json.dumps(record)
    return line


def write(path: Path | None, outcome: str, exit_code: int, message: str, *, cause: str | None = None) -> None:
    if path is None:
        return
    try:
        path.write_text(summary(outcome, exit_code, message, cause) + "\n", encoding="utf-8")
    except OSError as exc:
        logs.get_logger().warning("termination_log_not_written", path=str(path), error=type(exc).__name__)
