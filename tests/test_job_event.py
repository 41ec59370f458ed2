"""The run's Event on its own Job (app/job_event.py): against the HTTPS stub of tests/k8s_stub.py (what a
real apiserver cannot be made to do on demand: lose a create's answer) and a fake hub; against a real
kube-apiserver with exactly the chart's event rule (the apiserver's own validation of the Event). The
chart's CronJob writes it on a real node in each token mode: tests/test_k8s_node.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import trustme
import yaml

from app import job_event, kube, logs
from app.deadline import LAST_LOOK
from app.exit_codes import ExitCode
from tests.fakehub import FakeHub
from tests.runner import run_main
from tests.tcprelay import SilentListener, TrickleAnswer, TrickleRelay

TOKEN = "f4k3t0k3n" * 4
SA_TOKEN = "serviceaccount-bearer-token-0123456789"
NS = "jhub"
JOB = "hub-canary-jupyterhub-canary-manual-1765000000"
JOB_UID = "0a1b2c3d-0000-4000-8000-000000000001"
# A hub nobody answers for: a failed run in a few seconds.
DEAD_HUB = ["--hub-url", "http://127.0.0.1:9/", "--user", "canary", "--attempts", "1"]
SLACK = 3.0
CHART = Path(__file__).resolve().parent.parent / "chart"


@pytest.fixture
def stub_in_cluster(secret_stub, tmp_path, monkeypatch):
    """In-cluster config pointed at the HTTPS stub, as in a Pod of the chart's CronJob."""
    serviceaccount = secret_stub.write_serviceaccount_dir(tmp_path / "serviceaccount", SA_TOKEN, NS)
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", serviceaccount)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", secret_stub.host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(secret_stub.port))
    return secret_stub


def job_env(**extra: str) -> dict[str, str]:
    """The variables the chart's pod template sets from the downward API, and the hub token."""
    return {"JUPYTERHUB_API_TOKEN": TOKEN, "CANARY_JOB_NAME": JOB, "CANARY_JOB_UID": JOB_UID, **extra}


def event_posts(stub) -> list[dict]:
    return [r for r in stub.requests_seen if r["method"] == "POST" and "/events" in r["path"]]


def test_a_passing_run_records_canary_passed_on_its_job(stub_in_cluster, tmp_path):
    with FakeHub() as fake:
        run = run_main(["--hub-url", fake.url, "--user", "canary", "--termination-log", str(tmp_path / "t")], env=job_env())
    assert run.exit_code == ExitCode.OK, run.output
    (event,) = stub_in_cluster.objects_of("events", NS)
    assert event["type"] == "Normal" and event["reason"] == "CanaryPassed", event
    assert event["involvedObject"] == {"apiVersion": "batch/v1", "kind": "Job", "name": JOB, "namespace": NS,
                                       "uid": JOB_UID}, event
    assert event["metadata"]["name"].startswith(f"{JOB}.")
    assert event["message"].startswith("exit code 0, probe default: spawned, verified and stopped"), event
    assert event["source"] == {"component": "jupyterhub-canary"} and event["reportingComponent"] == "jupyterhub-canary"
    assert event["count"] == 1 and event["firstTimestamp"] == event["lastTimestamp"], event
    # After the result line: the Event records it, it is no part of it.
    names = [e["event"] for e in run.events]
    assert names.index("canary_result") < names.index("event_recorded"), names
    run.assert_no_secret(TOKEN, SA_TOKEN)


def test_a_failed_run_records_canary_failed_with_code_reason_and_message(stub_in_cluster, tmp_path):
    run = run_main([*DEAD_HUB, "--termination-log", str(tmp_path / "t")], env=job_env())
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    (event,) = stub_in_cluster.objects_of("events", NS)
    assert event["type"] == "Warning" and event["reason"] == "CanaryFailed", event
    result = run.result
    assert event["message"].startswith(f"exit code {int(ExitCode.HUB_UNAVAILABLE)}, probe default, "
                                       f"reason {result['reason']}"), event
    assert result["message"] in event["message"], (event, result)
    assert TOKEN not in json.dumps(event) and SA_TOKEN not in json.dumps(event)


