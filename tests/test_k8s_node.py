"""The chart's CronJob on a real node (tests/node.py): the product image as a real Pod on a kubelet with
containerd, against a real JupyterHub that the Pod reaches at the node's bridge address.

Each token mode runs the commands of NOTES.txt as a user would, in a shell, twice in a row: the
manual Job, both watches, `kubectl logs`, the termination message, the exit code, `helm test --logs`,
the removal. The Pod reads its Secret through the apiserver with its projected ServiceAccount token
and in-cluster config, through the `kubernetes` Service's ClusterIP (kube-proxy), or from the Secret
volume in mount mode. The Pod-level failures are the kubelet's and the Job controller's own: exit
77 -> podFailurePolicy, activeDeadlineSeconds -> SIGTERM -> 143.

The first test starts and stops nodes of its own, so it must run before the session's `node`
fixture starts one (one node per machine, tests/node.py): conftest.py runs it first in the session,
and it fails, saying so, if the session's node is already running.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass

import pytest

from app.exit_codes import ExitCode
from app.token_command import least_scopes
from tests.controlplane import CHART_DIR, ROOT, notes_lines, wait_for
from tests.node import BRIDGE, KUBERNETES_SERVICE_IP, PAUSE_IMAGE, Node, cannot_run_node, read_sysctls
from tests.test_k8s_chart import FULLNAME, MODES, RELEASE, assert_accepted, make_token_secret, mode_values

pytestmark = pytest.mark.k8s

CHART = str(CHART_DIR)
README = ROOT / "README.md"


def image_values(image: str) -> tuple[str, ...]:
    """The imported image, never pulled; and no Job on schedule during the test, only the manual ones."""
    repository, _, tag = image.rpartition(":")
    return ("--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
            "--set", "cronjob.suspend=true")


def job_condition(plane, namespace: str, job: str) -> dict | None:
    conditions = plane.get_json(namespace, "job", job)["status"].get("conditions") or []
    return next((c for c in conditions if c["type"] in ("Complete", "Failed") and c["status"] == "True"), None)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@dataclass
class ManualRun:
    """What the NOTES.txt commands showed for one manual run."""

    job: str
    condition: dict
    watch_job: str
    watch_pods: str
    logs: str
    message: str
    exit_code: str
    describe: str
    readme_message: str  # the README's termination-message command
    job_events: str  # `kubectl get events --field-selector involvedObject.name="$JOB"`
    describe_job: str  # `kubectl describe job "$JOB"`
    history: str  # `kubectl get events --field-selector reportingComponent=jupyterhub-canary ...`

    def all_output(self) -> str:
        return "\n".join((self.watch_job, self.watch_pods, self.logs, self.message, self.describe, self.job_events,
                          self.describe_job, self.history))


def run_the_notes(plane, namespace: str, notes: str, timeout: float = 180) -> ManualRun:
    """Every `kubectl` line of NOTES.txt, as a user runs them in a shell: create the Job, watch it and its
    Pods (SIGINT once the Job has finished), then the logs, termination message and exit code, then
    `kubectl describe` of the Pod, then the removal. Any other line must succeed too."""
    job = plane.create_manual_job(notes)
    env = plane.shell_env({"JOB": job})
    lines = [line for line in notes_lines(notes) if line.startswith("kubectl ") and "create job" not in line]
    watches = {line: subprocess.Popen(["bash", "-c", line], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=env, start_new_session=True)
               for line in lines if "--watch" in line}
    try:
        condition = wait_for(f"Job {job} to finish", lambda: job_condition(plane, namespace, job), timeout, interval=1)
        time.sleep(2)  # the watches print the last change
    finally:
        for watch in watches.values():
            os.killpg(watch.pid, signal.SIGINT)
    shown = {line: watch.communicate(timeout=30)[0] for line, watch in watches.items()}
    outputs = {}
    removal = [line for line in lines if " delete job " in line]
    for line in lines:
        if line in watches or line in removal:
            continue
        done = plane.shell(line, {"JOB": job})
        assert done.returncode == 0, f"{line}: {done.stderr}"
        outputs[line] = done.stdout
    described = plane.kubectl("-n", namespace, "describe", "pod", "-l", f"job-name={job}")
    assert described.returncode == 0, described.stderr

    def output(*words: str) -> str:
        (found,) = [text for line, text in {**shown, **outputs}.items() if all(w in line for w in words)]
        return found

    run = ManualRun(job, condition, output("get job", "--watch"), output("get pods", "--watch"), output(" logs "),
                    output("terminated.message"), output("terminated.exitCode"), described.stdout,
                    readme_termination_message(plane, namespace, job), output("get events", "involvedObject.name"),
                    output("describe job"), output("get events", "reportingComponent"))
    for line in removal:
        done = plane.shell(line, {"JOB": job})
        assert done.returncode == 0 and "deleted" in done.stdout, f"{line}: {done.stderr}"
    return run


def described_termination(described: str, reason: str, code: int) -> dict:
    """What `kubectl describe pod` shows of the terminated container: its reason, exit code, and the
    termination message (returned, parsed)."""
    found = re.search(rf"State:\s+Terminated\s+Reason:\s+{reason}\s+Message:\s+(\{{.*\}})\s+Exit Code:\s+{code}\n",
                      described)
    assert found, described
    return json.loads(found.group(1))


def readme_termination_message(plane, namespace: str, job: str) -> str:
    """The README's `kubectl get pod POD -o jsonpath=...` for the termination message, for the Job's Pod."""
    (pod,) = plane.get_json(namespace, "pods", "-l", f"job-name={job}")["items"]
    (line,) = [line for line in README.read_text(encoding="utf-8").splitlines()
               if line.startswith("kubectl get pod POD") and "terminated.message" in line]
    args = [pod["metadata"]["name"] if arg == "POD" else arg for arg in shlex.split(line)[1:]]
    done = plane.kubectl("-n", namespace, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- the node itself: teardown, and a second start after it ---


def pause_pod(namespace: str = "default") -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pause", "namespace": namespace},
        "spec": {"containers": [{"name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}],
                 "terminationGracePeriodSeconds": 1},
    })


def test_a_node_leaves_nothing_behind_and_starts_again(tmp_path):
    """Two nodes one after the other (before the session's node, which would hold the machine's lock):
    each runs a Pod that is still running when it stops; after each stop nothing of it is left."""
    if Node.held_in_this_process():
        pytest.fail("the session's node is already running: this test must run before any test that uses it")
    reason = cannot_run_node()
    if reason:
        pytest.skip(f"no Kubernetes node on this machine: {reason}")
    for attempt in ("first", "second"):
        node = Node(tmp_path / attempt)
        try:
            node.start()
            done = node.kubectl("apply", "-f", "-", input=pause_pod())
            assert done.returncode == 0, done.stderr
            done = node.kubectl("wait", "--for=condition=Ready", "pod/pause", "--timeout=60s")
            assert done.returncode == 0, f"{attempt} node: {done.stderr}"
            assert node.pod_ip("default", "pause").startswith("10.244.0.")
            # Nothing leaves the bridge: the drop is FORWARD's first rule, and the machine routes nothing.
            assert node.forward_chain()[1] == f"-A FORWARD -i {BRIDGE} ! -o {BRIDGE} -j DROP", node.forward_chain()
            assert read_sysctls()["net.ipv4.ip_forward"] == "0"
        finally:
            node.stop()
        leftovers = node.leftovers()
        assert not leftovers, f"the {attempt} node left this on the machine: {leftovers}"


# --- the chart's CronJob in each token mode ---


@pytest.mark.parametrize("mode", MODES)
def test_the_cronjobs_pod_runs_for_real_in_each_token_mode(node_image, node, node_namespace, node_hub, hub_user, mode):
    plane, ns, hub = node, node_namespace, node_hub
    user = hub_user()
    hub.create_user(user)
    token = hub.new_token(user, scopes=least_scopes(hub.version, user))  # what `jupyterhub-canary token` mints
    if MODES[mode]["secret"]:
        make_token_secret(plane, ns, MODES[mode]["secret"], token)
    installed = plane.helm("install", RELEASE, CHART, "--namespace", ns, *image_values(node_image),
                           "--set", f"canary.hubUrl={hub.url}", "--set", f"canary.user={user}", *mode_values(mode, token))
    assert_accepted(installed, "helm install")
    api_mode = mode != "token.mount"

    for round_ in ("first", "second"):  # every command of NOTES.txt, twice in a row
        run = run_the_notes(plane, ns, installed.stdout)
        assert run.condition["type"] == "Complete", f"{round_} run: {run.condition}\n{run.describe}\n{run.logs}"
        events = json_lines(run.logs)
        assert [e["event"] for e in events].count("canary_result") == 1, run.logs
        # The result, then only what records it: the Event on the Job last (no Pushgateway here).
        assert [e["event"] for e in events][-2:] == ["canary_result", "event_recorded"], run.logs
        assert events[-2]["outcome"] == "ok", run.logs
        (loaded,) = [e for e in events if e["event"] == "token_loaded"]
        if api_mode:  # through the apiserver, at the Service's ClusterIP, with the Pod's projected token
            assert f"Secret {ns}/" in loaded["source"], loaded
            # The probe's Lease, under the same Role: taken before the hub is asked, given back at the end.
            names = [e["event"] for e in events]
            assert names.index("lease_acquired") < names.index("hub_reachable") and "lease_released" in names, run.logs
        else:  # from the Secret volume
            assert "'/etc/jupyterhub-canary/token/token'" in loaded["source"], loaded
        summary = json.loads(run.message)
        assert summary["outcome"] == "ok" and summary["exit_code"] == 0, summary
        assert run.exit_code == "0"
        assert json.loads(run.readme_message) == summary
        final = run.watch_job.strip().splitlines()[-1].split()
        assert final[0] == run.job and final[1] == "Complete" and final[2] == "1/1", run.watch_job
        assert "Completed" in run.watch_pods.strip().splitlines()[-1], run.watch_pods
        assert described_termination(run.describe, "Completed", 0) == summary
        # The run's Event on its Job (app/job_event.py), in every token mode: the Job named by the downward API.
        assert [e["event"] for e in events].count("event_recorded") == 1, run.logs
        assert_job_event(run, "Normal", "CanaryPassed", 0)
        assert token not in run.all_output(), "the hub token appeared in what kubectl shows"
        assert hub.servers(user) == {}, "the canary left its server running"

        # helm test (NOTES.txt), in every token mode: the chart's test Pod runs one cycle
        (test_line,) = [line for line in notes_lines(installed.stdout) if line.startswith("helm test ")]
        tested = plane.shell(test_line, timeout=240)
        assert tested.returncode == 0, f"{test_line}:\n{tested.stdout}\n{tested.stderr}"
        assert "Phase:          Succeeded" in tested.stdout and '"canary_result"' in tested.stdout, tested.stdout
        # The test Pod has no Job: its job-name variable is empty, and it records no Event.
        assert '"event_recorded"' not in tested.stdout and '"event_not_recorded"' not in tested.stdout, tested.stdout
        assert token not in tested.stdout + tested.stderr

    pod_env = plane.get_json(ns, "cronjob", FULLNAME)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert "KUBERNETES_SERVICE_HOST" not in json.dumps(pod_env), "in-cluster config must come from the kubelet"
    service = plane.get_json("default", "service", "kubernetes")
    assert service["spec"]["clusterIP"] == KUBERNETES_SERVICE_IP


# --- Pod-level failures, by the kubelet and the Job controller ---

REJECTED_TOKEN = "rejected-token-0123456789abcdef"
# Shorter than the hung spawn below, and than the canary's own deadline.
ACTIVE_DEADLINE = 20


def install(plane, namespace: str, hub, image: str, *values: str) -> str:
    """helm install on the node against `hub`; the NOTES.txt it printed."""
    installed = plane.helm("install", RELEASE, CHART, "--namespace", namespace, *image_values(image),
                           "--set", f"canary.hubUrl={hub.url}", *values)
    assert_accepted(installed, "helm install")
    return installed.stdout


def assert_job_event(run: ManualRun, kind: str, reason: str, code: int) -> None:
    """The Job's one Event from the canary, as `kubectl get events` and `kubectl describe job` show it."""
    lines = [line for line in run.job_events.splitlines() if re.search(r"\sCanary(Passed|Failed)\s", line)]
    assert len(lines) == 1, run.job_events
    assert kind in lines[0] and reason in lines[0] and f"job/{run.job}" in lines[0], run.job_events
    assert f"exit code {code}" in lines[0], run.job_events
    described = re.search(rf"^  {kind}\s+{reason}\s+\S+\s+jupyterhub-canary\s+exit code {code}\b", run.describe_job, re.M)
    assert described, run.describe_job
    assert reason in run.history and run.job in run.history, run.history


