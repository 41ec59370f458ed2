"""Evidence has a time: what proves that an event, a failure or a server belongs to this run.

- A progress stream asked for while the spawn request is in flight can reach the hub before the new
  spawn is pending; the hub then tells it how the *previous* spawn ended. Such a failure is not this
  spawn's: the run after a fixed outage passes.
- A spawn request the hub answers 400 "already running" met another run's server: 18, untouched. After
  a lost answer, the server found is this run's only when the hub started it after the request was sent.
- A stop that reads "no server" just after a hub outage does not conclude from it; a server this run
  started is stopped, never called another run's.

The fake hub (tests/fakehub.py) makes each moment deterministic; the real hub's side is in the tests
marked `hub` here and in tests/test_hub_faults.py (a hub restart during a slow spawn).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from app.cycle import Canary
from app.exit_codes import ExitCode
from app.hub import HubClient, HubClock
from app.provenance import SpawnRequest
from tests import test_cycle
from tests.fakehub import FakeHub, Fault
from tests.test_faults import SERVER, USER_MODEL, canary

# --- 1. a failure told on a stream opened before the hub had this spawn is not this spawn's ---


@pytest.mark.parametrize("fixed", ["ready", "pending"], ids=["201", "202"])
def test_the_previous_spawns_failure_replayed_before_the_answer_is_not_this_spawns(tmp_path, fixed):
    """The outage, then the fix: the next spawn's request is held a second before the hub takes it in,
    and the stream, asked for at once, hears the failed spawn before it. That run passes."""
    with FakeHub(spawn=["fail", fixed], post_delay=1.0) as fake:
        failed, _ = canary(fake, tmp_path, "--attempts", "1")
        assert failed.exit_code == ExitCode.SPAWN_FAILED, failed.output
        assert failed.result["last_progress_message"] == "Spawn failed: fakehub says no (spawn 1)"
        run, _ = canary(fake, tmp_path, "--attempts", "1")
        assert run.exit_code == ExitCode.OK, run.output
        (set_aside,) = run.named("progress_failure_set_aside")
        assert set_aside["message"] == "Spawn failed: fakehub says no (spawn 1)"
        assert run.named("server_verified") and fake.servers == {}
        # Kept out of what the result tells about this spawn; the in-flight timeline stays.
        assert not any("fakehub says no" in e["message"] for e in run.result["timeline"]), run.result["timeline"]
        assert not any("fakehub says no" in (e.get("message") or "") for e in run.named("spawn_progress"))
        assert run.result["timeline"][-1]["message"] == "Server ready"


@pytest.mark.parametrize("fixed", ["ready", "pending"], ids=["201", "202"])
def test_a_replayed_spawn_cancelled_before_the_answer_is_not_this_spawns_either(tmp_path, fixed):
    """JupyterHub's other replay: the previous spawn was cancelled (a stop during it, as the canary's own
    stop of a failing spawn does). Set aside like "Spawn failed", and the run passes."""
    with FakeHub(spawn=fixed, post_delay=1.0) as fake:
        fake.last_failure[("canary", "")] = "Spawn cancelled"
        run, _ = canary(fake, tmp_path, "--attempts", "1")
        assert run.exit_code == ExitCode.OK, run.output
        (set_aside,) = run.named("progress_failure_set_aside")
        assert set_aside["message"] == "Spawn cancelled"
        assert not any(e["message"] == "Spawn cancelled" for e in run.result["timeline"]), run.result["timeline"]


def test_a_replayed_failure_on_a_stream_cut_before_the_answer_is_set_aside_though_the_next_stream_comes_after(tmp_path):
    """The early stream hears the old "Spawn cancelled" and is cut before its end; the answer comes while
    the follower waits to ask again, so the next stream is asked for after it. The failure came on the
    early stream all the same: set aside, and the run passes."""
    heard = threading.Event()
    with FakeHub(spawn="pending", post_delay=0.1) as fake:
        fake.last_failure[("canary", "")] = "Spawn cancelled"
        fake.fault("GET", r"/server/progress$", "cut_chunk", call=heard.set)
        fake.fault("POST", r"/users/canary/server$", "signal", call=lambda: heard.wait(5))  # the stream first
        run, _ = canary(fake, tmp_path, "--attempts", "1")
        assert fake.count("GET", r"/server/progress$") >= 2, "the stream was asked for once"
        assert run.exit_code == ExitCode.OK, run.output
        (set_aside,) = run.named("progress_failure_set_aside")
        assert set_aside["message"] == "Spawn cancelled"
        assert [e["message"] for e in run.result["timeline"]][:2] == ["Server requested", "Server ready"], run.result["timeline"]


def test_after_a_replayed_failure_is_set_aside_the_spawn_told_on_either_side_is_in_the_timeline_once(tmp_path):
    """The early stream hears the old failure and is cut; asked for again while the request is still in
    flight, it tells this spawn; the failure is set aside and the stream asked for after the answer tells
    this spawn from its start once more. Each event is recorded and logged once."""
    heard = threading.Event()
    with FakeHub(spawn="pending", post_delay=0.1, answer_delay=1.0, ready_after=2.0) as fake:
        fake.last_failure[("canary", "")] = "Spawn cancelled"
        fake.progress_extra = [{"progress": 50, "message": "Pulling image"}]
        fake.fault("GET", r"/server/progress$", "cut_chunk", call=heard.set)
        fake.fault("POST", r"/users/canary/server$", "signal", call=lambda: heard.wait(5))  # the stream first
        run, _ = canary(fake, tmp_path, "--attempts", "1")
        assert fake.count("GET", r"/server/progress$") >= 3, "not asked for again, and again after the answer"
        assert run.exit_code == ExitCode.OK, run.output
        assert run.named("progress_failure_set_aside")
        told = ["Server requested", "Pulling image", "Server ready"]
        assert [e["message"] for e in run.result["timeline"]][:3] == told, run.result["timeline"]
        assert [e["message"] for e in run.named("spawn_progress")] == told


def test_this_spawns_own_failure_told_after_a_cut_early_stream_is_in_the_timeline_once(tmp_path):
    """As above, and this spawn fails while its request is in flight: its failure, told on the early
    stream, is set aside too, and the stream asked for after the answer tells it once more: recorded once."""
    heard = threading.Event()
    with FakeHub(spawn="fail", post_delay=0.1, answer_delay=1.0) as fake:
        fake.last_failure[("canary", "")] = "Spawn cancelled"
        fake.fault("GET", r"/server/progress$", "cut_chunk", call=heard.set)
        fake.fault("POST", r"/users/canary/server$", "signal", call=lambda: heard.wait(5))  # the stream first
        run, _ = canary(fake, tmp_path, "--attempts", "1")
        assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
        failure = "Spawn failed: fakehub says no (spawn 1)"
        assert run.result["last_progress_message"] == failure
        assert [e["message"] for e in run.result["timeline"]] == ["Server requested", failure], run.result["timeline"]
        assert [e["message"] for e in run.named("spawn_progress")] == ["Server requested", failure]


def test_a_refused_spawn_reports_its_own_reason_not_the_one_replayed_before_it(tmp_path):
    """The hub's 500 proves the failure; its reason comes from a stream asked for after that answer."""
    with FakeHub(spawn=["fail", "refuse"], post_delay=1.0) as fake:
        canary(fake, tmp_path, "--attempts", "1")
        run, _ = canary(fake, tmp_path, "--attempts", "1")
        assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
        assert run.result["last_progress_message"] == "Spawn failed: fakehub refused (spawn 2)", run.output
        assert "spawn 2" in run.result["message"] and "spawn 1" not in run.result["message"]