def test_the_events_message_is_masked_as_the_log_is_and_cut_short():
    logs.forget_secrets()
    logs.add_secret(TOKEN)
    try:
        message = job_event.event_message({"exit_code": 11, "reason": "spawn_failed", "cause": f"c {TOKEN}",
                                           "message": f"the hub said {TOKEN}" + "x" * 5000})
    finally:
        logs.forget_secrets()
    assert TOKEN not in message and logs.REDACTED in message, message
    assert message.startswith(f"exit code 11, reason spawn_failed, cause c {logs.REDACTED}: the hub said")
    assert len(message) == job_event.MESSAGE_LIMIT and message.endswith("…")


def test_a_refused_event_is_logged_once_and_changes_nothing(stub_in_cluster, tmp_path):
    """RBAC without `create` on events (an older chart's Role, or a Role edited): one warning, same code."""
    stub_in_cluster.forbid_create("events", NS)
    run = run_main([*DEAD_HUB, "--termination-log", str(tmp_path / "t")], env=job_env())
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    (warning,) = run.named("event_not_recorded")
    assert "403" in warning["error"] and "'create' on events" in warning["error"], warning
    assert len(event_posts(stub_in_cluster)) == 1 and not run.named("event_recorded")
    assert "Traceback" not in run.output


def test_a_create_whose_answer_is_lost_is_not_sent_again(stub_in_cluster, tmp_path):
    """The apiserver made the Event and the answer was lost: a resend would record the run twice."""
    stub_in_cluster.after_write("POST", "events", NS, None)
    run = run_main([*DEAD_HUB, "--termination-log", str(tmp_path / "t")], env=job_env())
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    (warning,) = run.named("event_not_recorded")
    # The request's own error, not the hub's that the run was failing with when it wrote the Event.
    assert "not resent" in warning["error"] and "RemoteDisconnected" in warning["error"], warning
    assert len(event_posts(stub_in_cluster)) == 1, stub_in_cluster.requests_seen
    assert len(stub_in_cluster.objects_of("events", NS)) == 1  # it was made: once


def test_no_job_name_no_event(stub_in_cluster, tmp_path):
    """The `helm test` Pod has no job-name label: the downward API gives an empty variable, and no Event."""
    run = run_main([*DEAD_HUB, "--termination-log", str(tmp_path / "t")], env=job_env(CANARY_JOB_NAME=""))
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    assert event_posts(stub_in_cluster) == [] and not run.named("event_not_recorded")