def assert_failed_by_pod_failure_policy(run: ManualRun, code: ExitCode) -> dict:
    assert run.condition["type"] == "Failed" and run.condition["reason"] == "PodFailurePolicy", run.condition
    assert str(int(code)) in run.condition["message"], run.condition
    summary = json.loads(run.message)
    assert summary["exit_code"] == code, summary
    assert run.exit_code == str(int(code))
    assert described_termination(run.describe, "Error", int(code)) == summary
    final = run.watch_job.strip().splitlines()[-1].split()
    assert final[0] == run.job and final[1] == "Failed" and final[2] == "0/1", run.watch_job
    return summary


def test_a_rejected_token_fails_the_job_through_pod_failure_policy(node_image, node, node_namespace, node_hub):
    plane, ns = node, node_namespace
    notes = install(plane, ns, node_hub, node_image, "--set", "canary.user=nobody-canary",
                    "--set", f"token.value={REJECTED_TOKEN}")
    run = run_the_notes(plane, ns, notes)
    summary = assert_failed_by_pod_failure_policy(run, ExitCode.PERMISSION)
    assert "rejected" in summary["message"], summary
    assert_job_event(run, "Warning", "CanaryFailed", int(ExitCode.PERMISSION))
    assert summary["message"][:60] in run.describe_job.replace("\n", " "), run.describe_job
    print(f"\n--- kubectl describe job (README) ---\n{run.describe_job}\n--- kubectl get events ---\n{run.job_events}")
    assert REJECTED_TOKEN not in run.all_output()


