"""The transport's promises (app/transport.py), at its seams and through whole runs:

1. Credentials belong to the hub's origin. The token (and the hub's cookies) go to the scheme, host
   and port of --hub-url and nowhere else: not to a script JupyterLab's page loads from another
   origin, not to a redirect's target, not to a user's server on an origin of its own, on every
   check's path (verify, kernel and its websocket, notebook, storage, JupyterLab). The listener of
   the other origin (tests/fakehub.py's `OtherOrigin`) records every byte it is sent.
2. Every bound covers name resolution and connect: each address a name resolves to, after a slow
   resolution, and a connect in progress when the watchdog cuts. A black-holed address is a
   loopback listener whose backlog is full (`BlackHoles`): the kernel drops every further SYN, as a
   firewall does. Names are resolved by the injectable `Resolver` seam only: no DNS query is made.
3. The kernel's websocket takes the egress proxy that requests takes (HTTP_PROXY, HTTPS_PROXY,
   NO_PROXY): an HTTP CONNECT tunnel through a small proxy on loopback (`EgressProxy`).

The real-hub case of 1 (a JupyterLab template with a script of another origin) is in test_checks.py.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from app import secret, transport
from app.deadline import Deadline
from app.errors import HubUnavailable, KubernetesUnavailable
from app.exit_codes import ExitCode
from app.hub import HubClient
from tests.fakehub import FakeHub, OtherOrigin
from tests.test_faults import SLACK, TOKEN, canary
from tests.test_kernel import account

TIGHT = 1.0  # s beyond a budget that one request may take: thread start-up and scheduling, no more
MAX_HOLD = 60.0


# --- helpers: black holes, resolvers, an egress proxy ---


class BlackHoles:
    """Loopback addresses (127.0.0.3, .4, ...) on one port where a connect hangs, as at a black-holed
    address: a listener with a backlog of 0, filled by one connection that is never accepted, so the
    kernel drops every further SYN. Checked on creation: a connect there must time out."""

    def __init__(self, count: int = 2, port: int = 0):
        self._sockets: list[socket.socket] = []
        self.port = port
        self.addresses: list[tuple[str, int]] = []
        for number in range(3, 3 + count):
            host = f"127.0.0.{number}"
            server = socket.socket()
            server.bind((host, self.port))
            server.listen(0)
            self.port = server.getsockname()[1]
            self._sockets += [server, socket.create_connection((host, self.port), timeout=2)]
            self.addresses.append((host, self.port))
        with socket.socket() as probe:
            probe.settimeout(0.3)
            with pytest.raises(TimeoutError):
                probe.connect(self.addresses[0])

    def __enter__(self) -> BlackHoles:
        return self

    def __exit__(self, *exc: object) -> None:
        for sock in self._sockets:
            sock.close()


def resolving_to(addresses: list[tuple[str, int]], *, delay: float = 0.0, asked: list[str] | None = None):
    """A Resolver that answers every name with `addresses` (after `delay` s): no DNS query is made."""

    def resolve(host: str, port: int) -> list[tuple]:
        if asked is not None:
            asked.append(host)
        time.sleep(delay)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address) for address in addresses]

    return resolve


def numeric_only(host: str, port: int) -> list[tuple]:
    """A Resolver that knows no names (only numeric addresses): whatever the canary connects to by name fails."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)