def test_this_spawns_own_failure_is_still_its_failure(tmp_path):
    """A failure of this spawn told on an early stream is set aside too, and told again by the stream
    asked for after the answer: the same failure, the same reason."""
    with FakeHub(spawn="fail") as fake:
        run, _ = canary(fake, tmp_path, "--attempts", "1")
        assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
        assert run.result["last_progress_message"] == "Spawn failed: fakehub says no (spawn 1)"
        assert run.result["timeline"][-1]["message"] == "Spawn failed: fakehub says no (spawn 1)"
        assert fake.servers == {}


def spawn_request_reaches_the_hub_late(monkeypatch, seconds: float = 0.3) -> None:
    """The spawn request leaves `seconds` after the progress stream is asked for (a slow ingress, a TLS
    handshake): the stream then reaches the hub first, before the new spawn is pending. This is the
    order the race gave 3 times in 3 on a real hub; here it is given every time."""
    real_start = HubClient.start_server

    def late_start(self, *args, **kwargs):
        time.sleep(seconds)
        return real_start(self, *args, **kwargs)

    monkeypatch.setattr(HubClient, "start_server", late_start)


@pytest.mark.hub
@pytest.mark.parametrize(("hub_kind", "cycles"), [("hub", 5), ("hub_202", 2)], ids=["201", "202"])
def test_after_a_fixed_outage_the_next_run_is_green_every_time(request, hub_kind, cycles, hub_user, tmp_path, monkeypatch):
    """The real hub: a spawn fails (its command is missing: "Spawn failed: [Errno 2] ..."), the fault is
    removed, and the next run passes: the hub's replay of the old failure on the early stream decides
    nothing. Over and over, so that neither the replayed failure nor a cancelled spawn carries over."""
    hub = request.getfixturevalue(hub_kind)
    user, token = test_cycle.new_account(hub, hub_user())
    spawn_request_reaches_the_hub_late(monkeypatch)
    for cycle in range(cycles):
        # Options every time: the hub reuses the last spawn's options for a request without any.
        broken, fixed_options = ["--user-options", '{"behaviour": "failmissing"}'], ["--user-options", '{"behaviour": "normal"}']
        failed = test_cycle.canary(hub, user, token, tmp_path, "--attempts", "1", *broken)
        assert failed.exit_code == ExitCode.SPAWN_FAILED, f"cycle {cycle}: {failed.output}"
        assert "No such file or directory" in failed.result["last_progress_message"], failed.output
        fixed = test_cycle.canary(hub, user, token, tmp_path, "--attempts", "1", *fixed_options)
        assert fixed.exit_code == ExitCode.OK, f"cycle {cycle}: {fixed.output}"
        assert fixed.named("progress_failure_set_aside"), f"cycle {cycle}: the early stream did not hear the old failure"
        assert not any("Spawn failed" in (e.get("message") or "") for e in fixed.named("spawn_progress")), fixed.output
        test_cycle.assert_nothing_running(hub, user)
    assert [r["behaviour"] for r in hub.spawn_records(user)] == ["failmissing", "normal"] * cycles


