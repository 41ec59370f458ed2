"""Attacks on --fresh-user's promises, on a real hub (the hub of tests/test_fresh_user.py, its own instance):
it never deletes a user it cannot prove its own; it leaves nothing behind; budgets; codes.

Each break these tests found (twelve) was first committed as an xfail(strict=True) and is fixed since; the
tests that held from the start say "Held".
"""

from __future__ import annotations

import itertools
import json
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from app.exit_codes import ExitCode
from app.fresh_user import PREFIX
from tests.conftest import _running_hub
from tests.faultproxy import FaultProxy
from tests.localhub import LocalHub, wait_for
from tests.runner import finish_process, run_main, start_process
from tests.test_cycle import child_env
from tests.test_fresh_user import FRESH_HUB_CONFIG, SERVICE, left_by_a_killed_run, token_notes, user_exists

pytestmark = pytest.mark.hub

_numbers = itertools.count(1)
NAMES = [f"{PREFIX}x{n}" for n in range(1, 40)] + [f"{PREFIX}xadmin", f"{PREFIX}xroled"]
# A probe whose run lives at most this long: a user older than it is stale (--deadline + --stop-timeout).
SHORT = ("--deadline", "12", "--stop-timeout", "4")
SHORT_LIFETIME = 16
BOSS = "boss"  # a person, an admin of the hub
# Beside the module's service: one whose role is filtered by a group, and a person who is an admin.
ATTACK_HUB_CONFIG = FRESH_HUB_CONFIG + '''
c.JupyterHub.services.append({"name": "canary-group", "api_token": settings["group_token"]})
c.JupyterHub.load_roles.append({
    "name": "canary-group", "services": ["canary-group"],
    "scopes": [f"{scope}!group=canaries" for scope in ["admin:users", "tokens", "access:servers", *server_scopes]],
})
c.Authenticator.admin_users = {settings["admin"], "boss"}
'''


@pytest.fixture(scope="module")
def fresh_hub(tmp_path_factory) -> Iterator[LocalHub]:
    token, weak, group = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(16)
    settings = {"service": SERVICE, "token": token, "weak_token": weak, "group_token": group, "names": NAMES,
                "admin": f"{PREFIX}xadmin", "roled": f"{PREFIX}xroled"}
    for hub in _running_hub(tmp_path_factory, "fresh_attack_hub", extra_config=ATTACK_HUB_CONFIG, settings=settings):
        hub.service_token, hub.weak_token, hub.group_token = token, weak, group
        yield hub


def fresh_name() -> str:
    return f"{PREFIX}x{next(_numbers)}"


