"""One run of a probe at a time through its Lease (app/lease.py): against a real kube-apiserver
(tests/controlplane.py) with exactly the chart's Lease and rules for leases, and a real JupyterHub;
what a real apiserver cannot be made to do on demand (make the takeover, then lose its answer; a
signal while it is on its way) against the HTTPS stub of tests/k8s_stub.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from app import kube, timeline
from app.exit_codes import ExitCode
from app.hub import HubClient
from app.lease import ProbeLease
from tests.localhub import wait_for
from tests.runner import finish_process, run_main, start_process

CHART = Path(__file__).resolve().parent.parent / "chart"
RELEASE = "hub-canary"
LEASE = f"{RELEASE}-jupyterhub-canary"  # the chart names a probe's Lease as its CronJob


def chart_lease_objects(helm: str, namespace: str) -> tuple[list[dict], list[dict]]:
    """The Leases the chart makes and the lease rules of its Role in the release namespace, as
    `helm template` renders them."""
    done = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", namespace, "--set", "canary.hubUrl=https://hub.example.org/",
         "--set", "token.existingSecret=canary-token"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    rules = [r for r in role["rules"] if r["apiGroups"] == ["coordination.k8s.io"]]
    assert rules and all(r.get("resourceNames") == [LEASE] for r in rules), role
    leases = [d for d in docs if d["kind"] == "Lease"]
    assert [lease["metadata"]["name"] for lease in leases] == [LEASE]
    return leases, rules


@pytest.fixture
def lease_kube(control_plane, k8s_namespace, helm, tmp_path, monkeypatch):
    """KUBECONFIG of a ServiceAccount with the chart's lease rules, and the chart's Lease (made as the
    admin, as `helm install` makes it), as the canary sees them off-cluster."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", tmp_path / "not-in-a-pod")
    leases, rules = chart_lease_objects(helm, k8s_namespace)
    made = control_plane.kubectl("-n", k8s_namespace, "apply", "-f", "-", input=json.dumps(leases[0]))
    assert made.returncode == 0, made.stderr
    token = control_plane.service_account_with_role(k8s_namespace, "canary", rules)
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kubeconfig", token, k8s_namespace)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return control_plane, k8s_namespace, token


def lease(plane, namespace: str) -> dict | None:
    done = plane.kubectl("-n", namespace, "get", "lease", LEASE, "-o", "json")
    return json.loads(done.stdout) if done.returncode == 0 else None


def holder(plane, namespace: str) -> str | None:
    return ((lease(plane, namespace) or {}).get("spec") or {}).get("holderIdentity")


def put_lease(plane, namespace: str, holder_id: str, renewed: datetime) -> None:
    """The probe's Lease as another run left it: held by `holder_id`, last renewed at `renewed`."""
    when = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    held = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": LEASE},
            "spec": {"holderIdentity": holder_id, "leaseDurationSeconds": 1080, "acquireTime": when, "renewTime": when}}
    assert plane.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(held)).returncode == 0


def args(hub, user, namespace, tmp_path, name="t", lease_name=LEASE):
    return ["--hub-url", hub.url, "--user", user, "--lease", lease_name, "--lease-namespace", namespace,
            "--termination-log", str(tmp_path / name)]


@pytest.mark.k8s
@pytest.mark.hub
def test_a_second_run_of_the_probe_finds_the_lease_held_and_touches_nothing(lease_kube, hub_202, hub_user, tmp_path):
    plane, namespace, kube_token = lease_kube
    user = hub_user("slow4-")
    hub_202.create_user(user)
    token = hub_202.new_token(user)
    first = start_process(args(hub_202, user, namespace, tmp_path, "first"),
                          env={"JUPYTERHUB_API_TOKEN": token, "KUBECONFIG": os.environ["KUBECONFIG"]})
    try:
        wait_for(lambda: holder(plane, namespace), 60, "the first run's Lease")
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
    assert not holder(plane, namespace), "given back at the end"
    for run in (second, first_run):
        run.assert_no_secret(token, kube_token)
    assert hub_202.servers(user) == {}

    # Free again: the next run takes it and passes.
    again = run_main(args(hub_202, user, namespace, tmp_path, "again"), env={"JUPYTERHUB_API_TOKEN": token})
    assert again.exit_code == ExitCode.OK, again.output
    assert again.named("lease_acquired")[0]["previous_holder"] is None