class EgressProxy:
    """An HTTP proxy on loopback, as an egress proxy: CONNECT tunnels (what a websocket and HTTPS take)
    and absolute-form requests (requests' http:// through a proxy), one request per connection. It
    resolves `localhost` itself, to 127.0.0.1; with `refuse_connect`, it answers CONNECT 403. `seen`
    lists each request line ("CONNECT host:port", "GET http://..."). Bounded by MAX_HOLD."""

    def __init__(self, *, refuse_connect: bool = False, on_connect: str = "tunnel"):
        self.refuse_connect = refuse_connect  # answer CONNECT 403, as a proxy whose policy forbids the target
        # Else what it does with a CONNECT: "tunnel", or misbehave (see CONNECT_FAULTS).
        self.on_connect = on_connect
        self.connect_heads: list[bytes] = []  # every CONNECT request's head, as received
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self.seen: list[str] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="egress-proxy", daemon=True)

    def __enter__(self) -> EgressProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
        self._thread.join(5)

    def _keep(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(MAX_HOLD)
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(self._keep(client),), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            line, *headers = head.decode("latin-1").split("\r\n")
            method, target, version = line.split(" ")
            with self._lock:
                self.seen.append(f"{method} {target}")
            if method == "CONNECT":
                with self._lock:
                    self.connect_heads.append(head)
            if method == "CONNECT" and self.refuse_connect:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            if method == "CONNECT" and self.on_connect != "tunnel":
                return self._misbehave(client)
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream = self._keep(socket.create_connection((self._address(host), int(port))))
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                parts = urlsplit(target)
                upstream = self._keep(socket.create_connection((self._address(parts.hostname), parts.port or 80)))
                kept = [h for h in headers if h.split(":")[0].lower() not in ("connection", "proxy-connection", "keep-alive")]
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                forwarded = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""])
                upstream.sendall(forwarded.encode("latin-1"))
            if rest:
                upstream.sendall(rest)
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
            _pump(client, upstream)

    def _misbehave(self, client: socket.socket) -> None:
        """Answer CONNECT as CONNECT_FAULTS[self.on_connect] says: bytes then close, or hold, or trickle."""
        answer = CONNECT_FAULTS[self.on_connect]
        if answer == b"silent":
            time.sleep(MAX_HOLD)  # the TCP connection stays open; the client must give up first
        elif answer == b"trickle":
            began = time.monotonic()
            for byte in b"HTTP/1.1 200 Connection established\r\nX-Trickle: " + b"." * 10_000:
                if time.monotonic() - began > MAX_HOLD:
                    break
                client.sendall(bytes([byte]))
                time.sleep(0.2)
        else:
            client.sendall(answer)

    @staticmethod
    def _address(host: str | None) -> str:
        return "127.0.0.1" if host in ("localhost", "127.0.0.1") else str(host)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


# What a misbehaving proxy answers to CONNECT (EgressProxy(on_connect=...)), and then it closes.
CONNECT_FAULTS = {
    "407": b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"egress\"\r\n"
           b"Content-Length: 0\r\n\r\n",
    "close": b"HTTP/1.1 200 Conn",  # closed mid-head
    "garbage": b"\x16\x03\x01\x00\xa5garbage\r\n\r\n",  # e.g. a TLS proxy port, spoken to in plain HTTP
    "empty": b"",
    "silent": b"silent",  # accepts, never answers
    "trickle": b"trickle",  # a byte every 0.2 s, never a complete head
}