def test_a_secret_the_role_does_not_name_is_refused_with_77(node_image, node, node_namespace, node_hub):
    """The chart's Role names one Secret; pointed at another one (an edited CronJob), the read is refused."""
    plane, ns = node, node_namespace
    make_token_secret(plane, ns, "canary-token", token="tok-the-role-names-this-one-0123456789")
    make_token_secret(plane, ns, "another-secret", token="another-token-that-must-not-leak")
    notes = install(plane, ns, node_hub, node_image, "--set", "canary.user=nobody-canary",
                    "--set", "token.existingSecret=canary-token")
    done = plane.kubectl("-n", ns, "set", "env", f"cronjob/{FULLNAME}", "CANARY_TOKEN_SECRET=another-secret")
    assert done.returncode == 0, done.stderr
    run = run_the_notes(plane, ns, notes)
    summary = assert_failed_by_pod_failure_policy(run, ExitCode.PERMISSION)
    assert "403" in summary["message"] and "another-secret" in summary["message"], summary
    assert "another-token-that-must-not-leak" not in run.all_output()


def _json_stream(text: str) -> list[dict]:
    """The objects of `kubectl get --watch -o json` (pretty-printed, one after another; the last one may be
    cut short by the SIGINT that ended the watch)."""
    decoder, objects, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        try:
            obj, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            break
        objects.append(obj)
    return objects