@pytest.mark.k8s
@pytest.mark.hub
def test_the_expired_lease_of_a_dead_run_is_taken_over(lease_kube, hub, hub_user, tmp_path):
    plane, namespace, _ = lease_kube
    put_lease(plane, namespace, "oom-killed/0123456789ab", datetime.now(UTC) - timedelta(hours=1))
    user = hub_user()
    hub.create_user(user)
    run = run_main(args(hub, user, namespace, tmp_path), env={"JUPYTERHUB_API_TOKEN": hub.new_token(user)})
    assert run.exit_code == ExitCode.OK, run.output
    (taken,) = run.named("lease_acquired")
    assert taken["previous_holder"] == "oom-killed/0123456789ab" and taken["previous_expired"] is True


@pytest.mark.k8s
@pytest.mark.hub
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


@pytest.mark.k8s
@pytest.mark.hub
def test_a_lease_the_role_does_not_name_is_refused_with_77(lease_kube, hub, hub_user, tmp_path):
    _, namespace, _ = lease_kube
    user = hub_user()
    hub.create_user(user)
    # Never read (the Role names other Leases), never created (the Role has no `create`).
    run = run_main(args(hub, user, namespace, tmp_path, lease_name="another-probe"),
                   env={"JUPYTERHUB_API_TOKEN": hub.new_token(user)})
    assert run.exit_code == ExitCode.PERMISSION, run.output
    assert "403" in run.result["message"] and "'get'" in run.result["message"], run.result["message"]


@pytest.mark.k8s
@pytest.mark.hub
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
        holders_at_stop.append(holder(plane, namespace))
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
    assert not holder(plane, namespace), "given back at the end"
    run.assert_no_secret(token, kube_token)


@pytest.mark.k8s
@pytest.mark.hub
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
    assert not holder(plane, namespace), "the Lease is still held after the run"
    assert hub.servers(user) == {}


@pytest.mark.k8s
@pytest.mark.hub
def test_a_signal_as_the_takeover_is_made_waits_and_the_lease_is_given_back(lease_kube, hub, hub_user, tmp_path,
                                                                           monkeypatch):
    """SIGTERM once the real apiserver has made the takeover, before its answer is in: the run must not
    end believing it holds nothing, or the Lease names it for --deadline + --stop-timeout + 60 s and
    every run of the probe meanwhile ends with 18."""
    from kubernetes.client import CoordinationV1Api

    plane, namespace, kube_token = lease_kube
    real_replace = CoordinationV1Api.replace_namespaced_lease
    replaced: list[str | None] = []

    def signalled_replace(self, *a, **kw):
        answer = real_replace(self, *a, **kw)
        if not replaced:  # the takeover, not the giving back
            replaced.append(holder(plane, namespace))
            os.kill(os.getpid(), signal.SIGTERM)  # acted on at the next bytecode, unless shielded
        return answer

    monkeypatch.setattr(CoordinationV1Api, "replace_namespaced_lease", signalled_replace)
    user = hub_user()
    hub.create_user(user)
    token = hub.new_token(user)
    run = run_main(args(hub, user, namespace, tmp_path), env={"JUPYTERHUB_API_TOKEN": token})
    assert run.exit_code == ExitCode.SIGTERM, run.output
    assert len(replaced) == 1 and replaced[0], "the apiserver had made the takeover when the signal came"
    assert not holder(plane, namespace), f"the run ended with the Lease still naming it ({replaced[0]})"
    (acquired,) = run.named("lease_acquired")
    assert replaced == [acquired["holder"]] and run.named("lease_released"), run.output
    assert not run.named("hub_reachable"), "the hub was asked after the signal"
    run.assert_no_secret(token, kube_token)


