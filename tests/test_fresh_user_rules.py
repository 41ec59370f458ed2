"""Attacks on --fresh-user's rules (app/fresh_user.py) with a fake client: fast, no hub.

The FreshUser of one run is driven as app/cycle.py drives it (`leftover`, `delete(stale=...)`, `create`, the
cleanup's `delete` while `to_delete`), against a FakeHub that keeps one user record and answers as JupyterHub
does, with the faults a real hub shows scripted in (a lost answer, another run's create in between).
Each break found is an xfail(strict=True) until fixed; the tests that held say "Held".
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from app import logs
from app.deadline import Deadline
from app.errors import ConcurrentRun, ConfigError, HubUnavailable, PermissionDenied, UserLeftBehind
from app.fresh_user import MARKER, PREFIX, FreshUser
from app.hub import HubClock
from app.models import ApiToken, ServerModel, UserModel
from app.transport import OutcomeUnknown

USER = f"{PREFIX}rules"
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def log() -> Iterator[io.StringIO]:
    """The log of the test, JSON lines (each test its own stream: nothing written to a closed one)."""
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    yield out
    logs.configure("json", "info", stream=io.StringIO())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += max(seconds, 0.001)


def user(created: datetime | None, **fields) -> UserModel:
    described = {"servers": {}, "admin": False, "roles": ("user",), "groups": ()}
    described.update(fields)
    return UserModel(created=created, **described)


def mark(created: datetime, note: str = f"{MARKER} 0123abcd") -> ApiToken:
    return ApiToken(id="m1", note=note, created=created)


class FakeHub:
    """One user name on a hub: its record (None: no such user), its tokens, and what each call did."""

    def __init__(self, record: UserModel | None = None, tokens: tuple[ApiToken, ...] = ()):
        self.record = record
        self.token_list = tokens
        self.calls: list[str] = []
        self.hub_clock = HubClock()
        self.now = datetime.now(UTC)
        # Hooks: run before the call is answered (e.g. another run creates the user); may raise.
        self.before_read: list[Callable[[], None]] = []
        self.on_delete: list[Callable[[], tuple[str, str]]] = []
        self.on_create: list[Callable[[Callable[[], UserModel | None]], UserModel]] = []

    def user_record(self, name: str, deadline: Deadline) -> UserModel | None:
        self.calls.append("read")
        if self.before_read:
            self.before_read.pop(0)()
        return self.record

    def tokens(self, name: str, deadline: Deadline) -> tuple[ApiToken, ...]:
        self.calls.append("tokens")
        return self.token_list

    def delete_user_once(self, name: str, deadline: Deadline) -> tuple[str, str]:
        self.calls.append("DELETE")
        if self.on_delete:
            return self.on_delete.pop(0)()
        if self.record is None:
            return "absent", ""
        self.record = None
        return "deleted", ""

    def create_fresh_user(self, name: str, deadline: Deadline, find_outcome) -> UserModel:
        self.calls.append("POST")
        if self.on_create:
            return self.on_create.pop(0)(find_outcome)
        if self.record is not None:
            raise ConcurrentRun("409")
        self.record = user(self.stamp())
        return self.record

    def mint_token(self, name: str, body: dict, deadline: Deadline) -> dict:
        self.calls.append("mint")
        self.token_list = (*self.token_list, ApiToken(id="m", note=body["note"], created=self.stamp()))
        return {"id": "m", "token": "secret-value-of-the-mark"}

    def stamp(self) -> datetime:
        self.now += timedelta(milliseconds=3)
        return self.now

    def another_run_creates(self) -> None:
        """Another run of the probe (no Lease, or a manual run) deletes what is there and makes its own user."""
        self.record = user(self.stamp())
        self.token_list = (mark(self.now),)


def fresh_for(hub: FakeHub, *, lease: str | None = None, server_name: str = "", clock: FakeClock | None = None,
              utcnow: Callable[[], datetime] | None = None) -> tuple[FreshUser, Deadline]:
    clock = clock or FakeClock()
    config = SimpleNamespace(user=USER, server_name=server_name, deadline=60.0, stop_timeout=10.0, lease=lease)
    fresh = FreshUser(config, hub, utcnow=utcnow or (lambda: datetime.now(UTC)), sleep=clock.sleep)
    return fresh, Deadline(30.0, clock)


def cleanup(fresh: FreshUser, deadline: Deadline) -> None:
    """What Canary.cleanup does with the fresh user (no server to stop)."""
    if fresh.to_delete:
        fresh.delete(deadline)


def stale_leftover() -> tuple[UserModel, tuple[ApiToken, ...]]:
    return user(LONG_AGO), (mark(LONG_AGO + timedelta(milliseconds=40)),)


# --- 1. a stale leftover's delete ---


def test_held_a_stale_marked_leftover_is_deleted():
    record, tokens = stale_leftover()
    hub = FakeHub(record, tokens)
    fresh, deadline = fresh_for(hub)
    found = fresh.leftover(deadline)
    fresh.delete(deadline, stale=not fresh.made(found))
    assert hub.record is None and hub.calls.count("DELETE") == 1
    assert fresh.deleted is None and not fresh.to_delete  # the run's own user is not reached yet


def test_a_user_another_run_made_between_the_guard_and_the_delete_is_not_deleted():
    """Break 1 (fixed): the stale delete took the identity of the user its own first read found, not the one the guard
    proved. Without a Lease (or beside a manual run) two runs find the same stale leftover. Run A deletes it and creates its
    own user; run B, which proved the leftover a moment before (and stopped its stale server meanwhile), then reads
    A's new user in its delete loop and deletes it: a live run's user, young, never proven by B's guard."""
    record, tokens = stale_leftover()
    hub = FakeHub(record, tokens)
    fresh, deadline = fresh_for(hub)
    found = fresh.leftover(deadline)  # B's guard: the stale leftover, proven
    hub.another_run_creates()  # meanwhile A deleted it and made its own (B's clear_stale_server took a while)
    theirs = hub.record
    fresh.delete(deadline, stale=not fresh.made(found))
    assert hub.record is theirs, "run B deleted run A's fresh user, which its guard never proved"
    assert "DELETE" not in hub.calls