def test_no_kubernetes_api_at_hand_is_logged_once(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    run = run_main([*DEAD_HUB, "--termination-log", str(tmp_path / "t")], env=job_env())
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    (warning,) = run.named("event_not_recorded")
    assert "cannot configure the Kubernetes client" in warning["error"], warning


def test_a_silent_apiserver_holds_the_run_no_longer_than_its_deadline(tmp_path, monkeypatch):
    """The Event's create gets what is left of --deadline (at least LAST_LOOK), not --request-timeout."""
    with SilentListener() as silent:
        serviceaccount = tmp_path / "sa"
        serviceaccount.mkdir()
        (serviceaccount / "token").write_text(SA_TOKEN)
        (serviceaccount / "namespace").write_text(NS)
        (serviceaccount / "ca.crt").write_bytes(trustme.CA().cert_pem.bytes())
        monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", serviceaccount)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(silent.port))
        started = time.monotonic()
        run = run_main([*DEAD_HUB, "--deadline", "4", "--stop-timeout", "2", "--request-timeout", "30",
                        "--termination-log", str(tmp_path / "t")], env=job_env())
        elapsed = time.monotonic() - started
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    assert len(run.named("event_not_recorded")) == 1, run.output
    assert elapsed < 4 + LAST_LOOK + SLACK, f"took {elapsed:.1f}s with --deadline 4"


# --- against a real kube-apiserver, with exactly the chart's rule for events ---


def chart_event_rules(helm: str, namespace: str, *values: str) -> list[dict]:
    done = subprocess.run(
        [helm, "template", "hub-canary", str(CHART), "--namespace", namespace, "--set", "canary.hubUrl=https://hub.example.org/",
         *values],
        capture_output=True, text=True, timeout=60, check=True,
    )
    roles = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Role"]
    return [r for role in roles for r in role["rules"] if r["resources"] == ["events"]]


@pytest.mark.k8s
@pytest.mark.parametrize("mode", [("--set", "token.existingSecret=canary-token"),
                                  ("--set", "token.existingSecret=canary-token", "--set", "token.mount=true")])
def test_the_apiserver_takes_the_event_under_the_charts_role(control_plane, k8s_namespace, helm, tmp_path, monkeypatch,
                                                             mode):
    rules = chart_event_rules(helm, k8s_namespace, *mode)
    assert rules == [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}], rules
    # The Job, as the Job controller made it: the Event names its uid.
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "canary-job"},
           "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "c", "image": "none"}]}}}}
    made = control_plane.kubectl("-n", k8s_namespace, "apply", "-f", "-", input=json.dumps(job))
    assert made.returncode == 0, made.stderr
    uid = control_plane.get_json(k8s_namespace, "job", "canary-job")["metadata"]["uid"]
    token = control_plane.service_account_with_role(k8s_namespace, "canary", rules)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", tmp_path / "not-in-a-pod")
    monkeypatch.setenv("KUBECONFIG", str(control_plane.write_kubeconfig(tmp_path / "kubeconfig", token, k8s_namespace)))
    run = run_main([*DEAD_HUB, "--termination-log", str(tmp_path / "t"), "--job-namespace", k8s_namespace],
                   env=job_env(CANARY_JOB_NAME="canary-job", CANARY_JOB_UID=uid))
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    assert run.named("event_recorded"), run.output
    shown = control_plane.kubectl("-n", k8s_namespace, "get", "events", "--field-selector",
                                  "involvedObject.name=canary-job,reason=CanaryFailed", "-o", "json")
    (event,) = json.loads(shown.stdout)["items"]
    assert event["involvedObject"]["uid"] == uid and event["type"] == "Warning", event
    assert f"exit code {int(ExitCode.HUB_UNAVAILABLE)}" in event["message"], event
    described = control_plane.kubectl("-n", k8s_namespace, "describe", "job", "canary-job")
    assert "CanaryFailed" in described.stdout and "jupyterhub-canary" in described.stdout, described.stdout
    # The history commands of NOTES.txt: the apiserver knows these field selectors for Events.
    for selector in ("reportingComponent=jupyterhub-canary", "reason=CanaryFailed"):
        shown = control_plane.kubectl("-n", k8s_namespace, "get", "events", "--field-selector", selector,
                                      "--sort-by=.lastTimestamp", "-o", "json")
        assert shown.returncode == 0, shown.stderr
        assert [e["involvedObject"]["name"] for e in json.loads(shown.stdout)["items"]] == ["canary-job"], selector


@pytest.mark.parametrize("passing", [False, True], ids=["failed", "passed"])
def test_a_sigterm_during_the_event_write_keeps_the_code_the_result_states(stub_in_cluster, tmp_path, passing):
    """README: a signal during the report changes nothing. The Event is written after the result line:
    the signal is remembered, logged once, and the run ends with its result's code, without a traceback."""
    stub_in_cluster.after_write("POST", "events", NS, None, then=lambda: os.kill(os.getpid(), signal.SIGTERM),
                                answer=True)
    with FakeHub() as fake:
        hub = ["--hub-url", fake.url, "--user", "canary"] if passing else DEAD_HUB
        run = run_main([*hub, "--termination-log", str(tmp_path / "t")], env=job_env())
    expected = ExitCode.OK if passing else ExitCode.HUB_UNAVAILABLE
    assert run.exit_code == expected and run.result["exit_code"] == expected, run.output
    (received,) = run.named("signal_received")
    assert received["signal"] == "SIGTERM" and received["during_report"] is True, received
    assert run.named("event_recorded") and not run.named("event_not_recorded"), run.output
    assert len(stub_in_cluster.objects_of("events", NS)) == 1
    assert "Traceback" not in run.output


