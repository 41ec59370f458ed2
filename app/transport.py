"""How a request survives the network, apart from what the remote's answers mean (app/hub.py).

- A budget (a `Deadline`) bounds every request as a whole: name resolution, connect (every address
  a name resolves to), response headers, body and streams. A per-read timeout is not a budget (a
  peer that trickles bytes or sends keepalives resets it for ever), so a `Watchdog` shuts the
  request's connections down when the budget runs out - a connect in progress too: each socket is
  watched before it connects - and `fired` tells that the budget, not the peer, ended it. Name
  resolution (`getaddrinfo`, which no socket timeout covers) runs in a thread that is waited for
  only as long as the budget lasts. One try's connect timeout covers its resolution and every
  address tried: each connect gets what is left of it.
- Credentials belong to an origin: the `Transport` attaches them (the hub's token, its cookies) only
  to requests for its own origin (the scheme, host and port of its base URL, --hub-url), never to
  any other, and never follows a redirect. A request elsewhere goes without them, and is logged.
- Any network fault (refused, reset, cut mid-chunk, a body cut short, a stall) is a transport
  failure: retried while the budget lasts when it is safe, else `Unavailable` - never a crash.
- What is safe to send again: GET, HEAD, PUT and DELETE always; a POST (it mints, starts or
  creates something) only when it certainly did not reach the peer (no connection was made, the
  peer answered 429). After any other fault a POST's outcome is unknown (`OutcomeUnknown`):
  `post_once` asks the caller to find out what happened before it sends again.
- 429 honours Retry-After; 502/503/504 and transport faults back off exponentially with jitter.
- The proxy is requests' choice from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), for the
  kernel's websocket too (`Transport.websocket_socket`: an HTTP CONNECT tunnel).

The same watchdog bounds the Kubernetes client's requests (`watch_pools`, app/kube.py) and the
kernel's websocket (`Transport.websocket_socket`, app/checks/kernel.py).
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import functools
import http.client
import http.cookiejar
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import requests
import requests.adapters
import requests.utils
import tenacity
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.util

from app import logs
from app.deadline import Deadline
from app.errors import HubUnavailable

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Methods whose repetition does no harm: sending them again after any fault is safe.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Whatever the transport raises when a connection fails, is cut or stalls: requests wraps most of
# it, but a body read can surface urllib3's or http.client's own errors, or a bare OSError.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)
MAX_TRIES = 5
MAX_RESENDS = 3  # a POST whose outcome was unknown and found not to have happened, sent again
MAX_TUNNEL_HEAD = 65536  # bytes of a proxy's answer to CONNECT

# socket.getaddrinfo's shape, for (host, port): an injectable seam (tests block it locally).
Resolver = Callable[[str, int], list[tuple[Any, ...]]]
# (scheme, host, port): what credentials belong to. A websocket's scheme counts as its HTTP one.
Origin = tuple[str, str, int | None]

DEFAULT_PORTS = {"http": 80, "https": 443}
WEBSOCKET_SCHEMES = {"ws": "http", "wss": "https"}

log = logs.get_logger()
T = TypeVar("T")


def system_resolver(host: str, port: int) -> list[tuple[Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def origin(url: str) -> Origin | None:
    """The origin of `url` (scheme, host, port; the port by default of its scheme), or None when it has none.

    The host is the one the request is sent to, as requests writes it (urllib3's reading, an IDNA name
    in ASCII), where a "\\" ends the host, as in a browser. A URL that urlsplit reads otherwise
    (`http://other\\@hub/`: the hub to urlsplit, `other` to urllib3) has no origin: it is nobody's, and
    gets no credentials.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is no number
        return None
    scheme = WEBSOCKET_SCHEMES.get(parts.scheme.lower(), parts.scheme.lower())
    if not parts.hostname or scheme not in DEFAULT_PORTS:
        return None
    port = port or DEFAULT_PORTS[scheme]
    try:
        # urlsplit's host as urllib3 writes hosts, and the host and port urllib3 reads in the whole URL
        # (a websocket's as its HTTP scheme's: urllib3 normalises only those).
        read = urllib3.util.parse_url(f"{scheme}://[{parts.hostname}]" if ":" in parts.hostname else f"{scheme}://{parts.hostname}")
        sent = urllib3.util.parse_url(f"{scheme}:{url.strip().partition(':')[2]}")
    except ValueError:  # an authority urllib3 cannot read
        return None
    if not sent.host or sent.host != read.host or (sent.port or DEFAULT_PORTS[scheme]) != port:
        return None
    return scheme, sent.host.strip("[]"), port