def args_for(url: str, user: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["--hub-url", url, "--user", user, "--fresh-user", "--attempts", "1",
            "--termination-log", str(tmp_path / "termination-log"), *extra]


def canary(hub: LocalHub, user: str, tmp_path: Path, *extra: str, url: str | None = None, token: str | None = None):
    token = token or hub.service_token
    run = run_main(args_for(url or hub.url, user, tmp_path, *extra), env={"JUPYTERHUB_API_TOKEN": token})
    run.assert_no_secret(token, hub.admin_token, hub.service_token)
    assert "Traceback" not in run.output, run.output
    assert run.exit_code != 1, run.output
    return run


def created(hub: LocalHub, user: str) -> str:
    return hub.user_model(user)["created"]


def wait_until_stale(hub: LocalHub, user: str, lifetime: float = SHORT_LIFETIME) -> None:
    """Sleep until the user is older than a run of a SHORT probe lives (its `created` by the hub's clock)."""
    from datetime import UTC, datetime

    made = datetime.fromisoformat(created(hub, user).replace("Z", "+00:00"))
    time.sleep(max(0.0, lifetime + 1.5 - (datetime.now(UTC) - made).total_seconds()))


# The stale-leftover tests' users, made at once when the module's first such test starts: each is stale
# (older than SHORT_LIFETIME) by the time its test runs, and the module waits once, not six times.
HAND_NOTES = ["Server at /user/{user}/", "Server at /elsewhere/user/{user}/"]


@pytest.fixture(scope="module")
def leftovers(fresh_hub) -> dict:
    made: dict = {}
    for note in HAND_NOTES:
        user = fresh_name()
        left_by_a_killed_run(fresh_hub, user)  # the canary's mark is there: only the hand-made token fails the proof
        made[note] = (user, fresh_hub.new_token(user, note=note.format(user=user)))
    made["named"] = fresh_name()
    left_by_a_killed_run(fresh_hub, made["named"])
    fresh_hub.user_model(made["named"])  # any read of the user (the canary's own included) makes the default spawner
    made["other_server"] = fresh_name()
    fresh_hub.create_user(made["other_server"])
    fresh_hub.start_server(made["other_server"], "other")
    fresh_hub.stop_all_servers(made["other_server"])
    made["sigterm"] = fresh_name()
    left_by_a_killed_run(fresh_hub, made["sigterm"])
    made["person"] = person = fresh_name()
    browser = requests.Session()
    login = fresh_hub.url + "hub/login"
    browser.get(login, timeout=30)
    answer = browser.post(login, data={"username": person, "password": "x", "_xsrf": browser.cookies.get("_xsrf", "")},
                          timeout=30)
    assert answer.status_code == 200 and user_exists(fresh_hub, person), answer.status_code
    fresh_hub.start_server(person)
    page = browser.get(fresh_hub.url + f"user/{person}/lab", timeout=30)
    assert page.status_code == 200, (page.status_code, page.url)
    made["person_notes_running"] = token_notes(fresh_hub, person)
    fresh_hub.stop_all_servers(person)
    made["person_notes_stopped"] = token_notes(fresh_hub, person)
    (fresh_hub.workdir / "home" / person / "thesis.tex").write_text("four years of work\n", encoding="utf-8")
    return made


# --- 1. never deletes what it cannot prove its own ---


@pytest.mark.parametrize("note", HAND_NOTES)
def test_a_token_made_by_hand_with_a_server_like_note_is_not_the_canarys(fresh_hub, leftovers, tmp_path, note):
    user, person_token = leftovers[note]
    wait_until_stale(fresh_hub, user)
    before = created(fresh_hub, user)
    run = canary(fresh_hub, user, tmp_path, *SHORT)
    run.assert_no_secret(person_token)
    # The person's user and token are untouched: the run refuses with 78, naming the token.
    assert user_exists(fresh_hub, user) and created(fresh_hub, user) == before, run.output
    assert note.format(user=user) in token_notes(fresh_hub, user)
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert "the canary did not make" in run.result["message"], run.result["message"]


def test_a_named_server_probes_stale_leftover_is_deleted(fresh_hub, leftovers, tmp_path):
    user = leftovers["named"]
    wait_until_stale(fresh_hub, user)
    run = canary(fresh_hub, user, tmp_path, *SHORT, "--server-name", "probe")
    assert run.exit_code == ExitCode.OK, run.output
    assert [e["stale"] for e in run.named("fresh_user_deleted")] == [True, False]
    assert not user_exists(fresh_hub, user)


def test_stopped_named_servers_and_a_young_user_are_refused(fresh_hub, leftovers, tmp_path):
    """Held: a stale user with another (stopped) named server is 78; nothing touched."""
    user = leftovers["other_server"]
    wait_until_stale(fresh_hub, user)
    run = canary(fresh_hub, user, tmp_path, *SHORT)
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert "'other'" in run.result["message"]
    assert user_exists(fresh_hub, user) and not run.named("fresh_user_deleted")


def test_a_lost_answer_to_the_delete_never_deletes_the_user_another_run_made_since(fresh_hub, tmp_path):
    user = fresh_name()
    others = {}

    def another_run_creates_it() -> None:  # run B looks (no user) and creates its own, while A's answer is lost
        fresh_hub.create_user(user)
        others["created"] = created(fresh_hub, user)

    with FaultProxy(fresh_hub.url) as proxy:
        proxy.lose_next(1, path_contains=f"/hub/api/users/{user}", exact=True, method="DELETE", after=another_run_creates_it)
        run = canary(fresh_hub, user, tmp_path, url=proxy.url)
        assert [s for _, m, p, s in proxy.requests_seen if m == "DELETE" and p.endswith(user)][0] == 204
    assert others, "the fault did not fire"
    assert user_exists(fresh_hub, user) and created(fresh_hub, user) == others["created"], (
        f"run A deleted run B's user:\n{run.output}"
    )


def test_a_lost_create_never_adopts_the_user_another_run_made_meanwhile(fresh_hub, tmp_path):
    user = fresh_name()
    others = {}

    def another_run_creates_it() -> None:  # A's POST never reached the hub; B's did
        fresh_hub.create_user(user)
        others["created"] = created(fresh_hub, user)

    with FaultProxy(fresh_hub.url) as proxy:
        proxy.lose_next(1, path_contains=f"/hub/api/users/{user}", exact=True, method="POST", forward=False,
                        after=another_run_creates_it)
        run = canary(fresh_hub, user, tmp_path, url=proxy.url)
    assert others, "the fault did not fire"
    assert user_exists(fresh_hub, user) and created(fresh_hub, user) == others["created"], (
        f"run A deleted run B's user:\n{run.output}"
    )
    assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output


def test_two_fresh_runs_at_once_never_delete_each_others_user(fresh_hub, tmp_path):
    """Held: without a Lease, two runs of one probe: one creates (201), the other meets its user (18 or 409 -> 18)."""
    user = fresh_name()
    env = child_env(fresh_hub.service_token)
    options = ("--user-options", json.dumps({"behaviour": "slow", "delay": 3}))
    first = start_process(args_for(fresh_hub.url, user, tmp_path / "a", *options), env=env)
    wait_for(lambda: user_exists(fresh_hub, user), 60, "the first run's create")
    second = start_process(args_for(fresh_hub.url, user, tmp_path / "b", *options), env=env)
    runs = [finish_process(p, timeout=120) for p in (first, second)]
    for run in runs:
        run.assert_no_secret(fresh_hub.service_token)
    assert sorted(r.exit_code for r in runs) == [ExitCode.OK, ExitCode.CONCURRENT_RUN], [r.output for r in runs]
    assert runs[0].exit_code == ExitCode.OK and runs[0].result["user_deleted"] is True
    assert not runs[1].named("fresh_user_deleted") and not runs[1].named("spawn_requested")
    assert not user_exists(fresh_hub, user)


# --- 2. nothing left behind ---


def test_failing_attempts_each_delete_their_user(fresh_hub, tmp_path):
    """Held: --attempts 3, each spawn fails: each attempt's user is created and deleted, the last one's too."""
    user = fresh_name()
    run = canary(fresh_hub, user, tmp_path, "--attempts", "3", "--deadline", "200", "--spawn-timeout", "30",
                 "--user-options", json.dumps({"behaviour": "failexit"}))
    assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
    assert run.result["attempts"] == 3 and run.result["user_deleted"] is True
    assert len(run.named("fresh_user_created")) == 3
    assert [e["stale"] for e in run.named("fresh_user_deleted")] == [False, False, False]
    assert not user_exists(fresh_hub, user)


def test_a_failing_check_deletes_the_user(fresh_hub, tmp_path):
    """Held: a --check-url that is not served: 17, and the user is deleted."""
    user = fresh_name()
    run = canary(fresh_hub, user, tmp_path, "--check-url", "nowhere/at/all")
    assert run.exit_code == ExitCode.LAB_FAILED, run.output
    assert run.result["user_deleted"] is True and not user_exists(fresh_hub, user)


@pytest.mark.parametrize("moment", ["create", "after_create", "stop", "delete"])
def test_sigterm_at_each_moment_leaves_nothing(fresh_hub, tmp_path, moment):
    """SIGTERM while the create is in flight, right after it, during the stop, during the delete: 143, no user."""
    user = fresh_name()
    process_box = {}

    def term() -> None:
        process_box["p"].send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the signal lands while the request is held

    with FaultProxy(fresh_hub.url) as proxy:
        path = f"/hub/api/users/{user}"
        if moment == "create":
            proxy.watch_next(1, path_contains=path, exact=True, method="POST", before=term)
        elif moment == "after_create":
            proxy.watch_next(1, path_contains=f"{path}/server", exact=True, method="POST", before=term)
        elif moment == "stop":
            proxy.watch_next(1, path_contains=f"{path}/server", exact=True, method="DELETE", before=term)
        else:
            proxy.watch_next(1, path_contains=path, exact=True, method="DELETE", before=term)
        process = start_process(args_for(proxy.url, user, tmp_path), env=child_env(fresh_hub.service_token))
        process_box["p"] = process
        try:
            run = finish_process(process, timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    run.assert_no_secret(fresh_hub.service_token)
    assert "Traceback" not in run.output, run.output
    if moment == "delete":  # the run was over but for the delete: the signal changes nothing
        assert run.exit_code in (ExitCode.SIGTERM, ExitCode.OK), run.output
    else:
        assert run.exit_code == ExitCode.SIGTERM, run.output
    assert not user_exists(fresh_hub, user), run.output


def test_sigterm_during_a_stale_leftovers_delete_leaves_nothing(fresh_hub, leftovers, tmp_path):
    """Held: SIGTERM while the stale leftover is deleted: the create still happens in the shield, then the signal is
    acted on and the new user is deleted too: 143, no user."""
    user = leftovers["sigterm"]
    wait_until_stale(fresh_hub, user)
    box = {}

    def term() -> None:
        box["p"].send_signal(signal.SIGTERM)
        time.sleep(0.3)

    with FaultProxy(fresh_hub.url) as proxy:
        proxy.watch_next(1, path_contains=f"/hub/api/users/{user}", exact=True, method="DELETE", before=term)
        box["p"] = process = start_process(args_for(proxy.url, user, tmp_path, *SHORT), env=child_env(fresh_hub.service_token))
        try:
            run = finish_process(process, timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    assert "Traceback" not in run.output, run.output
    assert run.exit_code == ExitCode.SIGTERM, run.output
    assert not user_exists(fresh_hub, user), run.output


def test_a_lost_answer_to_the_delete_still_ends_with_the_user_deleted(fresh_hub, tmp_path):
    """Held: the DELETE's answer lost (no other run): resent, 404, the run passes, the user is gone."""
    user = fresh_name()
    with FaultProxy(fresh_hub.url) as proxy:
        proxy.lose_next(1, path_contains=f"/hub/api/users/{user}", exact=True, method="DELETE")
        run = canary(fresh_hub, user, tmp_path, url=proxy.url)
    assert run.exit_code == ExitCode.OK, run.output
    assert run.result["user_deleted"] is True and not user_exists(fresh_hub, user)


def test_a_hub_briefly_away_after_the_stop_does_not_leave_the_user(fresh_hub, tmp_path):
    user = fresh_name()
    with FaultProxy(fresh_hub.url) as proxy:
        def restart_window() -> None:  # the hub restarts right after the stop: its proxy answers a plain 404 a while
            proxy.fail_next(8, 503, path_contains=f"/hub/api/users/{user}?include_stopped_servers", method="GET")

        proxy.watch_next(1, path_contains=f"/hub/api/users/{user}/server", exact=True, method="DELETE", before=restart_window)
        run = canary(fresh_hub, user, tmp_path, "--stop-timeout", "60", url=proxy.url)
    assert not user_exists(fresh_hub, user), run.output
    assert run.exit_code == ExitCode.OK, run.output


# --- 3. budgets ---


def test_a_delete_the_hub_refuses_while_stopping_is_bounded_by_the_stop_timeout(fresh_hub, tmp_path):
    """Held: a hub that answers the user's DELETE 400 "in the process of stopping" forever: 13 within --stop-timeout."""
    user = fresh_name()
    with FaultProxy(fresh_hub.url) as proxy:
        proxy.fail_next(1000, 400, path_contains=f"/hub/api/users/{user}", exact=True, method="DELETE")
        started = time.monotonic()
        run = canary(fresh_hub, user, tmp_path, "--stop-timeout", "6", "--deadline", "60", url=proxy.url)
        took = time.monotonic() - started
    assert run.exit_code == ExitCode.STOP_FAILED and run.result["reason"] == "user_left_behind", run.output
    assert run.result["user_deleted"] is False
    assert took < 60 + 6 + 3, took
    fresh_hub.api("DELETE", f"users/{user}")


def test_a_delete_that_stalls_is_bounded_by_the_stop_timeout(fresh_hub, tmp_path):
    """Held: the DELETE held by a stalled peer: the run ends within --deadline + --stop-timeout, 13."""
    user = fresh_name()
    with FaultProxy(fresh_hub.url) as proxy:
        proxy.watch_next(5, path_contains=f"/hub/api/users/{user}", exact=True, method="DELETE", before=lambda: time.sleep(20))
        started = time.monotonic()
        run = canary(fresh_hub, user, tmp_path, "--stop-timeout", "5", "--deadline", "30", url=proxy.url)
        took = time.monotonic() - started
    assert run.exit_code in (ExitCode.STOP_FAILED, ExitCode.OK), run.output
    assert took < 30 + 5 + 3, took
    if user_exists(fresh_hub, user):
        assert run.exit_code == ExitCode.STOP_FAILED and run.result["reason"] == "user_left_behind", run.output
        fresh_hub.api("DELETE", f"users/{user}")


# --- 2 (cont.): a create whose outcome stays unknown, a create that leaves no time to spawn ---


def test_a_create_whose_outcome_cannot_be_read_leaves_no_user_silently(fresh_hub, tmp_path):
    user = fresh_name()
    with FaultProxy(fresh_hub.url) as proxy:
        def reads_fail_a_while() -> None:  # the hub made the user; its answer is lost, and so are the reads after it
            proxy.fail_next(12, 503, path_contains=f"/hub/api/users/{user}?include_stopped_servers", method="GET")

        proxy.lose_next(1, path_contains=f"/hub/api/users/{user}", exact=True, method="POST", after=reads_fail_a_while)
        run = canary(fresh_hub, user, tmp_path, "--stop-timeout", "30", url=proxy.url)
    left = user_exists(fresh_hub, user)
    if left:
        fresh_hub.api("DELETE", f"users/{user}")
    # Either the user is gone, or the run says it left it (user_left_behind: without --lease a lost create's user
    # cannot be proven this run's), never in silence.
    assert not left or run.named("user_left_behind"), run.output


def test_a_create_that_leaves_no_time_to_spawn_still_deletes_the_user(fresh_hub, tmp_path):
    user = fresh_name()
    with FaultProxy(fresh_hub.url) as proxy:
        # A hub under load: whoami answers when just under a second is left before the stop's budget, the user's read
        # takes most of a second (LAST_LOOK lets it), and the create is answered with the stop's budget begun.
        proxy.watch_next(1, path_contains="/hub/api/user", exact=True, method="GET", before=lambda: time.sleep(9.4))
        proxy.watch_next(1, path_contains=f"/hub/api/users/{user}", method="GET", before=lambda: time.sleep(0.8))
        run = canary(fresh_hub, user, tmp_path, "--deadline", "20", "--stop-timeout", "10", url=proxy.url)
    assert run.named("fresh_user_created"), f"the timing missed: no user was created\n{run.output}"
    left = user_exists(fresh_hub, user)
    if left:
        fresh_hub.api("DELETE", f"users/{user}")
    assert not left, f"the run ended {run.exit_code} and left its user:\n{run.output}"


# --- 1 (cont.): the guard on user models of odd shapes (a fake client: a real hub always shows them) ---


def _fresh(model, tokens=()):
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from app.fresh_user import FreshUser
    from app.hub import HubClock

    config = SimpleNamespace(user=f"{PREFIX}odd", server_name="", deadline=60.0, stop_timeout=10.0)
    client = SimpleNamespace(user_record=lambda user, deadline: model, tokens=lambda user, deadline: tokens,
                             hub_clock=HubClock())
    fresh = FreshUser(config, client, utcnow=lambda: datetime.now(UTC), sleep=lambda seconds: None)
    return fresh, datetime.now(UTC) - timedelta(days=1)


@pytest.mark.parametrize("left_out", ["groups", "admin"])
def test_the_guard_takes_no_absence_for_proof(left_out):
    from app.errors import ConfigError
    from app.models import UserModel

    raw = {"name": f"{PREFIX}odd", "admin": False, "roles": ["user"], "groups": [], "servers": {},
           "created": "2020-01-01T00:00:00Z"}
    del raw[left_out]
    model = UserModel.parse(raw, "test")
    fresh, _ = _fresh(model)
    with pytest.raises(ConfigError):
        fresh.leftover(None)


# --- 5. the preflight ---


def test_a_token_whose_scopes_a_group_filters_is_77_and_creates_nothing(fresh_hub, tmp_path):
    """Held: the preflight cannot judge a group filter (logged); the hub answers the create 404: 77, nothing made."""
    user = fresh_name()
    run = canary(fresh_hub, user, tmp_path, token=fresh_hub.group_token)
    assert run.exit_code == ExitCode.PERMISSION, run.output
    assert run.named("token_scopes_uncertain")
    assert not user_exists(fresh_hub, user)


def test_a_persons_admin_token_is_taken_without_a_word(fresh_hub, tmp_path):
    """Held as specified (only the fresh user's own token is refused): an admin person's token runs the probe,
    and deletes only the fresh user. Noted: nothing says the token is a person's, broader than the least role."""
    user = fresh_name()
    fresh_hub.create_user(BOSS)
    boss_token = fresh_hub.new_token(BOSS, note="boss's token")
    run = canary(fresh_hub, user, tmp_path, token=boss_token)
    run.assert_no_secret(boss_token)
    assert run.exit_code == ExitCode.OK, run.output
    assert user_exists(fresh_hub, BOSS) and not user_exists(fresh_hub, user)
    assert not [e for e in run.events if e.get("level") == "warning" and "owner" in e.get("event", "")]


def test_a_lost_create_with_the_hubs_clock_a_little_behind_leaves_no_user(fresh_hub, tmp_path, monkeypatch):
    from datetime import datetime, timedelta

    import app.cycle

    class Ahead(datetime):  # this run's clock (Canary's utcnow) 0.6 s ahead of the hub's: NTP-level skew across two nodes
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(seconds=0.6)

    monkeypatch.setattr(app.cycle, "datetime", Ahead)
    user = fresh_name()
    with FaultProxy(fresh_hub.url) as proxy:
        proxy.lose_next(1, path_contains=f"/hub/api/users/{user}", exact=True, method="POST")
        run = canary(fresh_hub, user, tmp_path, url=proxy.url)
    left = user_exists(fresh_hub, user)
    if left:
        fresh_hub.api("DELETE", f"users/{user}")
    assert not left or run.named("user_left_behind"), run.output  # see the test before: never in silence


def test_a_leftover_without_created_is_never_deleted():
    """Held: a user whose `created` the hub does not show cannot be proven the canary's or stale: nothing deleted."""
    from app.errors import ConcurrentRun, ConfigError
    from app.models import UserModel

    model = UserModel.parse({"name": f"{PREFIX}odd", "admin": False, "roles": ["user"], "groups": [], "servers": {}}, "test")
    fresh, _ = _fresh(model)
    with pytest.raises((ConcurrentRun, ConfigError)):  # its mark cannot be dated against it either
        fresh.leftover(None)


def test_a_person_who_logged_in_and_used_a_server_is_not_deleted(fresh_hub, leftovers, tmp_path):
    """A person's account (the name's login not blocked): logged in through the browser, opened the server (the OAuth
    dance), stopped it (the fixture). The guard must not take the account for the canary's leftover: no mark."""
    user = leftovers["person"]
    notes_running, notes_stopped = leftovers["person_notes_running"], leftovers["person_notes_stopped"]
    wait_until_stale(fresh_hub, user)
    run = canary(fresh_hub, user, tmp_path, *SHORT)
    assert user_exists(fresh_hub, user), (
        f"the person's account was deleted (tokens while the server ran: {notes_running}, after its stop: "
        f"{notes_stopped}):\n{run.output}"
    )


def test_a_hub_restart_between_the_create_and_the_delete_leaves_no_user(fresh_hub, tmp_path):
    """A restart of the hub (its servers stopped with it) while the run verifies its server: the run fails, and still
    deletes the user it created. Last in the module: it restarts the module's hub (from this thread: the hub dies with
    the thread that started it, PR_SET_PDEATHSIG)."""
    import threading

    user = fresh_name()
    reached, go = threading.Event(), threading.Event()

    def hold() -> None:
        reached.set()
        go.wait(120)

    with FaultProxy(fresh_hub.url) as proxy:
        proxy.watch_next(1, path_contains=f"/user/{user}/api/status", method="GET", before=hold)
        process = start_process(args_for(proxy.url, user, tmp_path, "--stop-timeout", "30"),
                                env=child_env(fresh_hub.service_token))
        try:
            assert reached.wait(60), "the run never verified its server"
            fresh_hub.stop_hub_process()
            fresh_hub.start()
            go.set()
            run = finish_process(process, timeout=120)
        finally:
            go.set()
            if process.poll() is None:
                process.kill()
    run.assert_no_secret(fresh_hub.service_token)
    assert run.exit_code not in (ExitCode.OK, ExitCode.STOP_FAILED, 1), run.output
    assert run.result["user_deleted"] is True and not user_exists(fresh_hub, user), run.output