def test_the_jobs_deadline_sends_sigterm_and_the_canary_stops_its_server(
        node_image, node, node_namespace, node_hub, hub_user, tmp_path):
    """activeDeadlineSeconds ends the Job while the spawn hangs: the Job controller deletes the Pod,
    the kubelet sends SIGTERM, the canary stops its pending server and exits 143 within the grace period."""
    plane, ns, hub = node, node_namespace, node_hub
    user = hub_user("slow300-")  # the spawn takes 300 s
    hub.create_user(user)
    token = hub.new_token(user, scopes=least_scopes(hub.version, user))
    notes = install(plane, ns, hub, node_image, "--set", f"canary.user={user}", "--set", f"token.value={token}",
                    "--set", "canary.stopTimeout=30")
    # The chart refuses an activeDeadlineSeconds below canary.deadline + job.deadlineGraceSeconds (it would
    # cut the canary short, as here): set on the CronJob itself, as `kubectl edit` could.
    patch = [{"op": "replace", "path": "/spec/jobTemplate/spec/activeDeadlineSeconds", "value": ACTIVE_DEADLINE}]
    done = plane.kubectl("-n", ns, "patch", "cronjob", FULLNAME, "--type=json", "-p", json.dumps(patch))
    assert done.returncode == 0, done.stderr
    job = plane.create_manual_job(notes)
    # The Job controller deletes the Pod at the deadline: follow its status and its log while it exists.
    env = plane.shell_env({"JOB": job})
    # Into a file: a pipe nobody reads until the end would fill (64 KiB) and stall the watch.
    watched = tmp_path / "watch.json"
    with watched.open("w") as out:
        watch = subprocess.Popen(["bash", "-c", f'kubectl -n {ns} get pods -l job-name="$JOB" --watch -o json'],
                                 stdout=out, text=True, env=env, start_new_session=True)
    try:
        wait_for("the Pod to run", lambda: any(p["status"]["phase"] == "Running" for p in plane.get_json(
            ns, "pods", "-l", f"job-name={job}")["items"]), 60, interval=0.5)
        logs = subprocess.run(["bash", "-c", f'kubectl -n {ns} logs -f "job/$JOB"'], capture_output=True, text=True,
                              env=env, timeout=ACTIVE_DEADLINE + 120, check=False)
        condition = wait_for("the Job's Failed condition", lambda: job_condition(plane, ns, job), 60, interval=1)
        wait_for("the Pod to be gone", lambda: not plane.get_json(ns, "pods", "-l", f"job-name={job}")["items"], 90)
    finally:
        os.killpg(watch.pid, signal.SIGINT)
    watch.wait(timeout=30)
    seen = _json_stream(watched.read_text())
    assert condition["reason"] == "DeadlineExceeded", condition

    results = [e for e in json_lines(logs.stdout) if e["event"] == "canary_result"]
    assert len(results) == 1 and results[0]["exit_code"] == 143, logs.stdout + logs.stderr
    assert any(e["event"] == "signal_received" for e in json_lines(logs.stdout)), logs.stdout
    terminated = [s["state"]["terminated"] for pod in seen for s in pod["status"].get("containerStatuses", [])
                  if "terminated" in s["state"]]
    assert terminated and terminated[-1]["exitCode"] == 143, seen[-1]["status"] if seen else "no Pod seen"
    assert json.loads(terminated[-1]["message"])["exit_code"] == 143, terminated[-1]
    # 143, not 137 (SIGKILL): the canary was done within the grace period (stopTimeout + 30 s); the
    # deletionTimestamp is the end of that period.
    deleted = [pod["metadata"]["deletionTimestamp"] for pod in seen if pod["metadata"].get("deletionTimestamp")]
    assert seen[-1]["spec"]["terminationGracePeriodSeconds"] == 60, seen[-1]["spec"]
    assert deleted and terminated[-1]["finishedAt"] <= deleted[0], (terminated[-1], deleted)
    assert hub.servers(user) == {}, "the canary left its server running"
    assert token not in logs.stdout + json.dumps(seen)