@pytest.fixture
def proxy_environment(monkeypatch):
    """set(**variables): the proxy variables of the environment, every other spelling of them removed."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)

    def set_variables(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    return set_variables


def notebook_file(path) -> str:
    path.write_text(json.dumps({
        "nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3", "display_name": "python3"}},
        "cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": ["print(42)"]}],
    }))
    return str(path)


# --- 1. credentials belong to the hub's origin (issue 19, item 3) ---


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("http://hub.example.org/hub/api/", True),
        ("http://HUB.example.org:80/user/x/", True),  # the host's case and the scheme's default port
        ("ws://hub.example.org/user/x/api/kernels/1/channels", True),  # a websocket counts as its HTTP scheme
        ("https://hub.example.org/", False),
        ("http://hub.example.org:8080/", False),
        ("http://cdn.example.org/hub.example.org/", False),
        ("http://hub.example.org.evil.org/", False),
        ("//hub.example.org/", False),  # no scheme: no origin
        ("http://hub.example.org:notaport/", False),
        ("http://hub.example.org./", False),  # a trailing dot: another name to a cookie jar and a TLS check
        ("http://hub.example.org@cdn.example.org/", False),  # the hub's name as the user
        ("http://user@hub.example.org/", True),
        ("http://hub.example.org%2F@cdn.example.org/", False),
        # urlsplit reads hub.example.org (after the "@"), requests sends to cdn.example.org (a "\\" ends its host)
        ("http://cdn.example.org\\@hub.example.org/", False),
        ("http://cdn.example.org:80\\@hub.example.org/", False),
    ],
)
def test_an_origin_is_scheme_host_and_port(url, same):
    client = HubClient("http://hub.example.org/", TOKEN, request_timeout=5)
    assert client.is_own_origin(url) is same
    assert ("Authorization" in client.headers_for(url)) is same
    client.close()


@pytest.mark.parametrize(
    ("hub", "url", "same"),
    [
        ("https://hub.example.org/", "http://hub.example.org/user/x/static/a.js", False),  # a scheme downgrade
        ("https://hub.example.org/", "https://hub.example.org:443/user/x/", True),
        ("https://hub.example.org/", "wss://hub.example.org/user/x/api/kernels/1/channels", True),
        ("https://hub.example.org/", "ws://hub.example.org/user/x/api/kernels/1/channels", False),
        ("http://127.0.0.1/", "http://127.0.0.1:80/x", True),
        ("http://[::1]:8000/", "http://[::1]:8000/x", True),
        ("http://[::1]:8000/", "http://[::1]/x", False),
        ("http://[::1]:8000/", "http://[0:0::1]:8000/x", False),  # the same address spelled otherwise: not assumed
        ("http://localhost:8000/", "http://localhost.:8000/x", False),
        ("http://localhost:8000/", "http://LOCALHOST:8000/x", True),
        # An IDNA name: requests sends to its ASCII form, whichever way it is written.
        ("http://hüb.example.org/", "http://hüb.example.org/user/x/", True),
        ("http://hüb.example.org/", "ws://HÜB.example.org/user/x/", True),
        ("http://hüb.example.org/", "http://xn--hb-xka.example.org/user/x/", True),
        ("http://hüb.example.org/", "http://hub.example.org/user/x/", False),
    ],
)
def test_an_origin_is_read_the_same_way_for_any_hub(hub, url, same):
    client = HubClient(hub, TOKEN, request_timeout=5)
    assert client.is_own_origin(url) is same
    assert ("Authorization" in client.headers_for(url)) is same
    client.close()


def test_cookies_set_by_another_origin_are_not_kept_nor_sent_to_the_hub():
    with OtherOrigin(host="127.0.0.1") as own, OtherOrigin(host="127.0.0.1", cookie="tracker=0th3r") as other:
        client = HubClient(own.url, TOKEN, request_timeout=5)
        try:
            client.request("GET", other.url + "a.js", Deadline(5))
            client.request("GET", other.url + "b.js", Deadline(5))
            client.request("GET", own.url + "hub/api/", Deadline(5))
        finally:
            client.close()
        assert b"0th3r" not in own.received and b"Cookie" not in own.received
        assert b"Cookie" not in other.received  # not even back to the origin that set it


def test_a_netrc_entry_for_the_hub_never_replaces_the_token(tmp_path, monkeypatch):
    """requests adds a ~/.netrc's credentials to a request that has no auth of its own: on the hub's
    origin they replaced the token's Authorization header (Basic instead), and the run failed."""
    with OtherOrigin(host="127.0.0.1") as own:
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login someone password n3trc-s3cret\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        client = HubClient(own.url, TOKEN, request_timeout=5)
        try:
            client.request("GET", own.url + "hub/api/", Deadline(5))
        finally:
            client.close()
        assert f"Authorization: token {TOKEN}".encode() in own.received
        assert b"Basic" not in own.received


def test_the_pushgateway_never_gets_the_token(tmp_path):
    """The push is prometheus_client's own request, not the hub's session: nothing of the token goes with it."""
    with OtherOrigin() as pushgateway, FakeHub(spawn="ready") as fake:
        run, _ = canary(fake, tmp_path, "--attempts", "1", "--pushgateway-url", pushgateway.url)
        assert run.exit_code == ExitCode.OK, run.output
        assert any(line.startswith("PUT /metrics/job/") or line.startswith("POST /metrics/job/")
                   for line in pushgateway.request_lines()), pushgateway.request_lines()
        assert TOKEN.encode() not in pushgateway.received and b"Authorization" not in pushgateway.received


def test_the_token_and_the_hubs_cookies_go_to_its_origin_only():
    """Another port of the hub's own host is another origin: a cookie jar would send the hub's cookies
    there (cookies know no ports); the transport sends neither cookies nor the token."""
    with OtherOrigin(host="127.0.0.1", cookie="hub-session=c00k1e") as own, OtherOrigin(host="127.0.0.1") as other:
        client = HubClient(own.url, TOKEN, request_timeout=5)
        try:
            client.request("GET", own.url + "hub/api/", Deadline(5))
            client.request("GET", own.url + "hub/api/again", Deadline(5))
            client.request("GET", other.url + "script.js", Deadline(5))
            client.request("POST", other.url + "collect", Deadline(5), json={})
        finally:
            client.close()
        assert other.request_lines() == ["GET /script.js", "POST /collect"]
        assert TOKEN.encode() not in other.received and b"c00k1e" not in other.received
        assert b"Authorization" not in other.received and b"Cookie" not in other.received
        # The hub itself still gets both.
        assert own.received.count(f"Authorization: token {TOKEN}".encode()) == 2
        assert b"Cookie: hub-session=c00k1e" in own.received


