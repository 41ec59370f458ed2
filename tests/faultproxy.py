"""A fault-injecting HTTP reverse proxy on 127.0.0.1, to prove the canary's retries.

Put it in front of a LocalHub (`FaultProxy(hub.url)`) and point the canary at `proxy.url`.
`fail_next(n, status)` makes the next n matching requests answer `status` (optionally with
Retry-After) without reaching the hub; everything else is forwarded as is, and
`requests_seen` records every request with its arrival time, so a test can assert how
often and how far apart the canary retried.

`cut_next(n, after_bytes=...)` forwards the next n matching responses re-framed as HTTP/1.1
chunked, and cuts each after `after_bytes` of body in the middle of a chunk (a chunk announced
at its full size, half sent, then a TCP reset): what a dropped connection does to the hub's
progress stream. (A close-delimited answer cannot be cut detectably: its end *is* the close.)

Forwarding is deliberately plain: method, path+query, headers (Authorization included, the
hop-by-hop ones dropped, Host rewritten to the upstream's) and a Content-Length body go
upstream; the response status, headers and body come back as they arrive, chunk by chunk,
so the hub's progress event stream (text/event-stream) is not held back. Responses are
HTTP/1.0 and close-delimited (one request per connection), except those being cut. Redirects
are passed back, never followed. Requests with a chunked body are not supported (the canary
sends none).
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.background import serve_in_background, stop_serving

# RFC 9110 hop-by-hop headers: meaningful for one connection only, never forwarded.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
UPSTREAM_TIMEOUT = 120  # s without a byte from upstream; the hub's event stream sends a keep-alive every 8 s


@dataclass
class _Fault:
    remaining: int
    status: int
    retry_after: float | None
    path_contains: str
    method: str | None
    cut_after: int | None = None  # forward, then cut the body mid-chunk after this many bytes
    before: Callable[[], None] | None = None  # run first, before the request goes upstream
    lose: bool = False  # no byte of the answer reaches the client: the connection is reset
    forward: bool = True  # with `lose`: the request reaches the upstream first (else it never does)
    after: Callable[[], None] | None = None  # with `lose`: run once the upstream answered, before the reset
    pass_through: bool = False  # forward as is (after `before`): a rule only to act at that moment
    exact: bool = False  # path_contains is the whole path (the query aside)

    def matches(self, method: str, path: str) -> bool:
        found = path.split("?", 1)[0] == self.path_contains if self.exact else self.path_contains in path
        return self.remaining > 0 and found and (self.method is None or self.method.upper() == method)


class FaultProxy:
    """See the module docstring."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.base_path = parts.path or "/"
        self.url = ""
        self.requests_seen: list[tuple[float, str, str, int]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._open_upstreams: set[http.client.HTTPConnection] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{self.base_path}"
        self._thread = serve_in_background(self._server, "faultproxy")
        return self

    def stop(self) -> None:
        """Stop serving and cut open upstream connections (a pending event stream included)."""
        if self._server is None:
            return
        with self._lock:  # first, so that a pending event stream lets its handler thread go
            for conn in self._open_upstreams:
                _shutdown_socket(conn.sock)
        stop_serving(self._server, self._thread)
        self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start() if self._server is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def fail_next(
        self,
        count: int,
        status: int = 503,
        *,
        retry_after: float | None = None,
        path_contains: str = "",
        method: str | None = None,
        exact: bool = False,
    ) -> None:
        """Answer the next `count` requests whose path contains `path_contains` (is it, with `exact`; and whose
        method is `method`, if given) with `status` instead of forwarding them.

        `retry_after` adds a Retry-After header in seconds, written as given (`1`, `0.2`):
        HTTP allows only whole seconds, fractions keep retry tests fast. Rules queue up; a
        request takes the first rule it matches.
        """
        with self._lock:
            self._faults.append(_Fault(count, status, retry_after, path_contains, method, exact=exact))

    def cut_next(
        self,
        count: int,
        *,
        after_bytes: int,
        path_contains: str = "",
        method: str | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        """Forward the next `count` matching requests, and cut each answer mid-chunk after `after_bytes`.

        `before()` runs first, while the client waits: what another client does meanwhile."""
        with self._lock:
            self._faults.append(_Fault(count, 0, None, path_contains, method, cut_after=after_bytes, before=before))

    def lose_next(
        self,
        count: int,
        *,
        path_contains: str = "",
        method: str | None = None,
        exact: bool = False,
        forward: bool = True,
        after: Callable[[], None] | None = None,
    ) -> None:
        """Lose the answers of the next `count` matching requests: each is forwarded (unless not `forward`:
        then it never reaches the upstream), the upstream's whole answer read, `after()` run (what another
        client does meanwhile), and the client's connection reset without a byte of the answer. Unlike
        `cut_next`, this loses an answer without a body too (a 204). `exact`: `path_contains` is the path."""
        with self._lock:
            self._faults.append(
                _Fault(count, 0, None, path_contains, method, lose=True, forward=forward, after=after, exact=exact)
            )

    def watch_next(
        self, count: int, *, before: Callable[[], None], path_contains: str = "", method: str | None = None, exact: bool = False
    ) -> None:
        """Run `before()` when the next `count` matching requests arrive, then forward them as is."""
        with self._lock:
            self._faults.append(_Fault(count, 0, None, path_contains, method, before=before, pass_through=True, exact=exact))

    def statuses(self, path_contains: str = "") -> list[int]:
        """The answered statuses of the requests seen so far whose path contains `path_contains`."""
        with self._lock:
            return [status for _, _, path, status in self.requests_seen if path_contains in path]

    # --- used by the handler ---

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    return fault
            return None

    def _record(self, arrived: float, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests_seen.append((arrived, method, path, status))


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.0"  # close-delimited responses: no re-chunking needed

    def _handle(self) -> None:
        arrived = time.monotonic()
        # Read the body even for a fault: closing with unread input makes the kernel send a
        # reset, and the client may then lose the fault response.
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        fault = self.owner._take_fault(self.command, self.path)
        if fault is not None and fault.before is not None:
            fault.before()
        if fault is not None and fault.lose:
            self._lose(fault, arrived, body)
            return
        cut_after = fault.cut_after if fault is not None else None
        if fault is not None and fault.pass_through:
            fault = None
        if fault is not None and cut_after is None:
            self.owner._record(arrived, self.command, self.path, fault.status)
            self._answer_fault(fault)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
        conn = http.client.HTTPConnection(self.owner.upstream_host, self.owner.upstream_port, timeout=UPSTREAM_TIMEOUT)
        with self.owner._lock:
            self.owner._open_upstreams.add(conn)
        try:
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                upstream = conn.getresponse()
            except OSError as exc:
                self.owner._record(arrived, self.command, self.path, 502)
                self._answer(502, {"status": 502, "message": f"faultproxy: upstream unreachable: {exc}"})
                return
            self.owner._record(arrived, self.command, self.path, upstream.status)
            if cut_after is not None:
                self._forward_then_cut(upstream, cut_after)
                return
            self.send_response_only(upstream.status, upstream.reason)
            for key, value in upstream.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.end_headers()
            # read1: whatever has arrived (up to 64 KiB), so each event is passed on at once.
            while chunk := upstream.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()
        except (OSError, http.client.HTTPException):
            pass  # the client or the upstream went away mid-response: nothing left to tell anyone
        finally:
            with self.owner._lock:
                self.owner._open_upstreams.discard(conn)
            conn.close()

    def _lose(self, fault: _Fault, arrived: float, body: bytes | None) -> None:
        """The request forwarded (or not), its answer read to the end and dropped, then a reset (see lose_next)."""
        status = 0
        if fault.forward:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
            conn = http.client.HTTPConnection(self.owner.upstream_host, self.owner.upstream_port, timeout=UPSTREAM_TIMEOUT)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                upstream = conn.getresponse()
                upstream.read()
                status = upstream.status
            except (OSError, http.client.HTTPException):
                status = 502
            finally:
                conn.close()
        self.owner._record(arrived, self.command, self.path, status)
        if fault.after is not None:
            fault.after()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _forward_then_cut(self, upstream: http.client.HTTPResponse, cut_after: int) -> None:
        """The answer as HTTP/1.1 chunks, until `cut_after` bytes: then half a chunk and a reset."""
        self.wfile.write(f"HTTP/1.1 {upstream.status} {upstream.reason}\r\n".encode())
        for key, value in upstream.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.wfile.write(f"{key}: {value}\r\n".encode())
        self.wfile.write(b"Transfer-Encoding: chunked\r\n\r\n")
        sent = 0
        while chunk := upstream.read1(65536):
            if sent + len(chunk) > cut_after:
                keep = max(1, cut_after - sent)
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk[:keep])
                self.wfile.flush()
                break
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
            sent += len(chunk)
        # A reset, not a clean close: the client is mid-chunk and must see the connection drop.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _answer_fault(self, fault: _Fault) -> None:
        extra = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
        self._answer(fault.status, {"status": fault.status, "message": "faultproxy: injected fault"}, extra)

    def _answer(self, status: int, payload: dict, extra_headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format, *args) -> None:
        pass  # requests_seen is the record; stderr noise would hide test output


def _shutdown_socket(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
