"""The cycle against a real JupyterHub: every scenario asserts the exit code, the canary_result,
that no server is left running, and that the token never shows in the output."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime

import pytest

from app.exit_codes import ExitCode
from tests.faultproxy import FaultProxy
from tests.localhub import wait_for
from tests.runner import finish_process, run_main, start_process

pytestmark = pytest.mark.hub


def canary(hub, user, token, tmp_path, *extra, env=None):
    args = ["--hub-url", hub.url, "--user", user, "--termination-log", str(tmp_path / "termination-log"), *extra]
    run = run_main(args, env={"JUPYTERHUB_API_TOKEN": token, **(env or {})})
    run.assert_no_secret(token, hub.admin_token)
    return run


def child_env(token: str) -> dict[str, str]:
    """The console script's environment: the token, and PYTHONPATH when set, so that a checkout's tests
    run its own code in the child too (not the one the virtualenv has installed)."""
    return {"JUPYTERHUB_API_TOKEN": token, **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {})}


def new_account(hub, name):
    hub.create_user(name)
    return name, hub.new_token(name)


def assert_nothing_running(hub, user):
    assert hub.servers(user) == {}, f"a server was left running: {hub.servers(user)}"


def test_success_when_the_hub_answers_201(hub, hub_user, tmp_path):
    user, token = new_account(hub, hub_user())
    run = canary(hub, user, token, tmp_path)
    assert run.exit_code == ExitCode.OK, run.output
    assert run.named("spawn_requested")[0]["status"] == 201
    result = run.result
    assert result["outcome"] == "ok" and result["exit_code"] == 0 and result["attempts"] == 1
    assert result["hub_version"] == hub.version
    assert set(result["phases_ms"]) == {"spawn_request", "ready_wait", "verify", "stop"}
    assert all(isinstance(ms, int) and ms >= 0 for ms in result["phases_ms"].values())
    assert run.named("server_verified")
    assert_nothing_running(hub, user)
    summary = json.loads((tmp_path / "termination-log").read_text())
    assert summary["outcome"] == "ok" and summary["exit_code"] == 0 and summary["timestamp"]


def test_success_when_the_hub_answers_202_follows_progress(hub_202, hub_user, tmp_path):
    user, token = new_account(hub_202, hub_user())
    run = canary(hub_202, user, token, tmp_path)
    assert run.exit_code == ExitCode.OK, run.output
    assert run.named("spawn_requested")[0]["status"] == 202
    progress = run.named("spawn_progress")
    assert progress and progress[-1]["progress"] == 100, run.output
    assert not run.named("progress_stream_unavailable"), run.output
    assert run.result["outcome"] == "ok"
    assert_nothing_running(hub_202, user)


def test_slow_spawn_is_waited_for(hub_202, hub_user, tmp_path):
    user, token = new_account(hub_202, hub_user("slow4-"))
    run = canary(hub_202, user, token, tmp_path)
    assert run.exit_code == ExitCode.OK, run.output
    assert run.result["phases_ms"]["ready_wait"] >= 4000
    assert_nothing_running(hub_202, user)


def test_spawn_failure_reports_the_spawners_message(hub_202, hub_user, tmp_path):
    user, token = new_account(hub_202, hub_user("failexit-"))
    run = canary(hub_202, user, token, tmp_path, "--attempts", "2")
    assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
    result = run.result
    assert result["reason"] == "spawn_failed" and result["attempts"] == 2
    assert result["last_progress_message"].startswith("Spawn failed: "), run.output
    assert "didn't respond" in result["last_progress_message"]
    assert len(run.named("attempt_failed")) == 1
    assert_nothing_running(hub_202, user)


def test_spawn_refused_at_once_is_a_spawn_failure(hub, hub_user, tmp_path):
    user, token = new_account(hub, hub_user("failmissing-"))
    run = canary(hub, user, token, tmp_path, "--attempts", "1")
    assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
    assert run.result["reason"] == "spawn_failed"
    # The hub's 500 says only "Internal Server Error"; the spawner's reason comes from the progress stream.
    assert "No such file or directory" in run.result["message"], run.output
    assert "No such file or directory" in run.result["last_progress_message"]
    assert_nothing_running(hub, user)


def test_spawn_timeout_cleans_up(hub_202, hub_user, tmp_path):
    user, token = new_account(hub_202, hub_user("slow60-" if hub_202.cancels_pending_spawns else "slow8-"))
    started = time.monotonic()
    if not hub_202.cancels_pending_spawns:
        # JupyterHub before 5.1 cannot cancel the pending spawn: 13, quoting the hub, within the stop's budget.
        run = canary(hub_202, user, token, tmp_path, "--spawn-timeout", "2", "--stop-timeout", "3", "--attempts", "1")
        assert run.exit_code == ExitCode.STOP_FAILED, run.output
        assert "is pending spawn, please wait" in run.result["message"], run.output
        assert run.named("server_left_running") and time.monotonic() - started < 30
        hub_202.stop_all_servers(user)
        return
    run = canary(hub_202, user, token, tmp_path, "--spawn-timeout", "2", "--attempts", "1")
    assert run.exit_code == ExitCode.SPAWN_TIMEOUT, run.output
    assert run.result["reason"] == "spawn_timeout"
    assert run.named("server_stopped"), run.output
    assert time.monotonic() - started < 30
    assert_nothing_running(hub_202, user)


def test_leftover_server_is_stopped_first_once_no_live_run_can_own_it(hub, hub_user, tmp_path):
    """A server older than --deadline plus --stop-timeout cannot belong to a live run of the probe: stale."""
    user, token = new_account(hub, hub_user())
    hub.start_server(user)
    assert hub.servers(user)[""]["ready"]
    lifetime = 40 + 10  # the run's --deadline plus --stop-timeout below: room for a slow spawn on a busy machine
    started = datetime.fromisoformat(hub.servers(user)[""]["started"].replace("Z", "+00:00"))
    time.sleep(max(0.0, lifetime + 1 - (datetime.now(UTC) - started).total_seconds()))
    run = canary(hub, user, token, tmp_path, "--deadline", "40", "--stop-timeout", "10")
    assert run.exit_code == ExitCode.OK, run.output
    assert run.named("stale_server_stopped"), run.output
    assert run.named("stale_server_stopped")[0]["level"] == "warning"
    assert run.named("stale_server_found")[0]["server_age_s"] > lifetime
    assert_nothing_running(hub, user)


def test_a_young_leftover_server_may_be_a_live_runs_and_is_left_alone(hub, hub_user, tmp_path):
    user, token = new_account(hub, hub_user())
    hub.start_server(user)
    try:
        run = canary(hub, user, token, tmp_path)
        assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
        assert run.result["reason"] == "concurrent_run" and run.result["attempts"] == 1
        assert run.named("concurrent_run_found")[0]["stale_after_s"] == 900 + 120
        assert not run.named("server_stopped") and not run.named("spawn_requested")
        assert hub.servers(user)[""]["ready"], "the other run's server was touched"
        assert json.loads((tmp_path / "termination-log").read_text())["exit_code"] == 18
    finally:
        hub.stop_all_servers(user)


def test_two_concurrent_runs_of_one_probe_do_not_stop_each_others_server(hub_202, hub_user, tmp_path):
    """A second run (a `helm test`, a manual run) beside a live one: 18, and the first passes."""
    user, token = new_account(hub_202, hub_user("slow4-"))
    first = start_process(
        ["--hub-url", hub_202.url, "--user", user, "--termination-log", str(tmp_path / "first")],
        env=child_env(token),
    )
    try:
        wait_for(lambda: hub_202.servers(user), 60, "the first run's spawn")
        second = canary(hub_202, user, token, tmp_path)
        first_run = finish_process(first, timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.exit_code == ExitCode.CONCURRENT_RUN, second.output
    assert not second.named("server_stopped") and not second.named("spawn_requested")
    assert first_run.exit_code == ExitCode.OK, first_run.output
    assert first_run.named("server_verified") and not first_run.named("stale_server_found")
    first_run.assert_no_secret(token)
    assert_nothing_running(hub_202, user)


def test_bad_token_is_a_permission_error_without_retries(hub, hub_user, tmp_path):
    user, _ = new_account(hub, hub_user())
    bad = "0123456789abcdef0123456789abcdef"
    run = canary(hub, user, bad, tmp_path, "--attempts", "3")
    assert run.exit_code == ExitCode.PERMISSION, run.output
    assert run.result["reason"] == "permission" and run.result["attempts"] == 1
    assert "rejected the token" in run.result["message"]
    assert not run.named("attempt_failed") and not run.named("request_retry")
    assert_nothing_running(hub, user)


def test_named_server(hub, hub_user, tmp_path):
    user, token = new_account(hub, hub_user())
    run = canary(hub, user, token, tmp_path, "--server-name", "canary")
    assert run.exit_code == ExitCode.OK, run.output
    records = hub.spawn_records(user)
    assert [r["server_name"] for r in records] == ["canary"]
    assert_nothing_running(hub, user)


@pytest.mark.parametrize("name", ["Canary", "my_server"])
def test_a_server_name_jupyterhub_6_refuses_is_78_before_anything_starts(hub, hub_user, tmp_path, name):
    """The rule is the hub's: it answers a spawn of that name 400 itself; the canary says so first, with 78."""
    version = hub.api("GET", "").json()["version"]
    if int(version.split(".")[0]) < 6:
        pytest.skip(f"JupyterHub {version} has no such rule: the names are valid there (make test-compat)")
    user, token = new_account(hub, hub_user())
    refused = hub.api("POST", f"users/{user}/servers/{name}")
    assert refused.status_code == 400, refused.text
    run = canary(hub, user, token, tmp_path, "--server-name", name)
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert f"--server-name {name!r}" in run.result["message"] and "single hyphens" in run.result["message"]
    assert run.result["attempts"] == 1
    assert hub.spawn_records(user) == []
    assert_nothing_running(hub, user)


