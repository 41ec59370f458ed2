"""Transport faults a real hub cannot produce on demand, injected by the in-process fake hub
(tests/fakehub.py) at the byte level: keepalives, trickles, silence, resets, bodies and chunks cut
short, garbage encodings, answers lost after the request took effect, signals at chosen moments.

Each test asserts the documented exit code, that the run ended within its budget (plus a little:
the ends of a budget are checked, not timed to the millisecond), exactly one `canary_result`, that
nothing was left running where the canary could stop it, and that the token never appears.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import transport
from app.checks.kernel import KernelSession
from app.deadline import LAST_LOOK, Deadline
from app.errors import HubUnavailable, KernelFailed
from app.exit_codes import ExitCode
from app.hub import HubClient
from tests.background import serve_in_background, stop_serving
from tests.fakehub import FakeHub, Fault
from tests.runner import Run, run_main, run_token
from tests.tcprelay import TrickleAnswer

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


@pytest.mark.parametrize("kernel_name", [None, "python3"])
def test_a_kernel_whose_start_answer_is_lost_is_neither_adopted_nor_started_twice(kernel_name):
    """Only an id that came back proves a kernel ours: after a lost answer none is adopted or deleted
    (another client's kernel on the server is left alone), the POST is not resent, the check fails (14)."""
    with FakeHub(spawn="ready") as fake:
        fake.kernels.append({"id": "someone-elses", "name": "python3"})
        fake.fault("POST", r"/api/kernels$", "reset", after=True)
        client = HubClient(fake.url, TOKEN, request_timeout=5)
        check = KernelSession(client, "canary", f"{fake.url}user/canary/", kernel_name=kernel_name, timeout=10,
                            deadline=Deadline(10))
        with pytest.raises(KernelFailed, match="answer was lost"):
            check.start()
        assert fake.count("POST", r"/api/kernels$") == 1, "the start was sent again"
        assert fake.count("DELETE", r"/api/kernels/") == 0, "a kernel was deleted without proof it was ours"
        assert [k["id"] for k in fake.kernels][0] == "someone-elses" and len(fake.kernels) == 2


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


@contextlib.contextmanager
def signalling_pushgateway() -> Iterator[str]:
    """A Pushgateway that sends this process SIGTERM while it takes a push, then accepts it: its URL."""

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
        yield f"http://127.0.0.1:{gateway.server_address[1]}/"
    finally:
        stop_serving(gateway, thread)


def test_a_sigterm_while_the_success_is_reported_still_reports_it(tmp_path):
    with signalling_pushgateway() as url, FakeHub() as fake:
        run, _ = canary(fake, tmp_path, "--pushgateway-url", url)
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


# --- 8. answers of the wrong shape are classified, never exit 1 ---

KERNELS = r"/api/kernels$"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "words"),
    [
        pytest.param("GET", r"^/hub/api/$", [], 200, ExitCode.HUB_UNAVAILABLE, "JSON list, not an object", id="version-list"),
        pytest.param("GET", r"^/hub/api/user$", [], 200, ExitCode.HUB_UNAVAILABLE, "JSON list", id="whoami-list"),
        pytest.param("GET", r"^/hub/api/user$", {"name": "canary", "kind": "user", "scopes": "servers"}, 200,
                     ExitCode.HUB_UNAVAILABLE, "`scopes` of type str", id="whoami-scopes-str"),
        pytest.param("GET", USER_MODEL, [], 200, ExitCode.HUB_UNAVAILABLE, "JSON list", id="user-model-list"),
        pytest.param("GET", USER_MODEL, {"name": "canary", "servers": []}, 200, ExitCode.HUB_UNAVAILABLE,
                     "`servers` of type list", id="servers-list"),
        pytest.param("GET", USER_MODEL, {"name": "canary", "servers": {"": "running"}}, 200, ExitCode.HUB_UNAVAILABLE,
                     "`servers['']` of type str, not an object", id="server-model-str"),
        pytest.param("GET", r"/api/status$", [], 200, ExitCode.SERVER_UNREACHABLE, "JSON list", id="api-status-list"),
    ],
)
def test_an_answer_of_the_wrong_shape_is_classified(tmp_path, method, path, body, status, code, words):
    with FakeHub(spawn="ready") as fake:
        fake.fault(method, path, "body", body=body, status=status, count=-1)
        run, _ = canary(fake, tmp_path, "--attempts", "1", "--deadline", "20", "--stop-timeout", "3")
        assert run.exit_code == code, run.output
        assert words in run.result["message"], run.result["message"]
        if code != ExitCode.SERVER_UNREACHABLE:
            assert fake.spawns == 0, "nothing is started on an answer the canary does not understand"
        assert fake.servers == {}


