"""A local HTTPS stand-in for the Kubernetes API's Secret and Lease endpoints.

The Secret and Lease tests run against a real kube-apiserver (tests/controlplane.py); this stub
remains for what a real one cannot be made to do on demand: answer 500, drop the connection
(`fail()`), make a write and lose its answer (`after_write()`), and for the benchmark's Secret
read. It answers the way the real API does, over TLS with a throw-away CA from `trustme`, so the
real `kubernetes` client can be pointed at it through a kubeconfig or through in-cluster
service-account files:

- `GET /api/v1/namespaces/{ns}/secrets/{name}`, `POST .../secrets`, `PUT .../secrets/{name}`, and
  the same for `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases` and `/api/v1/namespaces/{ns}/events`
  (an Event's create must name its own namespace in `involvedObject`, as there);
- `Status` bodies with 401 (no bearer token), 403 (`forbid`; `forbid_create` for a kind's creates),
  404 NotFound, 409 AlreadyExists (a create of an object that exists) and 409 Conflict (an update
  whose `metadata.resourceVersion` is not the stored one: a writer came in between); an update
  without one is unconditional, as there;
- every write that changes the object gives it a new `resourceVersion` (one that changes nothing
  keeps it, as there).

Objects are kept as whole API objects in a dict keyed by (kind, namespace, name), kind being the
resource ("secrets", "leases", "events").
"""

from __future__ import annotations

import base64
import copy
import json
import re
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme

from tests.background import serve_in_background, stop_serving
from tests.kubefiles import KubeClientFiles

OBJECT_PATH = re.compile(
    r"^/(?:api/v1|apis/coordination\.k8s\.io/v1)/namespaces/(?P<namespace>[^/]+)/(?P<kind>secrets|leases|events)"
    r"(?:/(?P<name>[^/]+))?$"
)
KINDS = {"secrets": ("v1", "Secret"), "leases": ("coordination.k8s.io/v1", "Lease"), "events": ("v1", "Event")}
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


def _content(obj: dict) -> dict:
    """What an update can change: all but the object's identity and version."""
    metadata = obj.get("metadata") or {}
    rest = {k: v for k, v in obj.items() if k not in ("metadata", "kind", "apiVersion") and v is not None}
    return {**rest, "labels": metadata.get("labels") or {}, "annotations": metadata.get("annotations") or {}}


