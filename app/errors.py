"""Typed failures. Each carries its exit code and a stable reason; cli.py turns them into the exit status."""

from __future__ import annotations

from app.exit_codes import ExitCode


class CanaryError(Exception):
    """A failure the canary understands. `retryable` failures may pass with another attempt."""

    exit_code = ExitCode.INTERNAL_ERROR
    reason = "internal_error"
    retryable = False

    def __init__(self, message: str, *, progress_message: str | None = None, cause: str | None = None):
        super().__init__(message)
        self.message = message
        self.progress_message = progress_message
        # Why, in one word, where a failure can tell (a spawn's: app/spawn_causes.py); None otherwise.
        self.cause = cause


class ConfigError(CanaryError):
    exit_code = ExitCode.CONFIGURATION
    reason = "configuration"


class PermissionDenied(CanaryError):
    exit_code = ExitCode.PERMISSION
    reason = "permission"


class KubernetesUnavailable(CanaryError):
    exit_code = ExitCode.KUBERNETES_UNAVAILABLE
    reason = "kubernetes_unavailable"


class HubUnavailable(CanaryError):
    exit_code = ExitCode.HUB_UNAVAILABLE
    reason = "hub_unavailable"
    retryable = True


class SpawnFailed(CanaryError):
    exit_code = ExitCode.SPAWN_FAILED
    reason = "spawn_failed"
    retryable = True


class UserNotCreated(SpawnFailed):
    """--fresh-user: the hub refused to create the user (not with 403): no first-time user can get a server."""

    reason = "user_not_created"
    retryable = False


class SpawnTimeout(CanaryError):
    exit_code = ExitCode.SPAWN_TIMEOUT
    reason = "spawn_timeout"
    retryable = True


class ServerUnreachable(CanaryError):
    exit_code = ExitCode.SERVER_UNREACHABLE
    reason = "server_unreachable"
    retryable = True


class KernelFailed(CanaryError):
    """The server is up, but a kernel could not be started, reached or made to run code (--check-kernel)."""

    exit_code = ExitCode.KERNEL_FAILED
    reason = "kernel_failed"
    retryable = True


class CheckFailed(CanaryError):
    """A check against the user's server failed (app/checks/). `cause` says how (a stable word of the
    check's own list); `details` is what the check saw, reported in the result under its name."""

    cause = "error"
    retryable_causes: frozenset[str] = frozenset()  # the causes another attempt (a new spawn) may cure

    def __init__(self, message: str, *, cause: str = "error", details: dict[str, object] | None = None):
        super().__init__(message)
        self.cause = cause
        self.details = details

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.cause in self.retryable_causes


class StorageFailed(CheckFailed):
    """A file could not be written, read back or deleted through the contents API (--check-storage).
    A full, read-only or forbidden volume is mounted the same by the next spawn, and a hung one costs
    a whole spawn more: only an unexplained error is tried again."""

    exit_code = ExitCode.STORAGE_FAILED
    reason = "storage_failed"
    retryable_causes = frozenset({"error"})


class NotebookFailed(CheckFailed):
    """A cell of --notebook raised or did not finish. The same image raises the same way again."""

    exit_code = ExitCode.NOTEBOOK_FAILED
    reason = "notebook_failed"


class LabFailed(CheckFailed):
    """JupyterLab's page, or a bundle it loads, is not served (--check-lab), or a page of --check-url
    is not. A missing bundle or page is in the image; only an unexplained error is tried again."""

    exit_code = ExitCode.LAB_FAILED
    reason = "lab_failed"
    retryable_causes = frozenset({"error"})


class ConcurrentRun(CanaryError):
    """Another live run of this probe (its Lease is held, or its server is younger than it could live):
    this run leaves it alone. Not retried: waiting would only make this run the one that overlaps."""

    exit_code = ExitCode.CONCURRENT_RUN
    reason = "concurrent_run"


class StopFailed(CanaryError):
    exit_code = ExitCode.STOP_FAILED
    reason = "stop_failed"


class UserLeftBehind(StopFailed):
    """--fresh-user: the user this run created could not be deleted (logged `user_left_behind`)."""

    reason = "user_left_behind"


class Interrupted(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT. A BaseException so that no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.SIGINT if self.signum == 2 else ExitCode.SIGTERM
