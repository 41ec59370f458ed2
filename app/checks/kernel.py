"""The kernel check (--check-kernel): what a user does after the server answers — run code.

Through the proxy, with the canary's token (which the transport sends to the hub's own origin only):
POST <server>/api/kernels starts a kernel, its websocket <server>/api/kernels/<id>/channels carries
one `execute_request` (Jupyter messaging protocol 5.3) of `print(6*7)`, the output must be "42", then
DELETE <server>/api/kernels/<id> — in a `finally:`, so a kernel is never left behind by a failed
check. Everything runs within one deadline (--kernel-timeout, itself within the run's --deadline):
start and execute get CLEANUP_SHARE (app/deadline.py) less of it, so that the DELETE still has its
share after they time out. The websocket, from its connect to its last frame, is watched like every
request (app/transport.py): a frame that trickles cannot hold the check. It takes the egress proxy
the REST calls take (HTTP_PROXY, HTTPS_PROXY, NO_PROXY: an HTTP CONNECT tunnel).

websocket-client (a dependency of the kubernetes client) is imported only when the check runs. It
would log the request headers — the token — only with `websocket.enableTrace(True)`, which is never
called; its logger is also held at WARNING so that a debug-level root logger cannot change that.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from app import logs
from app.checks import Check
from app.deadline import Deadline, elapsed_ms
from app.errors import HubUnavailable, KernelFailed, PermissionDenied
from app.hub import HubClient, hub_message
from app.transport import Watchdog, origin_text

CODE = "print(6*7)"
EXPECTED = "42"
PROTOCOL_VERSION = "5.3"
REDIRECTS = frozenset({301, 302, 303, 307, 308})

log = logs.get_logger()


class KernelSession:
    """One kernel started, used and deleted on the user's (default or named) server, through the proxy."""

    def __init__(
        self,
        client: HubClient,
        user: str,
        server_url: str,
        *,
        kernel_name: str | None,
        timeout: float,
        deadline: Deadline,
    ):
        self.client = client
        self.user = user
        self.server_url = server_url
        self.kernel_name = kernel_name
        self.whole = deadline.within(timeout)  # start, execute and delete
        self.deadline = self.whole.before_cleanup()  # start and execute; the DELETE gets the rest
        self.timeout = timeout

    def run(self) -> dict[str, Any]:
        """Start, execute, delete. Returns what was seen; raises KernelFailed (or PermissionDenied)."""
        kernel = self.start()
        kernel_id = str(kernel["id"])
        try:
            return self.execute(kernel_id)
        finally:
            self.delete(kernel_id)

    # --- REST: start and delete ---

    def _kernels_url(self, kernel_id: str = "") -> str:
        return self.server_url + "api/kernels" + (f"/{quote(kernel_id, safe='')}" if kernel_id else "")

    def start(self) -> dict[str, Any]:
        body = {"name": self.kernel_name} if self.kernel_name else {}
        try:
            # Never sent twice, never adopted on a guess: see _lost_start.
            response = self.client.post_once(self._kernels_url(), self.deadline, find_outcome=self._lost_start, json=body)
        except HubUnavailable as exc:
            raise KernelFailed(f"starting a kernel: no answer through the proxy ({exc})") from None
        if isinstance(response, dict):
            return response
        if response.status_code == 403:
            raise PermissionDenied(
                "the server refused to start a kernel (403): the token needs the scope access:servers!user="
                + self.user
            )
        if response.status_code not in (200, 201):
            raise KernelFailed(
                f"the kernel{self._named} did not start: POST api/kernels answered {response.status_code} "
                f"{hub_message(response)}{_cause(response)}"
            )
        try:
            kernel = response.json()
            kernel["id"]
        except (ValueError, KeyError, TypeError):
            raise KernelFailed("POST api/kernels answered without a kernel model") from None
        log.info("kernel_started", kernel_id=kernel["id"], kernel_name=kernel.get("name"))
        return kernel

    def _lost_start(self) -> None:
        """The start's answer was lost: a kernel may have started, but its id never came back, and only
        the id proves a kernel to be ours (another client may run kernels on the server too). So no
        kernel is adopted or deleted, and the POST is not sent again: the check fails (retried like any
        kernel failure), and a kernel the lost request started ends with the server's stop."""
        raise KernelFailed(
            "starting a kernel: the answer was lost, so whether a kernel started is unknown; none is adopted "
            "or deleted without its id (the server's stop ends one that did)"
        )

    @property
    def _named(self) -> str:
        return f" {self.kernel_name!r}" if self.kernel_name else ""

    def delete(self, kernel_id: str) -> None:
        """Delete the kernel; a failure is only logged: stopping the server ends the kernel anyway."""
        try:
            response = self.client.request("DELETE", self._kernels_url(kernel_id), self.whole)
        except HubUnavailable as exc:
            log.warning("kernel_delete_failed", kernel_id=kernel_id, message=str(exc))
            return
        if response.status_code in (204, 404):
            log.info("kernel_deleted", kernel_id=kernel_id)
        else:
            log.warning(
                "kernel_delete_failed", kernel_id=kernel_id, message=f"{response.status_code} {hub_message(response)}"
            )

    # --- websocket: one execute_request ---

    def _websocket_url(self, kernel_id: str) -> str:
        url = self._kernels_url(kernel_id) + "/channels"
        return "ws" + url.removeprefix("http")  # http -> ws, https -> wss

    def execute(self, kernel_id: str) -> dict[str, Any]:
        outcome = self.run_code(kernel_id, CODE)
        text = outcome["output"]
        if outcome["error"]:
            raise KernelFailed(f"the kernel raised {outcome['error']} running {CODE!r}")
        if EXPECTED not in text.split():
            raise KernelFailed(f"the kernel ran {CODE!r} but printed {text.strip()[:100]!r}, not {EXPECTED!r}")
        log.info("kernel_executed", kernel_id=kernel_id, code=CODE, output=text.strip(), duration_ms=outcome["execute_ms"])
        return outcome

    def run_code(self, kernel_id: str, code: str) -> dict[str, Any]:
        """One execute_request over the kernel's websocket: {output, error, error_content, execute_ms}."""
        import websocket  # websocket-client: only when the check runs (start-up time)

        logging.getLogger("websocket").setLevel(logging.WARNING)
        clock = self.deadline.clock
        started = clock()
        session = uuid.uuid4().hex
        url = self._websocket_url(kernel_id)
        connection = websocket.WebSocket()
        connection.settimeout(self.deadline.for_wait())
        with self.client.watchdog(self.deadline) as watchdog:
            try:
                # The transport's own socket, watched from name resolution on (websocket-client's connect
                # is not), through the proxy the REST calls take.
                sock = self.client.websocket_socket(url, watchdog)
                connection.connect(
                    url,
                    socket=sock,
                    # The transport's headers for this URL: the token only on the hub's own origin.
                    header=[f"{name}: {value}" for name, value in self.client.headers_for(url).items()],
                    # No Origin header: a non-browser client, and a proxy may rewrite the Host header.
                    suppress_origin=True,
                    # A redirect is an answer, as for every request (app/transport.py): websocket-client
                    # would follow it with these headers, on a connection of its own, unwatched.
                    redirect_limit=0,
                )
            except websocket.WebSocketBadStatusException as exc:
                raise KernelFailed(f"the kernel's websocket was refused: HTTP {exc.status_code}") from None
            except websocket.WebSocketException as exc:
                if watchdog.fired:
                    raise self._too_slow("(no websocket)") from None
                answer = connection.handshake_response
                if answer is not None and answer.status in REDIRECTS:
                    where = origin_text(str(answer.headers.get("location", "")))
                    raise KernelFailed(
                        f"the kernel's websocket was refused: HTTP {answer.status} (a redirect to {where}, not followed)"
                    ) from None
                raise KernelFailed(f"the kernel's websocket could not be opened: {type(exc).__name__}: {exc}") from None
            except OSError as exc:
                if watchdog.fired:
                    raise self._too_slow("(no websocket)") from None
                raise KernelFailed(f"the kernel's websocket could not be opened: {type(exc).__name__}: {exc}") from None
            try:
                msg_id = uuid.uuid4().hex
                connection.send(json.dumps(execute_request(msg_id, session, code)))
                outcome = self._collect(connection, msg_id, websocket, watchdog)
            finally:
                connection.close()
        outcome["execute_ms"] = elapsed_ms(started, clock)
        return outcome

    def _too_slow(self, what: str) -> KernelFailed:
        return KernelFailed(f"the kernel did not run {CODE!r} within --kernel-timeout {self.timeout:g}s {what}")

    def _collect(self, connection: Any, msg_id: str, websocket: Any, watchdog: Watchdog) -> dict[str, Any]:
        """Read the kernel's messages for our request until it has replied and gone idle again."""
        output: list[str] = []
        error: str | None = None
        error_content: dict[str, Any] = {}  # the kernel's own ename, evalue and traceback
        replied = idle = False
        while not (replied and idle):
            remaining = self.deadline.remaining()
            if remaining <= 0 or watchdog.fired:
                raise self._too_slow("(no reply)" if not replied else "(no idle status)")
            connection.settimeout(remaining)
            try:
                raw = connection.recv()
            except websocket.WebSocketTimeoutException:
                continue  # the loop's deadline check reports it
            except (OSError, websocket.WebSocketException) as exc:
                if watchdog.fired:  # the budget cut it (a frame that trickled): the loop reports it
                    continue
                raise KernelFailed(f"the kernel's websocket closed: {type(exc).__name__}: {exc}") from None
            if not isinstance(raw, str) or not raw:
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(message, dict) or _part(message, "parent_header").get("msg_id") != msg_id:
                continue  # e.g. the server's own kernel_info requests
            kind = _part(message, "header").get("msg_type") or message.get("msg_type")
            content = _part(message, "content")
            if kind == "stream":
                output.append(str(content.get("text", "")))
            elif kind in ("execute_result", "display_data"):
                output.append(str(_part(content, "data").get("text/plain", "")))
            elif kind == "error":
                error = f"{content.get('ename')}: {content.get('evalue')}"
                error_content = content
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
            elif kind == "execute_reply":
                replied = True
                if content.get("status") != "ok" and not error:
                    error = f"{content.get('ename', 'error')}: {content.get('evalue', content.get('status'))}"
                    error_content = content
        return {"output": "".join(output), "error": error, "error_content": error_content}


