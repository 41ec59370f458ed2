"""--fresh-user: every attempt takes the path a first-time user takes.

Outages that only first-time users meet (a volume never created or never bound, a new home with the
wrong owner, an init container that seeds new homes) never reach a long-lived service-account user
whose home exists. With --fresh-user each attempt:

1. makes sure no user of that name is left: one left by an earlier run (killed before it could
   delete it) is deleted, once the guard below proves it the canary's own, its server stopped first
   under the stale rules (a young server may be a live run's: 18, nothing touched);
2. creates the user (POST /hub/api/users/<name>) and marks it: a token with the MARKER note and no
   scopes (it can read its own name, nothing else; its value is dropped at once);
3. spawns, verifies, runs the checks, stops (app/cycle.py, as for any probe);
4. deletes the user (DELETE /hub/api/users/<name>): the hub calls the spawner's delete_forever, and
   KubeSpawner deletes the user's PVC there. Nothing accumulates: no user, no PVC, no token.

The token cannot be the user's own (its owner is deleted every run): it is a JupyterHub service's,
with scopes filtered to that one name (hub-config/jupyterhub_canary_config.py).

The guard: the canary deletes only a user it can prove its own. What proves it:
- the name: it starts with PREFIX (the chart's schema and the hub-side configuration refuse any other
  name for a fresh user, and the hub blocks logins as it);
- a user this run created is its own by the hub's answer (the `created` it answered). A create whose
  answer is lost is decided by reading the user: under the probe's Lease (--lease) a user there now is
  this run's (no other run of the probe can make it, and it looked just before: no user); without a
  Lease another run may have made it meanwhile, so it is left alone (18), for a later run to remove
  once stale;
- a user found before the run (a killed run's) must carry the canary's mark and nothing a person
  leaves: the MARKER token, made within MARK_WINDOW of the user; no other token but the one the hub
  gives the probe's running server (its exact note, made since that server started); not an admin, in
  no group, no role but `user`, no server but the probe's. A person's account has no marker, whatever
  it did or did not leave. Anything else is 78, and nothing is touched;
- and it must be older than --deadline plus --stop-timeout: a younger one may be a live run's (18).
A run killed between the create and the mark (a few milliseconds) leaves an unmarked user: 78 names it
for a human to remove.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from app import logs
from app.deadline import Deadline
from app.errors import ConcurrentRun, ConfigError, HubUnavailable, PermissionDenied, UserLeftBehind, UserNotCreated
from app.hub import version_tuple
from app.models import ApiToken, ServerModel, UserModel
from app.provenance import CLOCK_SLACK, youngest_age_s

if TYPE_CHECKING:  # app.config checks the name rule with this module's name_allowed
    from app.config import Config
    from app.hub import HubClient

PREFIX = "jupyterhub-canary-fresh-"
NAME_RULE = f"a fresh user's name starts with {PREFIX!r}, followed by at least one more character"
# The canary's mark on a user it made: a token with this note (and a run's own suffix), no scopes.
MARKER = "jupyterhub-canary fresh-user mark"
# The mark is made right after the user: a marker made later than this after the user is not the canary's.
MARK_WINDOW = timedelta(seconds=60)
# The note JupyterHub gives the token of a server it starts ("Server at <the server's path>").
SERVER_TOKEN_NOTE = "Server at "
# The only role a user the hub created through the API has (a blocked user's roles are stripped: none).
DEFAULT_ROLES = frozenset({"user"})
DELETE_RETRY_INTERVAL = 1.0  # s between tries of a delete the hub refused or did not answer

log = logs.get_logger()


def name_allowed(name: str) -> bool:
    return name.startswith(PREFIX) and len(name) > len(PREFIX)


class FreshUser:
    """The fresh user of one run: the guard, its creation and its deletion (see the module's docstring)."""

    def __init__(
        self, config: Config, client: HubClient, *, utcnow: Callable[[], datetime], sleep: Callable[[float], None]
    ):
        if not name_allowed(config.user):  # config.py refuses it first: this is the last line of defence
            raise ConfigError(f"--fresh-user with --user {config.user!r}: {NAME_RULE}")
        self.config = config
        self.client = client
        self.user = config.user
        self._utcnow = utcnow
        self._sleep = sleep
        # The `created` of each user this run made (the hub's answer): such a user is this run's to delete.
        self.made_at: list[datetime] = []
        # A create of this run may have made a user not yet deleted: the cleanup deletes it, or decides
        # a lost create (`_decide_lost_create`).
        self.to_delete = False
        self._undecided = False  # a create was sent and its outcome is not decided yet (its answer may be lost)
        self.deleted: bool | None = None  # the last attempt's user deleted at its end (None: not reached)
        # The `created` of the leftover `leftover` proved the canary's and stale: the only user `delete(stale=True)` deletes.
        self._proven: datetime | None = None

    def made(self, model: UserModel) -> bool:
        """Whether this run made this user: its `created` is one the hub answered this run's create with."""
        return model.created is not None and model.created in self.made_at

    # --- before the attempt: a user left by an earlier run ---

    def leftover(self, deadline: Deadline) -> UserModel | None:
        """The user of that name if the hub has one: this run's, or proven the canary's and stale; else
        ConfigError (78) naming what fails the proof, or ConcurrentRun (18) when it may be a live run's."""
        self.deleted = None  # this attempt's user: not reached yet (the result's user_deleted is the last attempt's)
        self._proven = None
        model = self.client.user_record(self.user, deadline)
        if model is None or self.made(model):
            return model
        self.prove_own(model, deadline)
        self.check_stale(model)
        self._proven = model.created
        return model

    def prove_own(self, model: UserModel, deadline: Deadline) -> None:
        """ConfigError unless the user carries the canary's mark and nothing a person leaves (the docstring)."""
        failed = []
        if model.admin is not False:
            failed.append("it is an admin" if model.admin else "the hub does not show whether it is an admin")
        if model.groups is None:
            failed.append("the hub does not show its groups")
        elif model.groups:
            failed.append(f"it is in the group{'s' * (len(model.groups) > 1)} {', '.join(sorted(model.groups))}")
        if model.roles is None:
            failed.append("the hub does not show its roles to this token (it needs admin:users!user=<name>)")
        elif set(model.roles) - DEFAULT_ROLES:
            extra = sorted(set(model.roles) - DEFAULT_ROLES)
            failed.append(f"it has the role{'s' * (len(extra) > 1)} {', '.join(extra)}")
        servers = model.servers
        if servers is None:
            failed.append("the hub does not show its servers to this token")
        else:
            others = sorted(name for name, server in servers.items() if name != self.config.server_name
                            and not (name == "" and _never_ran(server)))  # the hub shows a default server that never ran
            if others:
                failed.append(f"it has the server{'s' * (len(others) > 1)} {', '.join(repr(name) for name in others)}")
        tokens = self.client.tokens(self.user, deadline)
        marks = [token for token in tokens if self._is_mark(token, model)]
        foreign = [token for token in tokens if token not in marks and not self._is_servers_token(token, model)]
        if not marks:
            failed.append(f"it carries no mark of the canary's (a token noted {MARKER!r} made with the user)")
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

    @staticmethod
    def _is_mark(token: ApiToken, model: UserModel) -> bool:
        if not token.note or not token.note.startswith(MARKER) or token.created is None or model.created is None:
            return False
        return model.created - CLOCK_SLACK <= token.created <= model.created + MARK_WINDOW

    def _is_servers_token(self, token: ApiToken, model: UserModel) -> bool:
        """The token the hub gives the probe's server while it runs: its exact note ("Server at <the server's
        path>"), made since that server started. The hub deletes it when the server stops. The server's `url` is a
        path, or with subdomain_host a full URL (https://<user>.<domain>/user/<user>/): its path is the note's."""
        server = (model.servers or {}).get(self.config.server_name)
        if server is None or not server.url or server.started is None or token.created is None:
            return False
        path = urlsplit(server.url).path
        return token.note == SERVER_TOKEN_NOTE + path and token.created >= server.started - CLOCK_SLACK

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

    def create(self, deadline: Deadline, *, hub_version: str) -> None:
        """Create the user and mark it (how depends on the hub's version, `mark`). A lost answer is decided by
        reading the user (the docstring)."""
        self.to_delete = True  # from the send on: a request lost in flight may still create it
        self._undecided = True
        lost = False  # an answer was lost: a refusal of the POST sent again may meet the lost one's user

        def find_outcome() -> UserModel | None:
            nonlocal lost
            lost = True
            model = self.client.user_record(self.user, deadline)
            if model is None:
                return None  # it made nothing: sent again
            if not self._decide_lost_create(model):
                raise ConcurrentRun(
                    f"--fresh-user: the answer to creating {self.user!r} was lost, and without --lease (the probe's "
                    "Lease) the user the hub has now may be another run's: left alone (a later run removes it once stale)"
                )
            return model

        try:
            model = self.client.create_fresh_user(self.user, deadline, find_outcome)
        except (PermissionDenied, UserNotCreated, ConcurrentRun):
            # Decided: the hub refused the only POST (nothing made), or the user there is not provably this run's
            # (left alone, said so). After a lost answer a refusal decides nothing (a 409 to the POST sent again may
            # meet the lost one's user, made late; the read itself may be refused): the cleanup reads and decides.
            if not lost or not self._undecided:
                self.to_delete, self._undecided = False, False
            raise
        # Anything else (the hub away, a signal) leaves the create undecided: the cleanup decides it.
        self._undecided = False
        self._note_made(model)
        log.info("fresh_user_created", user=self.user, created=model.created.isoformat() if model.created else None)
        self.mark(deadline, hub_version)

    def _decide_lost_create(self, model: UserModel) -> bool:
        """Whether a user found after this run's create lost its answer is this run's: yes under the probe's
        Lease; without it another run may have made it meanwhile, and it is left alone (logged
        `user_left_behind`: a later run removes it once it is stale)."""
        self._undecided = False
        if self.config.lease is None:
            self.to_delete, self.deleted = False, False
            log.error("user_left_behind", user=self.user, stale=False,
                      message="the create's answer was lost, and without --lease the user there may be another run's: "
                              "left alone; a later run removes it once stale")
            return False
        self._note_made(model)
        return True

    def _note_made(self, model: UserModel) -> None:
        """This run made the user: its `created` proves it later (`made`)."""
        if model.created is not None and model.created not in self.made_at:
            self.made_at.append(model.created)

    def mark(self, deadline: Deadline, hub_version: str) -> None:
        """The canary's mark on the user it made: a token with MARKER's note and no scopes, its value dropped."""
        note = f"{MARKER} {secrets.token_hex(4)}"
        try:
            minted = self.client.mint_token(self.user, {"note": note, "scopes": []}, deadline)
        except PermissionDenied as exc:
            if version_tuple(hub_version)[:1] < (5,):
                # JupyterHub 4 checks a `tokens!user=` filter against the service itself, not the user (fixed in 5):
                # a least-scope service cannot make the mark there. The run goes on; only a leftover of a run killed
                # before its delete cannot be proven the canary's later (78 names it for a human).
                log.warning(
                    "fresh_user_not_marked", user=self.user, hub_version=hub_version, message=exc.message,
                    why="JupyterHub before 5 lets a service with tokens!user=<name> make no token of that user",
                )
                return
            raise PermissionDenied(
                f"marking the fresh user {self.user!r} (a token with no scopes): {exc.message}; the service needs "
                f"tokens!user={self.user}"
            ) from None
        logs.add_secret(str(minted.get("token", "")))  # never used, never shown
        log.info("fresh_user_marked", user=self.user, token_id=minted.get("id"))

    def delete(self, deadline: Deadline, *, stale: bool = False) -> None:
        """Delete the user: this run's, or (`stale`) a leftover the guard proved the canary's. Tried for the whole budget (a
        stale leftover's: --stop-timeout at most): each try reads the user first (gone: done; not this run's: left alone),
        and a DELETE whose answer is lost is decided by the next read, never resent blindly. A user left behind is logged
        `user_left_behind` and raised as UserLeftBehind (13): never a silent success."""
        if stale:  # nothing of this run's at stake, signals held (app/cycle.py): bounded like the stale server's stop
            deadline = deadline.within(self.config.stop_timeout)
        last = "no answer"
        existed = False
        while True:
            try:
                model = self.client.user_record(self.user, deadline)
                if model is None:
                    self._deleted(stale, existed=existed)
                    return
                if stale:
                    if self._proven is None or model.created != self._proven:  # another run's user since: not the one proven
                        self._left_alone(stale, "a user of that name made since the guard proved the leftover")
                        return
                elif self._undecided and not self._decide_lost_create(model):
                    return  # left alone, and said so
                elif model.created is None:  # this run's user, or another's: the hub does not tell; never in silence
                    self._left_behind(stale, "the hub shows no `created` of the user there: not provably this run's, left alone")
                elif not self.made(model):
                    self._left_alone(stale, "not made by this run")
                    return
                outcome, words = self.client.delete_user_once(self.user, deadline)
                existed = True
                if outcome in ("deleted", "absent"):
                    continue  # the next read confirms it
                last = words
            except PermissionDenied as exc:
                self._left_behind(stale, exc.message)
            except HubUnavailable as exc:  # a lost answer included: the next read decides
                last = exc.message
            if deadline.expired():
                self._left_behind(stale, f"not deleted within {deadline.seconds:g}s: {last}")
            log.warning("user_delete_retry", user=self.user, message=last)
            self._sleep(min(DELETE_RETRY_INTERVAL, max(deadline.remaining(), 0.0)))

    def _deleted(self, stale: bool, *, existed: bool) -> None:
        if not stale:
            self.to_delete = False
            self.deleted = True
        log.info("fresh_user_deleted", user=self.user, stale=stale, **({} if existed else {"already_gone": True}))

    def _left_alone(self, stale: bool, why: str) -> None:
        log.warning("fresh_user_not_deleted", user=self.user, stale=stale, why=f"{why}: left alone")
        if not stale:
            self.to_delete = False
            self.deleted = False

    def _left_behind(self, stale: bool, message: str) -> None:
        self.left_behind(message, stale=stale)
        raise UserLeftBehind(f"the fresh user {self.user!r} could not be deleted: {message}")

    def left_behind(self, why: str, *, stale: bool = False) -> None:
        """The user is not deleted (logged `user_left_behind`): e.g. its server could not be stopped (the hub
        would refuse or hang). A stale leftover's leaves this run's own `deleted` as it was."""
        if not stale:
            self.deleted = False
        self.to_delete = False
        log.error("user_left_behind", user=self.user, stale=stale, message=why)


def _never_ran(server: ServerModel) -> bool:
    return not server.ready and not server.pending and server.started is None and server.last_activity is None