# --- 5. a server the hub says predates the request is another run's ---


def test_a_spawn_answered_already_running_is_another_runs_server_and_left_alone(tmp_path):
    """Another run's server appears between this run's stale-server check and its spawn request."""
    with FakeHub(spawn="ready") as fake:
        fake.fault("POST", SERVER, "signal", call=lambda: fake.add_server("canary", age_s=0.5))
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
        assert run.result["reason"] == "concurrent_run" and run.result["attempts"] == 1
        assert "already running" in run.result["message"]
        assert not run.named("server_verified") and not run.named("spawn_already_underway")
        assert fake.count("DELETE", SERVER) == 0 and fake.servers, "the other run's server was touched"
        assert fake.count("GET", r"/api/status$") == 0
        assert json.loads((tmp_path / "term").read_text())["exit_code"] == 18


@pytest.mark.hub
def test_the_real_hubs_already_running_is_another_runs_server(hub, hub_user, tmp_path, monkeypatch):
    """The real hub's 400 "… is already running": another run's server, ready between this run's check
    and its request. Not verified, not stopped: 18."""
    user, token = test_cycle.new_account(hub, hub_user())
    real_check = Canary.clear_stale_server

    def check_then_another_run_spawns(self):
        real_check(self)
        hub.start_server(user)  # as admin: another run's, ready before this run's request

    monkeypatch.setattr(Canary, "clear_stale_server", check_then_another_run_spawns)
    try:
        run = test_cycle.canary(hub, user, token, tmp_path)
        assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
        assert "is already running" in run.result["message"], run.result["message"]
        assert not run.named("server_verified") and not run.named("server_stopped"), run.output
        assert hub.servers(user)[""]["ready"], "the other run's server was touched"
        assert len(hub.spawn_records(user)) == 1
    finally:
        hub.stop_all_servers(user)