def _part(message: dict[str, Any], key: str) -> dict[str, Any]:
    """A part of a kernel message that must be an object; anything else counts as empty."""
    part = message.get(key)
    return part if isinstance(part, dict) else {}


def _cause(response: Any) -> str:
    """jupyter_server's 500 says only "Unhandled error"; the last line of its traceback says why."""
    try:
        traceback = response.json().get("traceback") or ""
    except (ValueError, AttributeError):
        return ""
    lines = [line.strip() for line in str(traceback).splitlines() if line.strip()]
    return f" ({lines[-1][:300]})" if lines else ""


def execute_request(msg_id: str, session: str, code: str = CODE) -> dict[str, Any]:
    """An execute_request on the shell channel, as jupyter_server's websocket (JSON) protocol carries it."""
    return {
        "header": {
            "msg_id": msg_id,
            "session": session,
            "username": "jupyterhub-canary",
            "date": datetime.now(UTC).isoformat(),
            "msg_type": "execute_request",
            "version": PROTOCOL_VERSION,
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }


class Kernel(Check):
    """--check-kernel: a kernel started, `print(6*7)` run on it, the kernel deleted."""

    name = "kernel"
    order = 10
    enabled_by = "check_kernel"

    def run(self) -> None:
        KernelSession(
            self.server.client,
            self.server.user,
            self.server.url,
            kernel_name=self.config.kernel_name,
            timeout=self.config.kernel_timeout,
            deadline=self.server.deadline,
        ).run()
