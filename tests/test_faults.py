"""Transport faults a real hub cannot produce on demand, injected by the in-process fake hub
(tests/fakehub.py) at the byte level: keepalives, trickles, silence, resets, bodies and chunks cut
short, garbage encodings, answers lost after the request took effect, signals at chosen moments.

Each test asserts the documented exit code, that the run ended within its budget (plus a little:
the ends of a budget are checked, not timed to the millisecond), exactly one `canary_result`, that
nothing was left running where the canary could stop it, and that the token never appears.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.deadline import Deadline
from app.exit_codes import ExitCode
from app.hub import HubClient
from app.kernel import KernelCheck
from tests.background import serve_in_background, stop_serving
from tests.fakehub import FakeHub
from tests.runner import Run, run_main, run_token

TOKEN = "f4k3t0k3n" * 4
SLACK = 3.0  # s beyond a budget that a run may take to notice, stop and report
USER_MODEL = r"^/hub/api/users/canary$"
SERVER = r"^/hub/api/users/canary/server$"
PROGRESS = r"/server/progress$"


def canary(fake: FakeHub, tmp_path, *extra: str) -> tuple[Run, float]:
    args = ["--hub-url", fake.url, "--user", "canary", "--termination-log", str(tmp_path / "term"), *extra]
    started = time.monotonic()
    run = run_main(args, env={"JUPYTERHUB_API_TOKEN": TOKEN})
    elapsed = time.monotonic() - started
    run.assert_no_secret(TOKEN)
    run.result  # noqa: B018 - exactly one canary_result, or this fails
    assert "Traceback" not in run.output, run.output
    # The progress stream's thread (app/spawn_progress.py) ends with the spawn phase, whatever the fault.
    assert not [t for t in threading.enumerate() if t.name == "spawn-progress"], "a progress follower outlived the run"
    return run, elapsed


def answers(run: Run) -> list[str]:
    return [event["answer"] for event in run.named("request_retry")]


# --- 1. budgets hold inside live streams ---


@pytest.mark.parametrize(
    ("budget", "args"),
    [
        pytest.param(3, ["--spawn-timeout", "3", "--stop-timeout", "5", "--attempts", "1"], id="spawn-timeout"),
        pytest.param(6, ["--spawn-timeout", "300", "--deadline", "6", "--stop-timeout", "2"], id="deadline"),
    ],
)
def test_keepalives_do_not_hold_the_spawn_past_its_budget(tmp_path, budget, args):
    with FakeHub(spawn="hang", keepalive=0.3) as fake:
        run, elapsed = canary(fake, tmp_path, "--request-timeout", "30", *args)
        assert run.exit_code == ExitCode.SPAWN_TIMEOUT, run.output
        assert elapsed < budget + SLACK, f"took {elapsed:.1f}s with a budget of {budget}s"
        assert run.named("server_stopped") and fake.servers == {}


@pytest.mark.parametrize("fault", ["trickle", "stall"])
def test_a_trickling_or_silent_stream_is_bounded_too(tmp_path, fault):
    with FakeHub(spawn="hang") as fake:
        fake.fault("GET", PROGRESS, fault, count=-1)
        run, elapsed = canary(
            fake, tmp_path, "--spawn-timeout", "3", "--request-timeout", "30", "--stop-timeout", "5", "--attempts", "1"
        )
        assert run.exit_code == ExitCode.SPAWN_TIMEOUT, run.output
        assert elapsed < 3 + SLACK, f"took {elapsed:.1f}s with --spawn-timeout 3"
        assert fake.servers == {}


def test_a_body_that_trickles_is_cut_at_the_budget(tmp_path):
    with FakeHub() as fake:
        fake.fault("GET", USER_MODEL, "trickle", count=-1)  # ~0.3 s a byte: minutes for the whole model
        run, elapsed = canary(fake, tmp_path, "--deadline", "6", "--stop-timeout", "2", "--request-timeout", "30")
        assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
        assert elapsed < 6 + SLACK, f"took {elapsed:.1f}s with --deadline 6"


# --- 4. a network fault of any shape is classified, never exit 1 ---


def test_a_stream_cut_mid_chunk_falls_back_to_polling(tmp_path):
    with FakeHub(spawn="pending", ready_after=1.0) as fake:
        # Every stream: the canary opens it while the spawn request is in flight (a first try may come
        # before the spawn exists, and is tried again), so "the first" is not the one it reads.
        fake.fault("GET", PROGRESS, "cut_chunk", count=-1)
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.OK, run.output
        assert "ChunkedEncodingError" in run.named("progress_stream_unavailable")[0]["reason"]
        assert fake.servers == {}


@pytest.mark.parametrize(
    ("fault", "error"), [("cut_body", "ChunkedEncodingError"), ("reset", "ConnectionError"), ("bad_gzip", "ContentDecodingError")]
)
def test_a_broken_answer_to_a_read_is_retried(tmp_path, fault, error):
    with FakeHub() as fake:
        fake.fault("GET", USER_MODEL, fault, count=2)
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.OK, run.output
        assert answers(run)[:2] == [error, error], run.output


def test_broken_answers_that_persist_are_hub_unavailable(tmp_path):
    with FakeHub() as fake:
        fake.fault("GET", r"^/hub/api/$", "bad_gzip", count=-1)
        run, elapsed = canary(fake, tmp_path, "--attempts", "1", "--deadline", "20", "--stop-timeout", "2")
        assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
        assert "ContentDecodingError" in run.result["message"]


def test_a_stop_whose_answer_is_cut_is_retried_and_confirmed(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("DELETE", SERVER, "cut_body")  # the hub stopped it; the answer was lost
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.OK, run.output
        assert run.named("server_stopped") and fake.servers == {}


def test_a_stop_that_never_gets_through_is_13_after_the_stops_whole_budget(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("DELETE", SERVER, "reset", count=-1)
        run, elapsed = canary(fake, tmp_path, "--stop-timeout", "4", "--attempts", "2")
        assert run.exit_code == ExitCode.STOP_FAILED, run.output
        (left,) = run.named("server_left_running")
        assert left["url"] == f"{fake.url}user/canary/" and "ConnectionError" in left["message"]
        assert run.result["attempts"] == 1, "a server left running ends the run"
        assert fake.count("DELETE", SERVER) >= 3, "the stop kept trying"
        assert 4 <= elapsed < 4 + SLACK
        assert json.loads((tmp_path / "term").read_text())["exit_code"] == 13


def test_jupyterhub_41_cannot_cancel_a_pending_spawn_and_13_quotes_it(tmp_path):
    with FakeHub(version="4.1.6", spawn="hang", stop="pending_spawn_400") as fake:
        run, elapsed = canary(fake, tmp_path, "--spawn-timeout", "2", "--stop-timeout", "3", "--attempts", "1")
        assert run.exit_code == ExitCode.STOP_FAILED, run.output
        message = run.result["message"]
        assert "pending spawn, please wait" in message and "before 5.1" in message, message
        assert elapsed < 2 + 3 + SLACK


# --- 6. requests that are not idempotent are not blindly resent ---


def test_a_spawn_whose_answer_is_lost_is_followed_not_sent_again(tmp_path):
    with FakeHub(spawn="pending") as fake:
        fake.fault("POST", SERVER, "reset", after=True)
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("POST", SERVER) == 1, "the spawn was sent twice"
        assert run.named("request_outcome_unknown") and run.named("spawn_already_underway")
        assert fake.servers == {}


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_spawn_that_did_not_happen_is_sent_again(tmp_path, status):
    with FakeHub(spawn="pending") as fake:
        fake.fault("POST", SERVER, "status", status=status)
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("POST", SERVER) == 2
        assert run.named("request_resent")


def test_a_spawn_that_answers_already_pending_is_followed(tmp_path):
    with FakeHub(spawn="pending") as fake:
        # Our first POST started it but its answer was a 502; a racing resend would get 400.
        fake.fault("POST", SERVER, "status", status=502, after=True)
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("POST", SERVER) == 1


def test_a_mint_whose_answer_is_lost_leaves_exactly_one_token(tmp_path):
    with FakeHub() as fake:
        fake.fault("POST", r"/tokens$", "reset", after=True)
        run = run_token(["--hub-url", fake.url, "--user", "canary", "--print"], env={"JUPYTERHUB_ADMIN_TOKEN": TOKEN})
        assert run.exit_code == ExitCode.OK, run.log
        assert fake.count("POST", r"/tokens$") == 2
        (orphan,) = run.named("token_orphan_revoked")
        assert orphan["token_id"] not in fake.tokens
        (live,) = fake.tokens.values()
        assert run.stdout.strip() == live["token"], "the printed token is not the one that lives"
        assert TOKEN not in run.log and live["token"] not in run.log


def test_a_kernel_whose_start_answer_is_lost_is_adopted_not_started_twice():
    with FakeHub(spawn="ready") as fake:
        fake.fault("POST", r"/api/kernels$", "reset", after=True)
        client = HubClient(fake.url, TOKEN, request_timeout=5)
        check = KernelCheck(client, "canary", f"{fake.url}user/canary/", kernel_name=None, timeout=10, deadline=Deadline(10))
        kernel = check.start()
        assert fake.count("POST", r"/api/kernels$") == 1
        assert [k["id"] for k in fake.kernels] == [kernel["id"]]


# --- 5. signals inside shields, and while the result is reported ---


def test_a_sigterm_while_a_stale_server_is_stopped_ends_the_run_then(tmp_path):
    with FakeHub() as fake:
        fake.add_server("canary")
        fake.fault("DELETE", SERVER, "signal", call=lambda: os.kill(os.getpid(), signal.SIGTERM))
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.SIGTERM, run.output
        assert run.named("stale_server_stopped") and fake.servers == {}
        assert fake.count("POST", SERVER) == 0, "a new server was spawned after the SIGTERM"
        assert json.loads((tmp_path / "term").read_text())["exit_code"] == 143


def test_a_sigterm_while_the_success_is_reported_still_reports_it(tmp_path):
    class Pushgateway(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    gateway = ThreadingHTTPServer(("127.0.0.1", 0), Pushgateway)
    thread = serve_in_background(gateway, "pushgateway")
    try:
        with FakeHub() as fake:
            run, _ = canary(fake, tmp_path, "--pushgateway-url", f"http://127.0.0.1:{gateway.server_address[1]}/")
    finally:
        stop_serving(gateway, thread)
    assert run.exit_code == ExitCode.OK, run.output
    assert run.result["outcome"] == "ok" and run.named("metrics_pushed")
    assert json.loads((tmp_path / "term").read_text())["exit_code"] == 0


def test_an_unexpected_error_in_the_cleanup_after_a_signal_is_13_not_a_traceback(tmp_path, monkeypatch):
    def broken_stop(*args, **kwargs):
        raise RuntimeError("a bug in the stop")

    monkeypatch.setattr(HubClient, "stop_server", broken_stop)
    with FakeHub(spawn="hang") as fake:
        fake.fault("GET", PROGRESS, "signal", call=lambda: os.kill(os.getpid(), signal.SIGTERM))
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.STOP_FAILED, run.output
        assert "RuntimeError" in run.named("server_left_running")[0]["message"]
        fake.servers.clear()


# --- 7. budgets: no attempt that cannot succeed, and the telling cause ---


def test_no_attempt_starts_without_time_to_spawn(tmp_path):
    with FakeHub(spawn=["fail", "hang"]) as fake:
        run, elapsed = canary(fake, tmp_path, "--deadline", "9", "--stop-timeout", "2", "--spawn-timeout", "12")
        assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
        assert run.result["attempts"] == 1 and run.named("no_further_attempt")
        assert fake.spawns == 1


def test_a_timeout_the_deadline_made_does_not_hide_the_cause_before_it(tmp_path):
    with FakeHub(spawn=["fail", "hang"]) as fake:
        run, elapsed = canary(
            fake, tmp_path, "--deadline", "16", "--stop-timeout", "2", "--spawn-timeout", "12", "--attempts", "2"
        )
        assert fake.spawns == 2
        assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
        assert run.result["attempt_reasons"] == ["spawn_failed", "spawn_timeout"]
        assert elapsed < 16 + SLACK
        assert fake.servers == {}


# --- 3. the server's URL is the hub's own ---


def test_the_servers_url_comes_from_the_hubs_model(tmp_path):
    user = "ok.svc@example.org"
    with FakeHub(spawn="pending") as fake:
        args = ["--hub-url", fake.url, "--user", user, "--server-name", "probe~1", "--termination-log", str(tmp_path / "t")]
        run = run_main(args, env={"JUPYTERHUB_API_TOKEN": TOKEN})
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("GET", r"^/user/ok\.svc@example\.org/probe~1/api/status$") == 1