def test_after_a_lost_answer_a_server_started_before_the_request_is_another_runs(tmp_path):
    """The request is reset before the hub takes it in; another run's server is there by then."""
    with FakeHub(spawn="ready") as fake:
        fake.fault("POST", SERVER, "reset", call=lambda: fake.add_server("canary", age_s=0.5))
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
        assert run.named("request_outcome_unknown") and run.named("concurrent_run_found")
        assert fake.count("DELETE", SERVER) == 0 and fake.servers
        assert fake.count("POST", SERVER) == 1


@pytest.mark.parametrize(("age_s", "code"), [(0, ExitCode.OK), (0.5, ExitCode.CONCURRENT_RUN)], ids=["ours", "older"])
def test_a_resend_that_meets_a_server_follows_it_only_if_it_started_after_the_request(tmp_path, age_s, code):
    """The first send is answered 502 without effect; the model shows nothing; the resend meets a server.
    Started after this run sent its request, it may be the lost request's (a hub that was slow to take it
    in) and is followed and stopped; started before, it was another run's all along."""
    with FakeHub(spawn="ready") as fake:
        fake.fault("POST", SERVER, "status", status=502)
        fake.fault("POST", SERVER, "signal", call=lambda: fake.add_server("canary", age_s=age_s))
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == code, run.output
        assert fake.count("POST", SERVER) == 2 and run.named("request_resent")
        if code == ExitCode.OK:
            assert run.named("spawn_already_underway") and run.named("server_stopped") and fake.servers == {}
        else:
            assert fake.count("DELETE", SERVER) == 0 and fake.servers and not run.named("server_verified")


@pytest.mark.parametrize("skew_s", [2.0, 5.0], ids=["hub-2s-ahead", "hub-5s-ahead"])
def test_after_a_lost_answer_a_hub_clock_ahead_does_not_make_another_runs_server_ours(tmp_path, skew_s):
    """Another run's server, started half a second before this run's request, on a hub whose clock is
    ahead: its `started` reads as after the request by the canary's clock. The hub's answers (their
    `Date`) prove how far ahead it is: still another run's, 18, untouched (before: followed, verified,
    stopped, 0)."""
    with FakeHub(spawn="ready", clock_skew=skew_s) as fake:
        fake.fault("POST", SERVER, "reset", call=lambda: fake.add_server("canary", age_s=skew_s - 0.5))
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
        assert fake.count("DELETE", SERVER) == 0 and fake.servers and not run.named("server_verified")
        assert "the hub's clock is" in run.result["message"], run.result["message"]


@pytest.mark.parametrize("skew_s", [-2.0, 5.0], ids=["hub-2s-behind", "hub-5s-ahead"])
def test_after_a_lost_answer_a_server_a_skewed_hub_cannot_date_to_a_second_is_not_claimed(tmp_path, skew_s):
    """The documented limit: the request takes effect, its answer is lost, and the hub's clock is off by
    seconds. Its `Date` tells the skew to a second only, so a server started within that second of the
    request cannot be proven this run's: 18, untouched, and the message says why (a human looks; a later
    run stops it as stale). Never followed as this run's on a clock that cannot tell."""
    with FakeHub(spawn="ready", clock_skew=skew_s) as fake:
        fake.fault("POST", SERVER, "reset", after=True)
        run, _ = canary(fake, tmp_path)
        assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
        assert "the hub's clock is" in run.result["message"], run.result["message"]
        assert fake.count("DELETE", SERVER) == 0 and fake.servers


def test_a_live_runs_server_on_a_hub_clock_behind_is_not_called_stale(tmp_path):
    """Another live run's server, 20 s younger than --deadline plus --stop-timeout, on a hub whose clock is
    30 s behind: by the canary's clock alone it looks stale and was stopped. Its youngest age by what the
    hub's answers prove is still young: 18, untouched."""
    with FakeHub(spawn="ready", clock_skew=-30.0) as fake:
        fake.add_server("canary", age_s=40 + 20 - 20)
        run, _ = canary(fake, tmp_path, "--deadline", "40", "--stop-timeout", "20")
        assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
        assert fake.count("DELETE", SERVER) == 0 and fake.servers


# --- 6. a stop just after an outage, and a server this run started ---