def test_user_options_reach_the_spawner(hub, hub_user, tmp_path):
    user, token = new_account(hub, hub_user())
    options = {"reservation": [""], "account": ["test-group"], "runtime": ["00:05:00"]}
    options_file = tmp_path / "options.json"
    options_file.write_text(json.dumps(options))
    run = canary(hub, user, token, tmp_path, "--user-options-file", str(options_file))
    assert run.exit_code == ExitCode.OK, run.output
    assert hub.spawn_records(user)[-1]["user_options"] == options
    assert_nothing_running(hub, user)


def test_sigterm_during_spawn_stops_the_server(hub_202, hub_user, tmp_path):
    user, token = new_account(hub_202, hub_user("slow30-"))
    process = start_process(
        ["--hub-url", hub_202.url, "--user", user, "--termination-log", str(tmp_path / "term")],
        env=child_env(token),
    )
    seen = []
    try:
        # Wait until the spawn is underway (the first progress event), then terminate.
        for line in process.stdout:
            seen.append(line)
            if '"spawn_progress"' in line:
                break
        process.send_signal(signal.SIGTERM)
        run = finish_process(process, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    run.output = "".join(seen) + run.output
    assert run.exit_code == ExitCode.SIGTERM, run.output
    assert token not in run.output
    results = [e for e in run.events if e["event"] == "canary_result"]
    assert len(results) == 1 and results[0]["outcome"] == "interrupted"
    assert any(e["event"] == "server_stopped" for e in run.events), run.output
    assert_nothing_running(hub_202, user)
    assert json.loads((tmp_path / "term").read_text())["exit_code"] == 143


def test_hub_down_is_hub_unavailable_within_the_deadline(tmp_path, free_port):
    started = time.monotonic()
    run = run_main(
        ["--hub-url", f"http://127.0.0.1:{free_port}/", "--user", "nobody", "--deadline", "12", "--stop-timeout", "2"],
        env={"JUPYTERHUB_API_TOKEN": "x" * 32},
    )
    elapsed = time.monotonic() - started
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    assert run.result["reason"] == "hub_unavailable"
    assert run.named("request_retry"), "connection errors should be retried"
    assert elapsed < 12 + 2, f"took {elapsed:.1f}s, beyond the 12s deadline"


def test_transient_503_and_429_are_retried(hub, hub_user, tmp_path):
    user, token = new_account(hub, hub_user())
    with FaultProxy(hub.url) as proxy:
        proxy.fail_next(2, 503, path_contains="/hub/api/user")
        proxy.fail_next(1, 429, retry_after=2, path_contains=f"/hub/api/users/{user}/server", method="POST")
        args = ["--hub-url", proxy.url, "--user", user, "--termination-log", str(tmp_path / "t")]
        run = run_main(args, env={"JUPYTERHUB_API_TOKEN": token})
        seen = list(proxy.requests_seen)
    run.assert_no_secret(token)
    assert run.exit_code == ExitCode.OK, run.output
    statuses = [status for _, _, _, status in seen]
    assert statuses.count(503) == 2 and statuses.count(429) == 1
    posts = [(t, status) for t, method, path, status in seen if method == "POST" and "/server" in path]
    assert posts[0][1] == 429 and posts[1][1] in (201, 202)
    assert posts[1][0] - posts[0][0] >= 2.0, "Retry-After was not honoured"
    assert len(run.named("request_retry")) == 3
    assert_nothing_running(hub, user)


def test_server_unreachable_through_the_proxy(hub, hub_user, tmp_path):
    user, token = new_account(hub, hub_user())
    with FaultProxy(hub.url) as proxy:
        proxy.fail_next(10, 404, path_contains=f"/user/{user}/api/status")
        run = run_main(
            ["--hub-url", proxy.url, "--user", user, "--attempts", "1", "--termination-log", str(tmp_path / "t")],
            env={"JUPYTERHUB_API_TOKEN": token},
        )
    run.assert_no_secret(token)
    assert run.exit_code == ExitCode.SERVER_UNREACHABLE, run.output
    assert run.result["reason"] == "server_unreachable" and "404" in run.result["message"]
    assert run.named("server_stopped")
    assert_nothing_running(hub, user)


def test_a_server_that_cannot_be_stopped_is_13_and_ends_the_run(hub_202, hub_user, tmp_path):
    user, token = new_account(hub_202, hub_user("slow60-"))
    try:
        with FaultProxy(hub_202.url) as proxy:
            proxy.fail_next(1000, 503, method="DELETE")
            run = run_main(
                ["--hub-url", proxy.url, "--user", user, "--spawn-timeout", "2", "--stop-timeout", "3",
                 "--attempts", "3", "--termination-log", str(tmp_path / "t")],
                env={"JUPYTERHUB_API_TOKEN": token},
            )
        run.assert_no_secret(token)
        # The spawn timed out (11), then the stop failed: 13 wins, and no further attempt is made.
        assert run.exit_code == ExitCode.STOP_FAILED, run.output
        assert run.result["reason"] == "stop_failed" and run.result["attempts"] == 1
        (left,) = run.named("server_left_running")
        assert left["level"] == "error" and left["url"] == f"{proxy.url}user/{user}/"
        assert hub_202.servers(user), "the server should really have been left running"
        assert json.loads((tmp_path / "t").read_text())["exit_code"] == 13
    finally:
        # Before 5.1 the hub cannot stop the pending 60 s spawn: it ends the spawn first, and a loaded
        # machine adds the server's own start to the 60 s (seen: more than the default 60 s wait).
        hub_202.stop_all_servers(user, timeout=150)
    assert_nothing_running(hub_202, user)


# --- the token's scopes: checked before anything is started ---


@pytest.mark.parametrize(
    ("granted", "lacking"),
    [
        # The token: it could start, stop and reach the server, but not see it.
        (["start:servers", "delete:servers", "access:servers", "read:users"], "read:servers"),
        (["servers", "read:users"], "access:servers"),
        (["read:servers", "access:servers"], "start:servers"),
    ],
    ids=["no-read", "no-access", "no-start"],
)
def test_a_token_that_cannot_see_start_stop_or_reach_the_server_is_77_before_anything(
    hub, hub_user, tmp_path, granted, lacking
):
    user = hub_user()
    hub.create_user(user)
    if int(hub.version.split(".")[0]) < 6:
        if lacking == "read:servers":
            pytest.skip("before JupyterHub 6 only `servers` starts a server, and it implies read:servers")
        granted = [{"start:servers": "servers"}.get(s, s) for s in granted]
        lacking = {"start:servers": "servers"}.get(lacking, lacking)
    token = hub.new_token(user, scopes=[f"{scope}!user={user}" for scope in granted])
    run = canary(hub, user, token, tmp_path)
    assert run.exit_code == ExitCode.PERMISSION, run.output
    assert f"{lacking}!user={user}" in run.result["message"], run.result["message"]
    assert not run.named("spawn_requested") and run.result["attempts"] == 1
    assert_nothing_running(hub, user)


def test_scopes_through_a_server_filter_are_enough_but_reading_needs_the_user(hub, hub_user, tmp_path):
    user = hub_user()
    hub.create_user(user)
    per_server = [f"servers!server={user}/", f"access:servers!server={user}/"]
    run = canary(hub, user, hub.new_token(user, scopes=per_server), tmp_path)
    # The hub leaves `servers` out of the user model without read:servers on the user.
    assert run.exit_code == ExitCode.PERMISSION and f"read:servers!user={user}" in run.result["message"], run.output
    assert not run.named("spawn_requested")
    scopes = [*per_server, f"read:servers!user={user}"]
    run = canary(hub, user, hub.new_token(user, scopes=scopes), tmp_path)
    assert run.exit_code == ExitCode.OK, run.output
    assert_nothing_running(hub, user)