def test_a_trickling_apiserver_and_pushgateway_hold_the_run_two_last_looks_at_most(stub_in_cluster, tmp_path,
                                                                                    monkeypatch):
    """Both writes after the result each get what is left of --deadline, at least LAST_LOOK (app/deadline.py):
    a peer that sends a byte before every per-read timeout is cut by the watchdog all the same."""
    with TrickleRelay(stub_in_cluster.port) as relay, TrickleAnswer() as pushgateway:
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(relay.port))
        started = time.monotonic()
        run = run_main([*DEAD_HUB, "--deadline", "4", "--stop-timeout", "2", "--request-timeout", "30",
                        "--pushgateway-url", f"http://127.0.0.1:{pushgateway.port}",
                        "--termination-log", str(tmp_path / "t")], env=job_env())
        elapsed = time.monotonic() - started
        assert relay.accepted >= 1
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    assert len(run.named("metrics_push_failed")) == 1 and len(run.named("event_not_recorded")) == 1, run.output
    assert elapsed < 4 + 2 * LAST_LOOK + SLACK, f"took {elapsed:.1f}s with --deadline 4"
    assert "Traceback" not in run.output


def test_the_events_message_is_one_printable_line():
    """`kubectl describe job` prints the message as it is: an ESC from a hub's message would drive the
    reader's terminal, a newline would break `kubectl get events`' table."""
    message = job_event.event_message({"exit_code": 11, "reason": "spawn_failed",
                                       "message": "the hub said\r\n\x1b[2J\x1b]0;title\x07no\x00 \udcff\x9b"})
    assert message == "exit code 11, reason spawn_failed: the hub said [2J ]0;title no \ufffd", repr(message)
    assert message.isprintable()


@pytest.mark.k8s
@pytest.mark.parametrize(("name", "namespace", "refused"), [
    ("j" * 254, None, None), ("Bad_Name.", None, None), ("-", None, None),
    (JOB, "Not/A Namespace", "403"), (JOB, "n" * 254, "403"),
], ids=["name-too-long", "name-invalid-characters", "name-not-a-name", "namespace-invalid", "namespace-too-long"])
def test_an_odd_job_name_or_namespace_changes_nothing(control_plane, k8s_namespace, helm, tmp_path, monkeypatch,
                                                      name, namespace, refused):
    """--job-name is taken as given (the chart's downward API gives the Job's real one): the apiserver
    does not check a core/v1 Event's name nor its involvedObject, and records it. Another namespace than the
    Role's (any invalid one) is RBAC's 403: one `event_not_recorded`. Either way the run's code stands, and nothing crashes."""
    token = control_plane.service_account_with_role(
        k8s_namespace, "canary", chart_event_rules(helm, k8s_namespace, "--set", "token.existingSecret=canary-token"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", tmp_path / "not-in-a-pod")
    monkeypatch.setenv("KUBECONFIG", str(control_plane.write_kubeconfig(tmp_path / "kubeconfig", token, k8s_namespace)))
    run = run_main([*DEAD_HUB, "--termination-log", str(tmp_path / "t")],
                   env=job_env(CANARY_JOB_NAME=name, CANARY_JOB_UID="not-a-uid",
                               CANARY_JOB_NAMESPACE=namespace or k8s_namespace))
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    assert "Traceback" not in run.output
    if refused:
        warnings = run.named("event_not_recorded")
        assert len(warnings) == 1 and refused in warnings[0]["error"] and not run.named("event_recorded"), run.output
    else:
        (recorded,) = run.named("event_recorded")
        assert recorded["event_name"].startswith(f"{name}.") and not run.named("event_not_recorded"), run.output