def test_no_server_read_just_after_an_outage_is_not_a_stop(tmp_path):
    """The hub goes away during the stop, comes back answering once without the server (its spawners not
    loaded yet), then shows it again: the stop waits for a steady answer and stops the server."""
    with FakeHub(spawn="ready") as fake:

        def hub_restarts() -> None:  # the server is being verified: the hub goes away, then comes back
            fake.faults[:0] = [
                Fault("GET", USER_MODEL, "status", status=503, count=3),
                Fault("GET", USER_MODEL, "body", status=200, body={"name": "canary", "kind": "user", "servers": {}}),
            ]

        fake.fault("GET", r"/api/status$", "signal", call=hub_restarts)
        run, _ = canary(fake, tmp_path, "--attempts", "1", "--stop-timeout", "20")
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("DELETE", SERVER) == 1, "the stop concluded from the model without the server"
        assert run.named("server_stopped") and not run.named("server_already_stopped")
        assert fake.servers == {}


def test_a_proxys_404_while_the_hub_restarts_is_not_the_user_gone(tmp_path):
    """configurable-http-proxy answers a plain 404 "Not Found" for a path it has no route for, as a
    restarted hub's proxy does until the hub adds its route back: not the hub's word that the user (and
    so the server) is gone."""
    with FakeHub(spawn="ready") as fake:

        def proxy_without_the_hubs_route() -> None:
            fake.faults.insert(0, Fault("GET", USER_MODEL, "text", status=404, body="Not Found", count=2))

        fake.fault("GET", r"/api/status$", "signal", call=proxy_without_the_hubs_route)
        run, _ = canary(fake, tmp_path, "--attempts", "1", "--stop-timeout", "20")
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("DELETE", SERVER) == 1 and run.named("server_stopped")
        assert not run.named("server_already_stopped") and fake.servers == {}
        assert "not the hub's own answer" in run.named("stop_retry")[0]["message"]


def believing_the_first_stop_too_soon(monkeypatch) -> None:
    """The run's first stop reads "no server" and concludes, without a DELETE (as a stop did that read a
    restarting hub before the fix): the server stays."""
    real_stop = HubClient.stop_server
    calls: list[int] = []

    def stop(self, user, server_name, deadline, **kwargs):
        calls.append(1)
        return False if len(calls) == 1 else real_stop(self, user, server_name, deadline, **kwargs)

    monkeypatch.setattr(HubClient, "stop_server", stop)


def test_an_earlier_attempts_own_server_is_stopped_not_called_another_runs(tmp_path, monkeypatch):
    """Attempt 1's stop believed its server gone; attempt 2 finds it, seconds old: this run's, stopped."""
    believing_the_first_stop_too_soon(monkeypatch)
    with FakeHub(spawn=["hang", "ready"]) as fake:
        run, _ = canary(fake, tmp_path, "--spawn-timeout", "2", "--attempts", "2", "--deadline", "30", "--stop-timeout", "5")
        assert run.exit_code == ExitCode.OK, run.output
        assert run.result["attempts"] == 2
        (found,) = run.named("own_server_found")
        assert "earlier attempt" in found["why"] and found["pending"] == "spawn"
        assert not run.named("concurrent_run_found") and fake.servers == {}


def test_a_server_still_there_after_the_last_stop_is_stopped_before_the_run_ends(tmp_path, monkeypatch):
    believing_the_first_stop_too_soon(monkeypatch)
    with FakeHub(spawn="ready") as fake:
        run, _ = canary(fake, tmp_path, "--attempts", "1")
        assert run.exit_code == ExitCode.OK, run.output
        (found,) = run.named("own_server_found")
        assert "back after" in found["why"]
        assert run.named("server_stopped") and fake.servers == {}


def test_a_server_back_at_the_end_that_cannot_be_stopped_is_13(tmp_path, monkeypatch):
    believing_the_first_stop_too_soon(monkeypatch)
    with FakeHub(spawn="ready") as fake:
        fake.fault("DELETE", SERVER, "reset", count=-1)
        run, elapsed = canary(fake, tmp_path, "--attempts", "1", "--stop-timeout", "3")
        assert run.exit_code == ExitCode.STOP_FAILED, run.output
        assert run.named("own_server_found") and run.named("server_left_running")
        assert elapsed < 3 + 3 + 5
        assert json.loads((tmp_path / "term").read_text())["exit_code"] == 13


