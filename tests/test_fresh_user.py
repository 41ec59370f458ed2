"""--fresh-user on a real JupyterHub: each run creates the user, spawns, checks, stops and deletes it;
the guard never deletes a user it cannot prove the canary's own; every failure has its code.

The hub of this module has a JupyterHub service (the canary's token) whose role holds the least scopes
filtered to the fresh names, and an authenticator that refuses to add or delete some names (what a
directory-backed authenticator does when its directory says no).
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

from app.exit_codes import ExitCode
from app.fresh_user import MARKER, PREFIX
from tests.conftest import _running_hub
from tests.localhub import LocalHub, wait_for
from tests.runner import finish_process, run_main, start_process
from tests.test_cycle import child_env

pytestmark = pytest.mark.hub

SERVICE = "jupyterhub-canary-service"
_numbers = itertools.count(1)

# The service and its role, the scopes by the hub's version (5.x: `servers`; 6: start/delete/read).
FRESH_HUB_CONFIG = '''
import json, os
import jupyterhub
from jupyterhub.auth import DummyAuthenticator

settings = json.load(open(os.environ["LOCALHUB_PARAMS"]))["settings"]
version = tuple(int(p) for p in jupyterhub.__version__.split(".")[:1])
server_scopes = ["read:servers", "start:servers", "delete:servers"] if version >= (6,) else ["servers"]

def filtered(scopes):
    return [f"{scope}!user={name}" for scope in scopes for name in settings["names"]]

c.JupyterHub.services.append({"name": settings["service"], "api_token": settings["token"]})
c.JupyterHub.services.append({"name": "canary-weak", "api_token": settings["weak_token"]})
c.JupyterHub.load_roles.append({
    "name": "jupyterhub-canary-fresh",
    "scopes": filtered(["admin:users", "tokens", "access:servers", *server_scopes]),
    "services": [settings["service"]],
})
c.JupyterHub.load_roles.append({
    "name": "canary-weak", "scopes": filtered(["access:servers", *server_scopes]), "services": ["canary-weak"],
})

class DirectoryAuthenticator(DummyAuthenticator):
    """Refuses to add a name with "refused" in it, and to delete one with "undeletable"."""

    def add_user(self, user):
        if "refused" in user.name:
            raise RuntimeError("the directory refused the new user")
        return super().add_user(user)

    def delete_user(self, user):
        if "undeletable" in user.name:
            raise RuntimeError("the directory refused to delete the user")
        return super().delete_user(user)

c.JupyterHub.authenticator_class = DirectoryAuthenticator
# Users a person's account would be: an admin, and a member of a role (both made at hub start).
c.Authenticator.admin_users = {settings["admin"]}
c.JupyterHub.load_roles.append({"name": "physics-staff", "scopes": ["read:users"], "users": [settings["roled"]]})
'''

# The names this hub's service may manage (its role's `!user=` filters are fixed at hub start).
ADMIN, ROLED, LEFTOVER = f"{PREFIX}admin", f"{PREFIX}roled", f"{PREFIX}leftover"
NAMES = [f"{PREFIX}{n}" for n in range(1, 13)] + [f"{PREFIX}refused", f"{PREFIX}undeletable", ADMIN, ROLED, LEFTOVER]


@pytest.fixture(scope="module")
def fresh_hub(tmp_path_factory) -> Iterator[LocalHub]:
    token, weak = secrets.token_hex(16), secrets.token_hex(16)
    settings = {"service": SERVICE, "token": token, "weak_token": weak, "names": NAMES, "admin": ADMIN, "roled": ROLED}
    for hub in _running_hub(tmp_path_factory, "fresh_hub", extra_config=FRESH_HUB_CONFIG, settings=settings):
        hub.service_token, hub.weak_token = token, weak
        # What a run killed (SIGKILL) after creating its user leaves. Made now, so that it is old by the
        # module's last test (test_a_stale_leftover_...).
        left_by_a_killed_run(hub, LEFTOVER)
        hub.leftover_made = time.monotonic()
        yield hub


def fresh_name() -> str:
    return f"{PREFIX}{next(_numbers)}"


def canary(hub: LocalHub, user: str, tmp_path: Path, *extra: str, token: str | None = None):
    token = token or hub.service_token
    args = ["--hub-url", hub.url, "--user", user, "--fresh-user", "--attempts", "1",
            "--termination-log", str(tmp_path / "termination-log"), *extra]
    run = run_main(args, env={"JUPYTERHUB_API_TOKEN": token})
    run.assert_no_secret(token, hub.admin_token, hub.service_token)
    return run


def left_by_a_killed_run(hub: LocalHub, user: str) -> None:
    """What a run killed (SIGKILL) right after creating and marking its user leaves: the user and its mark."""
    hub.create_user(user)
    hub.new_token(user, scopes=[], note=f"{MARKER} 0badc0de")


def user_exists(hub: LocalHub, user: str) -> bool:
    response = hub.api("GET", f"users/{user}")
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def token_notes(hub: LocalHub, user: str) -> list[str]:
    response = hub.api("GET", f"users/{user}/tokens")
    assert response.status_code == 200, response.text
    return [token.get("note") for token in response.json()["api_tokens"]]


def test_a_fresh_run_creates_spawns_checks_stops_and_deletes_the_user_each_time(fresh_hub, tmp_path):
    user = fresh_name()
    runs = [canary(fresh_hub, user, tmp_path, "--check-storage") for _ in range(2)]
    for run in runs:
        assert run.exit_code == ExitCode.OK, run.output
        assert run.result["fresh_user"] is True and run.result["user_deleted"] is True
        assert run.result["message"] == "created the fresh user, spawned, verified, stopped and deleted it"
        order = [e["event"] for e in run.events if e["event"] in (
            "fresh_user_created", "spawn_requested", "server_verified", "storage_read_back", "server_stopped",
            "fresh_user_deleted")]
        assert order == ["fresh_user_created", "spawn_requested", "server_verified", "storage_read_back",
                         "server_stopped", "fresh_user_deleted"], order
        phases = run.result["phases_ms"]
        assert list(phases)[0] == "create_user" and list(phases)[-1] == "delete_user"
        assert all(isinstance(ms, int) for ms in phases.values()), phases
    assert not user_exists(fresh_hub, user), "the fresh user was left in the hub's database"
    # Each run spawned a user the hub had just created: two users, not one.
    spawns = fresh_hub.spawn_records(user)
    assert len(spawns) == 2 and spawns[0]["user_created"] != spawns[1]["user_created"], spawns


def test_the_guard_deletes_nothing_of_a_user_with_a_home_file_and_a_browser_made_token(fresh_hub, tmp_path):
    user = fresh_name()
    fresh_hub.create_user(user)
    person_token = fresh_hub.new_token(user, note="made on the token page")
    home = fresh_hub.workdir / "home" / user
    home.mkdir(parents=True, exist_ok=True)
    (home / "thesis.tex").write_text("four years of work\n", encoding="utf-8")
    run = canary(fresh_hub, user, tmp_path)
    run.assert_no_secret(person_token)
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert "not provably the canary's own" in run.result["message"] and "made on the token page" in run.result["message"]
    assert run.named("fresh_user_not_own")
    assert not run.named("spawn_requested") and not run.named("fresh_user_deleted")
    assert user_exists(fresh_hub, user) and token_notes(fresh_hub, user) == ["made on the token page"]
    assert (home / "thesis.tex").read_text(encoding="utf-8") == "four years of work\n"


def test_the_guard_refuses_a_user_in_a_group_with_a_role_or_an_admin(fresh_hub, tmp_path):
    grouped = fresh_name()
    fresh_hub.create_user(grouped)
    response = fresh_hub.api("POST", "groups/physics", json={"users": [grouped]})
    assert response.status_code in (201, 409), response.text
    cases = ((grouped, "in the group physics"), (ROLED, "it has the role physics-staff"), (ADMIN, "it is an admin"))
    for user, words in cases:
        run = canary(fresh_hub, user, tmp_path)
        assert run.exit_code == ExitCode.CONFIGURATION, run.output
        assert words in run.result["message"], run.result["message"]
        assert user_exists(fresh_hub, user) and not run.named("spawn_requested")


def test_a_young_leftover_may_be_a_live_runs_and_is_left_alone(fresh_hub, tmp_path):
    user = fresh_name()
    left_by_a_killed_run(fresh_hub, user)
    run = canary(fresh_hub, user, tmp_path)
    assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
    assert "may be another live run's" in run.result["message"]
    assert not run.named("fresh_user_deleted") and not run.named("spawn_requested")
    assert user_exists(fresh_hub, user)


def test_a_name_outside_the_rule_is_refused_before_the_hub_is_asked(fresh_hub, tmp_path):
    fresh_hub.create_user("alice")
    run = canary(fresh_hub, "alice", tmp_path)
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert PREFIX in run.result["message"] and "'alice'" in run.result["message"]
    assert not run.named("hub_reachable")
    assert user_exists(fresh_hub, "alice")


def test_the_fresh_users_own_token_is_refused(fresh_hub, tmp_path):
    user = fresh_name()
    fresh_hub.create_user(user)
    own = fresh_hub.new_token(user)
    run = canary(fresh_hub, user, tmp_path, token=own)
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert "own" in run.result["message"] and "service" in run.result["message"]
    assert user_exists(fresh_hub, user)


def test_a_token_without_admin_users_is_77_naming_it(fresh_hub, tmp_path):
    user = fresh_name()
    run = canary(fresh_hub, user, tmp_path, token=fresh_hub.weak_token)
    assert run.exit_code == ExitCode.PERMISSION, run.output
    assert f"admin:users!user={user}" in run.result["message"], run.result["message"]
    assert not user_exists(fresh_hub, user)


def test_a_name_the_services_role_does_not_name_is_77(fresh_hub, tmp_path):
    user = f"{PREFIX}unnamed"  # not in the role's `!user=` filters: the hub answers 404 to everything about it
    run = canary(fresh_hub, user, tmp_path)
    assert run.exit_code == ExitCode.PERMISSION, run.output
    assert f"admin:users!user={user}" in run.result["message"], run.result["message"]
    assert not run.named("spawn_requested") and not user_exists(fresh_hub, user)


def test_a_user_the_hub_refuses_to_create_is_10_user_not_created_with_its_words(fresh_hub, tmp_path):
    user = f"{PREFIX}refused"
    run = canary(fresh_hub, user, tmp_path, "--attempts", "3")
    assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
    assert run.result["reason"] == "user_not_created" and run.result["attempts"] == 1  # not retried
    assert "Failed to create user" in run.result["message"], run.result["message"]
    assert not user_exists(fresh_hub, user)


def test_a_user_that_cannot_be_deleted_is_13_user_left_behind_never_a_silent_success(fresh_hub, tmp_path):
    user = f"{PREFIX}undeletable"
    run = canary(fresh_hub, user, tmp_path, "--stop-timeout", "6", "--deadline", "120")
    assert run.exit_code == ExitCode.STOP_FAILED, run.output
    assert run.result["reason"] == "user_left_behind" and run.result["user_deleted"] is False
    assert run.named("server_stopped") and run.named("user_left_behind")
    assert user_exists(fresh_hub, user) and fresh_hub.servers(user) == {}


def lose_the_creates_answer(hub: LocalHub, user: str, tmp_path: Path, *extra: str):
    from tests.faultproxy import FaultProxy

    with FaultProxy(hub.url) as proxy:
        proxy.cut_next(1, after_bytes=10, path_contains=f"/hub/api/users/{user}", method="POST")
        args = ["--hub-url", proxy.url, "--user", user, "--fresh-user", "--attempts", "1",
                "--termination-log", str(tmp_path / "termination-log"), *extra]
        run = run_main(args, env={"JUPYTERHUB_API_TOKEN": hub.service_token})
    run.assert_no_secret(hub.service_token)
    assert run.named("request_outcome_unknown"), run.output
    return run


def test_a_lost_answer_to_the_create_under_the_probes_lease_is_this_runs(fresh_hub, secret_stub, tmp_path, monkeypatch):
    """Under the probe's Lease no other run can have made the user it finds: it is this run's, marked,
    spawned on and deleted."""
    secret_stub.put_lease("hub-ns", "fresh-probe")
    monkeypatch.setenv("KUBECONFIG", str(secret_stub.write_kubeconfig(tmp_path / "kubeconfig", token="kc", namespace="hub-ns")))
    user = fresh_name()
    run = lose_the_creates_answer(fresh_hub, user, tmp_path, "--lease", "fresh-probe", "--lease-namespace", "hub-ns")
    assert run.exit_code == ExitCode.OK, run.output
    assert run.named("request_outcome_found")
    assert run.named("fresh_user_marked") or (fresh_hub.version.startswith("4.") and run.named("fresh_user_not_marked"))
    assert run.result["user_deleted"] is True and not user_exists(fresh_hub, user)


def test_a_lost_answer_to_the_create_without_a_lease_leaves_the_user_alone_and_says_so(fresh_hub, tmp_path):
    """Without the Lease another run may have made the user meanwhile: 18, the user left alone, and logged."""
    user = fresh_name()
    run = lose_the_creates_answer(fresh_hub, user, tmp_path)
    assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
    assert run.named("user_left_behind") and not run.named("spawn_requested") and not run.named("fresh_user_deleted")
    assert user_exists(fresh_hub, user)
    fresh_hub.api("DELETE", f"users/{user}")


def test_sigterm_mid_spawn_deletes_the_user_and_ends_143(fresh_hub, tmp_path):
    user = fresh_name()
    process = start_process(
        ["--hub-url", fresh_hub.url, "--user", user, "--fresh-user", "--attempts", "1",
         "--user-options", json.dumps({"behaviour": "slow", "delay": 5}),
         "--termination-log", str(tmp_path / "termination-log")],
        env=child_env(fresh_hub.service_token),
    )
    try:
        wait_for(lambda: user_exists(fresh_hub, user) and fresh_hub.servers(user), 60, "the fresh run's spawn")
        process.send_signal(signal.SIGTERM)
        run = finish_process(process, timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    run.assert_no_secret(fresh_hub.service_token)
    assert run.exit_code == ExitCode.SIGTERM, run.output
    assert run.named("server_stopped") and run.named("fresh_user_deleted")
    assert not user_exists(fresh_hub, user)


def test_a_stale_leftover_of_the_canarys_is_deleted_and_the_run_passes(fresh_hub, tmp_path):
    deadline, stop_timeout = 20, 8  # a run of the probe lives at most 28 s: an older user is no live run's
    time.sleep(max(0.0, fresh_hub.leftover_made + deadline + stop_timeout + 1 - time.monotonic()))
    run = canary(fresh_hub, LEFTOVER, tmp_path, "--deadline", str(deadline), "--stop-timeout", str(stop_timeout))
    assert run.exit_code == ExitCode.OK, run.output
    (stale,) = run.named("stale_fresh_user_found")
    assert stale["user_age_s"] >= deadline + stop_timeout
    deleted = [e["stale"] for e in run.named("fresh_user_deleted")]
    assert deleted == [True, False], deleted  # the leftover, then this run's own
    assert not user_exists(fresh_hub, LEFTOVER)
