"""A small client for the JupyterHub REST API: the calls one canary cycle makes.

Every request is retried (tenacity) on what is transient — connection errors, timeouts, 502/503/504
and 429 (honouring Retry-After) — with bounded exponential backoff and jitter, and never beyond the
caller's deadline. HTTP answers are turned into the typed failures of app.errors.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests
import tenacity

from app import __version__, logs
from app.deadline import Deadline
from app.errors import ConfigError, HubUnavailable, PermissionDenied

RETRY_STATUSES = frozenset({429, 502, 503, 504})
TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout)
MAX_TRIES = 5
MIN_REQUEST_TIMEOUT = 1.0

log = logs.get_logger()


class StreamUnavailable(Exception):
    """The progress stream could not be read (not offered, refused or dropped): poll instead."""


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
    except ValueError:
        pass
    text = " ".join(response.text.split())
    return text[:200] or response.reason or ""


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

    # --- requests with retries ---

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
        **kwargs: Any,
    ) -> requests.Response:
        """One request, retried while transient. Returns the last answer, whatever its status.

        Raises HubUnavailable when the hub could not be reached, or still answered a transient
        status, after the bounded retries or at the deadline.
        """

        def send() -> requests.Response:
            timeout = max(MIN_REQUEST_TIMEOUT, min(self.request_timeout, deadline.remaining()))
            return self.session.request(
                method, url, timeout=timeout, stream=stream, allow_redirects=False, verify=self.verify, **kwargs
            )

        def before_sleep(state: tenacity.RetryCallState) -> None:
            outcome = state.outcome
            answer = (
                f"{type(outcome.exception()).__name__}" if outcome.failed else f"HTTP {outcome.result().status_code}"
            )
            log.warning(
                "request_retry",
                method=method,
                path=self._path(url),
                answer=answer,
                try_number=state.attempt_number,
                wait_s=round(state.upcoming_sleep, 2),
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, requests.exceptions.SSLError)
            )
            | tenacity.retry_if_result(lambda r: r.status_code in RETRY_STATUSES),
            wait=self._wait(deadline),
            stop=tenacity.stop_after_attempt(MAX_TRIES) | tenacity.stop_before_delay(deadline.remaining()),
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
        except TRANSIENT_ERRORS as exc:
            tries = retrying.statistics.get("attempt_number", MAX_TRIES)
            raise self._unavailable(method, url, f"{type(exc).__name__} after {tries} tries") from None
        if response.status_code in RETRY_STATUSES:
            raise self._unavailable(method, url, f"HTTP {response.status_code} {hub_message(response)}")
        return response

    def _path(self, url: str) -> str:
        return "/" + url.removeprefix(self.hub_url)

    def _unavailable(self, method: str, url: str, answer: str) -> HubUnavailable:
        return HubUnavailable(f"{method} {self._path(url)}: {answer}")

    def api(self, method: str, path: str, deadline: Deadline, **kwargs: Any) -> requests.Response:
        return self.request(method, self.api_url + path, deadline, **kwargs)

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

    # --- the calls of a cycle ---

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

    @staticmethod
    def user_path(user: str) -> str:
        return f"users/{quote(user, safe='')}"

    @classmethod
    def server_path(cls, user: str, server_name: str) -> str:
        if server_name:
            return f"{cls.user_path(user)}/servers/{quote(server_name, safe='')}"
        return f"{cls.user_path(user)}/server"

    def user_model(self, user: str, deadline: Deadline) -> dict[str, Any]:
        response = self.api("GET", self.user_path(user), deadline)
        self.raise_for_auth(response, f"reading user {user!r}")
        if response.status_code == 404:
            raise ConfigError(
                f"--user {user!r}: the hub has no such user, or the token may not read it "
                "(a token of another user needs read:users for it)"
            )
        if response.status_code != 200:
            raise HubUnavailable(f"GET /hub/api/{self.user_path(user)} answered {response.status_code}")
        return self.json(response)

    def server_model(self, user: str, server_name: str, deadline: Deadline) -> dict[str, Any] | None:
        """The server's entry in the user model, or None when it does not exist (stopped or never started)."""
        return (self.user_model(user, deadline).get("servers") or {}).get(server_name)

    def server_url(self, user: str, server_name: str) -> str:
        """The server's public URL through the proxy."""
        url = f"{self.hub_url}user/{quote(user, safe='')}/"
        return url + f"{quote(server_name, safe='')}/" if server_name else url

    def progress_events(self, user: str, server_name: str, deadline: Deadline) -> Iterator[dict[str, Any]]:
        """Follow the spawn's server-sent progress events until the stream ends.

        Raises StreamUnavailable when the stream is refused, times out or drops.
        """
        url = self.api_url + self.server_path(user, server_name) + "/progress"
        try:
            response = self.request("GET", url, deadline, stream=True, headers={"Accept": "text/event-stream"})
        except HubUnavailable as exc:
            raise StreamUnavailable(str(exc)) from None
        with response:
            if response.status_code != 200:
                raise StreamUnavailable(f"progress answered {response.status_code} {hub_message(response)}")
            data: list[str] = []
            try:
                for line in response.iter_lines(decode_unicode=True):
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
            except TRANSIENT_ERRORS as exc:
                raise StreamUnavailable(f"progress stream dropped: {type(exc).__name__}") from None