def test_a_progress_stream_of_another_content_type_is_still_read(tmp_path):
    """requests hands back bytes, not text, for a content type that is not text/*: still events."""
    with FakeHub(spawn="pending", ready_after=0.5) as fake:
        fake.fault("GET", PROGRESS, "content_type", content_type="application/octet-stream")
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.OK, run.output
        assert [e["progress"] for e in run.named("spawn_progress")][-1] == 100, run.output
        assert fake.servers == {}


def test_a_user_model_without_servers_is_not_no_server(tmp_path):
    """The hub leaves `servers` out when the token may not read them: that is 77, never "stopped"."""
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", USER_MODEL, "body", body={"name": "canary", "kind": "user"}, status=200, count=-1)
        run, _ = canary(fake, tmp_path, "--attempts", "1")
        assert run.exit_code == ExitCode.PERMISSION, run.output
        assert "read:servers!user=canary" in run.result["message"]
        assert fake.spawns == 0


def test_a_user_gone_during_the_stop_is_stopped_not_13(tmp_path):
    with FakeHub(spawn="ready") as fake:

        def delete_the_user() -> None:  # while the server is verified: from now on the hub has no such user
            fake.faults.insert(0, Fault("GET", USER_MODEL, "status", status=404, count=-1))

        fake.fault("GET", r"/api/status$", "signal", call=delete_the_user)
        run, _ = canary(fake, tmp_path, "--attempts", "1")
        assert fake.count("GET", USER_MODEL) >= 3, "the stop asked the hub"
        assert run.exit_code == ExitCode.OK, run.output
        assert run.named("server_already_stopped") and not run.named("server_left_running")


@pytest.mark.parametrize(
    ("body", "status"), [([], 201), ({"name": "python3"}, 201), ("kernel", 201)], ids=["list", "no-id", "string"]
)
def test_a_kernel_answer_of_the_wrong_shape_is_14(tmp_path, body, status):
    with FakeHub(spawn="ready") as fake:
        fake.fault("POST", KERNELS, "body", body=body, status=status, count=-1)
        run, _ = canary(fake, tmp_path, "--check-kernel", "--attempts", "1")
        assert run.exit_code == ExitCode.KERNEL_FAILED, run.output
        assert fake.servers == {}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        # The tokens are listed only to find what a mint whose answer was lost left behind.
        ("GET", r"/tokens$", {"api_tokens": 5}, 200, "`api_tokens` of type int, not a list"),
        ("POST", r"/tokens$", [], 201, "JSON list"),
        ("POST", r"/tokens$", {"id": "a1"}, 201, "no `token`"),
    ],
    ids=["token-list", "mint-list", "mint-no-token"],
)
def test_a_token_answer_of_the_wrong_shape_is_20(method, path, body, status, words):
    with FakeHub() as fake:
        fake.fault(method, path, "body", body=body, status=status, count=-1)
        fake.fault("POST", r"/tokens$", "reset", after=True)
        run = run_token(["--hub-url", fake.url, "--user", "canary", "--print"], env={"JUPYTERHUB_ADMIN_TOKEN": TOKEN})
        assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.log
        assert words in run.result["message"], run.result["message"]
        assert run.stdout == ""


# --- 9. a leftover server is stopped only when no live run of the probe can own it ---