def fake_with_server_elsewhere(fake: FakeHub, stack: contextlib.ExitStack) -> OtherOrigin:
    """The fake hub's servers on an origin of their own (relayed to the fake hub), as with subdomain_host."""
    port = urlsplit(fake.url).port
    other = stack.enter_context(OtherOrigin(relay_to=("127.0.0.1", port)))
    fake.server_origin = other.url.rstrip("/")
    return other


@pytest.mark.parametrize(
    ("checks", "path", "exit_code"),
    [
        pytest.param((), "GET /user/canary/api/status", ExitCode.OK, id="verify"),
        # The fake hub's kernels have no websocket: the check fails there, after its handshake went.
        pytest.param(("--check-kernel",), "GET /user/canary/api/kernels/", ExitCode.KERNEL_FAILED, id="kernel"),
        pytest.param(("--notebook",), "GET /user/canary/api/kernels/", ExitCode.NOTEBOOK_FAILED, id="notebook"),
        pytest.param(("--check-storage",), "PUT /user/canary/api/contents/", ExitCode.OK, id="storage"),
        pytest.param(("--check-lab",), "GET /user/canary/lab", ExitCode.OK, id="lab"),
    ],
)
def test_no_check_sends_the_token_to_a_server_on_another_origin(tmp_path, checks, path, exit_code):
    if checks == ("--notebook",):
        checks = ("--notebook", notebook_file(tmp_path / "n.ipynb"))
    with contextlib.ExitStack() as stack:
        fake = stack.enter_context(FakeHub(spawn="ready"))
        other = fake_with_server_elsewhere(fake, stack)
        run, _ = canary(fake, tmp_path, "--attempts", "1", *checks)
        lines = other.request_lines()
        assert run.exit_code == exit_code, run.output
        assert any(line.startswith(path) for line in lines), lines  # the check's requests went there
        assert TOKEN.encode() not in other.received and b"Authorization" not in other.received
        (withheld,) = run.named("credentials_withheld")
        assert withheld["origin"] == other.url.rstrip("/")
        assert fake.servers == {}


@pytest.mark.parametrize(
    ("checks", "method", "path", "exit_code"),
    [
        pytest.param((), "GET", r"/api/status$", ExitCode.SERVER_UNREACHABLE, id="verify"),
        pytest.param(("--check-kernel",), "POST", r"/api/kernels$", ExitCode.KERNEL_FAILED, id="kernel"),
        pytest.param(("--check-storage",), "PUT", r"/api/contents/", ExitCode.STORAGE_FAILED, id="storage"),
        pytest.param(("--check-lab",), "GET", r"/lab$", ExitCode.LAB_FAILED, id="lab-page"),
        pytest.param(("--check-lab",), "GET", r"/main\.js$", ExitCode.LAB_FAILED, id="lab-bundle"),
        pytest.param((), "GET", r"/hub/api/users/canary$", ExitCode.HUB_UNAVAILABLE, id="user-model"),
    ],
)
def test_a_redirect_from_the_hub_to_another_origin_is_not_followed(tmp_path, checks, method, path, exit_code):
    with OtherOrigin() as other, FakeHub(spawn="ready") as fake:
        fake.fault(method, path, "redirect", location=other.url + "login?next=/", count=-1)
        run, _ = canary(fake, tmp_path, "--attempts", "1", "--stop-timeout", "3", *checks)
        assert run.exit_code == exit_code, run.output
        assert other.received == b"", other.request_lines()
        fake.servers.clear()


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("http://[::1", id="unclosed-ipv6"),  # urlsplit raises ValueError
        pytest.param("http://[::1]:notaport/", id="port-no-number"),
        pytest.param("http://a\x7fb/%zz/\u00e9", id="odd-bytes"),
        pytest.param("\x1b[31m" + "A" * 20_000, id="escape-and-long"),
    ],
)
def test_a_redirect_with_a_garbage_location_is_an_answer_like_any_other(tmp_path, location):
    """Never followed, and never read as a URL: requests builds the next request of a redirect it does not
    follow (Response.next), and a Location urlsplit refuses raised a ValueError there (exit 1)."""
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", r"/api/status$", "redirect", location=location, count=-1)
        run, _ = canary(fake, tmp_path, "--attempts", "1", "--stop-timeout", "3")
        assert run.exit_code == ExitCode.SERVER_UNREACHABLE, run.output
        assert "answered 302" in run.result["message"]
        assert fake.servers == {}


