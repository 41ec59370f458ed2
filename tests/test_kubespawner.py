"""A real KubeSpawner hub (tests/kubespawner_hub.py) spawning real user pods on the test node
(tests/node.py): the canary's timeline shows KubeSpawner's real Kubernetes events with their phases,
and the spawn-failure causes come from real events (FailedScheduling, ErrImageNeverPull, BackOff, a
missing PersistentVolumeClaim), with nothing left afterwards: no user pod, no hub process.

One hub for the module; the canary runs as a host process here (faster), and as the chart's CronJob
pod in test_the_chart_cronjob_pod_spawns_a_real_user_pod.

Fresh users (issue 20, --fresh-user) on the same hub: a claim of the user's own (storage_pvc_ensure)
that binds to a PersistentVolume the test makes for that one run, a home on it, a stand-in proxied
app (--check-url); and what a first-time user meets: no volume to bind, an init container that fails
on a new home, a ResourceQuota that refuses the claim; SIGTERM mid-spawn. Each leaves no user, no
claim, no pod.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.exit_codes import ExitCode
from app.token_command import least_scopes
from tests import userimage
from tests.conftest import _restricted_namespace
from tests.controlplane import wait_for
from tests.kubespawner_hub import FRESH_PREFIX, MISSING_CLAIM, MISSING_IMAGE, KubeSpawnerHub
from tests.localhub import until_stopped
from tests.runner import finish_process, run_main, start_process
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


# --- fresh users (issue 20): a new user every run, with a home on a claim of its own ---

ROOT = Path(__file__).resolve().parent.parent
HOME = {"behaviour": "home"}


def fresh_args(hub: KubeSpawnerHub, user: str, tmp_path, options: dict, *args: str) -> list[str]:
    return ["--hub-url", hub.url, "--user", user, "--fresh-user", "--attempts", "1", "--user-options", json.dumps(options),
            "--termination-log", str(tmp_path / "termination-log"), *args]


def fresh_run(hub: KubeSpawnerHub, user: str, tmp_path, options: dict, *args: str):
    """One --fresh-user run of the canary on `user` (a name of FRESH_USERS) with the service's token."""
    run = run_main(fresh_args(hub, user, tmp_path, options, *args), env={"JUPYTERHUB_API_TOKEN": hub.fresh_token})
    run.assert_no_secret(hub.fresh_token, hub.admin_token)
    assert run.result["fresh_user"] is True, run.output
    # Created by this run, deleted by it at the end (nothing stale before it: each test's name is its own).
    assert [e["event"] for e in run.events if e["event"].startswith("fresh_user_")] == [
        "fresh_user_created", "fresh_user_marked", "fresh_user_deleted"], run.output
    return run


def termination(tmp_path) -> dict:
    return json.loads((tmp_path / "termination-log").read_text())


def assert_nothing_left(hub: KubeSpawnerHub, user: str, run=None) -> None:
    """No user, no claim, no pod of the user's: what every fresh run leaves, on every path."""
    assert not hub.user_exists(user), "the fresh user was left behind"
    if run is not None:
        assert run.result["user_deleted"] is True, run.result
    wait_for(f"the pods of {user} deleted", lambda: not [p for p in hub.user_pods() if user in p["metadata"]["name"]], 30)
    # The claim is deleted with the user (delete_pvc); it goes once no pod uses it (pvc-protection).
    claim = hub.claim_name(user)
    wait_for(f"{user}'s claim deleted", lambda: claim not in [c["metadata"]["name"] for c in hub.claims()], 30)


def released(hub: KubeSpawnerHub, volume: str) -> dict:
    """The volume once its claim is gone: Released (Retain), still naming the deleted claim, never bound again."""
    return wait_for(f"volume {volume} released", lambda: (pv := hub.volume(volume)) and pv["status"]["phase"] == "Released"
                    and pv, 30)


