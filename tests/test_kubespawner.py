"""A real KubeSpawner hub (tests/kubespawner_hub.py) spawning real user pods on the test node
(tests/node.py): the canary's timeline shows KubeSpawner's real Kubernetes events with their phases,
and the spawn-failure causes come from real events (FailedScheduling, ErrImageNeverPull, BackOff, a
missing PersistentVolumeClaim), with nothing left afterwards: no user pod, no hub process.

One hub for the module; the canary runs as a host process here (faster), and as the chart's CronJob
pod in test_the_chart_cronjob_pod_spawns_a_real_user_pod.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from app.exit_codes import ExitCode
from app.token_command import least_scopes
from tests import userimage
from tests.conftest import _restricted_namespace
from tests.controlplane import wait_for
from tests.kubespawner_hub import MISSING_CLAIM, MISSING_IMAGE, KubeSpawnerHub
from tests.localhub import until_stopped
from tests.runner import run_main
from tests.test_k8s_chart import RELEASE
from tests.test_k8s_node import install, job_condition, json_lines

pytestmark = pytest.mark.k8s

# KubeSpawner relays each pod event as "<timestamp> [<type>] <message>".
RELAYED = r"^\S+ \[(Normal|Warning)\] "


@pytest.fixture(scope="module")
def user_image(node) -> str:
    """The single-user image (tests/userimage.py), imported into the node's containerd."""
    node.import_archive(userimage.tarball().read_bytes())
    return userimage.tag()


@pytest.fixture(scope="module")
def kubespawner_namespace(node) -> Iterator[str]:
    yield from _restricted_namespace(node)


@pytest.fixture(scope="module")
def kubespawner_hub(node, user_image, kubespawner_namespace, tmp_path_factory) -> Iterator[KubeSpawnerHub]:
    hub = KubeSpawnerHub(tmp_path_factory.mktemp("kubespawner_hub"), node, kubespawner_namespace).start()
    yield from until_stopped(hub, "the KubeSpawner hub")
    # The hub stops its servers when it stops (cleanup_servers): KubeSpawner deletes their pods.
    wait_for("no user pod left", lambda: not hub.user_pods(), 30)


def run_canary(hub: KubeSpawnerHub, user: str, tmp_path, *args: str):
    hub.create_user(user)
    token = hub.new_token(user)
    run = run_main(["--hub-url", hub.url, "--user", user, "--attempts", "1",
                    "--termination-log", str(tmp_path / "termination-log"), *args],
                   env={"JUPYTERHUB_API_TOKEN": token})
    run.assert_no_secret(token, hub.admin_token)
    return run


def spawned_pod(hub: KubeSpawnerHub, user: str) -> str:
    (record,) = hub.spawn_records(user)
    return record["pod"]


def assert_real_kubespawner_timeline(hub: KubeSpawnerHub, user: str, result: dict) -> None:
    """The result of a healthy run: the pod's real events, relayed by KubeSpawner, in its timeline with
    their phases, and nothing left of the spawn."""
    assert result["outcome"] == "ok", result
    pod = spawned_pod(hub, user)
    messages = [event["message"] for event in result["timeline"]]

    # The pod's real events (the scheduler's and the kubelet's), relayed by KubeSpawner, in order.
    real = [e["reason"] for e in hub.pod_events(pod)]
    assert {"Scheduled", "Pulled", "Created", "Started"} <= set(real), real
    relayed = [m for m in messages if m and re.match(RELAYED, m)]
    expected = [f"Successfully assigned {hub.namespace}/{pod} to ", f'Container image "{userimage.tag()}" already present',
                "Container created", "Container started"]  # the 1.37 kubelet's words
    found = [next((i for i, m in enumerate(relayed) if want in m), None) for want in expected]
    assert None not in found and found == sorted(found), (expected, relayed)
    assert messages[-1].startswith(f"Server ready at /user/{user}/")
    # Read while the spawn request was still in flight: the hub answers it only when the server is
    # ready (201) or after its slow_spawn_timeout (202, 10 s), and tells the events only meanwhile.
    assigned = next(e["t_ms"] for e in result["timeline"] if "Successfully assigned" in (e["message"] or ""))
    assert assigned < result["phases_ms"]["spawn_request"], (assigned, result["phases_ms"])

    # The phases those events mark (app/timeline.py): the image was on the node, so no pull.
    phases = result["timeline_phases_ms"]
    assert set(phases) == {"spawn", "scheduling", "container_start", "server_start"}, phases
    assert phases["scheduling"] <= phases["spawn"] and phases["server_start"] <= phases["spawn"]

    # Nothing left: the canary stopped its server, KubeSpawner deleted the pod.
    assert hub.servers(user) == {}
    wait_for(f"pod {pod} deleted", lambda: pod not in [p["metadata"]["name"] for p in hub.user_pods()], 30)


def test_a_fast_real_spawn_has_kubespawners_events_in_its_timeline(kubespawner_hub, hub_user, tmp_path):
    user = hub_user("ks-")
    run = run_canary(kubespawner_hub, user, tmp_path)
    assert run.exit_code == ExitCode.OK, run.output
    print("spawn request answered", [e["status"] for e in run.named("spawn_requested")])
    assert_real_kubespawner_timeline(kubespawner_hub, user, run.result)


