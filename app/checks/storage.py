"""--check-storage: save a file in the home as a user's save does, read it back, delete it.

Through the server's contents API (jupyter_server's, the one JupyterLab saves with): PUT
api/contents/<dir>/jupyterhub-canary-<random>.txt with random text, GET it back and compare, DELETE
it. The DELETE runs in a `finally:` with signals held off, so the file goes whatever happened, as long
as the server answers. Each request is bounded by --request-timeout and the run's budget, of which
the save and the read-back leave CLEANUP_SHARE (app/deadline.py) to the DELETE: a save that hangs (an
NFS server that stopped answering) is cut by the transport's watchdog and is `timeout`.

The server says why a save failed in its own words; jupyter_server answers 500 "Unexpected error
while saving file: <path> [Errno 28] No space left on device: '<home>/<path>'" for a full disk, 403
"Permission denied: <path>" for EACCES/EPERM, and 500 with "[Errno 30] Read-only file system" for a
read-only one. `cause` is read from the status and the errno (its number, "[Errno 28]", or its name,
"ENOSPC"), never from words: those messages quote the path, and a path can hold any word (a
directory `quota-tests`, a user `readonly`). The path this check sent, and every quoted string, are
left out before the errno is looked for. The message quotes the server's words as they came.
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
from app.models import FileModel, WrongShape, loads

FILE_PREFIX = "jupyterhub-canary-"

# The errno -> cause, by name and by number (Linux's: the user's server runs on Linux).
ERRNO_CAUSES: dict[str, tuple[int, str]] = {
    "ENOSPC": (28, "no_space"),
    "EDQUOT": (122, "no_space"),
    "EROFS": (30, "read_only"),
    "EACCES": (13, "permission"),
    "EPERM": (1, "permission"),
}
BY_NUMBER = {number: cause for number, cause in ERRNO_CAUSES.values()}
STATUS_CAUSES = {507: "no_space", 403: "permission"}
ERRNO = re.compile(r"\[Errno (\d+)\]|\b(" + "|".join(ERRNO_CAUSES) + r")\b")
# A quoted string (Python's repr of a path, with its escapes): what the server quotes is not its verdict.
QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")

log = logs.get_logger()


def cause_of(status: int, message: str, path: str = "") -> str:
    """What a failed contents request means, from the server's status and the errno it quotes.

    `path`, the path the request named, is left out of the message first, then every quoted string.
    """
    unquoted = QUOTED.sub("", message.replace(path, "") if path else message)
    for number, name in ERRNO.findall(unquoted):
        cause = BY_NUMBER.get(int(number)) if number else ERRNO_CAUSES[name][1]
        if cause is not None:
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

    def _failed(self, doing: str, path: str, response: requests.Response) -> StorageFailed:
        message = hub_message(response)
        return StorageFailed(
            f"{doing} answered {response.status_code}: {message}", cause=cause_of(response.status_code, message, path)
        )

    def _save(self, api_path: str, path: str, content: str) -> None:
        clock = self.server.deadline.clock
        started = clock()
        doing = f"saving {path!r} in the home"
        body = {"type": "file", "format": "text", "content": content}
        response = self._send(doing, "PUT", api_path, self._budget(), json=body)
        if response.status_code not in (200, 201):
            raise self._failed(doing, path, response)
        log.info("storage_saved", path=path, bytes=len(content), duration_ms=elapsed_ms(started, clock))

    def _read_back(self, api_path: str, path: str, content: str) -> None:
        doing = f"reading {path!r} back"
        params = {"type": "file", "format": "text", "content": "1"}
        response = self._send(doing, "GET", api_path, self._budget(), params=params)
        if response.status_code != 200:
            raise self._failed(doing, path, response)
        try:
            read = FileModel.parse(loads(response.content), "the file model").content
        except ValueError:
            raise StorageFailed(f"{doing}: the server answered 200 without a file model (not JSON)", cause="error") from None
        except WrongShape as exc:
            raise StorageFailed(f"{doing}: the server answered 200 without a file model ({exc.message})", cause="error") from None
        if read != content:
            shown = read[:60]
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
            failure = self._failed(doing, path, response)
        log.error("storage_file_left", path=path, message=failure.message)
        return failure
