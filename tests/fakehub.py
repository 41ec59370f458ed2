"""An in-process fake JupyterHub for the transport faults a real hub cannot produce on demand.

It speaks just enough of the REST API for one canary cycle and the token command (version, token
owner, user model, spawn, progress stream, stop, api/status, kernels, tokens; the single-user
server's contents API and a JupyterLab page with its bundles), over raw HTTP/1.1
written by hand, so that it can misbehave at the byte level:

- the progress stream is chunked server-sent events with keepalives, like JupyterHub's; like
  JupyterHub's it tells a stream that comes when no spawn is pending how the last spawn failed
  ("Spawn failed: ...", one event), until the next spawn is taken in;
- `fault(...)` rules make a matching request be reset, stalled, answered with a status, have its
  body cut short (Content-Length larger than what is sent), its chunked stream cut mid-chunk, a
  body that trickles a byte at a time, or garbage gzip — optionally *after* the request took
  effect (the server was started, the token minted), which is what makes a POST's outcome unknown.

Everything it does is bounded in time (`MAX_HOLD` for stalls, trickles and endless streams) and it
listens on 127.0.0.1 only. `requests` records what arrived, for assertions.

`OtherOrigin` is a listener on another origin (127.0.0.2) that records every byte it is sent: a CDN
or analytics host a page names, a redirect's target, or (relaying to the fake hub) the user's server
on an origin of its own. Where the token must never go.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote

from tests.background import serve_in_background, stop_serving

MAX_HOLD = 60.0  # s: no stall, trickle or stream of this fake outlives this

# What a fault does to the answer of a matching request.
ACTIONS = (
    "reset", "stall", "status", "cut_body", "cut_chunk", "trickle", "trickle_head", "bad_gzip", "signal", "body", "content_type",
    "redirect",
    "text",
)
TRICKLE_PAUSE = 0.5  # s between two bytes of a trickled head or websocket frame
DEFAULT = object()  # FakeHub.page_config: JupyterLab's own
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455


@dataclass
class Fault:
    method: str
    path: str  # a regular expression searched in the request path
    action: str
    count: int = 1  # how many matching requests it takes; -1: all of them
    status: int = 503
    after: bool = False  # act on the request (start, mint, ...) first, then misbehave
    call: Callable[[], None] | None = None  # done first, whatever the action ("signal": then answer normally)
    body: Any = None  # for "body": answer `status` with this JSON instead (an answer of the wrong shape); "text": this text
    content_type: str = "application/octet-stream"  # for "content_type": the progress stream's, instead of SSE's
    location: str = ""  # for "redirect": answer 302 to this URL

    def matches(self, method: str, path: str) -> bool:
        return self.count != 0 and self.method == method and re.search(self.path, path) is not None


@dataclass
class Server:
    ready: bool = False
    pending: str | None = "spawn"
    started: float = field(default_factory=time.time)


class FakeHub:
    """See the module docstring. `spawn` decides what a spawn does:

    "ready" (201 at once), "pending" (202, ready after `ready_after` s), "hang" (202, never ready;
    the stream sends only keepalives), "fail" (202, then a `failed` event), "refuse" (500 at once, as
    JupyterHub answers a spawn that fails within its slow_spawn_timeout), or a list of these, one per
    spawn in turn. Each failure says which spawn it was: "Spawn failed: fakehub says no (spawn N)".

    `post_delay` holds each spawn request that long before the spawn is taken in (a hub busy before
    the new spawn is pending): a progress stream asked for meanwhile hears the last spawn's failure.
    """

    def __init__(
        self,
        *,
        version: str = "6.1.1",
        spawn: str | list[str] = "pending",
        ready_after: float = 0.3,
        keepalive: float = 0.5,
        stop: str = "now",
        scopes: tuple[str, ...] = ("servers", "access:servers"),
        server_origin: str = "",
        lab_scripts: tuple[str, ...] = (),
        post_delay: float = 0.0,
        answer_delay: float = 0.0,
        clock_skew: float = 0.0,
    ):
        self.version = version
        self.scopes = list(scopes)  # what GET /hub/api/user says the token may do
        # The servers' origin in their model's `url` (e.g. "http://127.0.0.2:8000", as with subdomain_host);
        # "" for the hub's own (a path, as JupyterHub writes it by default).
        self.server_origin = server_origin
        self.lab_scripts = lab_scripts  # more scripts JupyterLab's page loads (whole URLs: another origin's)
        self.spawn_plan = spawn
        self.ready_after = ready_after
        self.keepalive = keepalive
        self.stop_mode = stop  # "now" (204), "pending_spawn_400" (JupyterHub 4.1: 400 while pending)
        self.post_delay = post_delay
        # s a spawn request's answer is held once the spawn is taken in (JupyterHub holds it open while the
        # spawn is pending, up to its slow_spawn_timeout): a stream asked for meanwhile tells this spawn.
        self.answer_delay = answer_delay
        # s the hub's clock is ahead of the canary's (behind when negative): in its `started` and `Date`.
        self.clock_skew = clock_skew
        self.servers: dict[tuple[str, str], Server] = {}
        # How the last spawn of a server failed, until the next spawn is taken in (JupyterHub keeps the
        # failed spawn future, and its progress stream tells it).
        self.last_failure: dict[tuple[str, str], str] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        # GET /hub/api/services: the hub's services, name -> model (JupyterHub's shape); none by default.
        self.services: dict[str, dict[str, Any]] = {}
        self.token_numbers = itertools.count(1)
        self.kernels: list[dict[str, Any]] = []
        self.files: dict[str, str] = {}  # the server's contents API: path -> text
        # Events (any JSON) the progress stream sends after "Server requested", before its last one.
        self.progress_extra: list[Any] = []
        # JupyterLab's page config, as its page carries it (any JSON); DEFAULT: one federated extension.
        self.page_config: Any = DEFAULT
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.spawns = 0
        # Named servers the hub keeps while they are stopped (user, name): in a user model only when asked
        # for with ?include_stopped_servers, as JupyterHub shows them.
        self.stopped_servers: set[tuple[str, str]] = set()
        self.asked_stopped = 0  # user models asked for with include_stopped_servers
        self.url = ""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            owner = hub

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = serve_in_background(self._server, "fakehub")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._server is not None:
            stop_serving(self._server, self._thread)
            self._server = None

    def hold(self, seconds: float) -> bool:
        """Sleep up to `seconds` (bounded by MAX_HOLD); False once the fake is shutting down."""
        return not self._stopping.wait(min(seconds, MAX_HOLD))

    # --- test helpers ---

    def fault(self, method: str, path: str, action: str, **kwargs: Any) -> None:
        assert action in ACTIONS, action
        with self._lock:
            self.faults.append(Fault(method, path, action, **kwargs))

    def add_server(self, user: str, server_name: str = "", *, ready: bool = True, age_s: float = 86400) -> None:
        """A server left running (by default a day ago: stale for any run)."""
        self.servers[(user, server_name)] = Server(
            ready=ready, pending=None if ready else "spawn", started=time.time() - age_s
        )

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(path, p))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.count -= 1 if fault.count > 0 else 0
                    return fault
        return None

    def _next_spawn(self) -> str:
        plan = self.spawn_plan
        kind = plan[min(self.spawns, len(plan) - 1)] if isinstance(plan, list) else plan
        self.spawns += 1
        return kind


def _event(payload: Any) -> bytes:
    """One server-sent event of a progress stream."""
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _server_url(user: str, server_name: str) -> str:
    """As JupyterHub writes it: the name quoted, but `@` and `~` left as they are."""
    url = f"/user/{quote(user, safe='@~')}/"
    return url + f"{quote(server_name, safe='@~')}/" if server_name else url


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a connection this fake cut on purpose, or the client gave up: not news


class _Handler(BaseHTTPRequestHandler):
    owner: FakeHub
    protocol_version = "HTTP/1.1"
    # A head and its body are two writes: without TCP_NODELAY the second waits for the client's delayed
    # ACK (40 ms on Linux), on every answer.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- writing answers, well-formed or not ---

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response_only(status)
        self.send_header("Date", formatdate(time.time() + self.owner.clock_skew, usegmt=True))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.flush()

    def _json(self, status: int, body: Any, fault: Fault | None = None) -> None:
        self._body(status, b"" if body is None else json.dumps(body).encode(), "application/json", fault)

    def _body(self, status: int, data: bytes, content_type: str, fault: Fault | None = None) -> None:
        headers = {"Content-Type": content_type, "Content-Length": str(len(data))}
        if fault is not None and fault.action == "cut_body":
            headers["Content-Length"] = str(len(data) + 100)
            self._head(status, headers)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._reset()
            return
        if fault is not None and fault.action == "bad_gzip":
            garbage = b"this is not gzip at all"
            headers.update({"Content-Encoding": "gzip", "Content-Length": str(len(garbage))})
            self._head(status, headers)
            self.wfile.write(garbage)
            return
        if fault is not None and fault.action == "trickle":
            self._head(status, headers)
            for byte in data:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                if not self.owner.hold(0.3):
                    return
            return
        self._head(status, headers)
        if data:
            self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"status": status, "message": message})

    def _reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0), not a clean FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _cut_chunk(self, data: bytes) -> None:
        """A chunk announced at its full size, cut off halfway through by a reset."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data[: len(data) // 2])
        self.wfile.flush()
        self._reset()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # --- dispatch ---

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        path = self.path.split("?")[0]
        fault = self.owner._take_fault(self.command, path)
        if fault is not None and fault.call is not None:
            fault.call()
        if fault is not None and fault.action == "signal":
            fault = None
        if fault is not None and not fault.after:
            if self._misbehave_before(fault):
                return
        self._route(self.command, path, body, fault)

    def _misbehave_before(self, fault: Fault) -> bool:
        """Faults that replace the answer entirely; True when the request is done with."""
        if fault.action == "reset":
            self._reset()
            return True
        if fault.action == "stall":
            self.owner.hold(MAX_HOLD)
            self._reset()
            return True
        if fault.action == "status":
            self._error(fault.status, "fakehub: injected fault")
            return True
        if fault.action == "body":
            self._json(fault.status, fault.body)
            return True
        if fault.action == "redirect":
            self._head(302, {"Location": fault.location, "Content-Length": "0"})
            return True
        if fault.action == "text":  # not the hub's JSON: a proxy's own answer, e.g. its plain 404 "Not Found"
            self._body(fault.status, str(fault.body).encode(), "text/plain")
            return True
        if fault.action == "trickle_head":
            # Never silent long enough for a per-read timeout, never a complete head either.
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Trickle: " + b"." * 10_000
            began = time.monotonic()
            for byte in head:
                if time.monotonic() - began > MAX_HOLD:
                    break
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    return True  # the client gave up
                if not self.owner.hold(TRICKLE_PAUSE):
                    break
            self._reset()
            return True
        return False

    def _route(self, method: str, path: str, body: dict[str, Any], fault: Fault | None) -> None:
        hub = self.owner
        if fault is not None and fault.after and fault.action in ("reset", "stall", "status", "trickle_head"):
            # Take effect first, answer badly afterwards.
            self._act(method, path, body)
            self._misbehave_before(fault)
            return
        if method == "GET" and path == "/hub/api/":
            return self._json(200, {"version": hub.version}, fault)
        if method == "GET" and path == "/hub/api/user":
            return self._json(200, {"name": "canary", "kind": "user", "scopes": hub.scopes}, fault)
        if method == "GET" and path == "/hub/api/services":
            return self._json(200, hub.services, fault)
        m = re.fullmatch(r"/hub/api/users/([^/]+)(/server|/servers/([^/]+))?(/progress)?", path)
        if m:
            user, server_name = unquote(m.group(1)), unquote(m.group(3) or "")
            key = (user, server_name)
            if not m.group(2):
                return self._json(200, self._user_model(user, "include_stopped_servers=1" in self.path), fault)
            if m.group(4):
                return self._progress(key, fault)
            if method == "POST":
                hub.hold(hub.post_delay)
                status = self._spawn(key)
                hub.hold(hub.answer_delay)
                messages = {400: "already running", 500: "Internal Server Error"}
                return self._json(status, {"status": status, "message": messages[status]} if status in messages else None, fault)
            if method == "DELETE":
                status = self._stop(key)
                message = {"status": 400, "message": f"{user} is pending spawn, please wait"} if status == 400 else None
                return self._json(status, message, fault)
        m = re.fullmatch(r"/hub/api/users/([^/]+)/tokens(?:/([^/]+))?", path)
        if m:
            return self._tokens(method, m.group(2), body, fault)
        if method == "GET" and path.endswith("/api/status"):
            # Routed like JupyterHub's proxy: only at the URL the hub gives in the server model,
            # with `@` and `~` left unescaped; any other spelling is not found.
            for (user, name), server in hub.servers.items():
                if path == _server_url(user, name) + "api/status":
                    if not server.ready:
                        return self._json(302, None, fault)
                    return self._json(200, {"connections": 0, "kernels": len(hub.kernels), "started": "now"}, fault)
            return self._error(404, "fakehub: no server routed here")
        if re.fullmatch(r"/user/[^/]+/(?:[^/]+/)?api/kernels/[^/]+/channels", path):
            return self._websocket(fault)
        m = re.fullmatch(r"/user/[^/]+/(?:[^/]+/)?api/kernels(?:/([^/]+))?", path)
        if m:
            return self._kernels(method, m.group(1), body, fault)
        m = re.fullmatch(r"/user/[^/]+/api/contents/(.+)", path)
        if m:
            return self._contents(method, unquote(m.group(1)), body, fault)
        if method == "GET" and re.fullmatch(r"/user/[^/]+/(lab|static/lab/main\.js|lab/extensions/.+)", path):
            return self._lab(path, fault)
        self._error(404, f"fakehub: no route for {method} {path}")

    def _act(self, method: str, path: str, body: dict[str, Any]) -> None:
        """The side effect of a request, without an answer (for faults `after` it)."""
        m = re.fullmatch(r"/hub/api/users/([^/]+)(/server|/servers/([^/]+))", path)
        if m and method == "POST":
            self._spawn((unquote(m.group(1)), unquote(m.group(3) or "")))
        elif m and method == "DELETE":
            self._stop((unquote(m.group(1)), unquote(m.group(3) or "")))
        elif re.fullmatch(r"/hub/api/users/[^/]+/tokens", path) and method == "POST":
            self._mint(body)
        elif re.search(r"/api/kernels$", path) and method == "POST":
            self._start_kernel(body)

    # --- the hub's behaviour ---

    def _user_model(self, user: str, include_stopped: bool = False) -> dict[str, Any]:
        servers: dict[str, Any] = {}
        if include_stopped:
            self.owner.asked_stopped += 1
            for owner, name in self.owner.stopped_servers:
                if owner == user:
                    servers[name] = {"name": name, "ready": False, "pending": None, "stopped": True, "started": None,
                                     "url": self.owner.server_origin + _server_url(user, name)}
        for (owner, name), server in self.owner.servers.items():
            if owner == user:
                servers[name] = {
                    "name": name,
                    "ready": server.ready,
                    "pending": server.pending,
                    "url": self.owner.server_origin + _server_url(user, name),
                    "progress_url": f"/hub/api/users/{user}/server/progress",
                    "started": datetime.fromtimestamp(server.started + self.owner.clock_skew, UTC).isoformat().replace("+00:00", "Z"),  # noqa: E501
                }
        return {"name": user, "kind": "user", "servers": servers}

    def _spawn(self, key: tuple[str, str]) -> int:
        hub = self.owner
        if key in hub.servers:
            return 400
        kind = hub._next_spawn()
        hub.last_failure.pop(key, None)  # a new spawn: the stream tells this one's end from now on
        if kind == "refuse":
            hub.last_failure[key] = f"Spawn failed: fakehub refused (spawn {hub.spawns})"
            return 500
        server = Server()
        server.kind = kind  # type: ignore[attr-defined]
        server.number = hub.spawns  # type: ignore[attr-defined]
        hub.servers[key] = server
        if kind == "ready":
            server.ready, server.pending = True, None
            return 201
        if kind == "pending":
            threading.Timer(hub.ready_after, self._become_ready, args=(server,)).start()
        return 202

    @staticmethod
    def _become_ready(server: Server) -> None:
        server.ready, server.pending = True, None

    def _stop(self, key: tuple[str, str]) -> int:
        hub = self.owner
        server = hub.servers.get(key)
        if server is None:
            return 204
        if hub.stop_mode == "pending_spawn_400" and server.pending == "spawn":
            return 400
        del hub.servers[key]
        return 204

    def _progress(self, key: tuple[str, str], fault: Fault | None) -> None:
        hub = self.owner
        server = hub.servers.get(key)
        if server is None and key in hub.last_failure:
            # Nothing pending, the last spawn failed: JupyterHub tells that failure, as one event.
            self._head(200, {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"})
            self._chunk(_event({"progress": 100, "failed": True, "message": hub.last_failure[key]}))
            if fault is not None and fault.action == "cut_chunk":  # the failure told, the stream's end lost
                return self._cut_chunk(_event({"progress": 100, "message": "Spawn failed"}))
            return self._end_stream()
        if server is None:
            return self._error(404, "no such server")
        content_type = fault.content_type if fault is not None and fault.action == "content_type" else "text/event-stream"
        self._head(200, {"Content-Type": content_type, "Transfer-Encoding": "chunked"})

        self._chunk(_event({"progress": 0, "message": "Server requested"}))
        for extra in hub.progress_extra:
            self._chunk(_event(extra))
        if fault is not None and fault.action == "cut_chunk":
            return self._cut_chunk(_event({"progress": 50, "message": "Spawning server..."}))
        if fault is not None and fault.action == "trickle":
            # Bytes that never make a line: no event, no keepalive, but never silent either.
            began = time.monotonic()
            while hub.hold(0.2) and key in hub.servers and time.monotonic() - began < MAX_HOLD:
                self._chunk(b"d")
            return self._end_stream()
        kind = getattr(server, "kind", "pending")
        if fault is not None and fault.action == "stall":
            hub.hold(MAX_HOLD)
            return self._end_stream()
        began = last_keepalive = time.monotonic()
        while key in hub.servers and not server.ready and kind != "fail":
            if not hub.hold(0.05) or time.monotonic() - began > MAX_HOLD:
                return self._end_stream()
            if time.monotonic() - last_keepalive >= hub.keepalive:
                last_keepalive = time.monotonic()
                self._chunk(b"\n")  # JupyterHub's keepalive: a blank line
        if kind == "fail":
            hub.servers.pop(key, None)
            hub.last_failure[key] = f"Spawn failed: fakehub says no (spawn {getattr(server, 'number', 0)})"
            self._chunk(_event({"progress": 100, "failed": True, "message": hub.last_failure[key]}))
        elif server.ready:
            self._chunk(_event({"progress": 100, "ready": True, "message": "Server ready", "url": "/user/x/"}))
        self._end_stream()

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass

    def _tokens(self, method: str, token_id: str | None, body: dict[str, Any], fault: Fault | None) -> None:
        hub = self.owner
        if method == "GET" and token_id is None:
            return self._json(200, {"api_tokens": [dict(t, token=None) for t in hub.tokens.values()]}, fault)
        if method == "POST":
            return self._json(201, self._mint(body), fault)
        if method == "DELETE" and token_id is not None:
            hub.tokens.pop(token_id, None)
            return self._json(204, None, fault)
        if method == "GET" and token_id in hub.tokens:
            return self._json(200, dict(hub.tokens[token_id], token=None), fault)
        self._error(404, "no such token")

    def _mint(self, body: dict[str, Any]) -> dict[str, Any]:
        hub = self.owner
        token_id = f"a{next(hub.token_numbers)}"
        minted = {
            "id": token_id,
            "token": secrets.token_hex(16),
            "note": body.get("note"),
            "scopes": body.get("scopes", ["inherit"]),
            "expires_at": None,
        }
        hub.tokens[token_id] = minted
        return minted

    def _kernels(self, method: str, kernel_id: str | None, body: dict[str, Any], fault: Fault | None) -> None:
        hub = self.owner
        if method == "GET" and kernel_id is None:
            return self._json(200, hub.kernels, fault)
        if method == "POST":
            return self._json(201, self._start_kernel(body), fault)
        if method == "DELETE" and kernel_id is not None:
            hub.kernels[:] = [k for k in hub.kernels if k["id"] != kernel_id]
            return self._json(204, None, fault)
        self._error(404, "no such kernel")

    def _contents(self, method: str, path: str, body: dict[str, Any], fault: Fault | None) -> None:
        """jupyter_server's contents API, for text files."""
        files = self.owner.files
        if method == "PUT":
            files[path] = str(body.get("content", ""))
            return self._json(201, {"name": path.rsplit("/", 1)[-1], "path": path, "type": "file"}, fault)
        if path not in files:
            return self._error(404, f"No such file or directory: {path}")
        if method == "GET":
            return self._json(200, {"path": path, "type": "file", "format": "text", "content": files[path]}, fault)
        if method == "DELETE":
            del files[path]
            return self._json(204, None, fault)
        self._error(405, "fakehub: method not allowed")

    def _lab(self, path: str, fault: Fault | None) -> None:
        """JupyterLab's page (with its page config), its main bundle and one federated extension."""
        user = path.split("/")[2]
        if path.endswith("/lab"):
            config = self.owner.page_config
            if config is DEFAULT:
                config = {
                    "fullStaticUrl": f"/user/{user}/static/lab",
                    "fullLabextensionsUrl": f"/user/{user}/lab/extensions",
                    "federated_extensions": [{"name": "fake-ext", "load": "static/remoteEntry.abc.js", "extension": "./ext"}],
                }
            # As JupyterLab's template writes it (Jinja's `tojson`): no <, >, & or ' left to end the script.
            escaped = json.dumps(config)
            for character, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027")):
                escaped = escaped.replace(character, escape)
            page = (
                '<!doctype html><html><head><script id="jupyter-config-data" type="application/json">'
                f'{escaped}</script><script defer="defer" src="/user/{user}/static/lab/main.js?v=1">'
                "</script>" + "".join(f'<script src="{url}"></script>' for url in self.owner.lab_scripts)
                + "</head><body></body></html>"
            )
            return self._body(200, page.encode(), "text/html", fault)
        return self._body(200, b"/* a bundle */ " * 64, "application/javascript", fault)

    def _websocket(self, fault: Fault | None) -> None:
        """A kernel's websocket, only to misbehave: `trickle` upgrades it, then sends one frame a byte
        at a time; without a fault there is no kernel to talk to (404)."""
        if fault is None or fault.action != "trickle":
            return self._error(404, "fakehub: kernels over websockets only misbehave here")
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
        self._head(101, {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept})
        payload = json.dumps({"header": {"msg_type": "status"}, "content": {"execution_state": "busy"}}).encode()
        frame = bytes([0x81, 126]) + struct.pack("!H", len(payload)) + payload  # one text frame, unmasked
        began = time.monotonic()
        for byte in frame:
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return
            if not self.owner.hold(TRICKLE_PAUSE) or time.monotonic() - began > MAX_HOLD:
                return
        self.close_connection = True

    def _start_kernel(self, body: dict[str, Any]) -> dict[str, Any]:
        kernel = {"id": secrets.token_hex(8), "name": body.get("name") or "python3"}
        self.owner.kernels.append(kernel)
        return kernel

    do_GET = do_POST = do_DELETE = do_PUT = _handle


class OtherOrigin:
    """A listener on another origin than the fake hub's (127.0.0.2: another host) that records every
    byte clients send it (`received`), for the proof that the token never went there.

    It answers each request 200 with a small script (a CDN, an analytics host; with `cookie`, setting
    it), or, with `relay_to`
    (host, port), forwards each connection there, both ways: the user's servers on an origin of their
    own, as with JupyterHub's subdomain_host. Bounded like the fake hub (MAX_HOLD).
    """

    def __init__(self, relay_to: tuple[str, int] | None = None, host: str = "127.0.0.2", cookie: str = ""):
        self.relay_to = relay_to
        self.cookie = cookie  # set with every answer (Set-Cookie), when given
        self._server = socket.create_server((host, 0))
        self.url = f"http://{host}:{self._server.getsockname()[1]}/"
        self.received = bytearray()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="other-origin", daemon=True)

    def __enter__(self) -> OtherOrigin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
        self._thread.join(5)

    def request_lines(self) -> list[str]:
        """The request lines it was sent ("GET /path"), in order."""
        with self._lock:
            data = bytes(self.received)
        return [f"{m.group(1).decode()} {m.group(2).decode()}"
                for m in re.finditer(rb"(GET|HEAD|POST|PUT|DELETE) (/\S*) HTTP/1\.1\r\n", data)]  # a body may precede one

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            client.settimeout(MAX_HOLD)
            with self._lock:
                self._sockets.append(client)
            target = self._relay if self.relay_to else self._answer
            threading.Thread(target=target, args=(client,), name="other-origin-conn", daemon=True).start()

    def _record(self, data: bytes) -> None:
        with self._lock:
            self.received += data

    def _answer(self, client: socket.socket) -> None:
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = client.recv(4096)
                if not data:
                    break
                head += data
                self._record(data)
            body = b"/* another origin's script */"
            cookie = f"Set-Cookie: {self.cookie}; Path=/\r\n" if self.cookie else ""
            client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/javascript\r\n"
                           + f"{cookie}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        client.close()

    def _relay(self, client: socket.socket) -> None:
        assert self.relay_to is not None
        try:
            upstream = socket.create_connection(self.relay_to, timeout=MAX_HOLD)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets.append(upstream)
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if record:
                    self._record(data)
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