@pytest.fixture
def home_volumes(kubespawner_hub) -> Iterator[list[str]]:
    """The volumes a test made (KubeSpawnerHub.home_volume): removed after it."""
    made: list[str] = []
    yield made
    for volume in made:
        kubespawner_hub.remove_home_volume(volume)


def new_home(hub: KubeSpawnerHub, home_volumes: list[str], user: str, *, seeded: bool = False) -> str:
    volume = hub.home_volume(user, seeded=seeded)
    home_volumes.append(volume)
    return volume


def test_a_fresh_user_gets_a_home_on_a_claim_of_its_own_twice_and_leaves_nothing(kubespawner_hub, home_volumes, tmp_path):
    """A claim that binds (to this run's volume), a home on it (--check-storage writes there), a page of
    a proxied app (--check-url); then no user, no claim, no pod; and the same probe again."""
    hub, user = kubespawner_hub, f"{FRESH_PREFIX}home"
    claims = []
    for round_ in ("first", "second"):
        volume = new_home(hub, home_volumes, user)
        run = fresh_run(hub, user, tmp_path, HOME, "--check-storage", "--check-url", "standin-app")
        assert run.exit_code == ExitCode.OK, f"{round_} run: {run.output}"
        (served,) = run.named("url_served")
        assert (served["path"], served["status"], served["redirects"]) == (f"/user/{user}/standin-app", 200, 1)
        assert run.named("storage_saved") and run.named("storage_deleted"), run.output
        # The pod was scheduled once its claim was bound.
        told = [e["message"] or "" for e in run.result["timeline"]]
        assert any("Successfully assigned" in m for m in told), told
        assert_nothing_left(hub, user, run)
        pv = released(hub, volume)
        assert pv["spec"]["claimRef"]["name"] == hub.claim_name(user) and pv["spec"]["claimRef"].get("uid"), pv["spec"]
        claims.append(pv["spec"]["claimRef"]["uid"])
        # The server ran in that home: the volume's directory holds what the server wrote in $HOME.
        home = hub.workdir / "homes" / volume
        assert (home / ".local" / "share" / "jupyter" / "runtime").is_dir(), sorted(p.name for p in home.iterdir())
    # A released volume is never bound again: the second run's claim (a new one) bound to its own volume
    # (static provisioning, Retain), the first one's stayed Released.
    assert len(set(claims)) == 2, claims
    assert [hub.volume(v)["status"]["phase"] for v in home_volumes] == ["Released", "Released"]


def test_a_claim_with_no_volume_to_bind_is_a_volume_failure_and_leaves_nothing(kubespawner_hub, tmp_path):
    """A broken provisioner: class "manual" provisions nothing and no volume is there for the claim."""
    hub, user = kubespawner_hub, f"{FRESH_PREFIX}novolume"
    run = fresh_run(hub, user, tmp_path, {**HOME, "start_timeout": 8})
    assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
    assert run.result["cause"] == termination(tmp_path)["cause"] == "volume", run.result
    relayed = [e for e in run.result["timeline"] if e.get("reason") == "FailedScheduling"]
    assert relayed and "pod has unbound immediate PersistentVolumeClaims" in relayed[0]["message"], run.result["timeline"]
    assert_nothing_left(hub, user, run)


def test_an_init_container_that_fails_on_a_new_home_is_its_cause(kubespawner_hub, home_volumes, tmp_path):
    """The init container (tests/kubespawner_config.py, "home_init") passes on a home that holds its marker
    (a user who has been here before) and fails on a new one: init_container, not crash."""
    hub, user = kubespawner_hub, f"{FRESH_PREFIX}init"
    new_home(hub, home_volumes, user, seeded=True)
    run = fresh_run(hub, user, tmp_path, {"behaviour": "home_init", "start_timeout": 30})
    assert run.exit_code == ExitCode.OK, f"a seeded home: {run.output}"
    assert_nothing_left(hub, user, run)

    new_home(hub, home_volumes, user)
    run = fresh_run(hub, user, tmp_path, {"behaviour": "home_init", "start_timeout": 12})
    assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
    back_off = [e for e in run.result["timeline"] if e.get("reason") == "BackOff"]
    assert back_off and back_off[0]["field_path"] == "spec.initContainers{seed-home}", run.result["timeline"]
    assert "Back-off restarting failed container seed-home in pod " in back_off[0]["message"]
    assert run.result["cause"] == termination(tmp_path)["cause"] == "init_container", run.result
    assert_nothing_left(hub, user, run)