def test_a_server_this_run_did_not_start_found_at_the_end_is_left_alone(tmp_path):
    """Another run's server appears right after this run's stop: the last look leaves it alone."""
    with FakeHub(spawn="ready") as fake:

        def another_run_spawns_next() -> None:
            fake.faults.insert(0, Fault("GET", USER_MODEL, "signal", call=lambda: fake.add_server("canary", age_s=0)))

        fake.fault("DELETE", SERVER, "signal", call=another_run_spawns_next)
        run, _ = canary(fake, tmp_path, "--attempts", "1")
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("DELETE", SERVER) == 1 and fake.servers, "another run's server was stopped"
        assert not run.named("own_server_found")


@pytest.mark.parametrize(
    "date",
    ["", "garbage", "Mon, 01 Jan 0001 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 -2359", "Mon, 07 Dec 2026 99:99:99 GMT", None],
)
def test_a_hub_answer_of_any_date_never_breaks_the_run(date):
    """The `Date` the hub clock reads is a header of any shape: an odd one teaches nothing or a far range,
    and a server's `started` against that range is no crash (never exit 1)."""
    clock = HubClock()
    headers = {} if date is None else {"Date": date}
    clock.observe(SimpleNamespace(headers=headers, elapsed=timedelta(milliseconds=5)), datetime.now(UTC))
    now = datetime.now(UTC)
    for answered in (True, False):
        request = SpawnRequest(now, now, answered=answered)
        for started in (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC), now):
            assert request.started_it(started, clock.ahead()) in (True, False)


@pytest.mark.parametrize("when", ["look", "stop"])
def test_a_sigterm_during_the_last_look_still_stops_this_runs_server(tmp_path, monkeypatch, when):
    """SIGTERM while the run looks once more for its own server (the last look's read, or the stop of the
    server found back): 143, one result, and the server is stopped all the same."""
    real_stop = HubClient.stop_server
    calls: list[int] = []

    with FakeHub(spawn="ready") as fake:
        def sigterm() -> None:
            os.kill(os.getpid(), signal.SIGTERM)

        def stop(self, user, server_name, deadline, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                if when == "look":
                    fake.fault("GET", r"/hub/api/users/canary$", "signal", call=sigterm)
                else:
                    fake.fault("DELETE", SERVER, "signal", call=sigterm)
                return False
            return real_stop(self, user, server_name, deadline, **kwargs)

        monkeypatch.setattr(HubClient, "stop_server", stop)
        run, _ = canary(fake, tmp_path, "--attempts", "1")
        assert run.exit_code == ExitCode.SIGTERM, run.output
        assert fake.servers == {}, "this run's server was left running"


def test_a_server_started_just_after_this_runs_spawn_ended_is_not_this_runs(tmp_path, monkeypatch):
    """This run's spawn is answered 202 and has ended by the time the run reads the server's `started`
    (the hub shows no server: nothing of this request runs any more). Another run's server, started
    0.2 s later, is in the request's time window all the same: it is that run's (18, untouched), not
    this run's to stop in the next attempt's stale-server check."""
    ended_at: list[float] = []

    with FakeHub(spawn="hang") as fake:
        def spawn_ends() -> None:
            if fake.count("POST", SERVER) and not ended_at and fake.servers:
                fake.servers.clear()  # the spawn failed at once
                ended_at.append(time.time())

        fake.fault("GET", r"/hub/api/users/canary$", "signal", count=-1, call=spawn_ends)
        real_check = Canary.clear_stale_server

        def another_run_spawns(self) -> None:
            if ended_at:
                fake.add_server("canary", age_s=time.time() - (ended_at[0] + 0.2))
            real_check(self)

        monkeypatch.setattr(Canary, "clear_stale_server", another_run_spawns)
        run, _ = canary(fake, tmp_path, "--attempts", "2", "--deadline", "60", "--stop-timeout", "5", "--spawn-timeout", "20")
        assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
        assert not run.named("own_server_found"), run.output
        assert fake.count("DELETE", SERVER) == 0 and fake.servers, "another run's server was stopped"
