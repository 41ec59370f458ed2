"""The chart installed by a real helm into a real kube-apiserver (tests/controlplane.py), into a
namespace that enforces the "restricted" Pod Security Standard: install, upgrade, uninstall in
each token mode; the CronJob controller makes Jobs on schedule and from `kubectl create job`, and
their Pods are admitted. No node here (its Pods stay Pending): tests/test_k8s_node.py runs them,
and `helm test`, on a real kubelet."""

from __future__ import annotations

import json

import pytest

from app import kube
from app.exit_codes import ExitCode
from tests.controlplane import CHART_DIR, ControlPlane, wait_for
from tests.runner import run_main

pytestmark = pytest.mark.k8s

CHART = str(CHART_DIR)
RELEASE = "hub-canary"
FULLNAME = f"{RELEASE}-jupyterhub-canary"
DEAD_HUB = ("--set", "canary.hubUrl=http://127.0.0.1:9/")
TOKEN = "tok-chart-install-test-only-0123456789"

# How each token mode is installed (TOKEN stands for the token); "secret" says which Secret the test makes first.
MODES = {
    "token.value": {"set": ("--set", "token.value=TOKEN"), "secret": None},
    "token.existingSecret": {"set": ("--set", "token.existingSecret=canary-token"), "secret": "canary-token"},
    "token.mount": {"set": ("--set", "token.existingSecret=canary-token", "--set", "token.mount=true"),
                    "secret": "canary-token"},
}


def mode_values(mode: str, token: str = TOKEN) -> tuple[str, ...]:
    return tuple(arg.replace("=TOKEN", f"={token}") for arg in MODES[mode]["set"])
# What helm or the apiserver says when Pod Security would refuse a Pod of a workload.
POD_SECURITY_WARNINGS = ("PodSecurity", "would violate", "violate")


def assert_accepted(done, what: str) -> None:
    assert done.returncode == 0, f"{what} failed:\n{done.stderr}"
    found = [word for word in POD_SECURITY_WARNINGS if word in done.stderr]
    assert not found, f"{what}: a Pod Security warning:\n{done.stderr}"


def make_token_secret(plane: ControlPlane, namespace: str, name: str, token: str = TOKEN) -> None:
    done = plane.kubectl("-n", namespace, "create", "secret", "generic", name, f"--from-literal=token={token}")
    assert done.returncode == 0, done.stderr


def job_pods(plane: ControlPlane, namespace: str, job: str) -> list[dict]:
    return plane.get_json(namespace, "pods", "-l", f"job-name={job}")["items"]


def pod_creation_refusals(plane: ControlPlane, namespace: str) -> list[str]:
    events = plane.get_json(namespace, "events")["items"]
    return [e["message"] for e in events if e.get("reason") == "FailedCreate"]


def assert_pod_admitted(plane: ControlPlane, namespace: str, job: str) -> dict:
    """The Job controller made the Job's Pod and Pod Security let it in (else a FailedCreate event)."""
    pods = wait_for(f"a Pod of Job {job}", lambda: job_pods(plane, namespace, job) or pod_creation_refusals(plane, namespace), 30)
    assert isinstance(pods[0], dict), f"the Pod was refused: {pods}"
    (pod,) = pods
    assert pod["status"]["phase"] == "Pending"  # no node here: nothing runs it (tests/test_k8s_node.py does)
    return pod


