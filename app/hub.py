"""The JupyterHub REST API, spoken in one place: every call a canary or the token command makes,
every answer it understands, and every transport rule.

The transport rules:
- A budget (a `Deadline`) bounds every request, body and stream included: a watchdog shuts the
  connection down when the budget runs out, so a peer that trickles bytes or keeps a stream alive
  with keepalives (JupyterHub's progress stream sends one every 8 s) cannot hold the canary past it.
- Any network fault (refused, reset, cut mid-chunk, a body cut short, a stall) is a transport
  failure: retried while the budget lasts when it is safe, else `HubUnavailable` — never a crash.
- What is safe to send again: GET, HEAD, PUT and DELETE always; a POST (it mints, starts or
  creates something) only when it certainly did not reach the hub (the connection was refused,
  the hub answered 429). After any other fault a POST's outcome is unknown (`OutcomeUnknown`):
  `post_once` asks the caller to find out what happened before it sends again.
- 429 honours Retry-After; 502/503/504 and transport faults back off exponentially with jitter.

The cycle gets plain outcomes (a server is ready or pending, a stop is done) and the typed failures
of app.errors, never a status code.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote, urljoin

import requests
import tenacity
import urllib3.exceptions

from app import __version__, logs
from app.deadline import Deadline
from app.errors import ConfigError, HubUnavailable, PermissionDenied, SpawnFailed, StopFailed

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
MIN_REQUEST_TIMEOUT = 1.0
STOP_POLL_INTERVAL = 0.5
STOP_RETRY_MAX_WAIT = 4.0  # s between tries of a stop that lost the hub: soon back once the hub is
MAX_RESENDS = 3  # a POST whose outcome was unknown and found not to have happened, sent again

log = logs.get_logger()
T = TypeVar("T")


class StreamUnavailable(Exception):
    """The progress stream could not be read (not offered, refused or dropped): poll instead."""


class OutcomeUnknown(HubUnavailable):
    """A request that must not be sent twice failed in a way that does not tell whether it took effect."""


class SpawnRefused(SpawnFailed):
    """The hub answered the spawn request with an error (its message is generic; the reason is in the stream)."""


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


def hub_message(response: requests.Response) -> str:
    """The hub's own explanation from an error answer ({"status", "message"}), else a short body."""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except (ValueError, *TRANSPORT_ERRORS):
        pass
    try:
        text = " ".join(response.text.split())
    except TRANSPORT_ERRORS:
        text = ""
    return text[:200] or response.reason or ""


def _tls_error(exc: BaseException) -> bool:
    return isinstance(exc, requests.exceptions.SSLError)


