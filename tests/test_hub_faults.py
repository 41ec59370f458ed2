"""Faults that are the hub's own, on a real JupyterHub: a hub restart mid-cycle with its servers left
running (cleanup_servers=False, as zero-to-jupyterhub runs it), a user name the hub leaves unescaped
in its URLs, a spawn that never finishes while the progress stream sends its 8 s keepalives, and a
pending spawn that JupyterHub before 5.1 refuses to cancel.

The byte-level faults a real hub cannot produce on demand are in test_faults.py (the fake hub).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from app.exit_codes import ExitCode
from tests.faultproxy import FaultProxy
from tests.runner import Run, parse_events, run_main, start_process
from tests.test_cycle import child_env

pytestmark = pytest.mark.hub


def new_account(hub, name):
    hub.create_user(name)
    return name, hub.new_token(name)


def canary(hub, user, token, tmp_path, *extra):
    args = ["--hub-url", hub.url, "--user", user, "--termination-log", str(tmp_path / "term"), *extra]
    started = time.monotonic()
    run = run_main(args, env={"JUPYTERHUB_API_TOKEN": token})
    run.assert_no_secret(token, hub.admin_token)
    return run, time.monotonic() - started


def test_a_user_name_with_at_sign_is_verified_at_the_hubs_own_url(hub, hub_user, tmp_path):
    user, token = new_account(hub, f"ok.svc-{hub_user()}@example.org")
    run, _ = canary(hub, user, token, tmp_path)
    assert run.exit_code == ExitCode.OK, run.output
    assert run.named("server_verified")
    assert hub.servers(user) == {}


def test_keepalives_do_not_stretch_the_spawn_budget(hub_202, hub_user, tmp_path):
    """--spawn-timeout 300 but --deadline 26: the budget before the stop is ~16 s, twice the hub's
    8 s keepalive interval, which resets requests' read timeout each time."""
    user, token = new_account(hub_202, hub_user("slow90-"))
    try:
        run, elapsed = canary(
            hub_202, user, token, tmp_path,
            "--spawn-timeout", "300", "--deadline", "26", "--stop-timeout", "10", "--request-timeout", "30",
        )
        assert elapsed < 26 + 4, f"took {elapsed:.1f}s with --deadline 26"
        if hub_202.cancels_pending_spawns:
            assert run.exit_code == ExitCode.SPAWN_TIMEOUT, run.output
            assert run.named("server_stopped") and hub_202.servers(user) == {}
        else:
            assert_pending_spawn_refused(run)
    finally:
        hub_202.stop_all_servers(user, timeout=150)


def test_a_progress_stream_cut_mid_chunk_falls_back_to_polling(hub_202, hub_user, tmp_path):
    user, token = new_account(hub_202, hub_user("slow2-"))
    with FaultProxy(hub_202.url) as proxy:
        # Every stream of the run: the canary asks for it from the spawn request on, and its first try
        # may come before the hub has taken the spawn in (a 404, tried again), so "the next" is not
        # the one it reads.
        proxy.cut_next(20, after_bytes=30, path_contains="/progress")
        args = ["--hub-url", proxy.url, "--user", user, "--termination-log", str(tmp_path / "term")]
        run = run_main(args, env={"JUPYTERHUB_API_TOKEN": token})
    run.assert_no_secret(token)
    assert run.exit_code == ExitCode.OK, run.output
    assert "ChunkedEncodingError" in run.named("progress_stream_unavailable")[0]["reason"], run.output
    assert hub_202.servers(user) == {}


def assert_pending_spawn_refused(run):
    """JupyterHub before 5.1: the stop of a pending spawn is refused; 13, and the hub's answer quoted."""
    assert run.exit_code == ExitCode.STOP_FAILED, run.output
    message = run.result["message"]
    assert "pending spawn, please wait" in message and "before 5.1" in message, message
    assert run.named("server_left_running")


def run_through_a_restart(hub, token: str, args: list[str], restart: Callable[[], None]) -> Run:
    """The canary as a child process (real signals, its own process), `restart()` run once it has sent its
    spawn request; its output read all along, so that it never blocks on a full pipe."""
    process = start_process(["--hub-url", hub.url, *args], env=child_env(token))
    lines: list[str] = []
    spawn_requested = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if '"spawn_requested"' in line:
                spawn_requested.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert spawn_requested.wait(60), "".join(lines)
        restart()
        process.wait(timeout=180)
        reader.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines)
    run = Run(process.returncode, output, parse_events(output))
    run.assert_no_secret(token, hub.admin_token)
    return run


def test_a_hub_restart_mid_cycle_is_waited_out_and_leaves_nothing_running(hub_keeps_servers, hub_user, tmp_path):
    """The hub goes away for ~12 s during the ready wait and comes back to its running servers: the
    attempt that lost the hub is 20, its stop keeps trying until the hub is back and stops the
    server, and the next attempt passes."""
    hub = hub_keeps_servers
    user, token = new_account(hub, hub_user("slow5-"))

    def restart() -> None:  # away for ~12 s during the ready wait
        hub.stop_hub_process()
        time.sleep(12)
        hub.start()

    run = run_through_a_restart(
        hub, token,
        ["--user", user, "--termination-log", str(tmp_path / "term"),
         "--deadline", "150", "--stop-timeout", "60", "--spawn-timeout", "60", "--attempts", "2"],
        restart,
    )
    assert run.exit_code == ExitCode.OK, run.output
    assert run.result["attempts"] == 2
    (failed,) = run.named("attempt_failed")
    assert failed["reason"] == "hub_unavailable", run.output
    assert run.named("stop_retry") or run.named("request_retry"), "the stop should have waited for the hub"
    assert len(run.named("server_stopped")) == 2 and not run.named("server_left_running")
    assert hub.servers(user) == {}


def test_a_hub_restart_during_a_slow_spawn_leaves_no_server_of_the_run_and_no_18(hub_keeps_servers, hub_user, tmp_path):
    """The issue's scenario: the hub restarts 2.5 s into a slow spawn. Its new proxy answers a plain 404
    until the hub adds its route (made 10 s wide here, so that the stop reads it every time): that is
    not the hub saying the server is gone. The stop waits for the hub, finds the server it brought back
    ("pending": "check") and stops it; no later attempt calls it another run's (18)."""
    hub = hub_keeps_servers
    user, token = new_account(hub, hub_user("slow10-"))

    def restart() -> None:  # 2.5 s into the spawn; the new proxy has no route to the hub for 10 s
        time.sleep(2.5)
        hub.stop_hub_process()
        hub.start(hub_route_delay=10)

    run = run_through_a_restart(
        hub, token,
        ["--user", user, "--termination-log", str(tmp_path / "term"),
         "--attempts", "3", "--deadline", "150", "--stop-timeout", "30", "--spawn-timeout", "60"],
        restart,
    )
    try:
        assert run.exit_code == ExitCode.OK, run.output
        assert run.named("attempt_failed")[0]["reason"] == "hub_unavailable", run.output
        assert any("not the hub's own answer" in e["message"] for e in run.named("stop_retry")), run.output
        assert not run.named("concurrent_run_found") and not run.named("server_left_running")
        assert not run.named("server_already_stopped"), "a stop concluded without stopping"
        time.sleep(3)  # a server the restarted hub brings back shows within seconds
        assert hub.servers(user) == {}
    finally:
        hub.stop_all_servers(user, timeout=60)