@pytest.mark.parametrize("mode", MODES)
def test_install_upgrade_uninstall(control_plane, k8s_namespace, hub, hub_user, mode):
    plane, ns = control_plane, k8s_namespace
    user = hub_user()
    hub.create_user(user)
    token = hub.new_token(user)
    values = ("--set", f"canary.hubUrl={hub.url}", "--set", f"canary.user={user}", *mode_values(mode, token))
    if MODES[mode]["secret"]:
        make_token_secret(plane, ns, MODES[mode]["secret"], token)

    installed = plane.helm("install", RELEASE, CHART, "--namespace", ns, *values)
    assert_accepted(installed, "helm install")
    cronjob = plane.get_json(ns, "cronjob", FULLNAME)
    assert cronjob["spec"]["schedule"] == "*/10 * * * *"
    api_mode = mode != "token.mount"
    # A Role in every mode (events.enabled, the default: each run's Event on its Job); in mount mode it may
    # only create events (without Events, mount mode has no RBAC at all: tests/test_chart.py).
    role = plane.get_json(ns, "role", FULLNAME)
    resources = [rule["resources"] for rule in role["rules"]]
    assert ["events"] in resources and (["leases"] in resources) == api_mode, role["rules"]
    lease = plane.kubectl("-n", ns, "get", "lease", FULLNAME, "-o", "json")
    assert (lease.returncode == 0) == api_mode, "the probe's Lease, made by the chart, in API mode only"
    if api_mode:
        assert not json.loads(lease.stdout).get("spec", {}).get("holderIdentity"), "made without a holder"
        # A run holds it as the upgrade comes: the upgrade must not take it from that run.
        assert plane.kubectl("-n", ns, "patch", "lease", FULLNAME, "--type", "merge", "-p",
                             json.dumps({"spec": {"holderIdentity": "running-probe/0123456789ab",
                                                  "leaseDurationSeconds": 1080}})).returncode == 0

    # The command NOTES.txt gives runs the check at once; Pod Security admits the Job's Pod.
    job = plane.create_manual_job(installed.stdout)
    pod = assert_pod_admitted(plane, ns, job)
    spec = pod["spec"]
    assert spec.get("serviceAccountName") == FULLNAME
    projected = [v for v in spec["volumes"] if "projected" in v]
    assert projected, "a ServiceAccount token is mounted: for the Secret (API mode) and the run's Event"

    upgraded = plane.helm("upgrade", RELEASE, CHART, "--namespace", ns, *values, "--set", "cronjob.schedule=*/5 * * * *")
    assert_accepted(upgraded, "helm upgrade")
    assert plane.get_json(ns, "cronjob", FULLNAME)["spec"]["schedule"] == "*/5 * * * *"
    if api_mode:
        assert plane.get_json(ns, "lease", FULLNAME)["spec"]["holderIdentity"] == "running-probe/0123456789ab"
        # A Lease deleted by hand (the canary then ends 78, naming it): the next `helm upgrade` makes it again.
        assert plane.kubectl("-n", ns, "delete", "lease", FULLNAME).returncode == 0
        assert_accepted(plane.helm("upgrade", RELEASE, CHART, "--namespace", ns, *values), "helm upgrade")
        remade = plane.get_json(ns, "lease", FULLNAME)
        assert not (remade.get("spec") or {}).get("holderIdentity"), remade

    removed = plane.helm("uninstall", RELEASE, "--namespace", ns, "--wait", "--timeout", "60s")
    assert removed.returncode == 0, removed.stderr
    for kind in ("cronjob", "serviceaccount", "role", "rolebinding", "lease"):
        done = plane.kubectl("-n", ns, "get", kind, FULLNAME)
        assert done.returncode != 0 and "NotFound" in done.stderr, f"{kind} left after uninstall"
    if mode == "token.value":
        assert plane.kubectl("-n", ns, "get", "secret", f"{FULLNAME}-token").returncode != 0


def test_a_violating_pod_spec_is_refused_so_the_check_above_can_fail(control_plane, k8s_namespace):
    """The same install with the pod running as root: the namespace warns, and the Job's Pod is refused."""
    plane, ns = control_plane, k8s_namespace
    installed = plane.helm("install", RELEASE, CHART, "--namespace", ns, *DEAD_HUB, *mode_values("token.value"),
                           "--set", "podSecurityContext.runAsNonRoot=false", "--set", "podSecurityContext.runAsUser=0",
                           "--set", "securityContext.runAsNonRoot=false")
    assert installed.returncode == 0, installed.stderr
    assert "would violate PodSecurity" in installed.stderr
    plane.create_manual_job(installed.stdout)
    refusals = wait_for("a FailedCreate event", lambda: pod_creation_refusals(plane, ns), 30)
    assert "violates PodSecurity" in refusals[0]


