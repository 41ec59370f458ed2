"""One run of a probe at a time through its Lease (app/lease.py), against a real kube-apiserver
(tests/controlplane.py) with exactly the chart's rules for leases, and a real JupyterHub."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from app import secret, timeline
from app.exit_codes import ExitCode
from app.hub import HubClient
from app.lease import ProbeLease
from tests.localhub import wait_for
from tests.runner import finish_process, run_main, start_process

pytestmark = [pytest.mark.k8s, pytest.mark.hub]

CHART = Path(__file__).resolve().parent.parent / "chart"
RELEASE = "hub-canary"
LEASE = f"{RELEASE}-jupyterhub-canary"  # the chart names a probe's Lease as its CronJob


def chart_lease_rules(helm: str, namespace: str) -> list[dict]:
    """The lease rules of the chart's Role in the release namespace, as `helm template` renders them."""
    done = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", namespace, "--set", "canary.hubUrl=https://hub.example.org/",
         "--set", "token.existingSecret=canary-token"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    (role,) = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Role"]
    rules = [r for r in role["rules"] if r["apiGroups"] == ["coordination.k8s.io"]]
    assert rules and any(r.get("resourceNames") == [LEASE] for r in rules), role
    return rules


@pytest.fixture
def lease_kube(control_plane, k8s_namespace, helm, tmp_path, monkeypatch):
    """KUBECONFIG of a ServiceAccount with the chart's lease rules, as the canary sees it off-cluster."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(secret, "SERVICEACCOUNT_DIR", tmp_path / "not-in-a-pod")
    token = control_plane.service_account_with_role(k8s_namespace, "canary", chart_lease_rules(helm, k8s_namespace))
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kubeconfig", token, k8s_namespace)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return control_plane, k8s_namespace, token


def lease(plane, namespace: str) -> dict | None:
    done = plane.kubectl("-n", namespace, "get", "lease", LEASE, "-o", "json")
    return json.loads(done.stdout) if done.returncode == 0 else None


def put_lease(plane, namespace: str, holder: str, renewed: datetime) -> None:
    """The probe's Lease as another run left it: held by `holder`, last renewed at `renewed`."""
    when = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    held = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": LEASE},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 1080, "acquireTime": when, "renewTime": when}}
    assert plane.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(held)).returncode == 0


def args(hub, user, namespace, tmp_path, name="t", lease_name=LEASE):
    return ["--hub-url", hub.url, "--user", user, "--lease", lease_name, "--lease-namespace", namespace,
            "--termination-log", str(tmp_path / name)]