@pytest.mark.parametrize("scheme", ["ws", "http"])
def test_a_redirect_of_the_kernels_websocket_is_not_followed(tmp_path, scheme):
    """websocket-client follows a handshake's 3xx itself (ws:// and wss:// targets), with the headers it
    was given and on a connection of its own: neither the token nor the connect may go there."""
    with OtherOrigin() as other, FakeHub(spawn="ready") as fake:
        location = other.url.replace("http", scheme, 1) + "login?next=/"
        fake.fault("GET", r"/channels$", "redirect", location=location, count=-1)
        run, _ = canary(fake, tmp_path, "--attempts", "1", "--check-kernel")
        assert other.received == b"", other.request_lines()
        assert run.exit_code == ExitCode.KERNEL_FAILED, run.output
        assert f"HTTP 302 (a redirect to {other.url.replace('http', scheme, 1).rstrip('/')}, not followed)" in run.output
        assert fake.kernels == []


@pytest.mark.parametrize(
    "script",
    [
        pytest.param("{other}analytics.js?id=1", id="absolute"),
        pytest.param("//{other_host}analytics.js", id="scheme-relative"),
        # A "\\" ends the host for requests (urllib3) but not for urlsplit: `http://other\\@hub/` read as the
        # hub's origin, sent to the other one (with the token, before the fix).
        pytest.param("{other_bare}\\@{hub_host}x.js", id="backslash-spoof"),
    ],
)
def test_a_jupyterlab_script_of_another_origin_is_not_fetched_and_is_logged(tmp_path, script):
    with OtherOrigin() as other, FakeHub(spawn="ready") as fake:
        fake.lab_scripts = (script.format(other=other.url, other_bare=other.url.rstrip("/"),
                                          other_host=other.url.removeprefix("http://"),
                                          hub_host=fake.url.removeprefix("http://")),)
        run, _ = canary(fake, tmp_path, "--check-lab", "--attempts", "1")
        assert other.received == b"", other.request_lines()
        assert run.exit_code == ExitCode.OK, run.output
        (skipped,) = run.named("lab_assets_not_fetched")
        assert skipped["origins"] == [other.url.rstrip("/")] and skipped["assets"] == 1
        served = run.named("lab_served")[0]
        assert (served["assets"], served["not_fetched"]) == (2, 1)


# --- 2. every bound covers name resolution and connect (issue 19, item 7) ---


def failing_request(client: HubClient, url: str, deadline: Deadline, **kwargs) -> float:
    started = time.monotonic()
    with pytest.raises(HubUnavailable):
        client.request("GET", url, deadline, **kwargs)
    return time.monotonic() - started


def test_every_address_a_name_resolves_to_is_within_the_budget():
    """The second address's connect is watched too: the budget's end cuts it (it took 5 s on a 3 s budget)."""
    with BlackHoles(3) as holes:
        client = HubClient(f"http://hub.test:{holes.port}/", TOKEN, request_timeout=2.5,
                           resolver=resolving_to(holes.addresses))
        elapsed = failing_request(client, client.api_url, Deadline(3))
    assert elapsed < 3 + TIGHT, f"took {elapsed:.1f}s with a budget of 3s"


def test_an_address_of_a_family_the_host_lacks_is_skipped_like_any_address_that_fails():
    """getaddrinfo gives ::1 before 127.0.0.1 for localhost even where IPv6 is off (socket() then fails with
    EAFNOSUPPORT): the next address is tried, as urllib3's own connect does."""
    unusable = (255, socket.SOCK_STREAM, 0, "", ("::1", 0))  # a family no socket can be made of
    with FakeHub(spawn="ready") as fake:
        port = urlsplit(fake.url).port
        usable = resolving_to([("127.0.0.1", port)])

        def resolve(host: str, port: int) -> list[tuple]:
            return [unusable, *usable(host, port)]

        client = HubClient(f"http://hub.test:{port}/", TOKEN, request_timeout=5, resolver=resolve)
        try:
            assert client.version(Deadline(5)) == fake.version
            with client.watchdog(Deadline(5)) as watchdog:
                client.websocket_socket(f"ws://hub.test:{port}/x", watchdog).close()
        finally:
            client.close()


def test_one_tries_connect_covers_every_address_within_the_request_timeout():
    with BlackHoles(3) as holes:
        client = HubClient(f"http://hub.test:{holes.port}/", TOKEN, request_timeout=2,
                           resolver=resolving_to(holes.addresses))
        elapsed = failing_request(client, client.api_url, Deadline(30), tries=1)
    assert elapsed < 2 + TIGHT, f"one try took {elapsed:.1f}s with --request-timeout 2"