def origin_text(url: str) -> str:
    """Where `url` goes (urllib3's reading, as requests sends it), for the log: scheme://host[:port],
    nothing of its user, path or query."""
    try:
        parts = urllib3.util.parse_url(url.strip())
    except ValueError:
        return "(an unreadable URL)"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme or ''}://{parts.host or ''}{port}"


class OutcomeUnknown(HubUnavailable):
    """A request that must not be sent twice failed in a way that does not tell whether it took effect."""


class ResolutionTimeout(OSError):
    """Name resolution did not finish within the budget (a DNS outage: getaddrinfo may hang)."""


class ProxyRefused(OSError):
    """The proxy did not open a tunnel for the websocket (its answer to CONNECT, or a proxy it cannot use)."""


def retry_after_seconds(response: requests.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _never_sent(exc: BaseException) -> bool:
    """The connection was never made (refused, no route, no name, connect timeout): nothing reached the peer."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # urllib3's NewConnectionError and NameResolutionError are ConnectTimeoutErrors too.
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


# --- the watchdog ---

_current = threading.local()  # the watchdog of the request this thread is making, if any


def _current_watchdog() -> Watchdog | None:
    return getattr(_current, "watchdog", None)


class Watchdog:
    """Bounds one request (or one websocket) by its budget, from name resolution to the body's last byte.

    Its timer runs while it is entered; while it is also `active()`, every connection this thread
    opens or reuses through a watched pool (`watch_pools`) is registered with it, before it connects.
    When the budget runs out, each is shut down (a connect in progress fails at once). It keeps a
    duplicate of each socket's descriptor: shutting that down ends the connection even after TLS has
    wrapped (and detached) the socket it was made from, and never touches a descriptor number that
    was closed and reused.
    """

    def __init__(self, deadline: Deadline, resolver: Resolver | None = None):
        self.deadline = deadline
        self.fired = False
        self._resolver = resolver or system_resolver
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._waits: list[threading.Event] = []  # name resolutions waited for: the cut ends them too
        self._timer = threading.Timer(deadline.for_wait(), self.cut)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The connections this thread opens or reuses in the block (through `watch_pools`) are watched."""
        outer = _current_watchdog()
        _current.watchdog = self
        try:
            yield
        finally:
            _current.watchdog = outer

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock`'s connection down when the budget runs out (at once if it has)."""
        try:
            duplicate = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return  # closed already
        with self._lock:
            self._sockets.append(duplicate)
            fired = self.fired
        if fired:
            _shutdown(duplicate)

    def cut(self) -> None:
        """Shut every watched connection down now: at the budget's end, or when its owner ends a stream early."""
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
            waits = list(self._waits)
        for sock in sockets:
            _shutdown(sock)
        for wait in waits:
            wait.set()

    def connecting(self, timeout: float | None) -> Deadline:
        """The budget of one connect, name resolution and every address: `timeout` (None: no cap) within
        this budget, and like any wait at least LAST_LOOK (app/deadline.py), as the watchdog's own timer."""
        return Deadline(self.deadline.for_wait(timeout), self.deadline.clock)

    def resolve(self, host: str, port: int, within: Deadline | None = None) -> list[tuple[Any, ...]]:
        """getaddrinfo, waited for only while `within` (else the whole budget) lasts and until a cut (a
        thread left behind ends on its own)."""
        found: list[list[tuple[Any, ...]]] = []
        failed: list[BaseException] = []
        done = threading.Event()

        def look_up() -> None:
            try:
                found.append(self._resolver(host, port))
            except Exception as exc:  # noqa: BLE001 - handed to the waiting thread
                failed.append(exc)
            done.set()

        with self._lock:
            if self.fired:
                done.set()
            self._waits.append(done)
        try:
            threading.Thread(target=look_up, name="resolve", daemon=True).start()
            done.wait((within or self.deadline).for_wait())
        finally:
            with self._lock:
                self._waits.remove(done)
        if failed:
            raise failed[0]
        if not found:
            raise ResolutionTimeout(f"resolving {host!r} took longer than the budget ({self.deadline.seconds:g}s)")
        return found[0]

    def connect_to(
        self,
        addresses: Sequence[tuple[Any, ...]],
        within: Deadline,
        *,
        options: Sequence[tuple[int, int, Any]] = (),
        source: tuple[str, int] | None = None,
    ) -> socket.socket:
        """A watched connection to the first of `addresses` (getaddrinfo's) that takes it, all within `within`.

        Each socket is watched before it connects, and each connect waits only for what is left of
        `within` after the resolution and the addresses before it. Raises the last address's error,
        or TimeoutError when the budget ran out (`fired` tells whether the watchdog cut it).
        """
        last: OSError | None = None
        for family, kind, proto, _, address in addresses:
            if self.fired or within.expired():
                break
            sock = None
            try:
                # Within the try: an address of a family this host lacks (::1 with IPv6 off) is skipped.
                sock = socket.socket(family, kind, proto)
                for level, name, value in options:
                    sock.setsockopt(level, name, value)
                self.watch(sock)
                sock.settimeout(within.remaining())
                if source:
                    sock.bind(source)
                sock.connect(address)
            except OSError as exc:
                if sock is not None:
                    sock.close()
                last = exc
                continue
            return sock
        if last is None or self.fired or within.expired():
            raise TimeoutError(f"no connection within the budget ({within.seconds:g}s)") from last
        raise last

    def connect(self, host: str, port: int, timeout: float | None = None) -> socket.socket:
        """A watched TCP connection to host:port (the websocket's, which no pool makes), name resolution
        and every address within `timeout` and the budget."""
        within = self.connecting(timeout)
        return self.connect_to(self.resolve(host, port, within), within)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Watched:
    """Mixed into urllib3's connection classes: the thread's current watchdog (if any) bounds name
    resolution and connecting, and sees each socket, new (before it connects) or kept alive."""

    _dns_host: str
    port: int
    host: str
    timeout: Any  # the connect timeout: seconds, None or urllib3's default sentinel
    socket_options: Sequence[tuple[int, int, Any]] | None
    source_address: tuple[str, int] | None
    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        watchdog = _current_watchdog()
        if watchdog is None:
            return super()._new_conn()  # type: ignore[misc]
        if watchdog.fired:
            raise urllib3.exceptions.ConnectTimeoutError(self, f"no time left to connect to {self.host}")
        within = watchdog.connecting(self.timeout if isinstance(self.timeout, int | float) else None)
        try:
            addresses = watchdog.resolve(self._dns_host, self.port, within)
        except OSError as exc:
            raise urllib3.exceptions.NameResolutionError(self.host, self, socket.gaierror(str(exc))) from exc  # type: ignore[arg-type]
        try:
            sock = watchdog.connect_to(addresses, within, options=self.socket_options or (), source=self.source_address)
        except TimeoutError as exc:
            raise urllib3.exceptions.ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={within.seconds:g}s)"
            ) from exc
        except OSError as exc:
            if watchdog.fired:
                raise urllib3.exceptions.ConnectTimeoutError(self, f"no time left to connect to {self.host}") from exc
            raise urllib3.exceptions.NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watchdog = _current_watchdog()
        if watchdog is not None and self.sock is not None:  # a kept-alive connection
            watchdog.watch(self.sock)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _HTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def watch_pools(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    """Make `manager`'s connections visible to the watchdog (requests', the kubernetes client's)."""
    manager.pool_classes_by_scheme = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}  # type: ignore[assignment]
    return manager


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        watch_pools(self.poolmanager)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        return watch_pools(super().proxy_manager_for(*args, **kwargs))


def hub_tls_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS settings of `verify` (requests' meaning: the hub's --ca-bundle, or none) for a connection
    no pool makes (the kernel's websocket)."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    import certifi  # requests' own default bundle

    # requests' order (Session.merge_environment_settings): REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, its own.
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    return ssl.create_default_context(cafile=bundle)


class _Session(requests.Session):
    """A session that never follows a redirect, nor prepares the request that would follow one: with
    allow_redirects=False requests still builds it (Response.next), reading the Location as a URL - a
    garbage one raised a ValueError there - and consuming and closing the redirect's answer."""

    def resolve_redirects(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return iter(())


def _session(*, cookies: bool) -> requests.Session:
    session = _Session()
    adapter = _WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # Never a ~/.netrc's credentials (requests adds them when no auth is given): on the hub's origin they
    # would replace the token's Authorization header; anywhere else they are not the canary's to send.
    session.auth = _no_auth
    if not cookies:
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))  # keeps none
    return session


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


# --- requests: retried while transient and safe, bounded by a budget ---


@dataclass
class _Call:
    """One request across its tries: what is sent, its budget, and each try's fault."""

    method: str
    url: str
    deadline: Deadline
    watchdog: Watchdog
    stream: bool
    resend_safe: bool
    kwargs: dict[str, Any]
    faults: list[BaseException] = field(default_factory=list)  # for the answer when the budget ran out between tries


class Transport:
    """A `requests` session whose every request is bounded by a budget and retried by the rules above.

    `credentials` (headers: the hub's token) go with a request only when its URL is of the base
    URL's origin, through the one session that keeps that origin's cookies; a request to any other
    origin goes through a session that has neither.
    """

    def __init__(
        self,
        base_url: str,
        *,
        request_timeout: float,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
        resolver: Resolver | None = None,
        credentials: Mapping[str, str] | None = None,
        user_agent: str | None = None,
    ):
        self.base_url = base_url
        self.origin = origin(base_url)
        self.request_timeout = request_timeout
        self.resolver = resolver
        self._sleep = sleep
        self._credentials = dict(credentials or {})
        self.session = _session(cookies=True)  # the base URL's origin only
        self._elsewhere = _session(cookies=False)  # any other origin: no credentials, no cookies
        if user_agent:
            self.session.headers["User-Agent"] = self._elsewhere.headers["User-Agent"] = user_agent
        self._withheld_from: set[Origin | None] = set()
        # Given with every request: a session-wide setting loses to REQUESTS_CA_BUNDLE in the environment.
        self.verify = verify

    def close(self) -> None:
        self.session.close()
        self._elsewhere.close()

    def watchdog(self, deadline: Deadline) -> Watchdog:
        return Watchdog(deadline, self.resolver)

    # --- origins: where the credentials may go ---

    def is_own_origin(self, url: str) -> bool:
        """`url` is of the base URL's origin (a ws:// or wss:// URL counts as its HTTP one)."""
        return self.origin is not None and origin(url) == self.origin

    def headers_for(self, url: str) -> dict[str, str]:
        """The headers a request to `url` carries: the User-Agent, and the credentials on the own origin only."""
        headers = {"User-Agent": str(self.session.headers["User-Agent"])}
        if self.is_own_origin(url):
            headers.update(self._credentials)
        else:
            self._withheld(url)
        return headers

    def _session_for(self, url: str, headers: Mapping[str, str] | None) -> tuple[requests.Session, dict[str, str]]:
        """The session for `url` and the request's headers: with the credentials on the own origin only."""
        if self.is_own_origin(url):
            return self.session, {**self._credentials, **(headers or {})}
        self._withheld(url)
        return self._elsewhere, dict(headers or {})

    def _withheld(self, url: str) -> None:
        """Log, once an origin, that a request goes there without the credentials."""
        where = origin(url)
        if self._credentials and where not in self._withheld_from:
            self._withheld_from.add(where)
            log.warning(
                "credentials_withheld", origin=origin_text(url), why="the canary's credentials go to --hub-url's origin only"
            )

    # --- the kernel's websocket: a connection no pool makes ---

    def proxy_for(self, url: str) -> str | None:
        """The proxy requests would take for `url` (ws:// and wss:// as http:// and https://): from
        HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY; None for none."""
        scheme, _, rest = url.partition("://")
        http_url = WEBSOCKET_SCHEMES.get(scheme.lower(), scheme.lower()) + "://" + rest
        settings = self._elsewhere.merge_environment_settings(http_url, {}, None, None, None)
        proxy = requests.utils.select_proxy(http_url, settings["proxies"])
        return requests.utils.prepend_scheme_if_needed(proxy, "http") if proxy else None

    def websocket_socket(self, url: str, watchdog: Watchdog) -> socket.socket:
        """A connection for the websocket at `url` (ws:// or wss://), ready for its handshake, watched by
        `watchdog` from name resolution on: through the proxy requests would take (an HTTP CONNECT
        tunnel), TLS-wrapped for wss:// as the hub's requests are (`verify`)."""
        parts = urlsplit(url)
        secure = parts.scheme.lower() == "wss"
        host, port = parts.hostname or "", parts.port or (443 if secure else 80)
        proxy = self.proxy_for(url)
        if proxy is None:
            sock = watchdog.connect(host, port, self.request_timeout)
        else:
            sock = self._tunnel(proxy, host, port, watchdog)
        sock.settimeout(watchdog.deadline.for_wait(self.request_timeout))  # per read; the watchdog bounds the whole
        if secure:
            sock = hub_tls_context(self.verify).wrap_socket(sock, server_hostname=host)
        return sock

    def _tunnel(self, proxy: str, host: str, port: int, watchdog: Watchdog) -> socket.socket:
        """A watched connection to host:port through an HTTP proxy's CONNECT tunnel."""
        parts = urlsplit(proxy)
        if parts.scheme.lower() != "http":
            raise ProxyRefused(
                f"the kernel's websocket goes through http:// proxies only, not {parts.scheme}:// ({origin_text(proxy)})"
            )
        sock = watchdog.connect(parts.hostname or "", parts.port or 80, self.request_timeout)
        sock.settimeout(watchdog.deadline.for_wait(self.request_timeout))
        try:
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
            if parts.username:
                user_password = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
                head += f"Proxy-Authorization: Basic {base64.b64encode(user_password).decode()}\r\n"
            sock.sendall((head + "\r\n").encode("latin-1"))
            status = _tunnel_status(sock)
        except BaseException:
            sock.close()
            raise
        if status != 200:
            sock.close()
            raise ProxyRefused(f"the proxy {origin_text(proxy)} answered {status} to CONNECT {target}")
        return sock

    def describe(self, response: requests.Response) -> str:
        """An error answer in a few words (the dialect, app/hub.py, knows better)."""
        try:
            text = " ".join(response.text.split())
        except TRANSPORT_ERRORS:
            text = ""
        return text[:200] or response.reason or ""

    # --- one request, its tries, and what they give ---

    def request(
        self,
        method: str,
        url: str,
        deadline: Deadline,
        *,
        stream: bool = False,
        idempotent: bool | None = None,
        tries: int | None = MAX_TRIES,
        watchdog: Watchdog | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """One request, retried while transient and safe to resend. Returns the last answer, whatever its status.

        Name resolution, connect, headers and the body are read within `deadline`; with `stream` the
        caller reads the body, bounded by the `watchdog` it passes (see `streaming`). `idempotent`
        defaults by method (see IDEMPOTENT); `tries=None` retries until the deadline. Raises
        HubUnavailable when the peer could not be reached, or still answered a transient status,
        after the retries or at the deadline; OutcomeUnknown when a request that is not idempotent
        may or may not have taken effect. Redirects are answers, never followed.
        """
        if watchdog is None:
            with self.watchdog(deadline) as own:
                return self.request(
                    method, url, deadline, stream=stream, idempotent=idempotent, tries=tries, watchdog=own, **kwargs
                )
        resend_safe = method.upper() in IDEMPOTENT if idempotent is None else idempotent
        call = _Call(method, url, deadline, watchdog, stream, resend_safe, kwargs)
        retrying = self._retrying(call, tries)
        try:
            response = retrying(self._send, call)
        except requests.exceptions.SSLError:
            # Not transient: the certificate will not change on its own. The text names the cause.
            raise self._unavailable(
                method, url, "TLS verification failed (set --ca-bundle to the hub's CA, or fix its certificate)"
            ) from None
        except TRANSPORT_ERRORS as exc:
            raise self._failed(call, exc, retrying.statistics.get("attempt_number", 1)) from None
        return self._transient_status_judged(call, response)

    def _send(self, call: _Call) -> requests.Response:
        """One try: the answer's head, and its body unless the caller streams it."""
        if call.watchdog.fired and call.faults:
            raise call.faults[-1]  # no new try on a spent budget: the last fault is the answer
        timeout = call.deadline.for_wait(self.request_timeout)
        session, headers = self._session_for(call.url, call.kwargs.get("headers"))
        try:
            with call.watchdog.active():
                response = session.request(
                    call.method, call.url, timeout=timeout, stream=True, allow_redirects=False, verify=self.verify,
                    **{**call.kwargs, "headers": headers},
                )
            if not call.stream:
                try:
                    response.content  # noqa: B018 - reads the body, within the budget
                except TRANSPORT_ERRORS:
                    response.close()
                    raise
        except TRANSPORT_ERRORS as exc:
            raise self._fault_of_try(call, exc) from None
        return response

    def _fault_of_try(self, call: _Call, exc: BaseException) -> BaseException:
        """What a try's transport fault counts as, remembered for the tries after it."""
        if call.watchdog.fired and call.faults and _never_sent(exc):
            return call.faults[-1]  # cut before it was sent: the last try's fault is the answer
        if call.watchdog.fired and not isinstance(exc, requests.exceptions.SSLError):
            # The budget, not the peer, ended it; the peer's last fault still says something.
            text = f"no complete answer within {call.deadline.seconds:g}s ({_fault(exc)})"
            exc = (requests.exceptions.ConnectTimeout if _never_sent(exc) else requests.Timeout)(text)
        call.faults.append(exc)
        return exc

    def _should_retry(self, call: _Call, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        assert outcome is not None
        if outcome.failed:
            exc = outcome.exception()
            tls = isinstance(exc, requests.exceptions.SSLError)
            return isinstance(exc, TRANSPORT_ERRORS) and not tls and (call.resend_safe or _never_sent(exc))
        status = outcome.result().status_code
        return status in RETRY_STATUSES and (call.resend_safe or status == 429)

    def _log_retry(self, call: _Call, state: tenacity.RetryCallState) -> None:
        log.warning(
            "request_retry",
            method=call.method,
            path=self._path(call.url),
            answer=_answer(state.outcome),
            try_number=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 2),
        )

    def _retrying(self, call: _Call, tries: int | None) -> tenacity.Retrying:
        # No try that would begin with the budget spent (the wait is cut to what is left): the
        # watchdog would only end it, and hide the last real fault.
        stop = tenacity.stop_before_delay(call.deadline.remaining()) | _spent_after_wait(call.deadline)
        if tries is not None:
            stop = stop | tenacity.stop_after_attempt(tries)
        return tenacity.Retrying(
            retry=functools.partial(self._should_retry, call),
            wait=functools.partial(_backoff, call.deadline, tenacity.wait_exponential_jitter(multiplier=0.5, max=8, jitter=0.5)),
            stop=stop,
            sleep=self._sleep,
            before_sleep=functools.partial(self._log_retry, call),
            reraise=True,
            # The last answer when the tries are spent, to be judged like any other.
            retry_error_callback=_last_answer,
        )

    def _failed(self, call: _Call, exc: BaseException, tries_made: int) -> HubUnavailable:
        """The transport fault that ended the tries, as HubUnavailable (OutcomeUnknown when it may have taken effect)."""
        answer = f"{_fault(exc)} after {tries_made} tr{'y' if tries_made == 1 else 'ies'}"
        if isinstance(exc, requests.Timeout) and call.watchdog.fired:
            answer = f"{exc}, {answer}"
        if not call.resend_safe and not _never_sent(exc):
            return self._unavailable(call.method, call.url, answer, OutcomeUnknown)
        return self._unavailable(call.method, call.url, answer)

    def _transient_status_judged(self, call: _Call, response: requests.Response) -> requests.Response:
        """The last answer, unless it is still a transient status: then HubUnavailable (or OutcomeUnknown)."""
        if response.status_code in RETRY_STATUSES:
            answer = f"HTTP {response.status_code} {self.describe(response)}"
            if not call.resend_safe and response.status_code != 429:
                raise self._unavailable(call.method, call.url, answer, OutcomeUnknown)
            raise self._unavailable(call.method, call.url, answer)
        return response

    @contextlib.contextmanager
    def streaming(self, method: str, url: str, deadline: Deadline, **kwargs: Any) -> Iterator[tuple[requests.Response, Watchdog]]:
        """A request whose body the caller reads in the block, all of it bounded by `deadline`."""
        with self.watchdog(deadline) as watchdog:
            response = self.request(method, url, deadline, stream=True, watchdog=watchdog, **kwargs)
            with response:
                yield response, watchdog

    def _path(self, url: str) -> str:
        return "/" + url.removeprefix(self.base_url)

    def _unavailable(
        self, method: str, url: str, answer: str, kind: type[HubUnavailable] = HubUnavailable
    ) -> HubUnavailable:
        return kind(f"{method} {self._path(url)}: {answer}")

    def post_once(
        self, url: str, deadline: Deadline, *, find_outcome: Callable[[], T | None], **kwargs: Any
    ) -> requests.Response | T:
        """POST something that must not happen twice (a token, a server, a kernel).

        When its outcome is unknown, `find_outcome()` asks the peer what happened: it returns what the
        lost request made (the POST is not sent again), or None when it made nothing (or the caller
        undid it), and only then is the POST sent again.
        """
        for resend in range(MAX_RESENDS + 1):
            try:
                return self.request("POST", url, deadline, idempotent=False, **kwargs)
            except OutcomeUnknown as exc:
                log.warning("request_outcome_unknown", method="POST", path=self._path(url), message=str(exc))
                found = find_outcome()
                if found is not None:
                    log.info("request_outcome_found", method="POST", path=self._path(url), took_effect=True)
                    return found
                if deadline.expired() or resend == MAX_RESENDS:
                    raise
                log.info("request_resent", method="POST", path=self._path(url), took_effect=False)
        raise AssertionError("unreachable")  # pragma: no cover


def _tunnel_status(sock: socket.socket) -> int:
    """The status of a proxy's answer to CONNECT, its head read to the blank line and no further (the
    tunnel's bytes come after it)."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte or len(head) > MAX_TUNNEL_HEAD:
            raise ProxyRefused("the proxy closed the connection or answered CONNECT without a complete head")
        head += byte
    try:
        return int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise ProxyRefused(f"the proxy answered CONNECT with {head[:40]!r}") from None


def _backoff(deadline: Deadline, backoff: Callable[[tenacity.RetryCallState], float], state: tenacity.RetryCallState) -> float:
    """The wait before the next try: Retry-After when the answer gave one, else `backoff`; never past the deadline."""
    seconds = backoff(state)
    outcome = state.outcome
    if outcome is not None and not outcome.failed:
        retry_after = retry_after_seconds(outcome.result())
        if retry_after is not None:
            seconds = retry_after
    return min(seconds, deadline.remaining())


def _last_answer(state: tenacity.RetryCallState) -> Any:
    assert state.outcome is not None
    return state.outcome.result()


def _spent_after_wait(deadline: Deadline) -> Callable[[tenacity.RetryCallState], bool]:
    def spent(state: tenacity.RetryCallState) -> bool:
        return deadline.remaining() - state.upcoming_sleep <= 0

    return spent


def _fault(exc: BaseException) -> str:
    """A transport fault's type, with urllib3's reason inside requests' ConnectionError (refused, no name, ...)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return f"{type(exc).__name__} ({type(reason).__name__})" if isinstance(reason, BaseException) else type(exc).__name__


def _answer(outcome: Any) -> str:
    """A retried try's outcome in a few words: the exception's type or the HTTP status."""
    if outcome.failed:
        return type(outcome.exception()).__name__
    return f"HTTP {outcome.result().status_code}"