@pytest.mark.parametrize(
    ("age_s", "code"),
    [(5, ExitCode.CONCURRENT_RUN), (20 + 3 - 1, ExitCode.CONCURRENT_RUN), (20 + 3 + 1, ExitCode.OK)],
    ids=["young", "just-young", "just-stale"],
)
def test_a_leftover_server_by_its_age(tmp_path, age_s, code):
    with FakeHub(spawn="ready") as fake:
        fake.add_server("canary", age_s=age_s)
        run, _ = canary(fake, tmp_path, "--deadline", "20", "--stop-timeout", "3")
        assert run.exit_code == code, run.output
        if code == ExitCode.CONCURRENT_RUN:
            assert fake.count("DELETE", SERVER) == 0 and fake.spawns == 0 and fake.servers, "the live run's server"
            assert run.named("concurrent_run_found")[0]["stale_after_s"] == 23
        else:
            assert run.named("stale_server_stopped") and fake.servers == {}


def test_a_leftover_server_without_a_start_time_cannot_be_proven_stale(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.add_server("canary")
        model = {"name": "canary", "servers": {"": {"name": "", "ready": True, "pending": None, "url": "/user/canary/"}}}
        fake.fault("GET", USER_MODEL, "body", body=model, status=200, count=-1)
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
        assert "unknown time" in run.result["message"] and fake.count("DELETE", SERVER) == 0


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
    # A server name JupyterHub 5 accepts and 6 refuses (its `~`): a hub of 5.
    with FakeHub(spawn="pending", version="5.5.4") as fake:
        args = ["--hub-url", fake.url, "--user", user, "--server-name", "probe~1", "--termination-log", str(tmp_path / "t")]
        run = run_main(args, env={"JUPYTERHUB_API_TOKEN": TOKEN})
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("GET", r"^/user/ok\.svc@example\.org/probe~1/api/status$") == 1


# --- JupyterHub 6's server names (issue 20) ---


@pytest.mark.parametrize("name", ["GPU", "my_server", "probe~1", "gpu-", "9gpu", "g--pu", "a" * 31])
def test_a_server_name_jupyterhub_6_refuses_is_78_naming_the_rule_before_any_spawn(tmp_path, name):
    with FakeHub(version="6.1.1") as fake:
        run, _ = canary(fake, tmp_path, "--server-name", name)
        assert run.exit_code == ExitCode.CONFIGURATION, run.output
        message = run.result["message"]
        assert f"--server-name {name!r}" in message and "JupyterHub 6.1.1" in message, message
        assert "lowercase ASCII letters, digits and single hyphens" in message, message
        assert fake.spawns == 0
        assert run.result["attempts"] == 1
        assert fake.count("DELETE", r"/servers/") == 0


def test_a_server_name_jupyterhub_5_accepts_is_not_refused_there(tmp_path):
    with FakeHub(version="5.5.4", spawn="ready") as fake:
        run, _ = canary(fake, tmp_path, "--server-name", "GPU_1")
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.spawns == 1


def test_a_valid_server_name_on_jupyterhub_6_reads_nothing_more(tmp_path):
    with FakeHub(version="6.1.1", spawn="ready") as fake:
        run, _ = canary(fake, tmp_path, "--server-name", "gpu-1")
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.spawns == 1
        assert fake.asked_stopped == 0, "a valid name needs no look at the user's stopped servers"


def test_a_server_made_before_jupyterhub_6_with_an_invalid_name_is_the_hubs_to_start(tmp_path):
    """JupyterHub 6 keeps such a server, and starts it where allow_existing_invalid_named_servers is
    "allow-start": the canary does not refuse it, it warns."""
    with FakeHub(version="6.1.1", spawn="ready") as fake:
        fake.stopped_servers.add(("canary", "My_GPU"))
        run, _ = canary(fake, tmp_path, "--server-name", "My_GPU")
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.spawns == 1 and fake.asked_stopped == 1
        (warning,) = run.named("server_name_invalid")
        assert warning["server_name"] == "My_GPU"


# --- 8. every wait bounded: connect, headers, name resolution (issue 14) ---


def test_headers_that_trickle_are_cut_at_the_deadline(tmp_path):
    with FakeHub() as fake:
        fake.fault("GET", USER_MODEL, "trickle_head", count=-1)  # a byte every 0.5 s, never a whole head
        run, elapsed = canary(fake, tmp_path, "--deadline", "6", "--stop-timeout", "2", "--request-timeout", "30")
        assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
        assert elapsed < 6 + SLACK, f"took {elapsed:.1f}s with --deadline 6"
        assert "no complete answer" in run.result["message"], run.result["message"]


def test_a_stop_whose_headers_trickle_ends_with_the_stop_timeout(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("DELETE", SERVER, "trickle_head", count=-1)
        run, elapsed = canary(fake, tmp_path, "--stop-timeout", "3", "--attempts", "1", "--request-timeout", "30")
        assert run.exit_code == ExitCode.STOP_FAILED, run.output
        assert elapsed < 3 + SLACK, f"took {elapsed:.1f}s with --stop-timeout 3"
        fake.servers.clear()


def test_a_sigterm_during_a_stop_whose_headers_trickle_ends_the_run_with_the_stop_timeout(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", r"/api/status$", "signal", call=lambda: os.kill(os.getpid(), signal.SIGTERM))
        fake.fault("DELETE", SERVER, "trickle_head", count=-1)
        run, elapsed = canary(fake, tmp_path, "--stop-timeout", "3", "--request-timeout", "30")
        # The stop failed: 13 wins over the interruption; the signal did not wait longer than the stop's budget.
        assert run.exit_code == ExitCode.STOP_FAILED, run.output
        assert run.named("signal_received")
        assert elapsed < 3 + SLACK, f"took {elapsed:.1f}s with --stop-timeout 3"
        fake.servers.clear()


class BlockingResolver:
    """A name resolution that hangs (a CoreDNS outage) until released: no DNS query is ever made."""

    def __init__(self):
        self.release = threading.Event()
        self.asked: list[str] = []

    def __call__(self, host, port):
        self.asked.append(host)
        self.release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "released by the test")


def test_name_resolution_is_bounded_by_the_budget():
    resolver = BlockingResolver()
    with FakeHub() as fake:
        client = HubClient(fake.url.replace("127.0.0.1", "localhost"), TOKEN, request_timeout=30, resolver=resolver)
        started = time.monotonic()
        try:
            with pytest.raises(HubUnavailable) as failure:
                client.version(Deadline(2))
        finally:
            resolver.release.set()
            client.close()
        elapsed = time.monotonic() - started
    assert resolver.asked and set(resolver.asked) == {"localhost"}
    assert elapsed < 2 + SLACK, f"took {elapsed:.1f}s with a budget of 2s"
    assert "NameResolutionError" in str(failure.value) or "resolving" in str(failure.value), str(failure.value)


def test_a_run_whose_name_resolution_hangs_is_20_within_the_deadline(tmp_path, monkeypatch):
    resolver = BlockingResolver()
    monkeypatch.setattr(transport, "system_resolver", resolver)
    try:
        with FakeHub() as fake:
            args = ["--hub-url", fake.url.replace("127.0.0.1", "localhost"), "--user", "canary",
                    "--termination-log", str(tmp_path / "term"), "--deadline", "5", "--stop-timeout", "2"]
            started = time.monotonic()
            run = run_main(args, env={"JUPYTERHUB_API_TOKEN": TOKEN})
            elapsed = time.monotonic() - started
    finally:
        resolver.release.set()
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    assert elapsed < 5 + SLACK, f"took {elapsed:.1f}s with --deadline 5"
    assert json.loads((tmp_path / "term").read_text())["exit_code"] == 20
    run.assert_no_secret(TOKEN)


# --- 9. the report first, the push bounded; the kernel's websocket and DELETE within their budget (issue 14) ---


def test_a_trickling_pushgateway_does_not_delay_the_result_or_the_exit(tmp_path):
    with TrickleAnswer() as gateway, FakeHub(spawn="ready") as fake:
        run, elapsed = canary(fake, tmp_path, "--deadline", "8", "--stop-timeout", "2", "--request-timeout", "30",
                              "--pushgateway-url", f"http://127.0.0.1:{gateway.port}")
        assert gateway.accepted == 1
    assert run.exit_code == ExitCode.OK, run.output
    assert elapsed < 8 + SLACK, f"took {elapsed:.1f}s with --deadline 8"
    events = [e["event"] for e in run.events]
    assert events.index("canary_result") < events.index("metrics_push_failed"), "the result comes first"
    assert "abandoned" in run.named("metrics_push_failed")[0]["error"]
    assert json.loads((tmp_path / "term").read_text())["exit_code"] == 0


def kernel_check(fake: FakeHub, timeout: float, deadline: float) -> KernelSession:
    client = HubClient(fake.url, TOKEN, request_timeout=30)
    return KernelSession(client, "canary", f"{fake.url}user/canary/", kernel_name=None, timeout=timeout,
                       deadline=Deadline(deadline))


def test_a_kernel_websocket_frame_that_trickles_is_cut_at_the_kernel_timeout():
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", r"/channels$", "trickle", count=-1)
        check = kernel_check(fake, timeout=3, deadline=60)
        started = time.monotonic()
        with pytest.raises(KernelFailed) as failure:
            check.run()
        elapsed = time.monotonic() - started
        assert "within --kernel-timeout 3s" in str(failure.value), str(failure.value)
        assert elapsed < 3 + SLACK, f"took {elapsed:.1f}s with --kernel-timeout 3"
        assert fake.kernels == [], "the kernel was not deleted"


def test_a_kernel_delete_that_stalls_stays_within_the_kernel_timeout_and_the_deadline(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", r"/channels$", "trickle", count=-1)
        fake.fault("DELETE", r"/api/kernels/", "stall", count=-1)
        run, elapsed = canary(fake, tmp_path, "--check-kernel", "--kernel-timeout", "3", "--deadline", "6",
                              "--stop-timeout", "2", "--request-timeout", "30")
        assert run.exit_code == ExitCode.KERNEL_FAILED, run.output
        assert run.result["phases_ms"]["kernel"] < (3 + LAST_LOOK + 0.5) * 1000, run.result["phases_ms"]
        assert run.named("kernel_delete_failed")
        assert elapsed < 6 + SLACK, f"took {elapsed:.1f}s with --deadline 6"
        assert fake.servers == {}


# --- 10. the token command: signals, and what it mints is its own to take back (issue 14) ---


def test_a_sigint_during_the_mint_leaves_the_token_where_it_belongs_and_reports_130():
    with FakeHub() as fake:
        fake.fault("POST", r"/tokens$", "signal", call=lambda: os.kill(os.getpid(), signal.SIGINT))
        run = run_token(["--hub-url", fake.url, "--user", "canary", "--print"], env={"JUPYTERHUB_ADMIN_TOKEN": TOKEN})
        assert run.exit_code == ExitCode.SIGINT, run.log
        assert run.result["outcome"] == "interrupted" and run.named("signal_received")
        assert "Traceback" not in run.log
        (live,) = fake.tokens.values()
        assert run.stdout.strip() == live["token"], "the minted token is on the hub but nobody holds it"
        assert TOKEN not in run.log and live["token"] not in run.log


def test_a_sigterm_during_the_report_of_a_failure_is_logged_and_changes_nothing(tmp_path):
    with signalling_pushgateway() as url, FakeHub(spawn="fail") as fake:
        run, _ = canary(fake, tmp_path, "--attempts", "1", "--pushgateway-url", url)
    assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
    assert run.result["exit_code"] == 10
    (received,) = run.named("signal_received")
    assert received["signal"] == "SIGTERM" and received["during_report"] is True
    assert json.loads((tmp_path / "term").read_text())["exit_code"] == 10
