"""--check-kernel against the real local hub: a kernel started through the server's REST API, code run
over its websocket through the proxy, the kernel deleted; and kernels that cannot start or never answer.

The single-user servers run in the test venv, so ipykernel (a test extra) provides the default
`python3` kernel. A broken kernel is a kernelspec in the user's home on the hub
(`~/.local/share/jupyter/kernels/<name>/kernel.json`, where the server looks), chosen with --kernel-name.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from app.deadline import CLEANUP_SHARE, LAST_LOOK
from app.exit_codes import ExitCode
from tests.runner import run_main

pytestmark = pytest.mark.hub


def account(hub, name):
    hub.create_user(name)
    return name, hub.new_token(name)


def kernelspec(hub, user, name, argv):
    """A kernelspec only this user's server sees."""
    directory = hub.workdir / "home" / user / ".local" / "share" / "jupyter" / "kernels" / name
    directory.mkdir(parents=True)
    (directory / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python"}))


def canary(hub, user, token, tmp_path, *extra):
    args = ["--hub-url", hub.url, "--user", user, "--termination-log", str(tmp_path / "termination-log"), *extra]
    run = run_main(args, env={"JUPYTERHUB_API_TOKEN": token})
    run.assert_no_secret(token, hub.admin_token)
    return run


def test_kernel_runs_code_and_is_deleted(hub, hub_user, tmp_path, caplog):
    user, token = account(hub, hub_user())
    # Every stdlib logger at DEBUG (websocket-client's included): the token must not reach any of them.
    caplog.set_level(logging.DEBUG)
    run = canary(hub, user, token, tmp_path, "--check-kernel", "--log-level", "debug")
    assert run.exit_code == ExitCode.OK, run.output
    started, executed, deleted = run.named("kernel_started"), run.named("kernel_executed"), run.named("kernel_deleted")
    assert len(started) == len(executed) == len(deleted) == 1, run.output
    assert started[0]["kernel_name"] == "python3"
    assert executed[0]["output"] == "42" and executed[0]["code"] == "print(6*7)"
    assert started[0]["kernel_id"] == executed[0]["kernel_id"] == deleted[0]["kernel_id"]
    phases = run.result["phases_ms"]
    assert list(phases) == ["spawn_request", "ready_wait", "verify", "kernel", "stop"]
    assert isinstance(phases["kernel"], int) and phases["kernel"] > 0
    # The kernel phase comes after verify and before the stop.
    order = [e["phase"] for e in run.named("phase_done")]
    assert order.index("verify") < order.index("kernel") < order.index("stop")
    assert token not in caplog.text
    assert hub.servers(user) == {}


def test_a_kernel_that_cannot_start_is_exit_14_and_retried(hub, hub_user, tmp_path):
    user, token = account(hub, hub_user())
    kernelspec(hub, user, "broken", ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    run = canary(hub, user, token, tmp_path, "--check-kernel", "--kernel-name", "broken", "--attempts", "2")
    assert run.exit_code == ExitCode.KERNEL_FAILED == 14, run.output
    result = run.result
    assert result["reason"] == "kernel_failed" and result["attempts"] == 2
    assert "the kernel 'broken' did not start: POST api/kernels answered 500" in result["message"]
    assert [e["reason"] for e in run.named("attempt_failed")] == ["kernel_failed"]
    assert len(run.named("server_stopped")) == 2, "each attempt stops its server"
    assert not run.named("kernel_started")
    assert hub.servers(user) == {}
    summary = json.loads((tmp_path / "termination-log").read_text())
    assert summary["exit_code"] == 14


def test_a_kernel_that_never_answers_is_bounded_by_the_kernel_timeout(hub, hub_user, tmp_path):
    user, token = account(hub, hub_user())
    # Starts (the process runs) but never speaks the kernel protocol.
    kernelspec(hub, user, "mute", ["/bin/sleep", "300"])
    started = time.monotonic()
    run = canary(hub, user, token, tmp_path, "--check-kernel", "--kernel-name", "mute", "--kernel-timeout", "3",
                 "--attempts", "1")
    assert run.exit_code == ExitCode.KERNEL_FAILED, run.output
    assert run.named("kernel_started"), run.output
    # Deleted in the `finally:` although the check failed.
    assert len(run.named("kernel_deleted")) == 1, run.output
    kernel_ms = run.result["phases_ms"]["kernel"]
    # Start and execute get 3 s less the DELETE's share, the DELETE the rest: all of it within 3 s
    # (and one LAST_LOOK for a request begun at the end), not a budget of its own beyond them.
    assert 3000 * (1 - CLEANUP_SHARE) <= kernel_ms < (3 + LAST_LOOK + 0.5) * 1000, kernel_ms
    assert time.monotonic() - started < 60
    assert hub.servers(user) == {}


def test_kernel_name_and_timeout_come_from_variables(tmp_path):
    """The variables reach the configuration (CANARY_CHECK_KERNEL, CANARY_KERNEL_NAME, CANARY_KERNEL_TIMEOUT)."""
    from app.cli import build_parser
    from app.config import build_run_config

    parsed = vars(build_parser().parse_args(["run"]))
    token_file = tmp_path / "token"
    token_file.write_text("x")
    env = {
        "CANARY_HUB_URL": "http://127.0.0.1:1/", "CANARY_USER": "u", "CANARY_TOKEN_FILE": str(token_file),
        "CANARY_CHECK_KERNEL": "true", "CANARY_KERNEL_NAME": "python3", "CANARY_KERNEL_TIMEOUT": "7.5",
    }
    config = build_run_config(parsed, env)
    assert (config.check_kernel, config.kernel_name, config.kernel_timeout) == (True, "python3", 7.5)
    defaults = build_run_config(parsed, {k: v for k, v in env.items() if "KERNEL" not in k})
    assert (defaults.check_kernel, defaults.kernel_name, defaults.kernel_timeout) == (False, None, 60.0)
    bad = run_main(["--hub-url", "http://127.0.0.1:1/", "--user", "u", "--token-file", str(token_file),
                    "--kernel-timeout", "0", "--termination-log", str(tmp_path / "t")])
    assert bad.exit_code == ExitCode.CONFIGURATION and "--kernel-timeout" in bad.result["message"]


def test_a_kernel_start_whose_answer_is_lost_fails_the_check_and_adopts_nothing(hub, hub_user, tmp_path):
    """The lost start's kernel cannot be told apart from anyone else's: nothing is adopted or deleted, the
    POST is not resent; the check fails (14: retried as an attempt, on a fresh server) and the server's
    stop ends the kernel. (The fault proxy cannot carry websockets, so this run stops at the start.)"""
    from tests.faultproxy import FaultProxy

    user, token = account(hub, hub_user())
    with FaultProxy(hub.url) as proxy:
        proxy.cut_next(1, after_bytes=0, path_contains="/api/kernels", method="POST")
        run = run_main(["--hub-url", proxy.url, "--user", user, "--check-kernel", "--attempts", "1",
                        "--termination-log", str(tmp_path / "t")], env={"JUPYTERHUB_API_TOKEN": token})
        kernel_requests = [(method, path) for _, method, path, _ in proxy.requests_seen if "/api/kernels" in path]
    run.assert_no_secret(token)
    assert run.exit_code == ExitCode.KERNEL_FAILED, run.output
    assert "answer was lost" in run.result["message"], run.result["message"]
    assert kernel_requests == [("POST", f"/user/{user}/api/kernels")], "resent, listed or deleted after the loss"
    assert not run.named("kernel_started") and run.named("server_stopped")
    assert hub.servers(user) == {}