def test_a_slow_resolution_leaves_the_connect_only_what_is_left_of_the_budget():
    with BlackHoles(1) as holes:
        client = HubClient(f"http://hub.test:{holes.port}/", TOKEN, request_timeout=30,
                           resolver=resolving_to(holes.addresses, delay=2.5))
        elapsed = failing_request(client, client.api_url, Deadline(3))
    assert elapsed < 3 + TIGHT, f"took {elapsed:.1f}s with a budget of 3s (2.5 s of it resolving)"


def test_the_watchdogs_cut_ends_a_connect_in_progress():
    """A stream's owner ends it early with `cut` (the spawn's progress, app/spawn_progress.py): a
    connect that is still waiting for its SYN's answer ends then too, not at its timeout."""
    with BlackHoles(1) as holes:
        client = HubClient(f"http://hub.test:{holes.port}/", TOKEN, request_timeout=30,
                           resolver=resolving_to(holes.addresses))
        deadline = Deadline(20)
        with client.watchdog(deadline) as watchdog:
            threading.Timer(1.0, watchdog.cut).start()
            elapsed = failing_request(client, client.api_url, deadline, watchdog=watchdog, tries=1)
    assert elapsed < 1 + TIGHT, f"took {elapsed:.1f}s after a cut at 1s"


def test_the_watchdogs_cut_ends_a_name_resolution_in_progress():
    with BlackHoles(1) as holes:
        client = HubClient(f"http://hub.test:{holes.port}/", TOKEN, request_timeout=30,
                           resolver=resolving_to(holes.addresses, delay=10))
        deadline = Deadline(20)
        with client.watchdog(deadline) as watchdog:
            threading.Timer(1.0, watchdog.cut).start()
            elapsed = failing_request(client, client.api_url, deadline, watchdog=watchdog, tries=1)
    assert elapsed < 1 + TIGHT, f"took {elapsed:.1f}s after a cut at 1s"


def test_a_run_whose_hub_resolves_slowly_to_black_holes_is_20_within_the_deadline(tmp_path, monkeypatch):
    """The preflight's budget is --deadline less --stop-timeout (6 s): 4 s of it resolving, the connect gets the rest."""
    with BlackHoles(2) as holes:
        monkeypatch.setattr(transport, "system_resolver", resolving_to(holes.addresses, delay=4))
        started = time.monotonic()
        from tests.runner import run_main

        run = run_main(["--hub-url", f"http://hub.test:{holes.port}/", "--user", "canary", "--deadline", "8",
                        "--stop-timeout", "2", "--termination-log", str(tmp_path / "term")], env={"JUPYTERHUB_API_TOKEN": TOKEN})
        elapsed = time.monotonic() - started
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    assert elapsed < 6 + TIGHT, f"took {elapsed:.1f}s with --deadline 8 --stop-timeout 2"
    run.assert_no_secret(TOKEN)


def test_a_stop_whose_hub_now_resolves_slowly_to_a_black_hole_ends_at_the_stop_timeout(tmp_path, monkeypatch):
    """The hub's name moves to a black-holed address after the verify (a DNS change, a dead load
    balancer): the stop's requests, resolution and connect included, end with --stop-timeout."""
    with FakeHub(spawn="ready") as fake, BlackHoles(1, port=urlsplit(fake.url).port) as holes:
        moved = threading.Event()
        hub = resolving_to([("127.0.0.1", holes.port)])
        gone = resolving_to(holes.addresses, delay=4)
        monkeypatch.setattr(transport, "system_resolver", lambda host, port: (gone if moved.is_set() else hub)(host, port))
        # The stop's first request finds its kept-alive connection reset: it needs a new one.
        fake.fault("GET", r"/api/status$", "signal",
                   call=lambda: (moved.set(), fake.fault("GET", r"^/hub/api/users/canary$", "reset")))
        started = time.monotonic()
        from tests.runner import run_main

        run = run_main(["--hub-url", fake.url.replace("127.0.0.1", "hub.test"), "--user", "canary", "--attempts", "1",
                        "--stop-timeout", "5", "--termination-log", str(tmp_path / "term")],
                       env={"JUPYTERHUB_API_TOKEN": TOKEN})
        elapsed = time.monotonic() - started
        fake.servers.clear()
    assert run.exit_code == ExitCode.STOP_FAILED, run.output
    assert elapsed < 5 + SLACK, f"took {elapsed:.1f}s with --stop-timeout 5"
    run.assert_no_secret(TOKEN)


