"""The canary's cycle: preflight -> clear a stale server -> spawn -> wait until ready -> verify
[-> the checks that are enabled: kernel, notebook, storage, lab, urls (app/checks/)] -> stop.

Attempts are repeated (tenacity) for failures that may be transient, never beyond the deadline,
and only when another attempt still has time to succeed. Whatever happens after the spawn request —
failure, timeout, exception, SIGTERM or SIGINT — the server is stopped before the attempt ends
(signals are held off while it stops, and acted on as soon as it is stopped).

The hub's REST dialect (status codes, what is retried or resent) lives in app/hub.py; this module
sees plain outcomes: ready or pending, stopped or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import tenacity

from app import logs, scopes, spawn_causes, timeline
from app.checks import Server, enabled_checks
from app.config import Config
from app.deadline import LAST_LOOK, Clock, Deadline, elapsed_ms
from app.errors import (
    CanaryError,
    CheckFailed,
    ConcurrentRun,
    ConfigError,
    HubUnavailable,
    Interrupted,
    PermissionDenied,
    ServerUnreachable,
    SpawnFailed,
    SpawnTimeout,
    StopFailed,
)
from app.fresh_user import FreshUser
from app.hub import (
    SERVER_NAME_RULE,
    TRANSPORT_ERRORS,
    HubClient,
    SpawnOutcome,
    SpawnRefused,
    StreamUnavailable,
    UserGone,
    server_name_allowed,
)
from app.models import ApiStatus, ProgressEvent, ServerModel, TokenOwner, WrongShape, loads
from app.provenance import SpawnRequest, skew_note, youngest_age_s
from app.signals import Shield, no_shield
from app.spawn_progress import ProgressFollower
from app.timeline import Event

PHASES = ("spawn_request", "ready_wait", "verify", "stop")  # the enabled checks' phases come before the stop
FRESH_PHASES = ("create_user", "delete_user")  # --fresh-user: before the spawn request, after the stop
POLL_INTERVAL = 1.0  # polling the user model when the progress stream is not available
# After a 201 (ready within the hub's slow_spawn_timeout) the stream, open since the request went
# out, ends with the spawn: this long at most to take in its last events.
READY_STREAM_GRACE = 2.0
# Another attempt is started only with at least this share of --spawn-timeout left to spawn in: one
# with less would most likely time out (11) and hide the cause of the attempts before it.
MIN_SPAWN_SHARE = 0.5

log = logs.get_logger()


class Canary:
    """Runs the attempts of one check and keeps what the final result reports."""

    def __init__(
        self,
        config: Config,
        client: HubClient,
        *,
        shield: Shield = no_shield,
        interrupted: Callable[[], None] = lambda: None,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        utcnow: Callable[[], datetime] = lambda: datetime.now(UTC),
        deadline: Deadline | None = None,
    ):
        self.config = config
        self.client = client
        self.user = config.user
        self.server_name = config.server_name
        self._shield = shield
        self._raise_if_interrupted = interrupted
        self._clock = clock
        self._sleep = sleep
        self._utcnow = utcnow
        # The run's budget; cli.py starts it with the process, so that reading the token counts too.
        self.deadline = deadline or Deadline(config.deadline, clock)
        # What the result reports, kept up to date as the run goes.
        self.attempts = 0
        self.hub_version: str | None = None
        # The last attempt's progress events, timed from its spawn request (app/timeline.py).
        self.timeline: timeline.Timeline | None = None
        self.phases_ms: dict[str, int] = {}
        self.last_progress_message: str | None = None
        self.failures: list[CanaryError] = []
        self.server_may_be_running = False
        # The server's URL as the hub gives it (its model's `url`), once seen.
        self.server_url: str | None = None
        # The checks against the server (app/checks/) this configuration runs, in order, and what
        # each reported for the result (the last attempt's), under the check's name.
        self.checks = enabled_checks(config)
        self.check_reports: dict[str, Any] = {}
        self._spawn_cut_short = False  # this attempt's spawn budget was cut by the deadline
        self._progress: ProgressFollower | None = None  # this attempt's progress stream (app/spawn_progress.py)
        # Every spawn request of this run, of any attempt, that may have started a server: a server one of
        # them started is this run's, to stop, never another run's (see SpawnRequest).
        self.spawn_requests: list[SpawnRequest] = []
        # --fresh-user: the user each attempt creates and deletes (app/fresh_user.py).
        self.fresh = FreshUser(config, client, utcnow=utcnow, sleep=sleep) if config.fresh_user else None

    # --- the run: attempts with retries ---

    def run(self) -> None:
        """Run until one attempt passes; raise the most telling failure otherwise (see `telling_failure`)."""

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, CanaryError) and exc.retryable

        def no_time_left(state: tenacity.RetryCallState) -> bool:
            # Another attempt needs time to spawn something and still stop it.
            spawn_budget = self.deadline.remaining() - state.upcoming_sleep - self.config.stop_timeout
            if spawn_budget >= self.config.spawn_timeout * MIN_SPAWN_SHARE:
                return False
            log.info("no_further_attempt", reason="too little time left to spawn", spawn_budget_s=round(spawn_budget, 1))
            return True

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception()
            log.warning(
                "attempt_failed",
                reason=getattr(exc, "reason", type(exc).__name__),
                message=str(exc),
                retry_in_s=round(state.upcoming_sleep, 1),
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(retryable),
            stop=tenacity.stop_after_attempt(self.config.attempts) | no_time_left,
            wait=tenacity.wait_exponential_jitter(multiplier=2, max=30, jitter=2),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self.attempt(attempt.retry_state.attempt_number)
        except StopFailed:
            raise  # the server is left running, and said so: a human looks at it
        except CanaryError as exc:
            self.ensure_own_server_gone()  # its StopFailed (13) wins
            telling = self.telling_failure(exc)
            if telling is exc:
                raise
            raise telling from None
        except Interrupted:
            self.ensure_own_server_gone()
            raise
        self.ensure_own_server_gone()

    def telling_failure(self, last: CanaryError) -> CanaryError:
        """The failure to report: the last one, unless it is a spawn timeout that the deadline, not the
        hub, made (its spawn budget was cut short): then the failure of the attempt before it."""
        if isinstance(last, SpawnTimeout) and self._spawn_cut_short and len(self.failures) > 1:
            earlier = self.failures[-2]
            log.info("reporting_earlier_failure", reason=earlier.reason, instead_of=last.reason)
            return earlier
        return last

    # --- one attempt ---

    def attempt(self, number: int) -> None:
        try:
            self._attempt(number)
        except CanaryError as exc:
            self.failures.append(exc)
            raise

    def _attempt(self, number: int) -> None:
        self._raise_if_interrupted()  # a signal during the last cleanup ends the run
        self.attempts = number
        self.timeline = None
        self.phases_ms = {}
        self.check_reports = {}
        self._spawn_cut_short = False
        with logs.bound(attempt=number):
            self.preflight()
            failure: BaseException | None = None
            try:
                with self._shield():
                    if self.fresh is not None:
                        self.make_fresh_user()  # from here on the cleanup deletes the user it made
                    else:
                        self.clear_stale_server()
                spawn_budget = self.deadline.remaining() - self.config.stop_timeout
                if spawn_budget <= 0:
                    raise SpawnTimeout("no time left within --deadline to spawn and still stop the server")
                self._spawn_cut_short = spawn_budget < self.config.spawn_timeout
                spawn_deadline = Deadline(min(self.config.spawn_timeout, spawn_budget), self._clock)
                # A request lost in flight may still start a server: from here on, always stop.
                self.server_may_be_running = True
                self.timeline = timeline.Timeline(self._clock)
                try:
                    self.spawn(spawn_deadline)
                except (SpawnFailed, SpawnTimeout) as exc:
                    exc.cause = exc.cause or self.spawn_cause(exc)
                    log.info("spawn_cause", cause=exc.cause, reason=exc.reason)
                    raise
                self.timed("verify", self.verify)
                self.run_checks()
            except BaseException as exc:
                failure = exc
                raise
            finally:
                # After the hub was lost, its word "no server" needs a steady hub before it is believed.
                self.cleanup(after_outage=isinstance(failure, HubUnavailable))
            log.info("attempt_passed", phases_ms=self.phases_ms)

    def make_fresh_user(self) -> None:
        """--fresh-user: the user of an earlier run (or attempt) gone, this attempt's created (app/fresh_user.py).
        A leftover user's server is stopped first, under the stale rules; its deletion and the creation are
        within the run's deadline, the stop's budget set aside."""
        assert self.fresh is not None
        deadline = self.budget_before_stop()
        leftover = self.fresh.leftover(deadline)
        if leftover is not None:
            try:
                self.clear_stale_server()
            except UserGone:
                pass  # another run deleted it meanwhile: nothing to stop, and the delete finds it gone
            self.timed("delete_user", self.fresh.delete, deadline, stale=not self.fresh.made(leftover))
        self.timed("create_user", self.fresh.create, self.budget_before_stop(), hub_version=self.hub_version or "")

    def spawn(self, deadline: Deadline) -> None:
        """Request the server and wait until it is ready, following its progress stream all along."""
        assert self.timeline is not None
        self._progress = ProgressFollower(self.client, self.user, self.server_name, deadline, self.timeline)
        try:
            ready = self.timed("spawn_request", self.request_spawn, deadline)
            self.timed("ready_wait", self.wait_until_ready, deadline, ready)
        except HubUnavailable as exc:
            if not deadline.expired():
                raise
            # A request cut short by the spawn deadline: the spawn is what took too long.
            raise SpawnTimeout(
                f"the server was not ready within {deadline.seconds:g}s ({exc})",
                progress_message=self.last_progress_message,
            ) from None
        finally:
            self._progress.stop()

    def spawn_cause(self, failure: SpawnFailed | SpawnTimeout) -> str:
        """Why the spawn failed, from its events and the failure's words (app/spawn_causes.py)."""
        told = [(event.message, event.reason, event.field_path) for event in self.timeline.events] if self.timeline else []
        return spawn_causes.classify(told, failure.message, timed_out=isinstance(failure, SpawnTimeout))

    def cleanup(self, *, after_outage: bool = False) -> None:
        """Stop the server this attempt may have started, and with --fresh-user delete the user it created,
        with signals held off, both within --stop-timeout. Idempotent.

        cli.py calls it once more if a signal slipped in before the `finally:` above took over.
        """
        fresh = self.fresh if self.fresh is not None and self.fresh.to_delete else None
        if not self.server_may_be_running and fresh is None:
            return
        with self._shield():
            budget = Deadline(self.config.stop_timeout, self._clock)
            if self.server_may_be_running:
                try:
                    self.timed("stop", self.stop_server, budget, stale=False, after_outage=after_outage)
                except StopFailed:
                    if fresh is not None:  # deleting the user would only meet the server again
                        fresh.left_behind("its server could not be stopped")
                    raise
                self.server_may_be_running = False
            if fresh is not None:
                self.timed("delete_user", fresh.delete, budget)

    def owns(self, model: ServerModel) -> bool:
        """Whether a spawn request of this run (any attempt) started this server (see SpawnRequest)."""
        started = model.started
        hub_ahead = self.client.hub_clock.ahead()
        return started is not None and any(request.started_it(started, hub_ahead) for request in self.spawn_requests)

    def ensure_own_server_gone(self) -> None:
        """Before the run ends: no server this run started is running. A stop that read "no server" from a
        hub that was restarting can be wrong, and the server comes back once the hub has reloaded it: then
        it is stopped now (StopFailed, 13, when it cannot be). Another run's server is left alone."""
        if not self.spawn_requests or self.server_may_be_running:
            return  # nothing asked for, or the stop is still to come (cli.py, after a signal)
        # Signals held from the look on: a SIGTERM while the hub is asked must not leave the server it
        # would have shown (the run's own) running; the look and the stop are bounded as below.
        with self._shield():
            self._stop_own_server_back()

    def _stop_own_server_back(self) -> None:
        # The stop of the canary's own server may outlive the deadline by its --stop-timeout (app/deadline.py):
        # the look for it comes out of that budget, not on top of it.
        budget = Deadline(
            max(LAST_LOOK, min(self.config.stop_timeout, self.deadline.remaining() + self.config.stop_timeout)), self._clock
        )
        look = budget.within(max(LAST_LOOK, min(self.deadline.remaining(), self.config.request_timeout)))
        try:
            model = self.client.server_model(self.user, self.server_name, look)
        except UserGone:
            return
        except HubUnavailable as exc:
            log.warning("own_server_unchecked", message=str(exc), hint="the hub could not say whether this run's server is gone")
            return
        if model is None or not self.owns(model):
            return
        log.warning(
            "own_server_found", **model.log_fields(),
            why="this run's server is back after its stop",
        )
        self.stop_server(budget, stale=False, model=model)

    def timed(self, phase: str, step: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = self._clock()
        try:
            return step(*args, **kwargs)
        finally:
            self.phases_ms[phase] = elapsed_ms(started, self._clock)
            log.info("phase_done", phase=phase, duration_ms=self.phases_ms[phase])

    def budget_before_stop(self) -> Deadline:
        """What is left of the deadline once the stop's budget is set aside (at least LAST_LOOK)."""
        return self.deadline.within(max(LAST_LOOK, self.deadline.remaining() - self.config.stop_timeout))

    def preflight(self) -> None:
        budget = self.budget_before_stop()
        self.hub_version = self.client.version(budget)
        log.info("hub_reachable", hub_version=self.hub_version)
        owner = self.client.whoami(budget)
        log.info(
            "token_valid", owner=owner.name, owner_kind=owner.kind,
            scopes=list(owner.scopes) if owner.scopes is not None else None,
        )
        if self.fresh is not None and owner.is_user and owner.name == self.user:
            raise ConfigError(
                f"--fresh-user: the token is {self.user!r}'s own, and that user is deleted every run: give the token of "
                "a JupyterHub service with admin:users on that name (hub-config/jupyterhub_canary_config.py)"
            )
        if owner.is_user and owner.name != self.user and self.fresh is None:
            log.warning("token_owner_differs", owner=owner.name, hint="the token of --user needs no extra scopes")
        self.check_scopes(owner)
        self.check_token_expiry(owner, budget)
        self.check_server_name(budget)

    def check_server_name(self, deadline: Deadline) -> None:
        """ConfigError (78) for a server name the hub would refuse to create (JupyterHub 6's rule), before
        anything starts. A server of that name the hub already has (made before 6) is the hub's to start
        or refuse: with allow_existing_invalid_named_servers = "allow-start" it starts."""
        if server_name_allowed(self.server_name, self.hub_version or ""):
            return
        record = self.client.user_record(self.user, deadline)  # a fresh user may not exist yet
        servers = record.servers if record is not None else None
        if servers is not None and self.server_name in servers:
            log.warning(
                "server_name_invalid", server_name=self.server_name, hub_version=self.hub_version,
                reason="made before JupyterHub 6: it starts only where the hub allows it (allow-start); rename it",
            )
            return
        raise ConfigError(
            f"--server-name {self.server_name!r}: JupyterHub {self.hub_version} refuses to create a server of this name; "
            f"its rule for server names: {SERVER_NAME_RULE}"
        )

    def check_scopes(self, owner: TokenOwner) -> None:
        """PermissionDenied (77) naming each scope the token lacks to see, start, stop and reach the
        server, before anything is started: a server the token cannot see is one it cannot stop."""
        granted = owner.scopes
        if granted is None:
            log.info("token_scopes_unknown", reason="the hub does not say which scopes the token has")
            return
        lacking, uncertain = scopes.missing(
            granted,
            scopes.needed(self.hub_version or "", fresh_user=self.fresh is not None),
            owner=owner.name if owner.is_user else None,
            user=self.user,
            server_name=self.server_name,
        )
        if uncertain:
            log.info("token_scopes_uncertain", scopes=uncertain, reason="granted only through a group filter")
        if lacking:
            named = [f"{scope}!user={self.user}" for scope in lacking]
            uses = "; ".join(f"{scope}: to {scopes.USES[scope]}" for scope in lacking)
            raise PermissionDenied(f"the token lacks the scope{'s' * (len(named) > 1)} {', '.join(named)} ({uses})")

    def check_token_expiry(self, owner: TokenOwner, deadline: Deadline) -> None:
        """Log when the token expires, and warn in time: an expired token fails every run (77)."""
        token_id = owner.token_id  # JupyterHub 5+
        if not owner.is_user:
            log.debug("token_expiry_unknown", reason="not a user's token")
            return
        if not token_id:
            log.info("token_expiry_unknown", reason="the hub does not say which token this is (JupyterHub before 5)")
            return
        expires_at = self.client.token_expiry(owner.name, token_id, deadline)
        if expires_at is False:
            log.info("token_expiry_unknown", reason="the token may not read itself (scope read:tokens)")
            return
        if expires_at is None:
            log.info("token_expiry", token_expires_in_s=None, expires_at="never")
            return
        seconds = round((expires_at - self._utcnow()).total_seconds())
        if seconds < self.config.token_expiry_warning:
            log.warning("token_expires_soon", token_expires_in_s=seconds, expires_at=expires_at.isoformat())
        else:
            log.info("token_expiry", token_expires_in_s=seconds, expires_at=expires_at.isoformat())

    def clear_stale_server(self) -> None:
        """Stop a server left by an earlier run — only when no live run of this probe can own it.

        Every run of a probe ends by its --deadline plus its own stop's --stop-timeout after it started,
        and starts its server after it started: a server younger than that may belong to a live run
        (a `helm test` or a manual run beside the CronJob's) and is left alone (ConcurrentRun, 18).
        The age is the hub's `started` against this run's clock; a server without one cannot be
        proven stale either.
        """
        # Within the run's deadline: a stale server's stop is part of the run, not extra time.
        deadline = self.deadline.within(self.config.stop_timeout)
        model = self.client.server_model(self.user, self.server_name, deadline)
        if model is None:
            return
        if self.owns(model):
            # An earlier attempt's own server (its stop read "no server" from a restarting hub): this run's to stop.
            log.warning(
                "own_server_found", **model.log_fields(),
                why="started by this run's spawn request of an earlier attempt",
            )
            self.stop_server(deadline, stale=False, model=model)
            return
        started = model.started
        age_s = youngest_age_s(started, self._utcnow(), self.client.hub_clock.ahead())
        lifetime = self.config.deadline + self.config.stop_timeout
        if age_s is None or age_s < lifetime:
            log.warning(
                "concurrent_run_found", pending=model.pending, ready=model.ready,
                started=started.isoformat() if started else None, server_age_s=age_s, stale_after_s=lifetime,
            )
            raise ConcurrentRun(
                f"the server was started {f'{age_s:g}s ago' if age_s is not None else 'at an unknown time'}, "
                f"less than --deadline plus --stop-timeout ({lifetime:g}s): it may belong to another live run "
                "of this probe, and is left alone"
            )
        log.warning(
            "stale_server_found", pending=model.pending, ready=model.ready,
            started=started.isoformat() if started else None, server_age_s=age_s,
        )
        self.stop_server(deadline, stale=True, model=model)
        log.warning("stale_server_stopped")

    def request_spawn(self, deadline: Deadline) -> bool:
        """Ask for the server; True when the hub says it is ready already.

        The progress stream is followed from before the request is sent (app/spawn_progress.py): the
        hub tells a spawn's events only while it is pending, which may be the whole time it holds the
        request open. What the request may have started is recorded (`spawn_requests`): a server is
        this run's only by that record.
        """
        assert self._progress is not None
        self._progress.start()
        sent_at = self._utcnow()
        try:
            outcome = self.client.start_server(self.user, self.server_name, self.config.user_options, deadline)
        except ConcurrentRun:
            # The hub's own word: the server predates this request. Nothing of this run's is running.
            self.server_may_be_running = False
            log.warning("concurrent_run_found", why="the spawn request met a server that was there before it")
            raise
        except SpawnRefused as refused:
            # The hub's answer is generic ("Internal Server Error"); the spawner's reason is in the
            # progress stream, which still holds the `failed` event: following it raises SpawnFailed
            # with that reason.
            self._progress.request_answered()
            try:
                self._follow_progress(deadline.within(5.0))
            except StreamUnavailable:
                pass
            raise SpawnFailed(refused.message) from None
        finally:
            self._progress.request_answered()
        request = SpawnRequest(sent_at, self._utcnow(), answered=outcome.accepted)
        if outcome.accepted:
            self.spawn_requests.append(request)
            self._note_identity(request, deadline)
            return outcome.ready
        return self._adopt(request, outcome)

    def _note_identity(self, request: SpawnRequest, deadline: Deadline) -> None:
        """The hub's `started` of the server it has just accepted: the server's identity for this run."""
        try:
            model = self.client.server_model(self.user, self.server_name, deadline)
        except HubUnavailable as exc:
            log.debug("spawn_identity_unknown", reason=str(exc))  # the request's time window still tells
            return
        if model is None:
            # The hub's word, right after it accepted the request: the spawn has ended already. A server
            # found later is not this request's, whatever its `started` (another run's may follow at once).
            request.ended = True
            return
        request.started = model.started
        if model.url:
            self.server_url = self.client.server_url(self.user, self.server_name, model)

    def _adopt(self, request: SpawnRequest, outcome: SpawnOutcome) -> bool:
        """A server found after the request's answer was lost: followed only when this request started it."""
        found = outcome.found
        if found is None:
            raise SpawnFailed("the server that met the resent spawn request stopped before it could be followed")
        started = found.started
        hub_ahead = self.client.hub_clock.ahead()
        if started is None or not request.started_it(started, hub_ahead):
            self.server_may_be_running = False  # the server there is another's: this request started none
            log.warning(
                "concurrent_run_found", **found.log_fields(),
                why="the spawn request's answer was lost, and the server there was not provably started by it",
            )
            raise ConcurrentRun(
                f"the spawn request's answer was lost, and the server the hub has was started "
                f"{'at ' + found.started.isoformat() if started else 'at an unknown time'} (the hub's clock), not provably "
                f"between this run's request and its outcome{skew_note(hub_ahead)}: another run's, left alone"
            )
        request.started = started
        self.spawn_requests.append(request)
        log.warning(
            "spawn_already_underway", **found.log_fields()
        )
        return False

    def wait_until_ready(self, deadline: Deadline, ready_already: bool) -> None:
        if ready_already:
            # Ready within the hub's slow_spawn_timeout (201): take in what the stream told meanwhile.
            try:
                self._follow_progress(deadline.within(READY_STREAM_GRACE), confirm=False)
            except StreamUnavailable as exc:
                log.debug("progress_stream_unavailable", reason=str(exc))
            if self._is_ready(deadline):
                return
            # A 201 is no proof either: with slow_spawn_timeout 0 the hub was seen to answer 201 once the
            # process had started, before the server answered. The stream goes on telling.
        try:
            if self._follow_progress(deadline):
                return
        except StreamUnavailable as exc:
            log.info("progress_stream_unavailable", reason=str(exc))
        self._poll_until_ready(deadline)

    def _follow_progress(self, deadline: Deadline, *, confirm: bool = True) -> bool:
        """Log the spawner's progress messages as the follower took them in; True once the stream says
        ready and (with `confirm`) the server model confirms it.

        A `failed` event on a stream asked for before the hub answered the spawn request is no evidence
        about this spawn: the hub tells a stream that comes before the new spawn is pending how the
        *previous* spawn ended. It is set aside, and a stream asked for now tells this spawn's end.
        """
        assert self._progress is not None
        while True:
            progress = self._progress
            for event, recorded in progress.events(deadline):
                if event.failed and progress.opened_before_answer:
                    progress.stop()  # its thread done with the timeline before the event leaves it
                    self._set_aside(event, recorded)
                    self._progress = progress.reopened(event)
                    break
                message = event.message
                if message:
                    self.last_progress_message = message
                log.info(
                    "spawn_progress",
                    progress=event.progress,
                    message=message,
                    t_ms=recorded.t_ms,
                    **({"event_reason": recorded.reason} if recorded.reason else {}),
                    **({"field_path": recorded.field_path} if recorded.field_path else {}),
                )
                if event.failed:
                    raise SpawnFailed(f"the spawner reported failure: {message}", progress_message=self.last_progress_message)
                if event.ready:
                    # The stream alone is not proof: a cancelled spawn was seen to report ready.
                    return self._is_ready(deadline) if confirm else True
            else:
                return False

    def _set_aside(self, event: ProgressEvent, recorded: Event) -> None:
        """An end the hub told before it had this spawn: out of the timeline, the cause and the result."""
        if self.timeline is not None:
            self.timeline.events[:] = [kept for kept in self.timeline.events if kept is not recorded]
        log.info(
            "progress_failure_set_aside", message=event.message, t_ms=recorded.t_ms,
            why="told on a stream opened before the hub answered the spawn request: maybe an earlier spawn's",
        )

    def _is_ready(self, deadline: Deadline) -> bool:
        model = self.client.server_model(self.user, self.server_name, deadline)
        if model is not None and model.url:
            self.server_url = self.client.server_url(self.user, self.server_name, model)
        if model is None:
            raise SpawnFailed(
                "the server stopped before it became ready"
                + (f" (last progress: {self.last_progress_message})" if self.last_progress_message else ""),
                progress_message=self.last_progress_message,
            )
        return model.ready

    def _poll_until_ready(self, deadline: Deadline) -> None:
        while not self._is_ready(deadline):
            if deadline.expired():
                raise SpawnTimeout(
                    f"the server was not ready within {deadline.seconds:g}s"
                    + (f" (last progress: {self.last_progress_message})" if self.last_progress_message else ""),
                    progress_message=self.last_progress_message,
                )
            self._sleep(min(POLL_INTERVAL, deadline.remaining()))

    def _server_url(self) -> str:
        return self.server_url or self.client.server_url(self.user, self.server_name)

    def verify(self) -> None:
        url = self._server_url() + "api/status"
        deadline = self.budget_before_stop().within(self.config.request_timeout * 2)
        try:
            response = self.client.request("GET", url, deadline)
        except HubUnavailable as exc:
            raise ServerUnreachable(f"the server did not answer through the proxy: {exc}") from None
        if response.status_code == 403:
            raise PermissionDenied(
                "the server refused the token (403): it needs the scope access:servers!user=" + self.user
            )
        if response.status_code != 200:
            where = response.headers.get("Location")
            raise ServerUnreachable(
                f"GET {url.removeprefix(self.client.hub_url.rstrip('/'))} answered {response.status_code}"
                + (f" (redirect to {where})" if where else "")
            )
        try:
            body = loads(response.content)
        except (ValueError, *TRANSPORT_ERRORS):
            raise ServerUnreachable("api/status answered 200 without JSON") from None
        try:
            status = ApiStatus.parse(body, "api/status answered 200")
        except WrongShape as exc:  # not a jupyter_server answering
            raise ServerUnreachable(exc.message) from None
        log.info("server_verified", kernels=status.kernels, connections=status.connections, started=status.started)

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases this configuration runs, in order (the result lists each, null when not reached)."""
        fresh = self.fresh is not None
        return (
            *FRESH_PHASES[:1] * fresh, *PHASES[:-1], *(check.name for check in self.checks), PHASES[-1],
            *FRESH_PHASES[1:] * fresh,
        )

    def run_checks(self) -> None:
        """Each enabled check in order, as a phase and a line of the timeline; the first failure ends the attempt."""
        for check_class in self.checks:
            # Whatever a check takes, the stop keeps its budget.
            server = Server(self.client, self.user, self._server_url(), self.budget_before_stop(), self._shield)
            check = check_class(self.config, server)
            outcome = "failed"
            try:
                report = self.timed(check.name, check.run)
                outcome = "passed"
            except CheckFailed as exc:
                outcome = f"failed: {exc.reason} ({exc.cause})"
                if exc.details is not None:
                    self.check_reports[check.name] = exc.details
                raise
            except CanaryError as exc:
                outcome = f"failed: {exc.reason}"
                raise
            finally:
                if self.timeline is not None:
                    self.timeline.record(ProgressEvent(f"check {check.name} {outcome} ({self.phases_ms[check.name]} ms)"))
            if report is not None:
                self.check_reports[check.name] = report

    def stop_server(
        self, deadline: Deadline, *, stale: bool, model: ServerModel | None = None, after_outage: bool = False
    ) -> None:
        """Stop the server within `deadline`; StopFailed (and `server_left_running`) if it may still run.

        Any failure on this path ends as StopFailed: whatever went wrong, a human must look at the server.
        """
        try:
            stopped = self.client.stop_server(self.user, self.server_name, deadline, after_outage=after_outage)
        except Exception as exc:
            url = self.client.server_url(self.user, self.server_name, model) if model else self._server_url()
            message = exc.message if isinstance(exc, CanaryError) else f"{type(exc).__name__}: {exc}"
            log.error("server_left_running", url=url, stale=stale, message=message)
            raise StopFailed(f"the server at {url} could not be stopped: {message}") from None
        if stopped:
            log.info("server_stopped", stale=stale)
        else:
            # Nothing to stop, e.g. the hub refused the spawn.
            log.info("server_already_stopped", stale=stale)
