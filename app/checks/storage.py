"""--check-storage: save a file in the home as a user's save does, read it back, delete it.

Through the server's contents API (jupyter_server's, the one JupyterLab saves with): PUT
api/contents/<dir>/jupyterhub-canary-<random>.txt with random text, GET it back and compare, DELETE
it. The DELETE runs in a `finally:` with signals held off, so the file goes whatever happened, as long
as the server answers. Each request is bounded by --request-timeout and the run's budget, of which
the save and the read-back leave CLEANUP_SHARE (app/deadline.py) to the DELETE: a save that hangs (an
NFS server that stopped answering) is cut by the transport's watchdog and is `timeout`.

The server says why a save failed in its own words; jupyter_server answers 500 "Unexpected error
while saving file: <path> [Errno 28] No space left on device" for a full disk, 403 "Permission
denied: <path>" for EACCES/EPERM, and the errno text for a read-only file system. `cause` is read
from those words (the errno's name or number), and the message quotes them.
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import quote

import requests

from app import logs
from app.checks import Check
from app.deadline import Deadline, elapsed_ms
from app.errors import HubUnavailable, StorageFailed
from app.hub import hub_message

FILE_PREFIX = "jupyterhub-canary-"

# The server's words -> cause; the first that matches wins. Errno numbers are Linux's.
CAUSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("no_space", re.compile(r"errno 28\]|errno 122\]|no space left|disk quota exceeded|quota", re.IGNORECASE)),
    ("read_only", re.compile(r"errno 30\]|read-only file system", re.IGNORECASE)),
    ("permission", re.compile(r"errno 13\]|errno 1\]|permission denied|operation not permitted", re.IGNORECASE)),
)
STATUS_CAUSES = {507: "no_space", 403: "permission"}

log = logs.get_logger()


def cause_of(status: int, message: str) -> str:
    """What a failed contents request means, from the server's status and its own words."""
    for cause, pattern in CAUSES:
        if pattern.search(message):
            return cause
    return STATUS_CAUSES.get(status, "error")


class Storage(Check):
    name = "storage"
    order = 30
    enabled_by = "check_storage"

    def run(self) -> None:
        name = f"{FILE_PREFIX}{secrets.token_hex(8)}.txt"
        path = f"{self.config.storage_path}/{name}" if self.config.storage_path else name
        content = f"jupyterhub-canary storage check {secrets.token_hex(16)}\n"
        api_path = "api/contents/" + quote(path, safe="/")
        try:
            self._save(api_path, path, content)
            self._read_back(api_path, path, content)
        except BaseException:
            with self.server.shield():
                self._delete(api_path, path)  # its own failure is logged: the first one is the news
            raise
        with self.server.shield():
            left = self._delete(api_path, path)
        if left is not None:
            raise left

    def _budget(self) -> Deadline:
        """One request of the save or the read-back: --request-timeout, leaving the DELETE its share."""
        return self.server.deadline.before_cleanup().within(self.config.request_timeout)

    def _send(self, doing: str, method: str, api_path: str, deadline: Deadline, **kwargs: Any) -> requests.Response:
        try:
            return self.server.request(method, api_path, deadline, **kwargs)
        except HubUnavailable as exc:
            if deadline.expired():
                raise StorageFailed(
                    f"{doing} did not finish within {deadline.seconds:g}s (--request-timeout, or the run's "
                    f"--deadline): the home's file system may hang ({exc})",
                    cause="timeout",
                ) from None
            raise StorageFailed(f"{doing}: no answer from the server ({exc})", cause="error") from None

    def _failed(self, doing: str, response: requests.Response) -> StorageFailed:
        message = hub_message(response)
        return StorageFailed(
            f"{doing} answered {response.status_code}: {message}", cause=cause_of(response.status_code, message)
        )

    def _save(self, api_path: str, path: str, content: str) -> None:
        clock = self.server.deadline.clock
        started = clock()
        doing = f"saving {path!r} in the home"
        body = {"type": "file", "format": "text", "content": content}
        response = self._send(doing, "PUT", api_path, self._budget(), json=body)
        if response.status_code not in (200, 201):
            raise self._failed(doing, response)
        log.info("storage_saved", path=path, bytes=len(content), duration_ms=elapsed_ms(started, clock))

    def _read_back(self, api_path: str, path: str, content: str) -> None:
        doing = f"reading {path!r} back"
        params = {"type": "file", "format": "text", "content": "1"}
        response = self._send(doing, "GET", api_path, self._budget(), params=params)
        if response.status_code != 200:
            raise self._failed(doing, response)
        try:
            read = response.json().get("content")
        except (ValueError, AttributeError):
            raise StorageFailed(f"{doing}: the server answered 200 without a file model", cause="error") from None
        if read != content:
            shown = read[:60] if isinstance(read, str) else read
            raise StorageFailed(
                f"{doing}: its content differs from what was saved ({len(content)} characters written, "
                f"read back {shown!r})",
                cause="mismatch",
            )
        log.info("storage_read_back", path=path, bytes=len(read))

    def _delete(self, api_path: str, path: str) -> StorageFailed | None:
        """Delete the file (404: it was never written); the failure if it may be left in the home.

        Returned, not raised: after a passed check it fails the check (a file left in the home on every
        run is the canary's litter), after a failed one the first failure is the news.
        """
        doing = f"deleting {path!r}"
        try:
            response = self._send(doing, "DELETE", api_path, self.server.deadline.within(self.config.request_timeout))
        except StorageFailed as exc:
            failure = exc
        else:
            if response.status_code == 404:
                log.info("storage_nothing_to_delete", path=path)
                return None
            if response.status_code == 204:
                log.info("storage_deleted", path=path)
                return None
            failure = self._failed(doing, response)
        log.error("storage_file_left", path=path, message=failure.message)
        return failure
