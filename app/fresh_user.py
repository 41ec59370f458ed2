"""--fresh-user: every attempt takes the path a first-time user takes.

Outages that only first-time users meet (a volume never created or never bound, a new home with the
wrong owner, an init container that seeds new homes) never reach a long-lived service-account user
whose home exists. With --fresh-user each attempt:

1. makes sure no user of that name is left: one left by an earlier run (killed before it could
   delete it) is deleted, once the guard below proves it the canary's own, its server stopped first
   under the stale rules (a young server may be a live run's: 18, nothing touched);
2. creates the user (POST /hub/api/users/<name>);
3. spawns, verifies, runs the checks, stops (app/cycle.py, as for any probe);
4. deletes the user (DELETE /hub/api/users/<name>): the hub calls the spawner's delete_forever, and
   KubeSpawner deletes the user's PVC there. Nothing accumulates: no user, no PVC, no token.

The token cannot be the user's own (its owner is deleted every run): it is a JupyterHub service's,
with scopes filtered to that one name (hub-config/jupyterhub_canary_config.py).

The guard: the canary deletes only a user it can prove its own. What proves it:
- the name: it starts with PREFIX, which no person's account has (the chart's schema and the hub-side
  configuration refuse any other name for a fresh user, and the hub blocks logins as it);
- a user this run created is its own by the hub's answer (the `created` it answered, or, that answer
  lost, a `created` between the request's send and its outcome: app/provenance.py);
- a user found before the run: only what the canary makes, and nothing a person leaves: not an admin,
  in no group, no role but `user`, no server but the probe's, and no token but the ones the hub
  gives the probe's server while it runs ("Server at <its path>"; a login's OAuth tokens, a token
  made on the token page or by `jupyterhub-canary token` all fail the proof). Anything else is 78:
  the user is not touched, and the message names what failed the proof;
- and old enough: a user younger than --deadline plus --stop-timeout may be another live run's (18).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from app import logs
from app.deadline import Deadline
from app.errors import CanaryError, ConcurrentRun, ConfigError, UserLeftBehind
from app.models import UserModel
from app.provenance import WriteRequest, skew_note, youngest_age_s

if TYPE_CHECKING:  # app.config checks the name rule with this module's name_allowed
    from app.config import Config
    from app.hub import HubClient

PREFIX = "jupyterhub-canary-fresh-"
NAME_RULE = f"a fresh user's name starts with {PREFIX!r}, followed by at least one more character"
# The note JupyterHub gives the token of a server it starts ("Server at /user/<name>/[<server>/]"),
# deleted when the server stops.
SERVER_TOKEN_NOTE = "Server at "
# The only role a user the hub created through the API has.
DEFAULT_ROLES = frozenset({"user"})

log = logs.get_logger()


def name_allowed(name: str) -> bool:
    return name.startswith(PREFIX) and len(name) > len(PREFIX)


class FreshUser:
    """The fresh user of one run: the guard, its creation and its deletion (see the module's docstring)."""

    def __init__(self, config: Config, client: HubClient, *, utcnow: Callable[[], datetime]):
        if not name_allowed(config.user):  # config.py refuses it first: this is the last line of defence
            raise ConfigError(f"--fresh-user with --user {config.user!r}: {NAME_RULE}")
        self.config = config
        self.client = client
        self.user = config.user
        self._utcnow = utcnow
        # Each create request of this run: a user one of them made is this run's to delete.
        self.requests: list[WriteRequest] = []
        # A create request was sent and its user not yet deleted: the cleanup deletes it.
        self.to_delete = False
        self.deleted: bool | None = None  # the last attempt's user deleted at its end (None: not reached)

    def made(self, model: UserModel) -> bool:
        """Whether a create request of this run made this user (its `created`, app/provenance.py)."""
        created = model.created
        hub_ahead = self.client.hub_clock.ahead()
        return created is not None and any(request.made_it(created, hub_ahead) for request in self.requests)

    # --- before the attempt: a user left by an earlier run ---

    def leftover(self, deadline: Deadline) -> UserModel | None:
        """The user of that name if the hub has one: proven this run's, or the canary's and stale; else
        ConfigError (78) naming what fails the proof, or ConcurrentRun (18) when it may be a live run's."""
        model = self.client.user_record(self.user, deadline)
        if model is None or self.made(model):
            return model
        self.prove_own(model, deadline)
        self.check_stale(model)
        return model

    def prove_own(self, model: UserModel, deadline: Deadline) -> None:
        """ConfigError unless the user holds only what the canary makes (see the module's docstring)."""
        failed = []
        if model.admin:
            failed.append("it is an admin")
        if model.groups:
            failed.append(f"it is in the group{'s' * (len(model.groups) > 1)} {', '.join(sorted(model.groups))}")
        if model.roles is None:
            failed.append("the hub does not show its roles to this token (it needs admin:users!user=<name>)")
        elif set(model.roles) - DEFAULT_ROLES:
            failed.append(f"it has the role{'s' * (len(model.roles) > 2)} {', '.join(sorted(set(model.roles) - DEFAULT_ROLES))}")
        servers = model.servers
        if servers is None:
            failed.append("the hub does not show its servers to this token")
        else:
            others = sorted(name for name in servers if name != self.config.server_name)
            if others:
                failed.append(f"it has the server{'s' * (len(others) > 1)} {', '.join(repr(name) for name in others)}")
        foreign = [token for token in self.client.tokens(self.user, deadline) if not self._servers_token(token.note)]
        if foreign:
            notes = ", ".join(repr(token.note or "") for token in foreign[:3])
            failed.append(f"it has {len(foreign)} token{'s' * (len(foreign) > 1)} the canary did not make (notes {notes})")
        if failed:
            log.error("fresh_user_not_own", user=self.user, failed="; ".join(failed))
            raise ConfigError(
                f"--fresh-user: the hub has a user {self.user!r} that is not provably the canary's own fresh user, "
                f"so it is not deleted: {'; '.join(failed)}. Choose another name, or remove that user yourself "
                "if it is a leftover"
            )

    def _servers_token(self, note: str | None) -> bool:
        """The token the hub gives the probe's server while it runs ("Server at /user/<name>/[<server>/]")."""
        if not note or not note.startswith(SERVER_TOKEN_NOTE):
            return False
        server = f"{quote(self.config.server_name, safe='')}/" if self.config.server_name else ""
        return any(note.endswith(f"/user/{name}/{server}") for name in {self.user, quote(self.user, safe="")})

    def check_stale(self, model: UserModel) -> None:
        """ConcurrentRun unless the user is older than a run of the probe can live (the stale rule of
        servers, app/cycle.py `clear_stale_server`): a younger one may be a live run's, or unknown."""
        lifetime = self.config.deadline + self.config.stop_timeout
        created = model.created
        age_s = youngest_age_s(created, self._utcnow(), self.client.hub_clock.ahead())
        if age_s is None or age_s < lifetime:
            log.warning("concurrent_run_found", user=self.user, created=created.isoformat() if created else None,
                        user_age_s=age_s, stale_after_s=lifetime)
            raise ConcurrentRun(
                f"--fresh-user: the user {self.user!r} was created "
                f"{f'{age_s:g}s ago' if age_s is not None else 'at an unknown time'}, less than --deadline plus "
                f"--stop-timeout ({lifetime:g}s): it may be another live run's, and is left alone"
            )
        log.warning("stale_fresh_user_found", user=self.user, created=created.isoformat() if created else None, user_age_s=age_s)

    # --- the attempt's own user ---

    def create(self, deadline: Deadline) -> None:
        """Create the user; a lost answer is decided by reading the user (made by this request, or 18)."""
        request = WriteRequest(self._utcnow(), self._utcnow(), answered=False)
        self.to_delete = True  # from the send on: a request lost in flight may still create it

        def find_outcome() -> UserModel | None:
            model = self.client.user_record(self.user, deadline)
            request.settled_at = self._utcnow()
            if model is None:
                return None  # it made nothing: sent again
            if model.created is not None and request.made_it(model.created, self.client.hub_clock.ahead()):
                self.requests.append(request)
                return model
            raise ConcurrentRun(
                f"--fresh-user: the answer to creating {self.user!r} was lost, and the user the hub has was created "
                f"{'at ' + model.created.isoformat() if model.created else 'at an unknown time'} (the hub's clock), not "
                f"provably by that request{skew_note(self.client.hub_clock.ahead())}: another run's, left alone"
            )

        try:
            model = self.client.create_fresh_user(self.user, deadline, find_outcome)
        except BaseException:
            if not self.requests:
                self.to_delete = False  # refused, or another's: nothing of this run's to delete
            raise
        if request not in self.requests:
            request.settled_at = self._utcnow()
            request.answered = True
            request.started = model.created
            self.requests.append(request)
        log.info("fresh_user_created", user=self.user, created=model.created.isoformat() if model.created else None)

    def delete(self, deadline: Deadline, *, stale: bool = False) -> None:
        """Delete the user: this run's, or (`stale`) a leftover the guard proved the canary's. A user left
        behind is logged `user_left_behind` and raised as UserLeftBehind (13): never a silent success."""
        try:
            if not stale:
                model = self.client.user_record(self.user, deadline)
                if model is None:
                    self._deleted(stale, existed=False)
                    return
                if not self.made(model):  # the request's user is gone; this one is another's
                    log.warning("fresh_user_not_deleted", user=self.user, why="not made by this run: left alone")
                    self.to_delete = False
                    self.deleted = False
                    return
            existed = self.client.delete_user(self.user, deadline)
        except Exception as exc:
            self.deleted = False
            message = exc.message if isinstance(exc, CanaryError) else f"{type(exc).__name__}: {exc}"
            log.error("user_left_behind", user=self.user, stale=stale, message=message)
            raise UserLeftBehind(f"the fresh user {self.user!r} could not be deleted: {message}") from None
        self._deleted(stale, existed=existed)

    def _deleted(self, stale: bool, *, existed: bool) -> None:
        if not stale:
            self.to_delete = False
            self.deleted = True
        log.info("fresh_user_deleted", user=self.user, stale=stale, **({} if existed else {"already_gone": True}))

    def left_behind(self, why: str) -> None:
        """The user is not deleted: its server could not be stopped (the hub would refuse or hang)."""
        self.deleted = False
        log.error("user_left_behind", user=self.user, stale=False, message=why)