def test_held_a_user_made_after_the_leftovers_lost_delete_is_left_alone():
    """Held: the DELETE's answer lost (it did delete); another run creates its user before the next read: left alone."""
    record, tokens = stale_leftover()
    hub = FakeHub(record, tokens)

    def lost() -> tuple[str, str]:
        hub.record = None
        hub.another_run_creates()
        raise OutcomeUnknown("the answer to the DELETE was lost")

    hub.on_delete.append(lost)
    fresh, deadline = fresh_for(hub)
    found = fresh.leftover(deadline)
    theirs_before = None
    fresh.delete(deadline, stale=not fresh.made(found))
    theirs_before = hub.record
    assert theirs_before is not None and hub.calls.count("DELETE") == 1


def test_held_a_delete_refused_400_is_tried_within_the_budget_then_13():
    """Held: 400 (a stop pending) again and again: retried each second, within the budget (the injected clock), then
    user_left_behind and UserLeftBehind (13); the run's own user reported not deleted."""
    hub = FakeHub()
    clock = FakeClock()
    fresh, _ = fresh_for(hub, clock=clock)
    fresh.create(Deadline(30.0, clock), hub_version="6.1.1")
    hub.on_delete.extend([lambda: ("refused", "DELETE answered 400 stop pending")] * 1000)
    budget = Deadline(10.0, clock)
    with pytest.raises(UserLeftBehind) as raised:
        fresh.delete(budget)
    assert "400" in raised.value.message
    assert 9.0 <= clock.now - 1000.0 <= 11.5
    assert 9 <= hub.calls.count("DELETE") <= 12
    assert fresh.deleted is False and not fresh.to_delete


def test_held_permission_denied_on_the_delete_is_13_at_once():
    hub = FakeHub()
    fresh, deadline = fresh_for(hub)
    fresh.create(deadline, hub_version="6.1.1")

    def forbidden() -> tuple[str, str]:
        raise PermissionDenied("403")

    hub.on_delete.append(forbidden)
    with pytest.raises(UserLeftBehind):
        fresh.delete(deadline)
    assert hub.calls.count("DELETE") == 1 and fresh.deleted is False


def test_held_a_lost_delete_answer_is_decided_by_the_next_read_never_resent_blindly():
    hub = FakeHub()
    fresh, deadline = fresh_for(hub)
    fresh.create(deadline, hub_version="6.1.1")

    def lost() -> tuple[str, str]:
        hub.record = None  # it did delete
        raise OutcomeUnknown("lost")

    hub.on_delete.append(lost)
    fresh.delete(deadline)
    assert hub.calls.count("DELETE") == 1 and fresh.deleted is True


# --- 2. the create: is to_delete right on every path? ---


