"""The process exit codes: a contract that the chart, alerts and users rely on."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL_ERROR = 1
    SPAWN_FAILED = 10
    SPAWN_TIMEOUT = 11
    SERVER_UNREACHABLE = 12
    STOP_FAILED = 13
    KERNEL_FAILED = 14
    STORAGE_FAILED = 15
    NOTEBOOK_FAILED = 16
    LAB_FAILED = 17
    CONCURRENT_RUN = 18
    HUB_UNAVAILABLE = 20
    KUBERNETES_UNAVAILABLE = 21
    PERMISSION = 77
    CONFIGURATION = 78
    SIGINT = 130
    SIGTERM = 143


MEANING = {
    ExitCode.OK: "healthy: spawned, verified, stopped",
    ExitCode.INTERNAL_ERROR: "internal error (a bug in the canary)",
    ExitCode.SPAWN_FAILED: "spawn failed (the hub or spawner reported failure)",
    ExitCode.SPAWN_TIMEOUT: "spawn timed out",
    ExitCode.SERVER_UNREACHABLE: "server unreachable (ready per the hub, but api/status failed)",
    ExitCode.STOP_FAILED: "stop failed: server left running (or --fresh-user's user not deleted)",
    ExitCode.KERNEL_FAILED: "kernel failed: no kernel started, or it did not run the test code (--check-kernel)",
    ExitCode.STORAGE_FAILED: "storage failed: a file could not be saved, read back or deleted in the home (--check-storage)",
    ExitCode.NOTEBOOK_FAILED: "notebook failed: a cell of --notebook raised or did not finish",
    ExitCode.LAB_FAILED: (
        "JupyterLab failed: its page or a bundle it loads, or a --check-url page, is not served (--check-lab, --check-url)"
    ),
    ExitCode.CONCURRENT_RUN: (
        "another live run of this probe holds its lease or its server (nothing was touched), "
        "or another token rotate wrote the Secret first"
    ),
    ExitCode.HUB_UNAVAILABLE: "hub unavailable (connection errors, 5xx, 429 after retries)",
    ExitCode.KUBERNETES_UNAVAILABLE: (
        "Kubernetes API unreachable (the token Secret, the probe's Lease), or a write's outcome unknown"
    ),
    ExitCode.PERMISSION: "permission: token rejected by the hub, or Kubernetes forbids the Secret or the Lease",
    ExitCode.CONFIGURATION: (
        "configuration: bad flag or variable, invalid options, no token, Secret, key or the probe's Lease missing"
    ),
    ExitCode.SIGINT: "interrupted by SIGINT, after cleanup",
    ExitCode.SIGTERM: "interrupted by SIGTERM, after cleanup",
}

# Failures that say nothing about the hub's health: re-running the Job cannot fix them (the chart's
# podFailurePolicy fails the Job at once). 18: the other live run still holds the probe's server.
NOT_RETRYABLE = (ExitCode.CONCURRENT_RUN, ExitCode.PERMISSION, ExitCode.CONFIGURATION)
