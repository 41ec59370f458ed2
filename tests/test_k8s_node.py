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
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass

import pytest

from tests.controlplane import CHART_DIR, ROOT, notes_lines, wait_for
from tests.node import BRIDGE, PAUSE_IMAGE, Node, cannot_run_node, read_sysctls

pytestmark = pytest.mark.k8s

CHART = str(CHART_DIR)
README = ROOT / "README.md"


def image_values(image: str) -> tuple[str, ...]:
    repository, _, tag = image.rpartition(":")
    return ("--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never")


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

    def all_output(self) -> str:
        return "\n".join((self.watch_job, self.watch_pods, self.logs, self.message, self.describe))


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
                    readme_termination_message(plane, namespace, job))
    for line in removal:
        done = plane.shell(line, {"JOB": job})
        assert done.returncode == 0 and "deleted" in done.stdout, f"{line}: {done.stderr}"
    return run


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