def test_a_409_to_the_resent_create_after_a_lost_answer_leaves_no_user_under_the_lease():
    """Break 2 (fixed): the 409 was taken for another run's. The POST's answer is lost (a read timeout) while the
    request is still on its way to the hub (queued at an ingress); the read that decides it comes first (no user), so
    the POST is resent, and meets the user the first POST made: 409. Under the Lease no other run can have made it:
    it is this run's. It was left behind, unmarked: every later run's guard refuses it (78, "no mark") until a human
    removes it. Now the cleanup reads and decides it (the attempt still ends 18)."""
    hub = FakeHub()

    def slow_hub(find_outcome):
        assert find_outcome() is None  # the read before the hub's commit: no user, so the POST goes out again
        hub.record = user(hub.stamp())  # the first POST's user, committed now
        raise ConcurrentRun("creating the fresh user: the hub answered 409")  # the resend's answer

    hub.on_create.append(slow_hub)
    fresh, deadline = fresh_for(hub, lease="canary-default")
    with pytest.raises(ConcurrentRun):
        fresh.create(deadline, hub_version="6.1.1")
    cleanup(fresh, deadline)
    assert hub.record is None, "the run's own user (its POST made it) is left behind"


def test_a_409_to_the_resent_create_without_the_lease_is_logged_user_left_behind(log):
    """Break 2b (fixed): without the Lease the same 409 left the user without `user_left_behind`."""
    hub = FakeHub()

    def slow_hub(find_outcome):
        assert find_outcome() is None
        hub.record = user(hub.stamp())
        raise ConcurrentRun("creating the fresh user: the hub answered 409")

    hub.on_create.append(slow_hub)
    fresh, deadline = fresh_for(hub)
    with pytest.raises(ConcurrentRun):
        fresh.create(deadline, hub_version="6.1.1")
    cleanup(fresh, deadline)
    assert hub.record is not None  # left alone: it may be another run's
    assert "user_left_behind" in log.getvalue()
    assert fresh.deleted is False


def test_held_a_409_to_the_first_post_is_another_runs_and_left_alone():
    hub = FakeHub()

    def other_run(find_outcome):
        hub.another_run_creates()
        raise ConcurrentRun("409")

    hub.on_create.append(other_run)
    fresh, deadline = fresh_for(hub, lease="canary-default")
    with pytest.raises(ConcurrentRun):
        fresh.create(deadline, hub_version="6.1.1")
    theirs = hub.record
    cleanup(fresh, deadline)
    assert hub.record is theirs and "DELETE" not in hub.calls


def test_a_lost_create_whose_read_is_refused_leaves_no_user_silently(log):
    """Break 3 (fixed): a read that could not decide a lost create (403 to the GET) was taken for a decision: the user
    the POST may have made was left behind with no word. Now the cleanup reads again and decides."""
    hub = FakeHub()

    def lost_then_refused_read(find_outcome):
        hub.record = user(hub.stamp())  # the lost POST made it

        def refuse():
            raise PermissionDenied("reading the user: 403 (a proxy's, or a role being reloaded)")

        hub.before_read.append(refuse)
        return find_outcome()

    hub.on_create.append(lost_then_refused_read)
    fresh, deadline = fresh_for(hub, lease="canary-default")
    with pytest.raises(PermissionDenied):
        fresh.create(deadline, hub_version="6.1.1")
    cleanup(fresh, deadline)
    out = log.getvalue()
    assert hub.record is None or "user_left_behind" in out, "the POST's user is left behind in silence"


def test_held_a_lost_create_under_the_lease_is_adopted_marked_and_deleted():
    hub = FakeHub()

    def lost(find_outcome):
        hub.record = user(hub.stamp())
        return find_outcome()

    hub.on_create.append(lost)
    fresh, deadline = fresh_for(hub, lease="canary-default")
    fresh.create(deadline, hub_version="6.1.1")
    assert "mint" in hub.calls
    cleanup(fresh, deadline)
    assert hub.record is None and fresh.deleted is True


def test_held_a_lost_create_and_a_hub_away_is_decided_by_the_cleanup():
    """Held: the POST lost, the hub away after it (HubUnavailable out of create): the cleanup's read decides it."""
    hub = FakeHub()

    def lost_and_away(find_outcome):
        hub.record = user(hub.stamp())
        raise HubUnavailable("the hub went away")

    hub.on_create.append(lost_and_away)
    fresh, deadline = fresh_for(hub, lease="canary-default")
    with pytest.raises(HubUnavailable):
        fresh.create(deadline, hub_version="6.1.1")
    assert fresh.to_delete
    cleanup(fresh, deadline)
    assert hub.record is None and fresh.deleted is True