def _never_sent(exc: BaseException) -> bool:
    """The connection was never made (refused, no route, connect timeout): nothing reached the hub."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


class _Watchdog:
    """Shuts a response's connection down when its budget runs out.

    A per-read timeout is not a budget: a peer that keeps sending keepalives or trickles bytes resets
    it forever. Shutting the socket down makes a read blocked in another frame return at once; the
    reader then sees a transport error, and `fired` tells it the budget, not the peer, ended it.
    """

    def __init__(self, response: requests.Response, deadline: Deadline):
        self.fired = False
        connection = getattr(response.raw, "connection", None)
        self._sock: socket.socket | None = getattr(connection, "sock", None)
        self._timer: threading.Timer | None = None
        if self._sock is not None:
            # Like every request, at least MIN_REQUEST_TIMEOUT: a last look at the deadline still gets an answer.
            self._timer = threading.Timer(max(MIN_REQUEST_TIMEOUT, deadline.remaining()), self.cut)
            self._timer.daemon = True

    def cut(self) -> None:
        """Shut the connection down now (also used by its owner to end a stream early)."""
        self.fired = True
        if self._sock is None:
            return
        try:
            # socket.socket's own shutdown also for TLS: SSLSocket.shutdown would unwrap the TLS
            # layer under the reading thread's feet.
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)  # type: ignore[arg-type]
        except OSError:
            pass

    def __enter__(self) -> _Watchdog:
        if self._timer is not None:
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()


class HubClient:
    def __init__(
        self,
        hub_url: str,
        token: str,
        *,
        request_timeout: float,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.hub_url = hub_url
        self.api_url = hub_url + "hub/api/"
        self.request_timeout = request_timeout
        self._sleep = sleep
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"
        self.session.headers["User-Agent"] = f"jupyterhub-canary/{__version__}"
        # Given with every request: a session-wide setting loses to REQUESTS_CA_BUNDLE in the environment.
        self.verify = verify

    def close(self) -> None:
        self.session.close()

    # --- transport: requests with retries, bounded by a budget ---

    def _wait(self, deadline: Deadline) -> Callable[[tenacity.RetryCallState], float]:
        backoff = tenacity.wait_exponential_jitter(multiplier=0.5, max=8, jitter=0.5)

        def wait(state: tenacity.RetryCallState) -> float:
            seconds = backoff(state)
            outcome = state.outcome
            if outcome is not None and not outcome.failed:
                retry_after = retry_after_seconds(outcome.result())
                if retry_after is not None:
                    seconds = retry_after
            return min(seconds, deadline.remaining())

        return wait

    def request(
        self,
        method: str,
        url: str,
        deadline: Deadline,
        *,
        stream: bool = False,
        idempotent: bool | None = None,
        tries: int | None = MAX_TRIES,
        **kwargs: Any,
    ) -> requests.Response:
        """One request, retried while transient and safe to resend. Returns the last answer, whatever its status.

        The body is read within `deadline` (unless `stream`: then the caller reads it, see
        `progress_events`). `idempotent` defaults by method (see IDEMPOTENT); `tries=None` retries
        until the deadline. Raises HubUnavailable when the hub could not be reached, or still answered
        a transient status, after the retries or at the deadline; OutcomeUnknown when a request that
        is not idempotent may or may not have taken effect.
        """
        resend_safe = method.upper() in IDEMPOTENT if idempotent is None else idempotent

        def send() -> requests.Response:
            timeout = max(MIN_REQUEST_TIMEOUT, min(self.request_timeout, deadline.remaining()))
            response = self.session.request(
                method, url, timeout=timeout, stream=True, allow_redirects=False, verify=self.verify, **kwargs
            )
            if not stream:
                with _Watchdog(response, deadline) as watchdog:
                    try:
                        response.content  # noqa: B018 - reads the body, within the budget
                    except TRANSPORT_ERRORS:
                        response.close()
                        if watchdog.fired:
                            raise requests.Timeout(f"no complete answer within {deadline.seconds:g}s") from None
                        raise
            return response

        def retry(state: tenacity.RetryCallState) -> bool:
            outcome = state.outcome
            assert outcome is not None
            if outcome.failed:
                exc = outcome.exception()
                return isinstance(exc, TRANSPORT_ERRORS) and not _tls_error(exc) and (resend_safe or _never_sent(exc))
            status = outcome.result().status_code
            return status in RETRY_STATUSES and (resend_safe or status == 429)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            log.warning(
                "request_retry",
                method=method,
                path=self._path(url),
                answer=_answer(state.outcome),
                try_number=state.attempt_number,
                wait_s=round(state.upcoming_sleep, 2),
            )

        stop = tenacity.stop_before_delay(deadline.remaining())
        if tries is not None:
            stop = stop | tenacity.stop_after_attempt(tries)
        retrying = tenacity.Retrying(
            retry=retry,
            wait=self._wait(deadline),
            stop=stop,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
            # The last answer when the tries are spent, to be judged below like any other.
            retry_error_callback=lambda state: state.outcome.result(),
        )
        try:
            response = retrying(send)
        except requests.exceptions.SSLError:
            # Not transient: the certificate will not change on its own. The text names the cause.
            raise self._unavailable(
                method, url, "TLS verification failed (set --ca-bundle to the hub's CA, or fix its certificate)"
            ) from None
        except TRANSPORT_ERRORS as exc:
            tries_made = retrying.statistics.get("attempt_number", 1)
            answer = f"{type(exc).__name__} after {tries_made} tr{'y' if tries_made == 1 else 'ies'}"
            if not resend_safe and not _never_sent(exc):
                raise self._unavailable(method, url, answer, OutcomeUnknown) from None
            raise self._unavailable(method, url, answer) from None
        if response.status_code in RETRY_STATUSES:
            answer = f"HTTP {response.status_code} {hub_message(response)}"
            if not resend_safe and response.status_code != 429:
                raise self._unavailable(method, url, answer, OutcomeUnknown)
            raise self._unavailable(method, url, answer)
        return response

    def _path(self, url: str) -> str:
        return "/" + url.removeprefix(self.hub_url)

    def _unavailable(
        self, method: str, url: str, answer: str, kind: type[HubUnavailable] = HubUnavailable
    ) -> HubUnavailable:
        return kind(f"{method} {self._path(url)}: {answer}")

    def api(self, method: str, path: str, deadline: Deadline, **kwargs: Any) -> requests.Response:
        return self.request(method, self.api_url + path, deadline, **kwargs)

    def post_once(
        self, url: str, deadline: Deadline, *, find_outcome: Callable[[], T | None], **kwargs: Any
    ) -> requests.Response | T:
        """POST something that must not happen twice (a token, a server, a kernel).

        When its outcome is unknown, `find_outcome()` asks the hub what happened: it returns what the
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

    @staticmethod
    def json(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise HubUnavailable(
                f"{response.request.method} {response.url} answered {response.status_code} with non-JSON "
                f"content ({response.headers.get('Content-Type', 'no content type')}): is --hub-url the hub's public URL?"
            ) from None

    def raise_for_auth(self, response: requests.Response, what: str) -> None:
        if response.status_code in (401, 403):
            raise PermissionDenied(f"{what}: the hub answered {response.status_code} {hub_message(response)}")

    # --- the hub, its token, users ---

    def version(self, deadline: Deadline) -> str:
        response = self.api("GET", "", deadline)
        if response.status_code != 200:
            raise HubUnavailable(
                f"GET /hub/api/ answered {response.status_code}: is --hub-url ({self.hub_url}) the hub's public URL?"
            )
        return str(self.json(response).get("version", "unknown"))

    def whoami(self, deadline: Deadline) -> dict[str, Any]:
        response = self.api("GET", "user", deadline)
        if response.status_code == 403:
            raise PermissionDenied(
                f"the hub rejected the token (403 {hub_message(response)}): it is invalid, expired or revoked - "
                "or, on an OAuth hub with auth_state, the user's auth refresh failed: "
                "load hub-config/jupyterhub_canary_config.py into the hub"
            )
        if response.status_code != 200:
            raise HubUnavailable(f"GET /hub/api/user answered {response.status_code} {hub_message(response)}")
        return self.json(response)

    @staticmethod
    def user_path(user: str) -> str:
        return f"users/{quote(user, safe='')}"

    @classmethod
    def server_path(cls, user: str, server_name: str) -> str:
        if server_name:
            return f"{cls.user_path(user)}/servers/{quote(server_name, safe='')}"
        return f"{cls.user_path(user)}/server"

    def user_model(self, user: str, deadline: Deadline, *, tries: int | None = MAX_TRIES) -> dict[str, Any]:
        response = self.api("GET", self.user_path(user), deadline, tries=tries)
        self.raise_for_auth(response, f"reading user {user!r}")
        if response.status_code == 404:
            raise ConfigError(
                f"--user {user!r}: the hub has no such user, or the token may not read it "
                "(a token of another user needs read:users for it)"
            )
        if response.status_code != 200:
            raise HubUnavailable(f"GET /hub/api/{self.user_path(user)} answered {response.status_code}")
        return self.json(response)

    def create_user(self, user: str, deadline: Deadline) -> bool:
        """Create the user; True if created, False if it existed. A resend is harmless: 409 says it exists."""
        response = self.api("POST", self.user_path(user), deadline, idempotent=True)
        self.raise_for_auth(response, f"creating user {user!r}")
        if response.status_code in (201, 409):
            return response.status_code == 201
        raise ConfigError(f"creating user {user!r}: the hub answered {response.status_code} {hub_message(response)}")

    # --- tokens ---

    def token_expiry(self, user: str, token_id: str, deadline: Deadline) -> datetime | None | bool:
        """When the token expires: a datetime, None for never, False when the token may not read itself."""
        response = self.api("GET", f"{self.user_path(user)}/tokens/{quote(token_id, safe='')}", deadline)
        if response.status_code != 200:
            return False
        expires_at = self.json(response).get("expires_at")
        if not expires_at:
            return None
        try:
            return datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
        except ValueError:
            return False

    def token_ids(self, user: str, note: str, deadline: Deadline) -> set[str]:
        """The ids of the user's API tokens with this note."""
        response = self.api("GET", f"{self.user_path(user)}/tokens", deadline)
        self.raise_for_auth(response, f"listing the tokens of {user!r}")
        if response.status_code != 200:
            raise HubUnavailable(f"listing the tokens of {user!r} answered {response.status_code} {hub_message(response)}")
        body = self.json(response)
        tokens = body.get("api_tokens", []) if isinstance(body, dict) else body
        return {str(t["id"]) for t in tokens if isinstance(t, dict) and t.get("note") == note and "id" in t}

    def mint_token(self, user: str, body: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
        """Mint one token for `user`; a POST lost in flight never leaves a second, orphaned token behind.

        The tokens with the same note are listed before the POST; if its outcome is unknown, those that
        appeared since are revoked (their value is lost with the answer: nobody could use them) and the
        POST is sent again.
        """
        note = str(body.get("note", ""))
        before = self.token_ids(user, note, deadline)
        path = self.api_url + f"{self.user_path(user)}/tokens"

        def revoke_orphans() -> None:
            for token_id in sorted(self.token_ids(user, note, deadline) - before):
                self.revoke_token(user, token_id, deadline)
                log.warning("token_orphan_revoked", token_id=token_id, why="minted by a request whose answer was lost")
            return None

        response = self.post_once(path, deadline, find_outcome=revoke_orphans, json=body)
        assert isinstance(response, requests.Response)
        scopes = body.get("scopes")
        if response.status_code == 400 or (response.status_code == 500 and scopes):
            raise PermissionDenied(
                f"the hub refused to mint a token with scopes {', '.join(scopes or ['inherit'])}: "
                f"{response.status_code} {hub_message(response)}. A token can only carry scopes its user holds: "
                "give the user a role with them (hub-config/jupyterhub_canary_config.py does), or choose others with --scopes, "
                "or take the user's own permissions with --inherit-scopes"
            )
        if response.status_code == 403:
            raise PermissionDenied(
                f"the admin token may not mint tokens for {user!r} (403 {hub_message(response)}): "
                f"it needs the scope tokens!user={user} (or admin:users)"
            )
        if response.status_code != 201:
            raise HubUnavailable(f"minting a token answered {response.status_code} {hub_message(response)}")
        return self.json(response)

    def revoke_token(self, user: str, token_id: str, deadline: Deadline) -> None:
        response = self.api("DELETE", f"{self.user_path(user)}/tokens/{quote(token_id, safe='')}", deadline)
        if response.status_code not in (204, 404):
            raise PermissionDenied(f"revoking token {token_id} answered {response.status_code} {hub_message(response)}")

    # --- servers ---

    def server_model(
        self, user: str, server_name: str, deadline: Deadline, *, tries: int | None = MAX_TRIES
    ) -> dict[str, Any] | None:
        """The server's entry in the user model, or None when it does not exist (stopped or never started)."""
        return (self.user_model(user, deadline, tries=tries).get("servers") or {}).get(server_name)

    def server_url(self, user: str, server_name: str, model: dict[str, Any] | None = None) -> str:
        """The server's public URL through the proxy: the hub's own (its model's `url`) when known.

        The hub leaves characters such as `@` and `~` unescaped in user URLs; a URL built here can
        only guess, so it is the fallback for a server whose model was never seen.
        """
        if model and model.get("url"):
            return urljoin(self.hub_url, str(model["url"]))
        url = f"{self.hub_url}user/{quote(user, safe='')}/"
        return url + f"{quote(server_name, safe='')}/" if server_name else url

    def start_server(self, user: str, server_name: str, user_options: dict[str, Any], deadline: Deadline) -> bool:
        """Ask the hub to start the server: True when it is ready already (201), False when pending.

        A spawn request lost in flight is not sent again blindly: if the hub has the server (pending or
        running), the lost request (or a racing one) started it, and it is followed.
        """

        def spawn_underway() -> dict[str, Any] | None:
            return self.server_model(user, server_name, deadline)

        answer = self.post_once(
            self.api_url + self.server_path(user, server_name), deadline, find_outcome=spawn_underway, json=user_options
        )
        if not isinstance(answer, requests.Response):
            log.warning("spawn_already_underway", pending=answer.get("pending"), ready=answer.get("ready"))
            return False
        status = answer.status_code
        log.info("spawn_requested", status=status)
        if status in (201, 202):
            return status == 201
        self.raise_for_auth(answer, "starting the server")
        message = hub_message(answer)
        if status == 404:
            raise PermissionDenied(
                f"starting the server answered 404 {message}: the user or named server does not exist, "
                "or the token may not start it"
            )
        if status == 400 and ("already running" in message or "pending" in message):
            # A spawn that raced ours: follow it (the ready wait confirms it from the server model).
            log.warning("spawn_already_underway", message=message)
            return False
        raise SpawnRefused(f"the hub refused the spawn: {status} {message}")

    def stop_server(self, user: str, server_name: str, deadline: Deadline) -> bool:
        """Stop the server and wait until it has left the user model, trying for the whole budget.

        True when it was stopped, False when there was nothing to stop. A hub that goes away meanwhile
        (a restart) is waited for within the budget. Raises StopFailed with the hub's last word when the
        server may still be running at the deadline; PermissionDenied when the token may not stop it.
        """
        path = self.server_path(user, server_name)
        last = "no answer"
        refused = ""  # the hub's own last word against the stop: more telling than a lost connection
        deleted = stopping = False
        tries = 0
        while True:
            tries += 1
            try:
                if self.server_model(user, server_name, deadline, tries=None) is None:
                    return deleted
                if not stopping:
                    response = self.api("DELETE", path, deadline, tries=None)
                    deleted = True
                    status = response.status_code
                    self.raise_for_auth(response, "stopping the server")
                    if status in (204, 404):
                        return True
                    if status == 202:
                        stopping = True
                    elif status == 400 and "pending spawn" in hub_message(response):
                        refused = (
                            f"DELETE answered 400 {hub_message(response)!r}: this hub cannot cancel a pending "
                            "spawn (JupyterHub before 5.1); it ends the spawn itself after its start_timeout"
                        )
                    else:
                        refused = f"DELETE answered {status} {hub_message(response)}"
                        stopping = status == 400 and "pending stop" in hub_message(response)
                pause = STOP_POLL_INTERVAL
            except HubUnavailable as exc:
                last = str(exc)
                pause = min(STOP_RETRY_MAX_WAIT, STOP_POLL_INTERVAL * 2 ** min(tries, 4))
                log.warning("stop_retry", message=last, try_number=tries, wait_s=round(min(pause, deadline.remaining()), 2))
            if deadline.expired():
                what = "still stopping" if stopping else "not stopped"
                raise StopFailed(f"{what} after {deadline.seconds:g}s: {refused or last}")
            self._sleep(min(pause, deadline.remaining()))

    def progress_events(
        self,
        user: str,
        server_name: str,
        deadline: Deadline,
        *,
        on_open: Callable[[Callable[[], None]], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Follow the spawn's server-sent progress events until the stream ends or the deadline passes.

        Keepalives and a trickling or silent stream cannot hold it past `deadline`: the caller checks
        the deadline when the events end. Raises StreamUnavailable when the stream is refused or drops.
        `on_open` receives, once the stream is open, a function that ends it from another thread (the
        events then end as at the deadline).
        """
        url = self.api_url + self.server_path(user, server_name) + "/progress"
        try:
            response = self.request("GET", url, deadline, stream=True, headers={"Accept": "text/event-stream"})
        except HubUnavailable as exc:
            raise StreamUnavailable(str(exc)) from None
        with response, _Watchdog(response, deadline) as watchdog:
            if response.status_code != 200:
                raise StreamUnavailable(f"progress answered {response.status_code} {hub_message(response)}")
            if on_open is not None:
                on_open(watchdog.cut)
            data: list[str] = []
            try:
                for line in response.iter_lines(decode_unicode=True):
                    if deadline.expired():
                        return
                    if line:
                        if line.startswith("data:"):
                            data.append(line[5:].lstrip())
                        continue
                    if data:  # a blank line ends an event
                        event = "\n".join(data)
                        data = []
                        try:
                            parsed = json.loads(event)
                        except ValueError:
                            continue
                        if isinstance(parsed, dict):
                            yield parsed
            except TRANSPORT_ERRORS as exc:
                if watchdog.fired or deadline.expired():
                    return
                raise StreamUnavailable(f"progress stream dropped: {type(exc).__name__}") from None


def _answer(outcome: Any) -> str:
    """A retried try's outcome in a few words: the exception's type or the HTTP status."""
    if outcome.failed:
        return type(outcome.exception()).__name__
    return f"HTTP {outcome.result().status_code}"