def test_the_kubernetes_clients_connect_is_bounded_the_same_way(tmp_path, monkeypatch):
    """watch_pools gives the kubernetes client the same connect: a slow name, then a black hole."""
    with BlackHoles(1) as holes:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [
                {"name": "c", "cluster": {"server": f"https://kube.test:{holes.port}", "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": "u", "user": {"token": TOKEN}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        }))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setattr(transport, "system_resolver", resolving_to(holes.addresses, delay=2.5))
        import kubernetes.client  # noqa: F401 - imported before the clock starts: it takes seconds on a busy machine

        started = time.monotonic()
        with pytest.raises(KubernetesUnavailable):
            secret.read_secret_token("s", "k", "ns", Deadline(3), request_timeout=30)
        elapsed = time.monotonic() - started
    assert elapsed < 3 + TIGHT, f"took {elapsed:.1f}s with a budget of 3s (2.5 s of it resolving)"


# --- 3. the kernel's websocket takes the egress proxy requests takes (issue 19, item 11b) ---


def test_the_websockets_proxy_is_the_one_requests_takes(proxy_environment):
    proxy_environment(HTTP_PROXY="http://proxy.test:3128", HTTPS_PROXY="http://tls-proxy.test:3128", NO_PROXY="")
    client = HubClient("http://hub.test/", TOKEN, request_timeout=5)
    for url in ("ws://hub.test/a", "wss://hub.test/a", "http://hub.test/a"):
        expected = requests.utils.select_proxy(url.replace("ws", "http", 1), requests.utils.get_environ_proxies(
            url.replace("ws", "http", 1)))
        assert client.proxy_for(url) == expected
    assert client.proxy_for("ws://hub.test/a") == "http://proxy.test:3128"
    assert client.proxy_for("wss://hub.test/a") == "http://tls-proxy.test:3128"
    proxy_environment(NO_PROXY="hub.test")
    assert client.proxy_for("ws://hub.test/a") is None and client.proxy_for("wss://hub.test/a") is None
    client.close()


@pytest.mark.hub
def test_the_kernel_check_goes_through_the_egress_proxy_like_the_rest_calls(hub, hub_user, tmp_path, monkeypatch,
                                                                            proxy_environment):
    """The canary resolves no names here: `localhost` is known to the proxy only, as behind an egress proxy
    the hub's name resolves (and routes) only there."""
    from tests.runner import run_main

    user, token = account(hub, hub_user())
    hub_url = hub.url.replace("127.0.0.1", "localhost")
    port = urlsplit(hub_url).port
    monkeypatch.setattr(transport, "system_resolver", numeric_only)
    with EgressProxy() as proxy:
        proxy_environment(HTTP_PROXY=proxy.url, HTTPS_PROXY=proxy.url, NO_PROXY="")
        run = run_main(["--hub-url", hub_url, "--user", user, "--check-kernel", "--attempts", "1",
                        "--termination-log", str(tmp_path / "term")], env={"JUPYTERHUB_API_TOKEN": token})
    run.assert_no_secret(token)
    assert run.exit_code == ExitCode.OK, run.output
    assert run.named("kernel_executed")[0]["output"] == "42"
    assert proxy.seen.count(f"CONNECT localhost:{port}") == 1, proxy.seen  # the websocket
    assert f"GET {hub_url}hub/api/" in proxy.seen and f"POST {hub_url}user/{user}/api/kernels" in proxy.seen


@pytest.mark.hub
def test_no_proxy_is_honoured_by_the_kernel_check_too(hub, hub_user, tmp_path, proxy_environment):
    from tests.runner import run_main

    user, token = account(hub, hub_user())
    with EgressProxy() as proxy:
        proxy_environment(HTTP_PROXY=proxy.url, HTTPS_PROXY=proxy.url, NO_PROXY="localhost,127.0.0.1")
        run = run_main(["--hub-url", hub.url, "--user", user, "--check-kernel", "--attempts", "1",
                        "--termination-log", str(tmp_path / "term")], env={"JUPYTERHUB_API_TOKEN": token})
    assert run.exit_code == ExitCode.OK, run.output
    assert proxy.seen == []


def test_a_wss_websocket_is_tunnelled_then_verified_as_the_hubs_requests_are(secret_stub, proxy_environment):
    """wss:// through the proxy: TLS inside the CONNECT tunnel, the certificate checked with --ca-bundle."""
    with EgressProxy() as proxy:
        proxy_environment(HTTPS_PROXY=proxy.url, NO_PROXY="")
        client = HubClient(secret_stub.url, TOKEN, request_timeout=5, verify=str(secret_stub.ca_file))
        deadline = Deadline(10)
        with client.watchdog(deadline) as watchdog:
            sock = client.websocket_socket(secret_stub.url.replace("https", "wss", 1).rstrip("/") + "/x", watchdog)
            assert sock.version() is not None  # the TLS handshake went through the tunnel
            sock.close()
        client.close()
    assert proxy.seen == [f"CONNECT {urlsplit(secret_stub.url).netloc}"]