def test_a_created_user_the_hub_shows_without_created_is_not_left_behind_in_silence(log):
    """Break 4 (fixed): a 201 without `created` made a user the run could not recognise at its end: left behind with a
    warning only (`fresh_user_not_deleted`), and the run passed. Now it is `user_left_behind`, 13."""
    hub = FakeHub()

    def no_created(find_outcome):
        hub.record = user(None)
        return hub.record

    hub.on_create.append(no_created)
    fresh, deadline = fresh_for(hub, lease="canary-default")
    fresh.create(deadline, hub_version="6.1.1")
    with pytest.raises(UserLeftBehind):  # before: no word but a warning, and the run passed (exit 0, user_deleted false)
        cleanup(fresh, deadline)
    assert fresh.deleted is False and "user_left_behind" in log.getvalue()


# --- 3. the mark and the guard ---


def guard(record: UserModel, tokens: tuple[ApiToken, ...], **kwargs) -> FakeHub:
    hub = FakeHub(record, tokens)
    fresh, deadline = fresh_for(hub, **kwargs)
    fresh.leftover(deadline)
    return hub


@pytest.mark.parametrize("tokens", [
    pytest.param((), id="no-mark"),
    pytest.param((mark(LONG_AGO + timedelta(seconds=61)),), id="mark-made-61s-later"),
    pytest.param((mark(LONG_AGO - timedelta(seconds=2)),), id="mark-made-before-the-user"),
    pytest.param((ApiToken(id="m", note=f"{MARKER} x", created=None),), id="mark-without-created"),
    pytest.param((mark(LONG_AGO + timedelta(seconds=1)), mark(LONG_AGO + timedelta(days=3), note=f"{MARKER} mine")),
                 id="a-persons-token-noted-like-the-mark-made-later"),
    pytest.param((mark(LONG_AGO + timedelta(seconds=1)), ApiToken(id="t", note=None, created=LONG_AGO)),
                 id="a-token-without-note"),
    pytest.param((mark(LONG_AGO + timedelta(seconds=1), note="jupyterhub-canary fresh-user mar"),), id="note-short"),
])
def test_held_the_guard_refuses_without_a_proper_mark(tokens):
    with pytest.raises(ConfigError):
        guard(user(LONG_AGO), tokens)


def test_held_two_marks_made_with_the_user_pass():
    tokens = (mark(LONG_AGO + timedelta(seconds=1)), mark(LONG_AGO + timedelta(seconds=2), note=f"{MARKER} other"))
    guard(user(LONG_AGO), tokens)


def test_held_a_mark_with_a_user_without_created_is_no_proof():
    with pytest.raises((ConfigError, ConcurrentRun)):
        guard(user(None), (mark(LONG_AGO),))


STARTED = LONG_AGO + timedelta(hours=1)


@pytest.mark.parametrize(("server_name", "servers", "token", "passes"), [
    pytest.param("", {"": ServerModel(ready=True, url=f"/user/{USER}/", started=STARTED)},
                 ApiToken(id="s", note=f"Server at /user/{USER}/", created=STARTED), True, id="servers-token"),
    pytest.param("", {"": ServerModel(ready=True, url=f"/user/{USER}/", started=STARTED)},
                 ApiToken(id="s", note=f"Server at /user/{USER}/", created=STARTED - timedelta(seconds=5)), False,
                 id="made-before-the-server"),
    pytest.param("", {"": ServerModel(url=f"/user/{USER}/")},
                 ApiToken(id="s", note=f"Server at /user/{USER}/", created=STARTED), False, id="stopped-server"),
    pytest.param("gpu", {"gpu": ServerModel(ready=True, url=f"/user/{USER}/gpu/", started=STARTED)},
                 ApiToken(id="s", note=f"Server at /user/{USER}/", created=STARTED), False, id="the-default-servers-note"),
    pytest.param("gpu", {"gpu": ServerModel(ready=True, url=f"/user/{USER}/gpu/", started=STARTED),
                         "": ServerModel()}, ApiToken(id="s", note=f"Server at /user/{USER}/gpu/", created=STARTED), True,
                 id="named-with-a-default-that-never-ran"),
    pytest.param("gpu", {"gpu": ServerModel(ready=True, url=f"/user/{USER}/gpu/", started=STARTED),
                         "": ServerModel(last_activity=STARTED)},
                 ApiToken(id="s", note=f"Server at /user/{USER}/gpu/", created=STARTED), False,
                 id="named-with-a-default-that-ran"),
])
def test_held_the_servers_token_and_never_ran(server_name, servers, token, passes):
    record = user(LONG_AGO, servers=servers)
    tokens = (mark(LONG_AGO + timedelta(seconds=1)), token)
    if passes:
        guard(record, tokens, server_name=server_name)
    else:
        with pytest.raises(ConfigError):
            guard(record, tokens, server_name=server_name)