@dataclass
class _WriteFault:
    method: str  # "POST" (create) or "PUT" (update)
    kind: str
    namespace: str
    name: str | None  # None: any name (an Event's is made up by its writer)
    remaining: int
    commit: bool  # make the write before losing its answer
    then: Callable[[], None] | None  # what happens meanwhile (a signal, another writer)
    answer: bool  # answer after all (`then` had its effect while the client waited), else drop

    def matches(self, method: str, kind: str, namespace: str, name: str) -> bool:
        return self.remaining > 0 and (self.method, self.kind, self.namespace) == (method, kind, namespace) and (
            self.name is None or self.name == name)


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
        self.objects: dict[tuple[str, str, str], dict] = {}  # (kind, namespace, name) -> API object
        self.forbidden: set[tuple[str, str]] = set()
        self.create_forbidden: set[tuple[str, str]] = set()  # (kind, namespace)
        self.faults: dict[tuple[str, str], str] = {}  # (namespace, name) -> "500" | "drop", on GET
        self.write_faults: list[_WriteFault] = []
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

    def _store(self, kind: str, namespace: str, name: str, obj: dict) -> dict:
        """Keep `obj` as the object, with a new resourceVersion (the lock held)."""
        self._resource_version += 1
        api_version, kind_name = KINDS[kind]
        obj = {**copy.deepcopy(obj), "kind": kind_name, "apiVersion": api_version}
        obj["metadata"] = {**(obj.get("metadata") or {}), "name": name, "namespace": namespace,
                           "resourceVersion": str(self._resource_version)}
        self.objects[(kind, namespace, name)] = obj
        return copy.deepcopy(obj)

    def put_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Create or replace a Secret; `data` values are plain text, stored base64 like the real API."""
        encoded = {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()}
        with self._lock:
            self._store("secrets", namespace, name, {"type": "Opaque", "data": encoded})

    def get_secret(self, namespace: str, name: str) -> dict | None:
        """A stored Secret with its `data` decoded to text (None if there is none), for assertions."""
        with self._lock:
            stored = copy.deepcopy(self.objects.get(("secrets", namespace, name)))
        if stored is None:
            return None
        stored["data"] = {k: base64.b64decode(v).decode("utf-8") for k, v in (stored.get("data") or {}).items()}
        return stored

    def put_lease(self, namespace: str, name: str, spec: dict | None = None) -> None:
        """Create or replace a Lease; without `spec`, as the chart makes it (no holder)."""
        with self._lock:
            self._store("leases", namespace, name, {} if spec is None else {"spec": spec})

    def get_lease(self, namespace: str, name: str) -> dict | None:
        with self._lock:
            return copy.deepcopy(self.objects.get(("leases", namespace, name)))

    def forbid(self, namespace: str, name: str) -> None:
        """Make GET of this Secret answer 403 Forbidden, as with RBAC that lacks `get` on it."""
        with self._lock:
            self.forbidden.add((namespace, name))

    def forbid_create(self, kind: str, namespace: str) -> None:
        """Make every create of `kind` in `namespace` answer 403 Forbidden, as with RBAC that lacks `create`."""
        with self._lock:
            self.create_forbidden.add((kind, namespace))

    def objects_of(self, kind: str, namespace: str) -> list[dict]:
        """The stored objects of `kind` in `namespace` (e.g. the Events), for assertions."""
        with self._lock:
            return [copy.deepcopy(obj) for (k, ns, _), obj in self.objects.items() if (k, ns) == (kind, namespace)]

    def fail(self, namespace: str, name: str, fault: str) -> None:
        """Make GET of this Secret or Lease answer 500 InternalError ("500"), or close the connection
        unanswered ("drop"), from now on."""
        assert fault in ("500", "drop"), fault
        with self._lock:
            self.faults[(namespace, name)] = fault

    def after_write(
        self, method: str, kind: str, namespace: str, name: str | None, *, count: int = 1, commit: bool = True,
        then: Callable[[], None] | None = None, answer: bool = False,
    ) -> None:
        """The next `count` writes (`method` POST or PUT) of this object: made (unless `commit` is
        False), then `then()` runs while the client waits, then the connection is closed unanswered
        (or, with `answer`, the answer is sent after all): an answer lost after the apiserver acted.
        `name` None: a create of any name."""
        assert method in ("POST", "PUT") and kind in KINDS, (method, kind)
        with self._lock:
            self.write_faults.append(_WriteFault(method, kind, namespace, name, count, commit, then, answer))

    def _take_write_fault(self, method: str, kind: str, namespace: str, name: str) -> _WriteFault | None:
        with self._lock:
            for fault in self.write_faults:
                if fault.matches(method, kind, namespace, name):
                    fault.remaining -= 1
                    return fault
        return None


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

    def _drop(self) -> None:
        self.close_connection = True
        self.request.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:
        match = OBJECT_PATH.match(self.path.split("?", 1)[0])
        with self.owner._lock:
            fault = match and match["name"] and self.owner.faults.get((match["namespace"], match["name"]))
        if fault == "drop":
            self._record(0)
            return self._drop()
        if fault == "500":
            self._record(500)
            return self._send(500, status_body(500, "InternalError", "Internal error occurred: injected by the stub"))
        status, body = self._route()
        self._record(status)
        self._send(status, body)

    def do_POST(self) -> None:
        self._write()

    def do_PUT(self) -> None:
        self._write()

    def _route(self) -> tuple[int, dict]:
        if not BEARER.match(self.headers.get("Authorization", "")):
            return 401, status_body(401, "Unauthorized", "Unauthorized")
        match = OBJECT_PATH.match(self.path.split("?", 1)[0])
        if not match or not match["name"]:
            return 404, status_body(404, "NotFound", "the server could not find the requested resource", {})
        kind, namespace, name = match["kind"], match["namespace"], match["name"]
        details = {"name": name, "kind": kind}
        with self.owner._lock:
            forbidden = (namespace, name) in self.owner.forbidden
            stored = copy.deepcopy(self.owner.objects.get((kind, namespace, name)))
        if forbidden:
            message = (
                f'{kind} "{name}" is forbidden: User "system:serviceaccount:{namespace}:canary" '
                f'cannot get resource "{kind}" in API group "" in the namespace "{namespace}"'
            )
            return 403, status_body(403, "Forbidden", message, details)
        if stored is None:
            return 404, status_body(404, "NotFound", f'{kind} "{name}" not found', details)
        return 200, stored

    def _write(self) -> None:
        """A create (POST to the collection) or an update (PUT to the object), with the apiserver's
        409s; an `after_write` fault makes it and loses its answer."""
        match = OBJECT_PATH.match(self.path.split("?", 1)[0])
        if not BEARER.match(self.headers.get("Authorization", "")):
            self._record(401)
            return self._send(401, status_body(401, "Unauthorized", "Unauthorized"))
        creating = self.command == "POST"
        if not match or bool(match["name"]) == creating:
            return self._not_allowed()
        obj = json.loads(self._body() or b"{}")
        kind, namespace = match["kind"], match["namespace"]
        name = (obj.get("metadata") or {}).get("name", "") if creating else match["name"]
        with self.owner._lock:
            refused = creating and (kind, namespace) in self.owner.create_forbidden
        if refused:
            message = (f'{kind} is forbidden: User "system:serviceaccount:{namespace}:canary" cannot create resource '
                       f'"{kind}" in API group "" in the namespace "{namespace}"')
            self._record(403)
            return self._send(403, status_body(403, "Forbidden", message, {"kind": kind}))
        if kind == "events" and (obj.get("involvedObject") or {}).get("namespace", namespace) != namespace:
            self._record(422)
            message = f'Event "{name}" is invalid: involvedObject.namespace: Invalid value: does not match event.namespace'
            return self._send(422, status_body(422, "Invalid", message, {"name": name, "kind": "Event"}))
        fault = self.owner._take_write_fault(self.command, kind, namespace, name)
        if fault is None or fault.commit:
            status, body = self._apply(kind, namespace, name, obj, creating)
        else:
            status, body = 0, {}
        if fault is not None:
            if fault.then is not None:
                fault.then()
            if not fault.answer:
                self._record(0)
                return self._drop()
        self._record(status)
        self._send(status, body)

    def _apply(self, kind: str, namespace: str, name: str, obj: dict, creating: bool) -> tuple[int, dict]:
        details = {"name": name, "kind": kind}
        with self.owner._lock:
            stored = self.owner.objects.get((kind, namespace, name))
            if creating:
                if stored is not None:
                    return 409, status_body(409, "AlreadyExists", f'{kind} "{name}" already exists', details)
                return 201, self.owner._store(kind, namespace, name, obj)
            if stored is None:
                return 404, status_body(404, "NotFound", f'{kind} "{name}" not found', details)
            sent = (obj.get("metadata") or {}).get("resourceVersion")
            if sent and sent != stored["metadata"]["resourceVersion"]:
                message = (f'Operation cannot be fulfilled on {kind} "{name}": the object has been modified; '
                           "please apply your changes to the latest version and try again")
                return 409, status_body(409, "Conflict", message, details)
            if _content(obj) == _content(stored):  # as the apiserver: nothing to write, the version stays
                return 200, copy.deepcopy(stored)
            return 200, self.owner._store(kind, namespace, name, obj)

    def _not_allowed(self) -> None:
        self._record(405)
        message = "the server does not allow this method on the requested resource"
        self._send(405, status_body(405, "MethodNotAllowed", message))

    do_PATCH = do_DELETE = _not_allowed

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
