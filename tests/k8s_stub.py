"""A local HTTPS stand-in for the Kubernetes API's Secret endpoint.

The Secret tests run against a real kube-apiserver (tests/controlplane.py); this stub remains for
what a real one cannot be made to do on demand: answer 500, or drop the connection (`fail()`), and
for the benchmark's Secret read. It answers `GET /api/v1/namespaces/{ns}/secrets/{name}` the way
the real API does (Secret objects with base64 `data`, `Status` bodies with 401/403/404), over
TLS with a throw-away CA from `trustme`, so the real `kubernetes` client can be pointed at it
through a kubeconfig or through in-cluster service-account files.

Secrets are kept as whole API objects in a dict keyed by (namespace, name).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme

from tests.background import serve_in_background, stop_serving
from tests.kubefiles import KubeClientFiles

SECRET_PATH = re.compile(r"^/api/v1/namespaces/(?P<namespace>[^/]+)/secrets/(?P<name>[^/]+)$")
BEARER = re.compile(r"^[Bb]earer \S+$")  # the Python client sends "bearer <token>" in-cluster


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    """A `Status` object as the API server returns it with an error."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


class SecretStub(KubeClientFiles):
    """See the module docstring. `start()` before use; `stop()` (or `with`) after. It writes the
    client's kubeconfig and service-account files itself (KubeClientFiles)."""

    def __init__(self, tmpdir: Path):
        self.tmpdir = Path(tmpdir)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA()
        self.ca_file = self.tmpdir / "stub-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        self._ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._ssl_context)
        self.host = "127.0.0.1"
        self.port = 0
        self.url = ""
        self.secrets: dict[tuple[str, str], dict] = {}  # (namespace, name) -> Secret object
        self.forbidden: set[tuple[str, str]] = set()
        self.faults: dict[tuple[str, str], str] = {}  # (namespace, name) -> "500" | "drop"
        self.requests_seen: list[dict] = []
        self._resource_version = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    def start(self) -> SecretStub:
        stub = self

        class Handler(_StubHandler):
            owner = stub

        self._server = _TLSServer((self.host, 0), Handler, self._ssl_context)
        self.port = self._server.server_address[1]
        self.url = f"https://{self.host}:{self.port}"
        self._thread = serve_in_background(self._server, "secretstub")
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        stop_serving(self._server, self._thread)
        self._server = None

    def __enter__(self) -> SecretStub:
        return self.start() if self._server is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- content ---

    def put_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Create or replace a Secret; `data` values are plain text, stored base64 like the real API."""
        with self._lock:
            self._resource_version += 1
            self.secrets[(namespace, name)] = {
                "kind": "Secret",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "resourceVersion": str(self._resource_version),
                },
                "type": "Opaque",
                "data": {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()},
            }

    def get_secret(self, namespace: str, name: str) -> dict | None:
        """A stored Secret with its `data` decoded to text (None if there is none), for assertions."""
        with self._lock:
            stored = self.secrets.get((namespace, name))
            if stored is None:
                return None
            stored = json.loads(json.dumps(stored))
        stored["data"] = {k: base64.b64decode(v).decode("utf-8") for k, v in (stored.get("data") or {}).items()}
        return stored

    def forbid(self, namespace: str, name: str) -> None:
        """Make GET of this Secret answer 403 Forbidden, as with RBAC that lacks `get` on it."""
        with self._lock:
            self.forbidden.add((namespace, name))

    def fail(self, namespace: str, name: str, fault: str) -> None:
        """Make GET of this Secret answer 500 InternalError ("500"), or close the connection unanswered ("drop")."""
        assert fault in ("500", "drop"), fault
        with self._lock:
            self.faults[(namespace, name)] = fault


class _TLSServer(ThreadingHTTPServer):
    """Accepts plain TCP and does the TLS handshake in the request's thread, so a client that
    stalls in the handshake cannot block the accept loop."""

    def __init__(self, address, handler, ssl_context: ssl.SSLContext):
        self.ssl_context = ssl_context
        super().__init__(address, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address) -> None:
        pass  # e.g. a client that does not trust the CA: its own error says enough


class _StubHandler(BaseHTTPRequestHandler):
    owner: SecretStub
    protocol_version = "HTTP/1.1"  # the client keeps connections alive; every answer has a length

    def setup(self) -> None:
        self.request.settimeout(10)
        self.request.do_handshake()
        super().setup()

    def do_GET(self) -> None:
        match = SECRET_PATH.match(self.path.split("?", 1)[0])
        with self.owner._lock:
            fault = match and self.owner.faults.get((match["namespace"], match["name"]))
        if fault == "drop":
            self._record(0)
            self.close_connection = True
            self.request.shutdown(socket.SHUT_RDWR)
            return
        if fault == "500":
            self._record(500)
            return self._send(500, status_body(500, "InternalError", "Internal error occurred: injected by the stub"))
        status, body = self._route()
        self._record(status)
        self._send(status, body)

    def _route(self) -> tuple[int, dict]:
        if not BEARER.match(self.headers.get("Authorization", "")):
            return 401, status_body(401, "Unauthorized", "Unauthorized")
        match = SECRET_PATH.match(self.path.split("?", 1)[0])
        if not match:
            return 404, status_body(404, "NotFound", "the server could not find the requested resource", {})
        namespace, name = match["namespace"], match["name"]
        details = {"name": name, "kind": "secrets"}
        with self.owner._lock:
            forbidden = (namespace, name) in self.owner.forbidden
            secret = self.owner.secrets.get((namespace, name))
        if forbidden:
            message = (
                f'secrets "{name}" is forbidden: User "system:serviceaccount:{namespace}:canary" '
                f'cannot get resource "secrets" in API group "" in the namespace "{namespace}"'
            )
            return 403, status_body(403, "Forbidden", message, details)
        if secret is None:
            return 404, status_body(404, "NotFound", f'secrets "{name}" not found', details)
        return 200, secret

    def _not_allowed(self) -> None:
        self._record(405)
        message = "the server does not allow this method on the requested resource"
        self._send(405, status_body(405, "MethodNotAllowed", message))

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

    def _record(self, status: int) -> None:
        with self.owner._lock:
            self.owner.requests_seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "status": status,
                }
            )

    def parse_request(self) -> bool:
        self._read_body: bytes | None = None  # one handler serves every request of a kept-alive connection
        return super().parse_request()

    def _body(self) -> bytes:
        """The request body, read once (an unread body would spoil the kept-alive connection)."""
        if self._read_body is None:
            self._read_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._read_body

    def _send(self, status: int, body: dict) -> None:
        self._body()
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args) -> None:
        pass  # requests_seen is the record
