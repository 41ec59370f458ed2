"""The JupyterHub REST API, spoken in one place: every call a canary or the token command makes,
and every answer it understands. How a request survives the network (budgets, the watchdog,
retries, what is safe to resend) is app/transport.py's; `HubClient` is a `Transport` that knows
what JupyterHub's answers mean.

The cycle gets plain outcomes (a server is ready or pending, a stop is done), the hub's answers as
the typed shapes of app/models.py (parsed here, where they enter), and the typed failures of
app.errors, never a status code or raw JSON.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote, urljoin

import requests

from app import __version__, logs
from app.deadline import Deadline
from app.errors import (
    ConcurrentRun,
    ConfigError,
    HubUnavailable,
    PermissionDenied,
    SpawnFailed,
    StopFailed,
    UserNotCreated,
)
from app.models import (  # noqa: F401 - WrongShape and hub_time re-exported: the hub's dialect
    ApiToken,
    HubInfo,
    MintedToken,
    ProgressEvent,
    ServerModel,
    TokenModel,
    TokenOwner,
    UserModel,
    WrongShape,
    hub_time,
    loads,
)

# Transport names the dialect's users import from here too (app/checks/).
from app.transport import (  # noqa: F401 - re-exported
    IDEMPOTENT,
    MAX_TRIES,
    RETRY_STATUSES,
    TRANSPORT_ERRORS,
    OutcomeUnknown,
    Resolver,
    Transport,
    Watchdog,
    retry_after_seconds,
)

STOP_POLL_INTERVAL = 0.5
STOP_RETRY_MAX_WAIT = 4.0  # s between tries of a stop that lost the hub: soon back once the hub is
# s the hub must have answered without a fault before "no server" (without a DELETE of ours) is believed
# after an outage: a hub that is restarting, or its proxy before it has the hub's route again, may not
# show a server that is there (it comes back once the hub has reloaded its spawners).
STOP_SETTLE = 3.0

log = logs.get_logger()
Shape = TypeVar("Shape")


class StreamUnavailable(Exception):
    """The progress stream could not be read (not offered, refused, dropped, or an event of the wrong
    shape): poll instead."""


class UserGone(ConfigError):
    """The hub has no such user (or the token may not see it): 404 on the user model."""


class SpawnRefused(SpawnFailed):
    """The hub answered the spawn request with an error (its message is generic; the reason is in the stream)."""


@dataclass(frozen=True)
class SpawnOutcome:
    """What became of a spawn request.

    `accepted`: the hub answered it 201 (`ready`) or 202, so the server it holds now is this request's.
    Otherwise the answer was lost (or a resend met a server that had appeared meanwhile): `found` is the
    server model read then, and whose it is the caller decides (it may be this request's, or another
    run's): the hub's word is no proof either way.
    """

    accepted: bool
    ready: bool = False
    found: ServerModel | None = None


def hub_error(response: requests.Response) -> bool:
    """Whether an error answer is JupyterHub's own ({"status": <code>, "message": ...}), not a proxy's
    in front of it (configurable-http-proxy answers a plain 404 "Not Found" for a path it has no route
    for: the hub's own route, while a restarting hub has not added it back yet)."""
    try:
        body = response.json()
    except (ValueError, *TRANSPORT_ERRORS):
        return False
    return isinstance(body, dict) and body.get("status") == response.status_code


class HubClock:
    """How far the hub's clock is ahead of this run's (behind: negative), as the hub's answers prove it.

    An answer dated D (its `Date`: whole seconds, RFC 9110) that left while this run's clock went from
    `sent` to `received` says the hub was between D - received and D + 1 s - sent ahead; each answer
    narrows that range (a range that contradicts the one before, a clock that jumped, starts it anew).
    `ahead()` is that range while it excludes zero; while it holds zero the clocks agree as far as the
    answers can tell (a second), and it is (0, 0): the clocks are taken to agree, as the README asks.
    """

    def __init__(self) -> None:
        self.low: float | None = None
        self.high: float | None = None

    def observe(self, response: requests.Response, received: datetime) -> None:
        try:
            dated = parsedate_to_datetime(response.headers.get("Date", ""))
            low = (dated if dated.tzinfo else dated.replace(tzinfo=UTC)) - received
            high = low + response.elapsed + timedelta(seconds=1)
        except (TypeError, ValueError, IndexError, OverflowError, AttributeError):
            return  # no Date, or one that is not a date: nothing learned
        lo, hi = low.total_seconds(), high.total_seconds()
        if self.low is None or self.high is None or lo > self.high or hi < self.low:
            self.low, self.high = lo, hi
        else:
            self.low, self.high = max(self.low, lo), min(self.high, hi)

    def ahead(self) -> tuple[timedelta, timedelta]:
        if self.low is None or self.high is None or self.low <= 0.0 <= self.high:
            return timedelta(0), timedelta(0)
        return timedelta(seconds=self.low), timedelta(seconds=self.high)


# JupyterHub 6's rule for a server name (jupyterhub/slugs.py, is_valid_safe_slug): the hub refuses
# to create a named server whose name breaks it. A server created before 6 keeps its name, and may
# still start where the hub sets allow_existing_invalid_named_servers = "allow-start".
SERVER_NAME_RULE = (
    "1-30 characters; lowercase ASCII letters, digits and single hyphens; "
    "starting with a letter and ending with a letter or digit"
)
SERVER_NAME_MAX = 30
_SAFE_SLUG = re.compile(r"[a-z](?:-?[a-z0-9])*")


def version_tuple(version: str) -> tuple[int, ...]:
    """The release numbers of a version ("6.1.1" -> (6, 1, 1), "6.0.0b1" -> (6, 0, 0), "" -> ())."""
    numbers = []
    for part in version.strip().split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
        if len(digits.group()) < len(part):  # a pre-release or local part ends the release numbers
            break
    return tuple(numbers)


def server_name_allowed(name: str, hub_version: str) -> bool:
    """Whether a hub of this version creates a named server of this name ("" is the default server)."""
    if not name or version_tuple(hub_version) < (6,):
        return True
    return len(name) <= SERVER_NAME_MAX and _SAFE_SLUG.fullmatch(name) is not None


def hub_message(response: requests.Response) -> str:
    """The hub's own explanation from an error answer ({"status", "message"}), else a short body."""
    try:
        body = loads(response.content)
        if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
            return body["message"]
    except (ValueError, *TRANSPORT_ERRORS):
        pass
    try:
        text = " ".join(response.text.split())
    except TRANSPORT_ERRORS:
        text = ""
    return text[:200] or response.reason or ""


class HubClient(Transport):
    def __init__(
        self,
        hub_url: str,
        token: str,
        *,
        request_timeout: float,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
        resolver: Resolver | None = None,
    ):
        # The token goes to the hub's own origin only (the transport attaches it there, nowhere else).
        super().__init__(
            hub_url,
            request_timeout=request_timeout,
            verify=verify,
            sleep=sleep,
            resolver=resolver,
            credentials={"Authorization": f"token {token}"},
            user_agent=f"jupyterhub-canary/{__version__}",
        )
        self.hub_url = hub_url
        self.api_url = hub_url + "hub/api/"
        self.hub_clock = HubClock()  # how far the hub's clock is from this run's (its answers' `Date`)

    def describe(self, response: requests.Response) -> str:
        return hub_message(response)

    def api(self, method: str, path: str, deadline: Deadline, **kwargs: Any) -> requests.Response:
        response = self.request(method, self.api_url + path, deadline, **kwargs)
        self.hub_clock.observe(response, datetime.now(UTC))
        return response

    @staticmethod
    def json(response: requests.Response) -> Any:
        try:
            return loads(response.content)
        except ValueError:
            raise HubUnavailable(
                f"{response.request.method} {response.url} answered {response.status_code} with non-JSON "
                f"content ({response.headers.get('Content-Type', 'no content type')}): is --hub-url the hub's public URL?"
            ) from None

    @classmethod
    def json_object(cls, response: requests.Response, what: str) -> dict[str, Any]:
        """The answer's JSON object; any other shape (a list, a string, null) is the hub not being itself."""
        body = cls.json(response)
        if not isinstance(body, dict):
            raise WrongShape(f"{what} answered {response.status_code} with a JSON {type(body).__name__}, not an object")
        return body

    @classmethod
    def parsed(cls, response: requests.Response, what: str, shape: Callable[[Any, str], Shape]) -> Shape:
        """The answer as the typed `shape` (app/models.py); WrongShape names the field that does not fit."""
        return shape(cls.json_object(response, what), what)

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
        what = f"GET /hub/api/ (is --hub-url, {self.hub_url}, the hub's public URL?)"
        return self.parsed(response, what, HubInfo.parse).version

    def whoami(self, deadline: Deadline) -> TokenOwner:
        response = self.api("GET", "user", deadline)
        if response.status_code == 403:
            raise PermissionDenied(
                f"the hub rejected the token (403 {hub_message(response)}): it is invalid, expired or revoked - "
                "or, on an OAuth hub with auth_state, the user's auth refresh failed: "
                "load hub-config/jupyterhub_canary_config.py into the hub"
            )
        if response.status_code != 200:
            raise HubUnavailable(f"GET /hub/api/user answered {response.status_code} {hub_message(response)}")
        return self.parsed(response, "GET /hub/api/user", TokenOwner.parse)

    @staticmethod
    def user_path(user: str) -> str:
        return f"users/{quote(user, safe='')}"

    @classmethod
    def server_path(cls, user: str, server_name: str) -> str:
        if server_name:
            return f"{cls.user_path(user)}/servers/{quote(server_name, safe='')}"
        return f"{cls.user_path(user)}/server"

    def user_model(
        self, user: str, deadline: Deadline, *, tries: int | None = MAX_TRIES, include_stopped: bool = False
    ) -> UserModel:
        """The user's servers; with `include_stopped`, the stopped ones the hub keeps too (JupyterHub 3+)."""
        params = {"include_stopped_servers": "1"} if include_stopped else None
        response = self.api("GET", self.user_path(user), deadline, tries=tries, params=params)
        self.raise_for_auth(response, f"reading user {user!r}")
        if response.status_code == 404 and not hub_error(response):
            raise HubUnavailable(
                f"GET /hub/api/{self.user_path(user)} answered 404 {hub_message(response)!r}, not the hub's own answer "
                "(a proxy without the hub's route, e.g. while the hub restarts)"
            )
        if response.status_code == 404:
            raise UserGone(
                f"--user {user!r}: the hub has no such user, or the token may not read it "
                "(a token of another user needs read:users for it)"
            )
        if response.status_code != 200:
            raise HubUnavailable(f"GET /hub/api/{self.user_path(user)} answered {response.status_code}")
        return self.parsed(response, f"GET /hub/api/{self.user_path(user)}", UserModel.parse)

    def create_user(self, user: str, deadline: Deadline) -> bool:
        """Create the user; True if created, False if it existed. A resend is harmless: 409 says it exists."""
        response = self.api("POST", self.user_path(user), deadline, idempotent=True)
        self.raise_for_auth(response, f"creating user {user!r}")
        if response.status_code in (201, 409):
            return response.status_code == 201
        raise ConfigError(f"creating user {user!r}: the hub answered {response.status_code} {hub_message(response)}")

    # --- fresh users (--fresh-user, app/fresh_user.py) ---

    def user_record(self, user: str, deadline: Deadline) -> UserModel | None:
        """The user as the hub has it, stopped servers included; None when the hub has no such user."""
        try:
            return self.user_model(user, deadline, include_stopped=True)
        except UserGone:
            return None

    def create_fresh_user(
        self, user: str, deadline: Deadline, find_outcome: Callable[[], UserModel | None]
    ) -> UserModel:
        """POST /hub/api/users/<user>: the new user's model (the hub's `created` is its identity).

        Not resent blindly: a POST whose answer was lost is decided by `find_outcome` (the caller reads
        the user and proves it its own, or raises). 403 is PermissionDenied; 409 (another run made the
        user since this run looked) is ConcurrentRun; any other refusal is UserNotCreated, with the
        hub's words: first-time users cannot be created.
        """
        answer = self.post_once(self.api_url + self.user_path(user), deadline, find_outcome=find_outcome)
        if isinstance(answer, UserModel):
            return answer
        status = answer.status_code
        what = f"creating the fresh user {user!r}"
        if status in (401, 403):
            raise PermissionDenied(
                f"{what}: the hub answered {status} {hub_message(answer)}: the token needs the scope admin:users!user={user}"
            )
        if status == 404 and not hub_error(answer):
            raise HubUnavailable(f"{what} answered 404 {hub_message(answer)!r}, not the hub's own answer")
        if status == 404:
            # JupyterHub's word for a scope whose filter does not name the user: "No access to resources or
            # resources not found" (a user that does not exist yet cannot be "not found" to a create).
            raise PermissionDenied(
                f"{what}: the hub answered 404 {hub_message(answer)}: the token's role does not name this user; "
                f"it needs admin:users!user={user}"
            )
        if status == 409:
            raise ConcurrentRun(
                f"{what}: the hub answered 409 {hub_message(answer)!r}: another run of this probe created it since "
                "this run looked, and it is left alone"
            )
        if status != 201:
            raise UserNotCreated(f"{what}: the hub answered {status} {hub_message(answer)}")
        return self.parsed(answer, f"{what} (answered 201)", UserModel.parse)

    def delete_user_once(self, user: str, deadline: Deadline) -> tuple[str, str]:
        """One DELETE /hub/api/users/<user>, never resent: a resend after a lost answer could delete a user
        another run created since (OutcomeUnknown: the caller reads the user to decide). The hub stops a
        running server first and calls the spawner's delete_forever (KubeSpawner deletes the user's PVC).

        Returns ("deleted", ""), ("absent", "") for the hub's own 404, or ("refused", the hub's words): 400
        while a stop is pending, 500 when the authenticator's delete_user fails. PermissionDenied on 401/403;
        HubUnavailable when the hub could not be reached or a proxy answered without it.
        """
        path = self.user_path(user)
        response = self.api("DELETE", path, deadline, idempotent=False)
        self.raise_for_auth(response, f"deleting the fresh user {user!r}")
        status = response.status_code
        if status == 204:
            return "deleted", ""
        if status == 404 and hub_error(response):
            return "absent", ""
        if status == 404:
            raise HubUnavailable(f"DELETE /hub/api/{path} answered 404 {hub_message(response)!r}, not the hub's own answer")
        return "refused", f"DELETE /hub/api/{path} answered {status} {hub_message(response)}"

    # --- tokens ---

    def token_expiry(self, user: str, token_id: str, deadline: Deadline) -> datetime | None | bool:
        """When the token expires: a datetime, None for never, False when the token may not read itself."""
        response = self.api("GET", f"{self.user_path(user)}/tokens/{quote(token_id, safe='')}", deadline)
        if response.status_code != 200:
            return False
        return self.parsed(response, "reading the token", TokenModel.parse).expires_at

    def tokens(self, user: str, deadline: Deadline) -> tuple[ApiToken, ...]:
        """The user's API tokens (their ids and notes; never their values)."""
        response = self.api("GET", f"{self.user_path(user)}/tokens", deadline)
        if response.status_code in (401, 403):
            raise PermissionDenied(
                f"listing the tokens of {user!r}: the hub answered {response.status_code} {hub_message(response)}: "
                f"the token needs the scope read:tokens!user={user}"
            )
        if response.status_code != 200:
            raise HubUnavailable(f"listing the tokens of {user!r} answered {response.status_code} {hub_message(response)}")
        return ApiToken.parse_list(self.json(response), f"listing the tokens of {user!r} (answered 200)")

    def token_ids(self, user: str, note: str, deadline: Deadline) -> set[str]:
        """The ids of the user's API tokens with this note."""
        return {token.id for token in self.tokens(user, deadline) if token.note == note}

    def mint_token(self, user: str, body: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
        """Mint one token for `user`; a POST lost in flight never leaves a second, orphaned token behind.

        The note (body["note"]) must be unique to this run: it is how a token is proven to be this
        run's. If the POST's outcome is unknown, the tokens with this note are the lost request's
        (their value is lost with the answer: nobody could use them): they are revoked and the POST is
        sent again. A token of any other run, concurrent or not, carries another note and is left alone.
        """
        note = str(body.get("note") or "")
        if not note:
            raise ValueError("mint_token needs a note unique to this run")  # a bug in the caller
        path = self.api_url + f"{self.user_path(user)}/tokens"

        def revoke_orphans() -> None:
            for token_id in sorted(self.token_ids(user, note, deadline)):
                self.revoke_token(user, token_id, deadline)
                log.warning("token_orphan_revoked", token_id=token_id, why="minted by this run's request whose answer was lost")
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
        # Checked here; handed on as a dict of those checked values (the token command's own type).
        return self.parsed(response, "minting a token (answered 201)", MintedToken.parse).as_dict()

    def revoke_token(self, user: str, token_id: str, deadline: Deadline) -> None:
        response = self.api("DELETE", f"{self.user_path(user)}/tokens/{quote(token_id, safe='')}", deadline)
        if response.status_code not in (204, 404):
            raise PermissionDenied(f"revoking token {token_id} answered {response.status_code} {hub_message(response)}")

    # --- servers ---

    def server_model(
        self, user: str, server_name: str, deadline: Deadline, *, tries: int | None = MAX_TRIES
    ) -> ServerModel | None:
        """The server's entry in the user model, or None when it does not exist (stopped or never started).

        The hub leaves `servers` out of the model when the token may not read them: that is not "no
        server" (PermissionDenied). A `servers` or entry of the wrong shape is WrongShape (app/models.py).
        """
        servers = self.user_model(user, deadline, tries=tries).servers
        if servers is None:
            raise PermissionDenied(
                f"the hub shows no servers of {user!r} to this token: it needs the scope read:servers!user={user}"
            )
        return servers.get(server_name)

    def server_url(self, user: str, server_name: str, model: ServerModel | None = None) -> str:
        """The server's public URL through the proxy: the hub's own (its model's `url`) when known.

        The hub leaves characters such as `@` and `~` unescaped in user URLs; a URL built here can
        only guess, so it is the fallback for a server whose model was never seen.
        """
        if model is not None and model.url:
            return urljoin(self.hub_url, model.url)
        url = f"{self.hub_url}user/{quote(user, safe='')}/"
        return url + f"{quote(server_name, safe='')}/" if server_name else url

    def start_server(
        self, user: str, server_name: str, user_options: dict[str, Any], deadline: Deadline
    ) -> SpawnOutcome:
        """Ask the hub to start the server (see SpawnOutcome).

        A spawn request lost in flight is not sent again blindly: if the hub has a server (pending or
        running) afterwards, it is handed back as `found`, for the caller to decide whose it is. The
        first send answered 400 "already running" (or pending) is the hub's word that the server predates
        this request: another run's (ConcurrentRun), never followed.
        """
        outcome_lost = False

        def spawn_underway() -> ServerModel | None:
            nonlocal outcome_lost
            outcome_lost = True
            return self.server_model(user, server_name, deadline)

        answer = self.post_once(
            self.api_url + self.server_path(user, server_name), deadline, find_outcome=spawn_underway, json=user_options
        )
        if not isinstance(answer, requests.Response):
            return SpawnOutcome(accepted=False, found=answer)
        status = answer.status_code
        log.info("spawn_requested", status=status)
        if status in (201, 202):
            return SpawnOutcome(accepted=True, ready=status == 201)
        self.raise_for_auth(answer, "starting the server")
        message = hub_message(answer)
        if status == 404 and not hub_error(answer):
            # Not the hub: the request never reached it (a proxy without the hub's route), nothing started.
            raise HubUnavailable(f"starting the server answered 404 {message!r}, not the hub's own answer")
        if status == 404:
            raise PermissionDenied(
                f"starting the server answered 404 {message}: the user or named server does not exist, "
                "or the token may not start it"
            )
        if status == 400 and ("already running" in message or "pending" in message):
            if not outcome_lost:
                raise ConcurrentRun(
                    f"the hub answered the spawn request 400 {message!r}: a server that is not this run's was there "
                    "before the request (another run of this probe started it since this run looked), and is left alone"
                )
            # A resend after a lost answer met a server: this run's lost request's, or another run's.
            return SpawnOutcome(accepted=False, found=self.server_model(user, server_name, deadline))
        raise SpawnRefused(f"the hub refused the spawn: {status} {message}")

    def stop_server(self, user: str, server_name: str, deadline: Deadline, *, after_outage: bool = False) -> bool:
        """Stop the server and wait until it has left the user model, trying for the whole budget.

        True when it was stopped (a DELETE of this call was answered), False when there was nothing to
        stop. A hub that goes away meanwhile (a restart) is waited for within the budget. After an
        outage (seen here, or `after_outage`: just before) "no server" is believed only once the hub has
        answered for STOP_SETTLE s without a fault: a restarting hub may not show a server it still has.
        Raises StopFailed with the hub's last word when the server may still be running at the deadline;
        PermissionDenied when the token may not stop it.
        """
        path = self.server_path(user, server_name)
        last = "no answer"
        refused = ""  # the hub's own last word against the stop: more telling than a lost connection
        deleted = stopping = False
        tries = 0
        clock = deadline.clock
        outage = after_outage  # a fault was seen: "no server" then needs a steady hub
        steady_since: float | None = None  # the first answer after the last fault
        while True:
            tries += 1
            pause = STOP_POLL_INTERVAL
            try:
                try:
                    # One try: every fault is seen here, and makes "no server" wait for a steady hub.
                    model = self.server_model(user, server_name, deadline, tries=1)
                except UserGone:
                    model = None  # no user, no server: nothing can be running
                steady_since = clock() if steady_since is None else steady_since
                if model is None:
                    if deleted or not outage or clock() - steady_since >= STOP_SETTLE or deadline.expired():
                        return deleted
                    last = "no server in the model since the hub answered again: not yet believed"
                elif not stopping:
                    response = self.api("DELETE", path, deadline, tries=None)
                    status = response.status_code
                    self.raise_for_auth(response, "stopping the server")
                    if status == 404 and not hub_error(response):
                        raise HubUnavailable(f"DELETE answered 404 {hub_message(response)!r}, not the hub's own answer")
                    deleted = True
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
            except HubUnavailable as exc:
                last = str(exc)
                outage, steady_since = True, None
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
    ) -> Iterator[ProgressEvent]:
        """Follow the spawn's server-sent progress events until the stream ends or the deadline passes.

        Keepalives and a trickling or silent stream cannot hold it past `deadline`: the caller checks
        the deadline when the events end. Raises StreamUnavailable when the stream is refused or drops,
        or sends an event of the wrong shape (WrongShape naming its field is the reason).
        `on_open` receives, once the stream is open, a function that ends it from another thread (the
        events then end as at the deadline).
        """
        url = self.api_url + self.server_path(user, server_name) + "/progress"
        try:
            with self.streaming("GET", url, deadline, headers={"Accept": "text/event-stream"}) as (response, watchdog):
                yield from self._events(response, watchdog, deadline, on_open)
        except HubUnavailable as exc:
            raise StreamUnavailable(str(exc)) from None

    def _events(
        self,
        response: requests.Response,
        watchdog: Watchdog,
        deadline: Deadline,
        on_open: Callable[[Callable[[], None]], None] | None,
    ) -> Iterator[ProgressEvent]:
        if response.status_code != 200:
            raise StreamUnavailable(f"progress answered {response.status_code} {hub_message(response)}")
        if on_open is not None:
            on_open(watchdog.cut)
        data: list[str] = []
        try:
            # Bytes, decoded here: with a content type that is not text/*, requests would hand
            # back bytes even when asked to decode.
            for raw_line in response.iter_lines():
                if deadline.expired():
                    return
                line = raw_line.decode("utf-8", errors="replace")
                if line:
                    if line.startswith("data:"):
                        data.append(line[5:].lstrip())
                    continue
                if data:  # a blank line ends an event
                    event = "\n".join(data)
                    data = []
                    try:
                        parsed = loads(event)
                    except ValueError:
                        continue
                    if isinstance(parsed, dict):
                        yield ProgressEvent.parse(parsed, "a progress event")
        except TRANSPORT_ERRORS as exc:
            if watchdog.fired or deadline.expired():
                return
            raise StreamUnavailable(f"progress stream dropped: {type(exc).__name__}") from None