def test_the_cronjob_controller_makes_a_job_on_schedule(control_plane, k8s_namespace):
    """Every minute: the controller makes a Job within ~60 s (the one test that waits for a schedule)."""
    plane, ns = control_plane, k8s_namespace
    installed = plane.helm("install", RELEASE, CHART, "--namespace", ns, *DEAD_HUB, *mode_values("token.value"),
                           "--set", "cronjob.schedule=* * * * *")
    assert_accepted(installed, "helm install")

    def scheduled_jobs():
        jobs = plane.get_json(ns, "jobs")["items"]
        return [j for j in jobs if any(o["kind"] == "CronJob" and o["name"] == FULLNAME
                                       for o in j["metadata"].get("ownerReferences", []))]

    (job, *_) = wait_for("a Job made by the CronJob controller", scheduled_jobs, 75, interval=2)
    assert job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    assert_pod_admitted(plane, ns, job["metadata"]["name"])
    assert plane.get_json(ns, "cronjob", FULLNAME)["status"].get("lastScheduleTime")


def test_the_chart_service_account_reads_its_secret_and_no_other(control_plane, k8s_namespace, tmp_path, monkeypatch):
    """RBAC for real: with the chart's ServiceAccount's own token (TokenRequest), in-cluster config on
    loopback, `run --token-secret` reads the chart's Secret; a second Secret of the namespace is refused."""
    plane, ns = control_plane, k8s_namespace
    installed = plane.helm("install", RELEASE, CHART, "--namespace", ns, *DEAD_HUB, *mode_values("token.value"))
    assert_accepted(installed, "helm install")
    make_token_secret(plane, ns, "another-secret", token="another-token-that-must-not-leak")
    sa_token = plane.serviceaccount_token(ns, FULLNAME)
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", plane.write_serviceaccount_dir(tmp_path / "sa", sa_token, ns))
    for name, value in plane.in_cluster_env().items():
        monkeypatch.setenv(name, value)
    quick = ["--hub-url", "http://127.0.0.1:9/", "--user", "canary", "--deadline", "4", "--stop-timeout", "1"]

    own = run_main([*quick, "--token-secret", f"{FULLNAME}-token"], env={})
    assert own.named("token_loaded") and f"Secret {ns}/{FULLNAME}-token" in own.named("token_loaded")[0]["source"]
    assert own.exit_code == ExitCode.HUB_UNAVAILABLE, own.output  # the token was read; the hub at port 9 is down

    # The probe's Lease, made by the chart and named by its pod spec, in the pod's own namespace: taken
    # and given back with `get` and `update` alone.
    leased = run_main([*quick, "--token-secret", f"{FULLNAME}-token", "--lease", FULLNAME], env={})
    assert leased.exit_code == ExitCode.HUB_UNAVAILABLE, leased.output
    assert leased.named("lease_acquired")[0]["lease"] == f"Lease {ns}/{FULLNAME}" and leased.named("lease_released")
    assert not plane.get_json(ns, "lease", FULLNAME)["spec"].get("holderIdentity")
    # No unnamed verb: the ServiceAccount may not create a Lease (nor anything else).
    can_create = plane.kubectl("auth", "can-i", "create", "leases", "-n", ns, "--as", f"system:serviceaccount:{ns}:{FULLNAME}")
    assert can_create.stdout.strip() == "no", can_create.stdout + can_create.stderr
    # Another Lease of the namespace (another release's probe) is not the chart's to take.
    foreign = run_main([*quick, "--token-secret", f"{FULLNAME}-token", "--lease", "another-release"], env={})
    assert foreign.exit_code == ExitCode.PERMISSION and "'get'" in foreign.result["message"], foreign.output

    other = run_main([*quick, "--token-secret", "another-secret"], env={})
    assert other.exit_code == ExitCode.PERMISSION, other.output
    assert "403" in other.result["message"] and "'get'" in other.result["message"]
    for run in (own, leased, foreign, other):
        run.assert_no_secret(TOKEN, sa_token, "another-token-that-must-not-leak")