def test_a_quota_that_refuses_the_claim_is_a_quota_failure(kubespawner_hub, tmp_path):
    """KubeSpawner creates the claim before the pod; the apiserver refuses it (403, exceeded quota) and
    KubeSpawner gives up at once (it retries only a claim that exists: kubespawner/spawner.py)."""
    hub, user = kubespawner_hub, f"{FRESH_PREFIX}quota"
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-claims"},
             "spec": {"hard": {"persistentvolumeclaims": "0"}}}
    done = hub.cluster.kubectl("-n", hub.namespace, "create", "-f", "-", input=json.dumps(quota))
    assert done.returncode == 0, done.stderr
    try:
        done = hub.cluster.kubectl("-n", hub.namespace, "wait", "resourcequota/no-claims", "--timeout=30s",
                                   "--for=jsonpath={.status.hard.persistentvolumeclaims}=0")
        assert done.returncode == 0, done.stderr
        run = fresh_run(hub, user, tmp_path, HOME)
    finally:
        hub.cluster.kubectl("-n", hub.namespace, "delete", "resourcequota", "no-claims")
    assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
    assert run.result["cause"] == termination(tmp_path)["cause"] == "quota", run.result
    claim = hub.claim_name(user)
    assert f'persistentvolumeclaims \\"{claim}\\" is forbidden: exceeded quota: no-claims' in run.result["message"], run.result
    assert_nothing_left(hub, user, run)


def test_a_page_the_server_does_not_serve_is_17_naming_it(kubespawner_hub, home_volumes, tmp_path):
    hub, user = kubespawner_hub, f"{FRESH_PREFIX}urls"
    new_home(hub, home_volumes, user)
    run = fresh_run(hub, user, tmp_path, HOME, "--check-url", "standin-app/", "--check-url", "rstudio/")
    assert run.exit_code == ExitCode.LAB_FAILED == 17, run.output
    assert (run.result["reason"], run.result["cause"]) == ("lab_failed", "not_served")
    assert f"GET /user/{user}/rstudio/ (redirected to /user/{user}/rstudio) answered 404" in run.result["message"]
    assert [e["path"] for e in run.named("url_served")] == [f"/user/{user}/standin-app/"]
    assert_nothing_left(hub, user, run)


def test_sigterm_mid_spawn_of_a_fresh_user_is_143_and_leaves_nothing(kubespawner_hub, home_volumes, tmp_path):
    """The console script, SIGTERM once the pod is scheduled (its claim bound): it stops the server,
    deletes the user (and so the claim) and ends 143."""
    hub, user = kubespawner_hub, f"{FRESH_PREFIX}sigterm"
    volume = new_home(hub, home_volumes, user)
    process = start_process(fresh_args(hub, user, tmp_path, HOME),
                            env={"JUPYTERHUB_API_TOKEN": hub.fresh_token, "PYTHONPATH": str(ROOT)})
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if '"spawn_progress"' in line and "Successfully assigned" in line:
                break
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        run = finish_process(process, timeout=120)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    run.output = "".join(seen) + run.output
    print(f"SIGTERM to exit: {time.monotonic() - sent:.1f} s")
    assert run.exit_code == ExitCode.SIGTERM == 143, run.output
    assert run.result["outcome"] == "interrupted", run.result
    assert termination(tmp_path)["exit_code"] == 143
    run.assert_no_secret(hub.fresh_token, hub.admin_token)
    assert_nothing_left(hub, user, run)
    assert hub.volume(volume) is None or released(hub, volume)
