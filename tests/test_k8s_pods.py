"""The chart's Job run for real, end to end: helm installs it into the real control plane, the Job
controller makes the Pod, tests/podrunner.py plays the kubelet (binds it, runs the container, writes
its status), and the real Job controller decides: Complete against the local JupyterHub, Failed
through podFailurePolicy when the hub rejects the token. The kubectl commands of NOTES.txt and the
README then show what they promise.

The container runs from the project's image in a private dockerd (`docker`, marked `image`: make
image-test, make test-k8s) or, where docker cannot run, as a local process (`process`, in make test).
"""

from __future__ import annotations

import json
import shlex

import pytest

from app.exit_codes import ExitCode
from app.token_command import least_scopes
from tests.controlplane import CHART_DIR, ROOT, notes_commands, wait_for
from tests.podrunner import DockerRuntime, PodRunner, ProcessRuntime, describe
from tests.test_image import base_image, dockerd, image  # noqa: F401  (fixtures: the image in a private dockerd)

pytestmark = pytest.mark.k8s

RELEASE = "hub-canary"
README = ROOT / "README.md"


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.image)])
def runtime(request):
    if request.param == "docker":
        return DockerRuntime(request.getfixturevalue("dockerd").docker, request.getfixturevalue("image"))
    return ProcessRuntime()


def install_and_run_once(plane, namespace: str, runtime, *values: str):
    """helm install, then the manual run NOTES.txt gives, played by the pod runner; (job, PodRun, notes)."""
    installed = plane.helm("install", RELEASE, str(CHART_DIR), "--namespace", namespace, *values)
    assert installed.returncode == 0, installed.stderr
    commands = notes_commands(installed.stdout)
    create = next(args for args in commands if "create" in args and "job" in args)
    done = plane.kubectl(*create)
    assert done.returncode == 0, done.stderr
    job = create[-1]
    run = PodRunner(plane, runtime).run_job_pod(namespace, job)
    for note in run.notes:
        print(note)  # shown with -rA / on failure: which runtime really ran the container
    return job, run, commands


def job_condition(plane, namespace: str, job: str) -> dict | None:
    conditions = plane.get_json(namespace, "job", job)["status"].get("conditions") or []
    return next((c for c in conditions if c["type"] in ("Complete", "Failed") and c["status"] == "True"), None)


def notes_jsonpath(plane, commands: list[list[str]], field: str) -> str:
    """Run the NOTES.txt command whose jsonpath reads `field` of the terminated container."""
    (args,) = [a for a in commands if any(f"state.terminated.{field}" in x for x in a)]
    done = plane.kubectl(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def readme_termination_message(plane, namespace: str, pod: str) -> str:
    """The README's `kubectl get pod POD -o jsonpath=...` for the termination message, for this Pod."""
    (line,) = [line for line in README.read_text(encoding="utf-8").splitlines()
               if line.startswith("kubectl get pod POD") and "terminated.message" in line]
    args = [pod if arg == "POD" else arg for arg in shlex.split(line)[1:]]
    done = plane.kubectl("-n", namespace, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_job_against_the_local_hub_completes(control_plane, k8s_namespace, hub, hub_user, runtime):
    plane, ns = control_plane, k8s_namespace
    user = hub_user()
    hub.create_user(user)
    token = hub.new_token(user, scopes=least_scopes(hub.version, user))  # what `jupyterhub-canary token` mints
    job, run, commands = install_and_run_once(
        plane, ns, runtime, "--set", f"canary.hubUrl={hub.url}", "--set", f"canary.user={user}",
        "--set", f"token.value={token}", "--set", "canary.deadline=120", "--set", "canary.stopTimeout=60")
    assert run.container.exit_code == ExitCode.OK, describe(run)
    assert hub.servers(user) == {}, "the canary left its server running"
    # Through the API with the Pod's own bound ServiceAccount token, under the chart's Role.
    events = [json.loads(line) for line in run.container.logs.splitlines() if line.startswith("{")]
    assert any(e["event"] == "token_loaded" and f"Secret {ns}/" in e["source"] for e in events), describe(run)
    # The probe's Lease, under the same Role: taken before the hub is asked, given back at the end.
    names = [e["event"] for e in events]
    assert names.index("lease_acquired") < names.index("hub_reachable") and "lease_released" in names, describe(run)

    condition = wait_for("the Job controller's Complete condition", lambda: job_condition(plane, ns, job), 60)
    assert condition["type"] == "Complete", condition
    listed = plane.kubectl("-n", ns, "get", "jobs")
    assert job in listed.stdout and "Complete" in listed.stdout and "1/1" in listed.stdout, listed.stdout

    summary = json.loads(notes_jsonpath(plane, commands, "message"))
    assert summary["outcome"] == "ok" and summary["exit_code"] == 0, summary
    assert notes_jsonpath(plane, commands, "exitCode") == "0"
    assert json.loads(readme_termination_message(plane, ns, run.pod)) == summary
    for text in (run.container.logs, run.message, listed.stdout):
        assert token not in text, "the hub token appeared in the pod's output or status"
    # `kubectl logs` asks the kubelet for the log; the pod runner serves none (its Node's kubelet port is closed).
    logs = plane.kubectl(*next(a for a in commands if "logs" in a))
    assert logs.returncode != 0, "kubectl logs cannot work without a kubelet"
    print(f"kubectl logs (no kubelet here): {logs.stderr.strip()}")


def test_a_rejected_token_fails_the_job_through_pod_failure_policy(control_plane, k8s_namespace, hub, runtime):
    plane, ns = control_plane, k8s_namespace
    job, run, commands = install_and_run_once(
        plane, ns, runtime, "--set", f"canary.hubUrl={hub.url}", "--set", "canary.user=nobody-canary",
        "--set", "token.value=rejected-token-0123456789abcdef")
    assert run.container.exit_code == ExitCode.PERMISSION, describe(run)

    condition = wait_for("the Job controller's Failed condition", lambda: job_condition(plane, ns, job), 60)
    assert condition["type"] == "Failed" and condition["reason"] == "PodFailurePolicy", condition
    assert "77" in condition["message"], condition
    listed = plane.kubectl("-n", ns, "get", "jobs")
    assert job in listed.stdout and "Failed" in listed.stdout, listed.stdout
    summary = json.loads(notes_jsonpath(plane, commands, "message"))
    assert summary["exit_code"] == ExitCode.PERMISSION and "rejected" in summary["message"], summary
    assert notes_jsonpath(plane, commands, "exitCode") == str(int(ExitCode.PERMISSION))
    assert "rejected-token-0123456789abcdef" not in run.container.logs + run.message
