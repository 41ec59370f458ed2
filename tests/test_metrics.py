"""--pushgateway-url against a real Pushgateway (Debian's prometheus-pushgateway, from `make tools`),
started by these tests on 127.0.0.1 with a free port: its /metrics is scraped after real runs against
the local hub, and a push to a dead URL must only warn.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from app import metrics, timeline
from app.exit_codes import ExitCode
from tests.promstack import Pushgateway, pushgateway_binary
from tests.runner import run_main

ROOT = Path(__file__).resolve().parent.parent
GROUP_LABELS = {"job", "hub", "user", "probe", "instance"}  # the Pushgateway adds instance="" to every group


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory) -> Iterator[Pushgateway]:
    gateway = Pushgateway(pushgateway_binary(), tmp_path_factory.mktemp("pushgateway"))
    try:
        yield gateway
    finally:
        gateway.stop()


def canary(hub, user, token, tmp_path, *extra):
    args = ["--hub-url", hub.url, "--user", user, "--termination-log", str(tmp_path / "termination-log"), *extra]
    run = run_main(args, env={"JUPYTERHUB_API_TOKEN": token})
    run.assert_no_secret(token, hub.admin_token)
    return run


@pytest.mark.hub
def test_success_then_failure_as_the_pushgateway_shows_them(hub, hub_user, tmp_path, pushgateway):
    user = hub_user()
    hub.create_user(user)
    token = hub.new_token(user)

    before = time.time()
    ok = canary(hub, user, token, tmp_path, "--pushgateway-url", pushgateway.url + "/", "--check-kernel")
    after = time.time()
    assert ok.exit_code == ExitCode.OK, ok.output
    assert len(ok.named("metrics_pushed")) == 1, ok.output
    names = [event["event"] for event in ok.events]
    assert names[-2:] == ["canary_result", "metrics_pushed"], "the result first, then the push"
    seen = pushgateway.samples(hub.url, user)
    assert seen[("jupyterhub_canary_success", None)][0] == 1
    assert seen[("jupyterhub_canary_exit_code", None)][0] == 0
    assert seen[("jupyterhub_canary_attempts", None)][0] == 1
    last_success = seen[("jupyterhub_canary_last_success_timestamp_seconds", None)][0]
    assert before <= last_success <= after
    phases = {phase: value for (name, phase), (value, _) in seen.items() if name == "jupyterhub_canary_duration_seconds"}
    assert set(phases) == {"spawn_request", "ready_wait", "verify", "kernel", "stop", "total"}
    for phase in ("spawn_request", "ready_wait", "verify", "kernel", "stop"):
        assert phases[phase] == pytest.approx(ok.result["phases_ms"][phase] / 1000, abs=0.0005)
    assert phases["total"] == pytest.approx(ok.result["duration_ms"] / 1000, abs=0.0005)
    # Grouped by a stable job, the hub and the user: nothing per pod or per run.
    for (name, _), (_, labels) in seen.items():
        assert set(labels) - {"phase", "reason", "cause", "message"} == GROUP_LABELS, name
        assert labels["job"] == "jupyterhub_canary" and labels["instance"] == ""
    assert seen[("jupyterhub_canary_last_result_info", None)][1]["message"] == "spawned, verified and stopped"

    # The same group fails (the token was revoked): success 0, the exit code, and the last success kept.
    revoked = "0" * 32
    failed = canary(hub, user, revoked, tmp_path, "--pushgateway-url", pushgateway.url)
    assert failed.exit_code == ExitCode.PERMISSION, failed.output
    seen = pushgateway.samples(hub.url, user)
    assert seen[("jupyterhub_canary_success", None)][0] == 0
    assert seen[("jupyterhub_canary_exit_code", None)][0] == 77
    assert seen[("jupyterhub_canary_attempts", None)][0] == 1
    assert seen[("jupyterhub_canary_last_success_timestamp_seconds", None)][0] == last_success
    # The failed run's durations replaced the successful run's: no stale phases.
    phases = {phase for (name, phase) in seen if name == "jupyterhub_canary_duration_seconds"}
    assert phases == {"total"}
    # The message series replaced too: one per group, the failure's (for the alert's description).
    infos = [line for line in pushgateway.scrape().splitlines()
             if line.startswith("jupyterhub_canary_last_result_info{") and f'user="{user}"' in line]
    assert len(infos) == 1 and seen[("jupyterhub_canary_last_result_info", None)][1]["message"] == metrics.result_message(
        failed.result["message"]), infos
    assert token not in pushgateway.scrape()


@pytest.mark.hub
def test_a_group_that_never_succeeded_has_no_last_success(hub, hub_user, tmp_path, pushgateway):
    user = hub_user("failmissing-")
    hub.create_user(user)
    run = canary(hub, user, hub.new_token(user), tmp_path, "--pushgateway-url", pushgateway.url, "--attempts", "1")
    assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
    seen = pushgateway.samples(hub.url, user)
    assert seen[("jupyterhub_canary_success", None)][0] == 0
    assert seen[("jupyterhub_canary_exit_code", None)][0] == 10
    assert ("jupyterhub_canary_last_success_timestamp_seconds", None) not in seen
    assert ("jupyterhub_canary_duration_seconds", "spawn_request") in seen
    assert hub.servers(user) == {}


@pytest.mark.hub
def test_a_push_to_a_dead_pushgateway_only_warns(hub, hub_user, tmp_path, free_port):
    user = hub_user()
    hub.create_user(user)
    run = canary(hub, user, hub.new_token(user), tmp_path, "--pushgateway-url", f"http://127.0.0.1:{free_port}")
    assert run.exit_code == ExitCode.OK, run.output
    assert run.result["outcome"] == "ok"
    (warning,) = run.named("metrics_push_failed")
    assert warning["level"] == "warning"
    assert "Connection refused" in warning["error"] or "URLError" in warning["error"], warning
    assert not run.named("metrics_pushed")


@pytest.mark.hub
def test_a_failed_push_keeps_a_failures_exit_code(hub, hub_user, tmp_path, free_port):
    user = hub_user()
    hub.create_user(user)
    bad = "f" * 32
    run = canary(hub, user, bad, tmp_path, "--pushgateway-url", f"http://127.0.0.1:{free_port}")
    assert run.exit_code == ExitCode.PERMISSION, run.output
    assert run.result["reason"] == "permission"
    assert len(run.named("metrics_push_failed")) == 1
    assert metrics.push(
        f"http://127.0.0.1:{free_port}", metrics.Group("h", "u", "p"), metrics.RunMetrics(True, 0, 1, 1.0), timeout=2
    ) is False


def test_the_push_carries_last_success_only_on_success():
    from prometheus_client import generate_latest

    ok = generate_latest(metrics.registry_for(metrics.RunMetrics(True, 0, 1, 2.5, {"verify": 12, "kernel": None})))
    failed = generate_latest(metrics.registry_for(metrics.RunMetrics(False, 12, 3, 9.0, {"verify": 12})))
    assert b"jupyterhub_canary_last_success_timestamp_seconds" in ok
    assert b"jupyterhub_canary_last_success_timestamp_seconds" not in failed
    assert b'phase="kernel"' not in ok, "a phase that did not run is left out"
    assert b'jupyterhub_canary_duration_seconds{phase="verify"} 0.012' in ok
    assert b'jupyterhub_canary_exit_code{cause="none",reason="none"} 12.0' in failed


def test_run_does_not_import_the_metrics_or_websocket_libraries():
    """Cold start: prometheus_client and websocket-client are imported only when pushing / checking a kernel."""
    code = (
        "import sys, app.cli, app.cycle; "
        "loaded = [m for m in ('prometheus_client', 'websocket', 'kubernetes') if m in sys.modules]; "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.hub
def test_probes_of_one_user_coexist_in_the_pushgateway(hub, hub_user, tmp_path, pushgateway):
    """Two probes of one user and hub, one failing: each keeps its own group, neither overwrites the other."""
    user = hub_user()
    hub.create_user(user)
    token = hub.new_token(user)
    push = ("--pushgateway-url", pushgateway.url)
    cpu = canary(hub, user, token, tmp_path, *push, "--probe", "cpu")
    assert cpu.exit_code == ExitCode.OK, cpu.output
    assert cpu.result["probe"] == "cpu"
    gpu = canary(hub, user, token, tmp_path, *push, "--probe", "gpu", "--server-name", "gpu", "--attempts", "1",
                 "--user-options", '{"behaviour": "failmissing"}')
    assert gpu.exit_code == ExitCode.SPAWN_FAILED, gpu.output

    healthy, failing = pushgateway.samples(hub.url, user, "cpu"), pushgateway.samples(hub.url, user, "gpu")
    assert healthy[("jupyterhub_canary_success", None)][0] == 1
    assert healthy[("jupyterhub_canary_exit_code", None)][1]["reason"] == "none"
    assert ("jupyterhub_canary_last_success_timestamp_seconds", None) in healthy
    assert failing[("jupyterhub_canary_success", None)][0] == 0
    value, labels = failing[("jupyterhub_canary_exit_code", None)]
    assert (value, labels["reason"]) == (10, "spawn_failed")
    # A missing command says nothing about Kubernetes: the cause is unknown, and says so.
    assert labels["cause"] == gpu.result["cause"] == "unknown"
    assert healthy[("jupyterhub_canary_exit_code", None)][1]["cause"] == "none"
    assert ("jupyterhub_canary_last_success_timestamp_seconds", None) not in failing
    for seen, probe in ((healthy, "cpu"), (failing, "gpu")):
        assert {labels["probe"] for _, labels in seen.values()} == {probe}
    # The default hub (its slow_spawn_timeout outlasts the spawn) answers it with 201; the progress stream,
    # followed while the request was in flight, marks the spawn, and a local spawner marks no
    # KubeSpawner phase: those are NaN, not a stale value.
    phases = {p: v for (name, p), (v, _) in healthy.items() if name == "jupyterhub_canary_phase_duration_seconds"}
    assert set(phases) == set(timeline.PHASES)
    assert set(cpu.result["timeline_phases_ms"]) == {"spawn"}
    assert phases["spawn"] == pytest.approx(cpu.result["timeline_phases_ms"]["spawn"] / 1000, abs=0.0005)
    assert all(math.isnan(v) for p, v in phases.items() if p != "spawn")


def test_phase_durations_are_pushed_for_every_phase_nan_when_not_marked():
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry_for(metrics.RunMetrics(True, 0, 1, 2.5, timeline_phases_ms={"spawn": 1500})))
    assert b'jupyterhub_canary_phase_duration_seconds{phase="spawn"} 1.5' in text
    assert b'jupyterhub_canary_phase_duration_seconds{phase="image_pull"} NaN' in text


def test_a_run_that_finds_another_live_run_pushes_nothing(tmp_path, pushgateway):
    """18 measured nothing: the live run's metrics group keeps the live run's values."""
    from tests.fakehub import FakeHub

    with FakeHub() as fake:
        fake.add_server("canary", age_s=5)  # the live run's server
        run = run_main(["--hub-url", fake.url, "--user", "canary", "--pushgateway-url", pushgateway.url,
                        "--termination-log", str(tmp_path / "t")], env={"JUPYTERHUB_API_TOKEN": "x" * 32})
        assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
        assert fake.servers, "the live run's server was touched"
    assert not run.named("metrics_pushed") and not run.named("metrics_push_failed"), run.output
    assert pushgateway.samples(fake.url, "canary") == {}


def test_the_message_label_is_masked_on_one_line_and_cut_short():
    from app import logs

    logs.forget_secrets()
    logs.add_secret("s3cr3t-t0k3n-0123456789")
    try:
        label = metrics.result_message("the hub said\nno to s3cr3t-t0k3n-0123456789 " + "x" * 500)
    finally:
        logs.forget_secrets()
    assert "s3cr3t" not in label and logs.REDACTED in label and "\n" not in label, label
    assert len(label) == metrics.MESSAGE_LIMIT and label.endswith("…")


def test_an_odd_message_is_pushed_as_one_printable_series_then_replaced(pushgateway):
    """Control characters, newlines, a lone surrogate (a hub's JSON may carry "\\udcff") and a huge message:
    the Pushgateway takes the push, the probe has one info series, printable and cut short; the next run's
    message replaces it (no stale message)."""

    group = metrics.Group("http://odd.example/", "canary", "odd")
    # Not "x" * N: a test's token may be made of x's, and the log mask (global to the process) would hide it.
    odd = "the hub said\r\n\x00\x07\x1b[31mno\x7f\x9b \udcff " + "é" * 100_000
    assert metrics.push(pushgateway.url, group, metrics.RunMetrics(False, 11, 1, 1.0, message=odd), timeout=5)
    infos = [labels for (name, _), (_, labels) in pushgateway.samples(group.hub, group.user, group.probe).items()
             if name == "jupyterhub_canary_last_result_info"]
    (labels,) = infos
    message = labels["message"]
    assert message.startswith("the hub said [31mno \ufffd ééé") and message.endswith("…"), repr(message[:60])
    assert len(message) == metrics.MESSAGE_LIMIT and message.isprintable(), repr(message[:60])
    assert metrics.push(pushgateway.url, group, metrics.RunMetrics(True, 0, 1, 1.0, message="spawned"), timeout=5)
    scraped = [line for line in pushgateway.scrape().splitlines()
               if line.startswith("jupyterhub_canary_last_result_info{") and 'probe="odd"' in line]
    assert len(scraped) == 1 and 'message="spawned"' in scraped[0], scraped


def test_a_push_the_pushgateway_refuses_keeps_the_runs_code(tmp_path):
    """A real refusal, not a dead port: another pusher's counter of the same name makes the Pushgateway
    answer 400 to the canary's gauge (inconsistent metrics). One warning; the run's code stands.
    Its own Pushgateway: the module's holds the canary's gauges already, and would refuse the counter."""
    gateway = Pushgateway(pushgateway_binary(), tmp_path)
    try:
        conflicting = "# TYPE jupyterhub_canary_success counter\njupyterhub_canary_success 1\n"
        requests.put(gateway.url + "/metrics/job/another_pusher", data=conflicting, timeout=5).raise_for_status()
        run = run_main(["--hub-url", "http://127.0.0.1:9/", "--user", "canary", "--attempts", "1",
                        "--pushgateway-url", gateway.url, "--termination-log", str(tmp_path / "t")],
                       env={"JUPYTERHUB_API_TOKEN": "x" * 32})
    finally:
        gateway.stop()
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE and run.result["exit_code"] == ExitCode.HUB_UNAVAILABLE, run.output
    (warning,) = run.named("metrics_push_failed")
    assert "400" in warning["error"], warning
    assert not run.named("metrics_pushed") and "Traceback" not in run.output