def test_a_second_run_of_the_probe_finds_the_lease_held_and_touches_nothing(lease_kube, hub_202, hub_user, tmp_path):
    plane, namespace, kube_token = lease_kube
    user = hub_user("slow4-")
    hub_202.create_user(user)
    token = hub_202.new_token(user)
    first = start_process(args(hub_202, user, namespace, tmp_path, "first"),
                          env={"JUPYTERHUB_API_TOKEN": token, "KUBECONFIG": os.environ["KUBECONFIG"]})
    try:
        wait_for(lambda: (lease(plane, namespace) or {}).get("spec", {}).get("holderIdentity"), 60, "the first run's Lease")
        wait_for(lambda: hub_202.servers(user), 60, "the first run's spawn")
        second = run_main(args(hub_202, user, namespace, tmp_path, "second"), env={"JUPYTERHUB_API_TOKEN": token})
        first_run = finish_process(first, timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.exit_code == ExitCode.CONCURRENT_RUN, second.output
    assert second.result["reason"] == "concurrent_run" and second.named("lease_held")
    assert not second.named("hub_reachable"), "the hub was asked although the Lease said another run is live"
    assert first_run.exit_code == ExitCode.OK, first_run.output
    assert first_run.named("lease_acquired") and first_run.named("lease_released")
    assert not (lease(plane, namespace)["spec"].get("holderIdentity")), "given back at the end"
    for run in (second, first_run):
        run.assert_no_secret(token, kube_token)
    assert hub_202.servers(user) == {}

    # Free again: the next run takes it (an update of the Lease that exists) and passes.
    again = run_main(args(hub_202, user, namespace, tmp_path, "again"), env={"JUPYTERHUB_API_TOKEN": token})
    assert again.exit_code == ExitCode.OK, again.output
    assert again.named("lease_acquired")[0]["created"] is False


def test_the_expired_lease_of_a_dead_run_is_taken_over(lease_kube, hub, hub_user, tmp_path):
    plane, namespace, _ = lease_kube
    put_lease(plane, namespace, "oom-killed/0123456789ab", datetime.now(UTC) - timedelta(hours=1))
    user = hub_user()
    hub.create_user(user)
    run = run_main(args(hub, user, namespace, tmp_path), env={"JUPYTERHUB_API_TOKEN": hub.new_token(user)})
    assert run.exit_code == ExitCode.OK, run.output
    (taken,) = run.named("lease_acquired")
    assert taken["previous_holder"] == "oom-killed/0123456789ab" and taken["previous_expired"] is True


def test_a_live_lease_is_not_taken_even_without_a_server(lease_kube, hub, hub_user, tmp_path):
    """The race a server's age cannot close: the other run holds the Lease but has not spawned yet."""
    plane, namespace, _ = lease_kube
    put_lease(plane, namespace, "cronjob-pod/0123456789ab", datetime.now(UTC))
    user = hub_user()
    hub.create_user(user)
    run = run_main(args(hub, user, namespace, tmp_path), env={"JUPYTERHUB_API_TOKEN": hub.new_token(user)})
    assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
    assert "cronjob-pod/0123456789ab" in run.result["message"]
    assert lease(plane, namespace)["spec"]["holderIdentity"] == "cronjob-pod/0123456789ab", "another run's Lease changed"


def test_a_lease_the_role_does_not_name_is_refused_with_77(lease_kube, hub, hub_user, tmp_path):
    _, namespace, _ = lease_kube
    user = hub_user()
    hub.create_user(user)
    # Created (create cannot be limited to names), but never read or updated: the Role names other Leases.
    run = run_main(args(hub, user, namespace, tmp_path, lease_name="another-probe"),
                   env={"JUPYTERHUB_API_TOKEN": hub.new_token(user)})
    assert run.exit_code == ExitCode.PERMISSION, run.output
    assert "403" in run.result["message"] and "'get'" in run.result["message"], run.result["message"]


def test_after_a_signal_the_lease_is_given_back_only_once_the_server_is_stopped(
    lease_kube, hub, hub_user, tmp_path, monkeypatch
):
    """SIGTERM in the one spot that leaves the stop to cli.py (after the attempt may have started a
    server, before its `finally:` takes over): that late stop must still run under this run's Lease,
    else another run of the probe could take the Lease while this run's server is being stopped."""
    plane, namespace, kube_token = lease_kube
    real_timeline, real_stop = timeline.Timeline, HubClient.stop_server

    def signalled_timeline(*a, **kw):  # the attempt has just set `server_may_be_running`
        made = real_timeline(*a, **kw)
        os.kill(os.getpid(), signal.SIGTERM)
        return made

    holders_at_stop: list[str | None] = []

    def observed_stop(self, *a, **kw):  # the real apiserver's word on the Lease as the stop begins
        holders_at_stop.append((lease(plane, namespace) or {}).get("spec", {}).get("holderIdentity"))
        return real_stop(self, *a, **kw)

    monkeypatch.setattr(timeline, "Timeline", signalled_timeline)
    monkeypatch.setattr(HubClient, "stop_server", observed_stop)
    user = hub_user()
    hub.create_user(user)
    token = hub.new_token(user)
    run = run_main(args(hub, user, namespace, tmp_path), env={"JUPYTERHUB_API_TOKEN": token})
    assert run.exit_code == ExitCode.SIGTERM, run.output
    (acquired,) = run.named("lease_acquired")
    assert holders_at_stop == [acquired["holder"]], f"the Lease at the stop: {holders_at_stop}\n{run.output}"
    order = [e["event"] for e in run.events if e["event"] in ("server_already_stopped", "server_stopped", "lease_released")]
    assert order[-1] == "lease_released" and len(order) == 2, order
    assert not lease(plane, namespace)["spec"].get("holderIdentity"), "given back at the end"
    run.assert_no_secret(token, kube_token)


def test_a_signal_while_the_lease_is_given_back_waits_until_it_is_back(lease_kube, hub, hub_user, tmp_path, monkeypatch):
    """Cut short, the release would leave the Lease held until it expires: every run meanwhile ends 18."""
    plane, namespace, _ = lease_kube
    real_release = ProbeLease.release

    def signalled_release(self):
        os.kill(os.getpid(), signal.SIGTERM)  # acted on at the next bytecode, unless shielded
        real_release(self)

    monkeypatch.setattr(ProbeLease, "release", signalled_release)
    user = hub_user()
    hub.create_user(user)
    run = run_main(args(hub, user, namespace, tmp_path), env={"JUPYTERHUB_API_TOKEN": hub.new_token(user)})
    assert run.exit_code == ExitCode.SIGTERM, run.output
    assert run.named("lease_released"), run.output
    assert not lease(plane, namespace)["spec"].get("holderIdentity"), "the Lease is still held after the run"
    assert hub.servers(user) == {}