# --- 4. check_stale with a skewed hub clock ---


class Skewed(HubClock):
    def __init__(self, low: float, high: float):
        super().__init__()
        self.low, self.high = low, high


@pytest.mark.parametrize(("hub_ahead", "age_by_hub", "stale"), [
    ((0.0, 0.0), 71.0, True),
    ((0.0, 0.0), 69.0, False),
    ((100.0, 101.0), 71.0, True),  # the hub's clock 100 s ahead: its own "71 s ago" (the hub's now at its least)
    ((100.0, 101.0), 69.0, False),
    ((-101.0, -100.0), 71.0, True),  # 100 s behind
    ((-101.0, -100.0), 69.0, False),
])
def test_held_check_stale_against_a_skewed_hub_clock(hub_ahead, age_by_hub, stale):
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    hub_now = now + timedelta(seconds=hub_ahead[0])
    hub = FakeHub(user(hub_now - timedelta(seconds=age_by_hub)))
    hub.hub_clock = Skewed(*hub_ahead)
    fresh, _ = fresh_for(hub, utcnow=lambda: now)
    if stale:
        fresh.check_stale(hub.record)
    else:
        with pytest.raises(ConcurrentRun):
            fresh.check_stale(hub.record)


# --- 5. the cycle's order (app/cycle.py): a Canary on the fake client, its preflight left out ---