def test_a_proxy_that_refuses_the_websockets_tunnel_fails_the_kernel_check_naming_its_answer(proxy_environment):
    from app.checks.kernel import KernelSession
    from app.errors import KernelFailed

    with FakeHub(spawn="ready") as fake, EgressProxy(refuse_connect=True) as proxy:
        proxy_environment(HTTP_PROXY=proxy.url, NO_PROXY="")
        client = HubClient(fake.url, TOKEN, request_timeout=5)
        check = KernelSession(client, "canary", f"{fake.url}user/canary/", kernel_name=None, timeout=10,
                            deadline=Deadline(20))
        with pytest.raises(KernelFailed) as failure:
            check.run()
        client.close()
        assert fake.kernels == [], "the kernel was not deleted"
    port = urlsplit(fake.url).port
    assert f"the proxy {proxy.url} answered 403 to CONNECT 127.0.0.1:{port}" in str(failure.value)
    assert f"POST {fake.url}user/canary/api/kernels" in proxy.seen  # the REST calls went through it too


@pytest.mark.parametrize("fault", sorted(CONNECT_FAULTS))
def test_a_proxy_that_misbehaves_on_the_websockets_connect_fails_the_kernel_check_within_its_budget(proxy_environment,
                                                                                                   fault):
    """Refused (407), cut mid-head, garbage, silent or trickling: the kernel check's failure (14), within
    --kernel-timeout, and the proxy never gets the hub's token in the CONNECT (no Proxy-Authorization
    of it, no Authorization)."""
    from app.checks.kernel import KernelSession
    from app.errors import KernelFailed

    with FakeHub(spawn="ready") as fake, EgressProxy(on_connect=fault) as proxy:
        proxy_environment(HTTP_PROXY=proxy.url, NO_PROXY="")
        client = HubClient(fake.url, TOKEN, request_timeout=30)
        check = KernelSession(client, "canary", f"{fake.url}user/canary/", kernel_name=None, timeout=3,
                            deadline=Deadline(20))
        started = time.monotonic()
        with pytest.raises(KernelFailed) as failure:
            check.run()
        elapsed = time.monotonic() - started
        client.close()
        assert fake.kernels == [], "the kernel was not deleted"
    assert elapsed < 3 + TIGHT, f"took {elapsed:.1f}s with --kernel-timeout 3"
    assert failure.value.exit_code == ExitCode.KERNEL_FAILED
    assert len(proxy.connect_heads) == 1, proxy.seen
    assert TOKEN.encode() not in proxy.connect_heads[0] and b"Authorization" not in proxy.connect_heads[0]
    if fault == "407":
        assert "answered 407 to CONNECT" in str(failure.value)


@pytest.mark.parametrize("fault", ["silent", "trickle"])
def test_an_https_requests_connect_through_a_proxy_that_never_answers_it_is_within_the_budget(proxy_environment, fault):
    """requests' own CONNECT tunnel (an https:// hub behind the egress proxy): the budget covers its handshake."""
    with EgressProxy(on_connect=fault) as proxy:
        proxy_environment(HTTPS_PROXY=proxy.url, NO_PROXY="")
        client = HubClient("https://hub.test/", TOKEN, request_timeout=30, resolver=numeric_only)
        elapsed = failing_request(client, client.api_url, Deadline(3))
        client.close()
    assert elapsed < 3 + TIGHT, f"took {elapsed:.1f}s with a budget of 3s"
    assert proxy.connect_heads and all(TOKEN.encode() not in head for head in proxy.connect_heads)


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_the_websocket_trusts_the_ca_bundle_of_the_environment_as_requests_does(secret_stub, monkeypatch, variable):
    """Without --ca-bundle, requests takes REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE: the websocket's TLS too."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(secret_stub.ca_file))
    client = HubClient(secret_stub.url, TOKEN, request_timeout=5)
    try:
        client.request("GET", secret_stub.url, Deadline(5))  # requests trusts it
        with client.watchdog(Deadline(5)) as watchdog:
            sock = client.websocket_socket(secret_stub.url.replace("https", "wss", 1).rstrip("/") + "/x", watchdog)
            assert sock.version() is not None
            sock.close()
    finally:
        client.close()