def test_the_chart_cronjob_pod_spawns_a_real_user_pod(node, kubespawner_hub, node_image, hub_user):
    """The product image as the chart's CronJob pod on the node, against the KubeSpawner hub."""
    hub, ns = kubespawner_hub, kubespawner_hub.namespace
    user = hub_user("ks-cron-")
    hub.create_user(user)
    token = hub.new_token(user, scopes=least_scopes(hub.version, user))
    notes = install(node, ns, hub, node_image, "--set", f"canary.user={user}", "--set", f"token.value={token}")
    try:
        job = node.create_manual_job(notes)
        condition = wait_for(f"Job {job} to finish", lambda: job_condition(node, ns, job), 180, interval=1)
        logs = node.kubectl("-n", ns, "logs", f"job/{job}")
        assert logs.returncode == 0, logs.stderr
        assert condition["type"] == "Complete", f"{condition}\n{logs.stdout}"
        assert token not in logs.stdout
        results = [e for e in json_lines(logs.stdout) if e["event"] == "canary_result"]
        assert len(results) == 1, logs.stdout
        assert_real_kubespawner_timeline(hub, user, results[0])
    finally:
        removed = node.helm("uninstall", RELEASE, "--namespace", ns, "--wait", "--timeout", "60s")
        assert removed.returncode == 0, removed.stderr


# behaviour (tests/kubespawner_config.py), the canary's arguments, its exit code, the real event's reason
# and the words of its message that tell the cause. A spawn the hub fails by itself (KubeSpawner's start_timeout, set
# short through user_options) is 10; one that the canary's --spawn-timeout cuts first is 11.
FAILURES = {
    "unschedulable": ({"behaviour": "unschedulable"}, ("--spawn-timeout", "8"), ExitCode.SPAWN_TIMEOUT,
                      "FailedScheduling", "didn't match Pod's node affinity/selector"),
    "image_pull": ({"behaviour": "image_pull", "start_timeout": 8}, (), ExitCode.SPAWN_FAILED,
                   "ErrImageNeverPull", f'"{MISSING_IMAGE}" is not present with pull policy of Never'),
    "crash": ({"behaviour": "crash", "start_timeout": 15}, (), ExitCode.SPAWN_FAILED,
              "BackOff", "Back-off restarting failed container"),
    "volume": ({"behaviour": "volume", "start_timeout": 8}, (), ExitCode.SPAWN_FAILED,
               "FailedScheduling", f'persistentvolumeclaim "{MISSING_CLAIM}" not found'),
}


@pytest.mark.parametrize("cause", FAILURES)
def test_a_real_spawn_failure_has_its_cause(kubespawner_hub, hub_user, tmp_path, cause):
    hub = kubespawner_hub
    options, args, exit_code, reason, words = FAILURES[cause]
    user = hub_user(f"ks-{cause.replace('_', '')}-")
    run = run_canary(hub, user, tmp_path, "--user-options", json.dumps(options), "--spawn-timeout", "60", *args)
    pod = spawned_pod(hub, user)
    events = hub.pod_events(pod)
    assert reason in [e["reason"] for e in events], events
    assert run.exit_code == exit_code, run.output
    result = run.result
    told = [e["message"] for e in result["timeline"]]
    assert result["cause"] == cause, (result["message"], told, [(e["lastTimestamp"], e["reason"]) for e in events])
    termination = json.loads((tmp_path / "termination-log").read_text())
    assert termination["cause"] == cause
    # The kubelet's or the scheduler's own event, relayed by KubeSpawner, is in the timeline.
    assert any(words in e["message"] for e in events), [e["message"] for e in events]
    relayed = [e["message"] for e in result["timeline"] if re.match(RELAYED, e["message"] or "")]
    assert any(words in message for message in relayed), relayed
    # Nothing left of the spawn.
    assert hub.servers(user) == {}
    wait_for(f"pod {pod} deleted", lambda: pod not in [p["metadata"]["name"] for p in hub.user_pods()], 30)


def test_a_server_that_runs_then_exits_is_no_crash_to_kubespawners_stream(kubespawner_hub, hub_user, tmp_path):
    """KubeSpawner's start ends when the pod first runs, and its relay of the pod's events with it: the
    exit and the BackOff after it never reach the progress stream. The hub gives up after http_timeout
    and the canary can only say what the hub said (README, "A real KubeSpawner on the node")."""
    hub = kubespawner_hub
    user = hub_user("ks-exits-")
    options = {"behaviour": "exits", "http_timeout": 8}
    run = run_canary(hub, user, tmp_path, "--user-options", json.dumps(options), "--spawn-timeout", "60")
    pod = spawned_pod(hub, user)
    assert "Started" in [e["reason"] for e in hub.pod_events(pod)]
    assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
    result = run.result
    told = [e["message"] for e in result["timeline"]]
    assert not [m for m in told if "Back-off" in (m or "")], told
    assert any("Container started" in (m or "") for m in told), told
    assert result["cause"] == "unknown", (result["message"], told)
    assert hub.servers(user) == {}
    wait_for(f"pod {pod} deleted", lambda: pod not in [p["metadata"]["name"] for p in hub.user_pods()], 30)