class CycleHub(FakeHub):
    """FakeHub with the server calls the cycle makes: one server (the probe's), stopped or not."""

    def __init__(self, *args, server: ServerModel | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.server = server
        self.before_server_read: list[Callable[[], None]] = []
        self.stop_fails = False

    def server_model(self, name: str, server_name: str, deadline: Deadline, **kwargs) -> ServerModel | None:
        from app.hub import UserGone

        self.calls.append("server")
        if self.before_server_read:
            self.before_server_read.pop(0)()
        if self.record is None:
            raise UserGone(f"--user {name!r}: the hub has no such user")
        return self.server

    def stop_server(self, name: str, server_name: str, deadline: Deadline, **kwargs) -> bool:
        self.calls.append("stop")
        if self.stop_fails:
            raise HubUnavailable("DELETE .../server answered 500")
        stopped, self.server = self.server is not None, None
        return stopped

    def server_url(self, name: str, server_name: str, model: ServerModel | None = None) -> str:
        return f"http://127.0.0.1:1/user/{name}/"


def canary_for(hub: CycleHub, deadline_s: float = 60.0, **env: str):
    from app.config import build_run_config
    from app.cycle import Canary

    clock = FakeClock()
    config = build_run_config({}, {
        "CANARY_HUB_URL": "http://127.0.0.1:1/", "CANARY_USER": USER, "CANARY_FRESH_USER": "true",
        "JUPYTERHUB_API_TOKEN": "t", "CANARY_DEADLINE": "60", "CANARY_STOP_TIMEOUT": "10", "CANARY_SPAWN_TIMEOUT": "30",
        **env,
    })
    canary = Canary(config, hub, clock=clock, sleep=clock.sleep, deadline=Deadline(deadline_s, clock))
    canary.preflight = lambda: None
    return canary


def test_held_no_time_left_to_spawn_still_deletes_the_user_made():
    """Held: the create leaves less than --stop-timeout: SpawnTimeout (11), and the cleanup deletes the user it made."""
    from app.errors import SpawnTimeout

    hub = CycleHub()
    canary = canary_for(hub, deadline_s=5.0)  # less than the stop's 10 s: no time to spawn
    with pytest.raises(SpawnTimeout):
        canary.attempt(1)
    assert hub.calls.count("POST") == 1 and hub.record is None
    assert canary.fresh.deleted is True and not canary.fresh.to_delete


def test_held_a_stale_leftovers_server_that_cannot_be_stopped_is_13_and_nothing_deleted_or_made():
    from app.errors import StopFailed

    record, tokens = stale_leftover()
    hub = CycleHub(record, tokens, server=ServerModel(ready=True, url=f"/user/{USER}/", started=LONG_AGO))
    hub.stop_fails = True
    canary = canary_for(hub)
    with pytest.raises(StopFailed) as raised:
        canary.attempt(1)
    assert raised.value.exit_code == 13 and raised.value.reason == "stop_failed"
    assert "DELETE" not in hub.calls and "POST" not in hub.calls and hub.record is record
    assert canary.fresh.deleted is None  # the result's user_deleted: null, the run's own user never reached


def test_a_leftover_deleted_by_another_run_meanwhile_is_not_a_configuration_error():
    record, tokens = stale_leftover()
    hub = CycleHub(record, tokens)

    def other_run_deletes() -> None:
        hub.record = None

    hub.before_server_read.append(other_run_deletes)
    canary = canary_for(hub)
    try:
        canary.make_fresh_user()
    except ConfigError as exc:
        pytest.fail(f"78 for a leftover that is gone: {exc.message}")
    assert hub.calls.count("POST") == 1


def test_a_subdomain_hubs_running_servers_token_is_the_servers():
    """Break 6 (fixed): on a hub with subdomain_host the server model's url is a full URL while the hub notes the
    server's token "Server at /user/<user>/": a killed run's leftover with its server running was 78 on every run.
    JupyterHub's User.url is host + base_url with subdomain_host (jupyterhub/user.py), and the API's server `url` is
    built from it (apihandlers/base.py); the token's note is f"Server at {base_url}" (user.py, spawn): a path."""
    servers = {"": ServerModel(ready=True, url=f"https://{USER}.hub.example.org/user/{USER}/", started=STARTED)}
    tokens = (mark(LONG_AGO + timedelta(seconds=1)), ApiToken(id="s", note=f"Server at /user/{USER}/", created=STARTED))
    guard(user(LONG_AGO, servers=servers), tokens)


# --- 6. the result's user_deleted (cli.py `_finish`: canary.fresh.deleted) ---


def test_user_deleted_is_the_last_attempts_even_when_it_made_no_user():
    """Break 7 (fixed): user_deleted is the last attempt's, but an attempt that made no user kept the one before's.
    Attempt 1 made its user and deleted it (then failed, e.g. the spawn); attempt 2 meets another run's young user
    (18) and makes none: the result says user_deleted true, of a user this attempt never had."""
    hub = FakeHub()
    fresh, deadline = fresh_for(hub)
    assert fresh.leftover(deadline) is None
    fresh.create(deadline, hub_version="6.1.1")
    cleanup(fresh, deadline)
    assert fresh.deleted is True
    hub.another_run_creates()  # attempt 2: another run's user, made just now
    with pytest.raises(ConcurrentRun):
        fresh.leftover(deadline)
    assert fresh.deleted is None, "the result would say user_deleted: true for an attempt that made no user"


# --- 7. how long signals are held ---


def test_a_stale_leftovers_refused_delete_is_bounded_like_a_stale_servers_stop():
    """Break 8 (fixed): a stale leftover's delete that the hub kept refusing was retried for all of the run's budget but the
    stop's, with SIGTERM held (make_fresh_user runs in the shield). The authenticator's delete_user fails (500, the
    README's row) for the leftover: the run retries the DELETE for its whole budget before the stop (780 s by default),
    signals held. A SIGTERM then (a node drain, helm uninstall) waits past terminationGracePeriodSeconds (the chart
    derives it from --stop-timeout): SIGKILL, no result line, and a SIGKILL that lands between the create that follows
    and its mark leaves an unmarked user: 78 on every later run. Nothing of this run's is at stake in that delete (its
    own user is not made yet): it is bounded like the stale server's stop before it (clear_stale_server: --stop-timeout)."""
    record, tokens = stale_leftover()
    hub = FakeHub(record, tokens)
    hub.on_delete.extend([lambda: ("refused", "DELETE answered 500 Failed to delete user")] * 10_000)
    clock = FakeClock()
    fresh, _ = fresh_for(hub, clock=clock)  # --stop-timeout 10
    budget = Deadline(780.0, clock)  # the run's budget before the stop, as make_fresh_user gives it
    found = fresh.leftover(budget)
    with pytest.raises(UserLeftBehind):
        fresh.delete(budget, stale=not fresh.made(found))
    assert clock.now - 1000.0 <= 10.0 + 1.5, f"signals held {clock.now - 1000.0:g}s for a stale leftover's delete"