@pytest.mark.k8s
def test_a_lease_renewed_at_the_calendars_end_is_live_and_left_alone(lease_kube, tmp_path):
    """The real apiserver keeps renewTime 9999-12-31 and the largest duration it allows (int32): the run
    must judge it (live: 18, untouched), not fail on the arithmetic (it gave 1)."""
    plane, namespace, _ = lease_kube
    put_lease(plane, namespace, "far-future/0123456789ab", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert plane.kubectl("-n", namespace, "patch", "lease", LEASE, "--type", "merge",
                         "-p", json.dumps({"spec": {"leaseDurationSeconds": 2**31 - 1}})).returncode == 0
    before = lease(plane, namespace)
    run = run_main(["--hub-url", "http://127.0.0.1:9/", "--user", "canary", "--lease", LEASE, "--lease-namespace", namespace,
                    "--termination-log", str(tmp_path / "t")], env={"JUPYTERHUB_API_TOKEN": HUB_TOKEN})
    assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
    assert run.named("lease_held")[0]["holder"] == "far-future/0123456789ab"
    assert lease(plane, namespace)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "written"


@pytest.mark.k8s
def test_a_run_that_loses_the_race_for_the_lease_gets_the_conflict_and_touches_nothing(lease_kube, tmp_path,
                                                                                    monkeypatch):
    """Two runs read the free Lease; the other takes it first. This run's update carries the version it
    read: the real apiserver refuses it (409), and the run ends 18 with the other run's Lease untouched."""
    plane, namespace, kube_token = lease_kube
    real_read = ProbeLease._read

    def read_then_taken_by_another_run(self):
        read = real_read(self)
        if not self.may_hold:  # the takeover's read, not the release's
            put_lease(plane, namespace, "racing-pod/0123456789ab", datetime.now(UTC))
        return read

    monkeypatch.setattr(ProbeLease, "_read", read_then_taken_by_another_run)
    run = run_main(["--hub-url", "http://127.0.0.1:9/", "--user", "canary", "--lease", LEASE, "--lease-namespace", namespace,
                    "--termination-log", str(tmp_path / "t")], env={"JUPYTERHUB_API_TOKEN": HUB_TOKEN})
    assert run.exit_code == ExitCode.CONCURRENT_RUN, run.output
    assert "taken by another run of this probe just now" in run.result["message"]
    assert holder(plane, namespace) == "racing-pod/0123456789ab" and not run.named("lease_acquired")
    run.assert_no_secret(HUB_TOKEN, kube_token)


@pytest.mark.k8s
def test_a_role_without_update_on_the_lease_is_77_naming_it(control_plane, k8s_namespace, helm, tmp_path, monkeypatch):
    """RBAC lets the run read the chart's Lease but not update it: 77, naming the verb and the Lease, and
    the Lease unchanged (a later run with the chart's Role takes it)."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", tmp_path / "not-in-a-pod")
    leases, rules = chart_lease_objects(helm, k8s_namespace)
    assert control_plane.kubectl("-n", k8s_namespace, "apply", "-f", "-", input=json.dumps(leases[0])).returncode == 0
    read_only = [{**rule, "verbs": [v for v in rule["verbs"] if v != "update"]} for rule in rules]
    token = control_plane.service_account_with_role(k8s_namespace, "canary-read-only", read_only)
    monkeypatch.setenv("KUBECONFIG", str(control_plane.write_kubeconfig(tmp_path / "kubeconfig", token, k8s_namespace)))
    run = run_main(["--hub-url", "http://127.0.0.1:9/", "--user", "canary", "--lease", LEASE,
                    "--lease-namespace", k8s_namespace, "--termination-log", str(tmp_path / "t")],
                   env={"JUPYTERHUB_API_TOKEN": HUB_TOKEN})
    assert run.exit_code == ExitCode.PERMISSION, run.output
    message = run.result["message"]
    assert "403" in message and "'update'" in message and f"Lease {k8s_namespace}/{LEASE}" in message, message
    assert not run.named("lease_acquired") and not run.named("lease_release_failed"), run.output
    assert not holder(control_plane, k8s_namespace)
    run.assert_no_secret(HUB_TOKEN, token)


# --- what only the stub can do: make the takeover and lose its answer, a signal while it is on its way ---

NS = "monitoring"
QUICK = ["--hub-url", "http://127.0.0.1:9/", "--user", "canary", "--deadline", "4", "--stop-timeout", "1",
         "--lease", LEASE, "--lease-namespace", NS]
HUB_TOKEN = "hub-token-that-must-not-leak-0123"
SA_TOKEN = "stub-serviceaccount-token-0123456789"


@pytest.fixture
def stub_lease(secret_stub, tmp_path, monkeypatch):
    """The stub with the probe's Lease as the chart makes it (no holder), reached through a kubeconfig."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", tmp_path / "not-in-a-pod")
    monkeypatch.setenv("KUBECONFIG", str(secret_stub.write_kubeconfig(tmp_path / "kubeconfig", SA_TOKEN, NS)))
    secret_stub.put_lease(NS, LEASE)
    return secret_stub


def stub_holder(stub) -> str | None:
    return ((stub.get_lease(NS, LEASE) or {}).get("spec") or {}).get("holderIdentity")


def quick_run(tmp_path):
    return run_main([*QUICK, "--termination-log", str(tmp_path / "term")], env={"JUPYTERHUB_API_TOKEN": HUB_TOKEN})


def test_a_takeover_whose_answer_is_lost_is_decided_by_a_read_and_given_back(stub_lease, tmp_path):
    """The apiserver made the takeover; the answer never came. Not resent (its 409 would read as another
    run's), but read back: the Lease names this run, so the run goes on and gives it back."""
    stub_lease.after_write("PUT", "leases", NS, LEASE)
    run = quick_run(tmp_path)
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output  # the Lease was taken; the hub at port 9 is down
    assert run.named("request_outcome_unknown") and run.named("lease_acquired"), run.output
    assert run.named("lease_released") and not stub_holder(stub_lease), "the Lease still names the run"
    puts = [r for r in stub_lease.requests_seen if r["method"] == "PUT"]
    assert [r["status"] for r in puts] == [0, 200], "the takeover sent once (lost), the giving back once"
    run.assert_no_secret(HUB_TOKEN, SA_TOKEN)


@pytest.mark.parametrize("answer", [True, False], ids=["answered", "answer-lost"])
def test_a_signal_during_the_takeover_waits_until_it_is_known_then_the_lease_is_given_back(stub_lease, tmp_path, answer):
    stub_lease.after_write("PUT", "leases", NS, LEASE, then=lambda: os.kill(os.getpid(), signal.SIGTERM), answer=answer)
    run = quick_run(tmp_path)
    assert run.exit_code == ExitCode.SIGTERM, run.output
    assert not stub_holder(stub_lease), "the run ended with the Lease still naming it"
    assert run.named("lease_acquired") and run.named("lease_released"), run.output
    assert not run.named("request_retry"), "the hub was asked after the signal"


def test_a_lease_that_does_not_exist_is_78_and_not_created(stub_lease, tmp_path):
    """The chart makes each probe's Lease; the canary never creates one (its Role has no `create`)."""
    stub_lease.objects.clear()
    run = quick_run(tmp_path)
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    message = run.result["message"]
    assert f"Lease {NS}/{LEASE} does not exist" in message and "helm upgrade" in message, message
    assert not [r for r in stub_lease.requests_seen if r["method"] != "GET"], "the canary wrote a Lease"
    assert stub_lease.get_lease(NS, LEASE) is None


# --- odd Lease objects (the stub serves what a real apiserver's types forbid), the Lease gone or taken meanwhile ---

NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
LIVE = {"holderIdentity": "other-pod/0123456789ab", "renewTime": NOW, "leaseDurationSeconds": 1080}
ODD_SPECS = {
    # Fields of another type than the API's: the Lease is not judged, nothing is written (21).
    "holderIdentity a number": ({**LIVE, "holderIdentity": 123}, ExitCode.KUBERNETES_UNAVAILABLE),
    "renewTime a number": ({**LIVE, "renewTime": 12345}, ExitCode.KUBERNETES_UNAVAILABLE),
    "renewTime garbage": ({**LIVE, "renewTime": "garbage"}, ExitCode.KUBERNETES_UNAVAILABLE),
    "leaseDurationSeconds text": ({**LIVE, "leaseDurationSeconds": "abc"}, ExitCode.KUBERNETES_UNAVAILABLE),
    "leaseDurationSeconds a list": ({**LIVE, "leaseDurationSeconds": [1]}, ExitCode.KUBERNETES_UNAVAILABLE),
    "spec a list": ([LIVE], ExitCode.KUBERNETES_UNAVAILABLE),
    "spec a string": ("held", ExitCode.KUBERNETES_UNAVAILABLE),
    # Held past the end of the calendar (a real apiserver stores renewTime 9999-12-31): live, left alone.
    "renewed in the year 9999": ({**LIVE, "renewTime": "9999-12-31T23:59:59.999999Z"}, ExitCode.CONCURRENT_RUN),
    "leaseDurationSeconds huge": ({**LIVE, "leaseDurationSeconds": 10**15}, ExitCode.CONCURRENT_RUN),
    # Expired however read (the apiserver refuses a duration <= 0; a Lease without one has expired): taken,
    # then the hub at port 9 is down.
    "leaseDurationSeconds negative": ({**LIVE, "leaseDurationSeconds": -5}, ExitCode.HUB_UNAVAILABLE),
    "spec null": (None, ExitCode.HUB_UNAVAILABLE),
}


@pytest.mark.parametrize(("spec", "code"), list(ODD_SPECS.values()), ids=list(ODD_SPECS))
def test_a_lease_of_any_shape_ends_with_a_documented_code(stub_lease, tmp_path, spec, code):
    stub_lease.objects[("leases", NS, LEASE)]["spec"] = spec
    run = quick_run(tmp_path)
    assert run.exit_code == code, run.output
    assert not run.named("internal_error")
    if code == ExitCode.KUBERNETES_UNAVAILABLE:
        assert "wrong shape" in run.result["message"] and f"Lease {NS}/{LEASE}" in run.result["message"], run.result
    taken = code == ExitCode.HUB_UNAVAILABLE
    writes = [r for r in stub_lease.requests_seen if r["method"] == "PUT"]
    assert len(writes) == (2 if taken else 0), "written although the Lease could not be judged free"
    assert bool(run.named("lease_released")) == taken and not (taken and stub_holder(stub_lease)), run.output
    run.assert_no_secret(HUB_TOKEN, SA_TOKEN)


def test_a_lease_read_without_a_resource_version_is_not_written_blindly(stub_lease, tmp_path):
    """An update without the resourceVersion it read would be unconditional: it could take a Lease another
    run took meanwhile. An answer that is not an object the apiserver serves is not a free Lease."""
    del stub_lease.objects[("leases", NS, LEASE)]["metadata"]["resourceVersion"]
    run = quick_run(tmp_path)
    assert run.exit_code == ExitCode.KUBERNETES_UNAVAILABLE, run.output
    assert "resourceVersion" in run.result["message"]
    assert not [r for r in stub_lease.requests_seen if r["method"] == "PUT"]


def test_a_lease_deleted_between_the_read_and_the_takeover_is_78(stub_lease, tmp_path, monkeypatch):
    real_read = ProbeLease._read

    def read_then_deleted(self):
        lease = real_read(self)
        stub_lease.objects.pop(("leases", NS, LEASE), None)  # `helm uninstall`, or by hand
        return lease

    monkeypatch.setattr(ProbeLease, "_read", read_then_deleted)
    run = quick_run(tmp_path)
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert f"Lease {NS}/{LEASE} does not exist" in run.result["message"]
    assert stub_lease.get_lease(NS, LEASE) is None, "the canary made a Lease"


# --- giving the Lease back: its answer lost, at the end of a run that failed ---


@pytest.mark.parametrize("made", [True, False], ids=["made", "not-made"])
def test_a_giving_back_whose_answer_is_lost_is_decided_by_a_read(stub_lease, tmp_path, monkeypatch, made):
    """The run failed (the hub at port 9 refused it), so the giving back runs while that failure is
    handled: the failure's own causes (a refused connection) are not this write's, which was sent. Read
    back, a giving back that was made is done; one that was not is sent again: else the Lease names a
    finished run for --deadline + --stop-timeout + 60 s, and every run of the probe meanwhile ends 18."""
    real_release = ProbeLease.release

    def release_with_its_answer_lost(self):
        stub_lease.after_write("PUT", "leases", NS, LEASE, commit=made)
        real_release(self)

    monkeypatch.setattr(ProbeLease, "release", release_with_its_answer_lost)
    run = quick_run(tmp_path)
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    assert not stub_holder(stub_lease), "the Lease still names the finished run"
    assert run.named("request_outcome_unknown") and run.named("lease_released"), run.output
    assert not run.named("lease_release_failed"), run.output
    puts = [r["status"] for r in stub_lease.requests_seen if r["method"] == "PUT"]
    assert puts == ([200, 0] if made else [200, 0, 200]), puts
    run.assert_no_secret(HUB_TOKEN, SA_TOKEN)
