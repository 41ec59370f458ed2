"""The causes of a failed spawn (app/spawn_causes.py), each rule with Kubernetes' own event texts.

The texts are quoted from where Kubernetes writes them (the scheduler, the kubelet, the apiserver's
quota admission, the cluster autoscaler), as KubeSpawner relays them: "<lastTimestamp> [<type>]
<message>" with the event itself as `raw_event` (KubeSpawner 7.x, spawner.py `progress()`).
"""

from __future__ import annotations

import pytest

from app import spawn_causes
from app.spawn_causes import CAUSES, RULES, cause_of_event, classify

T = "2026-11-30T07:00:00Z"


def relayed(kind: str, message: str) -> str:
    """An event as KubeSpawner's progress() words it."""
    return f"{T} [{kind}] {message}"


# (cause, Kubernetes event reason, message): one or more per rule, each a real text.
REAL_EVENTS = [
    # kube-scheduler, FailedScheduling: the node-affinity/selector filter, resources, taints.
    ("unschedulable", "FailedScheduling",
     "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are "
     "available: 1 Preemption is not helpful for scheduling."),
    ("unschedulable", "FailedScheduling",
     "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims "
     "found for incoming pod."),
    ("unschedulable", "FailedScheduling",
     "0/10 nodes are available: 1 Insufficient cpu, 2 Insufficient memory, 8 node(s) had untolerated taint(s)."),
    # cluster-autoscaler, NotTriggerScaleUp.
    ("unschedulable", "NotTriggerScaleUp",
     "pod didn't trigger scale-up: 1 node(s) didn't match Pod's node affinity/selector"),
    ("unschedulable", "NotTriggerScaleUp",
     "pod didn't trigger scale-up (it wouldn't fit if a new node is added): 1 Insufficient nvidia.com/gpu"),
    # kubelet image manager: ErrImageNeverPull (pull policy Never), a failed pull, the back-off.
    ("image_pull", "ErrImageNeverPull",
     'Container image "jupyter/missing:1.0" is not present with pull policy of Never'),
    ("image_pull", "Failed", "Error: ErrImageNeverPull"),
    ("image_pull", "Failed",
     'Failed to pull image "quay.io/jupyter/missing:1.0": rpc error: code = NotFound desc = failed to pull and '
     'unpack image "quay.io/jupyter/missing:1.0": failed to resolve reference "quay.io/jupyter/missing:1.0": '
     "quay.io/jupyter/missing:1.0: not found"),
    ("image_pull", "Failed", "Error: ErrImagePull"),
    ("image_pull", "BackOff", 'Back-off pulling image "quay.io/jupyter/missing:1.0"'),
    ("image_pull", "Failed", "Error: ImagePullBackOff"),
    # The scheduler's volumebinding plugin; the kubelet's volume manager; the attach-detach controller.
    ("volume", "FailedScheduling",
     "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are "
     "available: 1 Preemption is not helpful for scheduling."),
    ("volume", "FailedScheduling",
     '0/1 nodes are available: persistentvolumeclaim "claim-canary" not found. preemption: 0/1 nodes are '
     "available: 1 Preemption is not helpful for scheduling."),
    ("volume", "FailedMount",
     "Unable to attach or mount volumes: unmounted volumes=[home], unattached volumes=[home kube-api-access-x8k2p]: "
     "timed out waiting for the condition"),
    ("volume", "FailedMount", 'MountVolume.SetUp failed for volume "home" : mount failed: exit status 32'),
    ("volume", "FailedAttachVolume",
     'AttachVolume.Attach failed for volume "pvc-0f3c" : rpc error: code = Internal desc = attach failed'),
    ("volume", "FailedAttachVolume",
     'Multi-Attach error for volume "pvc-0f3c" Volume is already used by pod(s) jupyter-alice'),
    # kubelet: a container that keeps exiting; a container the kernel's OOM killer ended.
    ("crash", "BackOff",
     "Back-off restarting failed container notebook in pod jupyter-canary_jhub(0d2c6e0a-3b7e-4a34-9f0a-7b1b9c3e5f21)"),
    ("crash", None, "Container notebook in CrashLoopBackOff"),
    ("crash", None, "Container notebook was OOMKilled (exit code 137)"),
    # The apiserver's ResourceQuota admission refuses the pod: KubeSpawner's create fails with its 403.
    ("quota", None,
     'Spawn failed: (403)\nReason: Forbidden\nHTTP response body: {"kind":"Status","apiVersion":"v1","status":'
     '"Failure","message":"pods \\"jupyter-canary\\" is forbidden: exceeded quota: user-quota, requested: '
     'requests.cpu=2, used: requests.cpu=4, limited: requests.cpu=4","reason":"Forbidden","code":403}'),
]


# An init container that fails on a new home (tests/test_kubespawner.py, the real node with the 1.37
# kubelet): the kubelet's events about it, with involvedObject.fieldPath, oldest first. Its Created and
# Started are the init container's; only a container of spec.containers created means the init is done.
INIT_CONTAINER_EVENTS = [
    ("Scheduled", None, "Successfully assigned canary-k8s-1/jupyter-jupyterhub-canary-fresh-init to canary-node"),
    ("Pulled", "spec.initContainers{seed-home}",
     'Container image "jupyterhub-canary-user:4ab68b5b071c" already present on machine and can be accessed by the pod'),
    ("Created", "spec.initContainers{seed-home}", "Container created"),
    ("Started", "spec.initContainers{seed-home}", "Container started"),
    ("BackOff", "spec.initContainers{seed-home}",
     "Back-off restarting failed container seed-home in pod "
     "jupyter-jupyterhub-canary-fresh-init_canary-k8s-1(ed7fc2f3-2e1c-489b-b43f-75644ba9d7ee)"),
]
# The apiserver's ResourceQuota admission refuses the user's claim (KubeSpawner's storage_pvc_ensure), as
# the hub ends the spawn (the real node; the 403's headers left out).
QUOTA_ON_THE_CLAIM = (
    'Spawn failed: (403)\nReason: error\nHTTP response body: {"kind":"Status","apiVersion":"v1","metadata":{},'
    '"status":"Failure","message":"persistentvolumeclaims \\"claim-jupyterhub-canary-fresh-quota\\" is forbidden: '
    'exceeded quota: no-claims, requested: persistentvolumeclaims=1, used: persistentvolumeclaims=0, limited: '
    'persistentvolumeclaims=0","reason":"Forbidden","details":{"name":"claim-jupyterhub-canary-fresh-quota",'
    '"kind":"persistentvolumeclaims"},"code":403}'
)


def _told(events):
    return [(relayed("Normal", message), reason, path) for reason, path, message in events]


def test_a_crash_of_an_init_container_is_init_container():
    events = _told(INIT_CONTAINER_EVENTS)
    assert classify(events, "Spawn failed: ", timed_out=False) == "init_container"
    assert classify(events, "the server was not ready within 30s", timed_out=True) == "init_container"
    message, reason, path = events[-1]
    assert cause_of_event(message, reason, path) == "init_container"
    # Its words and reason alone (a spawner that does not relay the event itself) are a crash.
    assert cause_of_event(message, reason) == "crash"
    assert classify([(m, r) for m, r, _ in events], "Spawn failed: ", timed_out=False) == "crash"
    # The main container's crash is a crash.
    assert cause_of_event(message, reason, "spec.containers{notebook}") == "crash"
    # The init container's OOM kill too is its own.
    assert cause_of_event("Container seed-home was OOMKilled", None, "spec.initContainers{seed-home}") == "init_container"


def test_an_init_container_that_failed_then_passed_is_not_the_cause():
    """Started again after its back-off (its own Started is not past the init step), then the main
    container created and started: every init container succeeded."""
    again = _told([*INIT_CONTAINER_EVENTS, ("Started", "spec.initContainers{seed-home}", "Container started")])
    assert classify(again, "Spawn failed: ", timed_out=False) == "init_container"
    passed = _told([*INIT_CONTAINER_EVENTS, ("Created", "spec.containers{notebook}", "Container created"),
                    ("Started", "spec.containers{notebook}", "Container started")])
    assert classify(passed, "the server was not ready within 30s", timed_out=True) == "timeout"
    # ... and a crash of the main container after that is a crash.
    crashed = [*passed, (relayed("Warning", "Back-off restarting failed container notebook in pod p_ns(u)"), "BackOff",
                         "spec.containers{notebook}")]
    assert classify(crashed, "Spawn failed: ", timed_out=False) == "crash"


def test_a_quota_on_the_users_claim_is_quota():
    assert classify([], QUOTA_ON_THE_CLAIM, timed_out=False) == "quota"


@pytest.mark.parametrize(("cause", "reason", "message"), REAL_EVENTS)
def test_each_real_event_tells_its_cause(cause, reason, message):
    kind = "Normal" if reason == "NotTriggerScaleUp" else "Warning"
    # As KubeSpawner relays it (text and raw_event's reason), as text alone, and by its reason alone
    # where the reason is specific.
    assert cause_of_event(relayed(kind, message), reason) == cause
    assert cause_of_event(relayed(kind, message)) == cause, "other spawners send only the text"
    assert cause_of_event(message) == cause


def test_every_rule_is_exercised_by_a_real_text():
    assert {rule.cause for rule in RULES} == {cause for cause, _, _ in REAL_EVENTS}
    # init_container is a crash's rule on an init container's event (its own real events above).
    assert set(CAUSES) == {rule.cause for rule in RULES} | {"init_container", "timeout", "unknown"}


@pytest.mark.parametrize("reason", ["FailedScheduling", "ErrImageNeverPull", "FailedMount", "FailedAttachVolume"])
def test_a_specific_reason_alone_is_telling(reason):
    assert cause_of_event("", reason) is not None


@pytest.mark.parametrize(
    "message",
    [
        relayed("Normal", "Successfully assigned jhub/jupyter-canary to node-1"),
        relayed("Normal", 'Pulling image "quay.io/jupyter/base-notebook:2025-01-01"'),
        relayed("Normal", 'Container image "quay.io/jupyter/base-notebook:2025-01-01" already present on machine'),
        relayed("Normal", "Created container notebook"),
        relayed("Normal", "Started container notebook"),
        "Server requested",
        "Spawning server...",
        "Spawn failed: pod jhub/jupyter-canary did not start in 300 seconds!",
        "Spawn failed: Timeout",
        None,
    ],
)
def test_ordinary_events_tell_nothing(message):
    assert cause_of_event(message, "Scheduled" if message and "assigned" in message else None) is None


def test_the_latest_telling_event_wins():
    # First no node; the autoscaler adds one; there the image cannot be pulled.
    events = [
        ("Server requested", None),
        (relayed("Warning", "0/2 nodes are available: 2 Insufficient memory."), "FailedScheduling"),
        (relayed("Normal", "Successfully assigned jhub/jupyter-canary to node-3"), "Scheduled"),
        (relayed("Warning", 'Failed to pull image "x": not found'), "Failed"),
        (relayed("Warning", "Error: ErrImagePull"), "Failed"),
        (relayed("Normal", 'Pulling image "x"'), "Pulling"),
    ]
    assert classify(events, "Spawn failed: Timeout", timed_out=False) == "image_pull"
    # The kubelet pulling again after a failed pull is the same pull, failing: still the image.


# A pool scaled from zero (issue 19, item 9): no node, the autoscaler adds one, the pod is scheduled
# there and its image is being pulled when the spawn times out. The texts are the scheduler's, the
# cluster autoscaler's (TriggeredScaleUp: "pod triggered scale-up: [{<group> <from>-><to> (max: <max>)}]")
# and the kubelet's.
SCALE_FROM_ZERO = [
    ["Warning", "FailedScheduling",
     "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/2 nodes are "
     "available: 2 Preemption is not helpful for scheduling."],
    ["Normal", "TriggeredScaleUp", "pod triggered scale-up: [{eks-user-gpu-20261130-4ac8d2b1 0->1 (max: 10)}]"],
    ["Normal", "Scheduled", "Successfully assigned jhub/jupyter-canary to ip-10-0-3-17.ec2.internal"],
    ["Normal", "Pulling", 'Pulling image "quay.io/jupyter/pytorch-notebook:cuda12-2026-11-24"'],
]


def test_a_failure_the_pod_got_past_is_not_the_cause():
    events = [("Server requested", None), *((relayed(kind, text), reason) for kind, reason, text in SCALE_FROM_ZERO)]
    timed_out = "the server was not ready within 300s"
    assert classify(events, timed_out, timed_out=True) == "timeout"
    # Each step of the way: unschedulable until the pod is scheduled.
    assert classify(events[:3], timed_out, timed_out=True) == "unschedulable"
    assert classify(events[:4], timed_out, timed_out=True) == "timeout"
    # By its words alone (a spawner that relays no raw_event) as by its reason alone.
    assert classify([(m, None) for m, _ in events], timed_out, timed_out=True) == "timeout"
    assert classify([("", r) for _, r in events], timed_out, timed_out=True) == "timeout"


@pytest.mark.parametrize(
    ("events", "cause"),
    [
        # An unbound claim fails the scheduling; once bound, the pod is scheduled.
        ([("FailedScheduling", "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."),
          ("Scheduled", "Successfully assigned jhub/jupyter-canary to node-1")], "timeout"),
        # A mount that failed, then worked: the kubelet pulls only after mounting.
        ([("FailedMount", 'MountVolume.SetUp failed for volume "home" : mount failed: exit status 32'),
          ("Pulling", 'Pulling image "quay.io/jupyter/base-notebook:2026-11-24"')], "timeout"),
        # A pull that failed once, then succeeded, and the container started.
        ([("Failed", "Error: ErrImagePull"), ("Pulled", 'Successfully pulled image "x" in 41.2s (41.2s including waiting)'),
          ("Started", "Container started")], "timeout"),
        # Not past its step: a pull tried again, a container started again after a crash.
        ([("Failed", "Error: ErrImagePull"), ("Pulling", 'Pulling image "x"')], "image_pull"),
        ([("BackOff", "Back-off restarting failed container notebook in pod jupyter-canary_jhub(0d2c)"),
          ("Started", "Started container notebook")], "crash"),
        # A failure after the pod moved on is the cause.
        ([("Scheduled", "Successfully assigned jhub/jupyter-canary to node-1"), ("Failed", "Error: ImagePullBackOff")],
         "image_pull"),
    ],
    ids=["volume-then-scheduled", "mount-then-pulling", "pull-then-started", "pull-again", "crash-again", "after"],
)
def test_a_later_event_supersedes_only_the_failures_of_the_steps_it_passed(events, cause):
    told = [(relayed("Normal", message), reason) for reason, message in events]
    assert classify(told, "the server was not ready within 300s", timed_out=True) == cause


def test_the_failure_message_is_read_last():
    events = [(relayed("Warning", "0/1 nodes are available: 1 Insufficient cpu."), "FailedScheduling")]
    quota = "the spawner reported failure: Spawn failed: pods \"jupyter-x\" is forbidden: exceeded quota: q, requested: ..."
    assert classify(events, quota, timed_out=False) == "quota"


def test_nothing_telling_is_timeout_for_a_timeout_else_unknown():
    events = [("Server requested", None), ("Spawning server...", None)]
    assert classify(events, "the server was not ready within 30s", timed_out=True) == spawn_causes.TIMEOUT
    assert classify(events, "the hub refused the spawn: 500 Internal Server Error", timed_out=False) == "unknown"
    assert classify([], None, timed_out=False) == "unknown"


def test_a_back_off_is_a_crash_or_an_image_by_its_words_not_its_reason():
    assert cause_of_event('Back-off pulling image "x"', "BackOff") == "image_pull"
    assert cause_of_event("Back-off restarting failed container notebook in pod p_ns(uid)", "BackOff") == "crash"
    assert cause_of_event("something else", "BackOff") is None


# --- a real hub whose spawner relays KubeSpawner's events, as KubeSpawner does ---

# The spawner goes into the test hub's config (LocalHub's extra_config). Its progress() yields each
# user_options["k8s_events"] entry ([seconds after start(), type, reason, message]) in KubeSpawner's
# shape: the Kubernetes event as `raw_event`, the text "<lastTimestamp> [<type>] <message>". Its
# start() then fails with user_options["k8s_fail"] (KubeSpawner's own start timeout words), or, without
# it, stays pending until the spawn is cancelled, as a pod that no node takes does. No process is run.
KUBE_EVENTS_SPAWNER = '''
import asyncio, time
from jupyterhub.spawner import Spawner

class KubeEventsSpawner(Spawner):
    def _script(self):
        return (self.user_options or {}).get("k8s_events") or []

    async def start(self):
        self._started_at = time.time()
        last = max((offset for offset, *_ in self._script()), default=0)
        await asyncio.sleep(last + 0.5)
        fail = (self.user_options or {}).get("k8s_fail")
        if fail:
            raise TimeoutError(fail)
        await asyncio.sleep(3600)  # pending, like a pod no node takes, until the spawn is cancelled

    async def progress(self):
        for number, (offset, kind, reason, message) in enumerate(self._script()):
            await asyncio.sleep(max(0.0, self._started_at + offset - time.time()))
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            raw_event = {
                "metadata": {"name": f"jupyter-canary.{number}", "namespace": "jhub", "uid": str(number)},
                "involvedObject": {"kind": "Pod", "name": "jupyter-canary", "namespace": "jhub"},
                "reason": reason, "type": kind, "message": message,
                "lastTimestamp": stamp, "eventTime": None,
            }
            yield {"progress": 30 + number, "raw_event": raw_event,
                   "message": "%s [%s] %s" % (raw_event["lastTimestamp"] or raw_event["eventTime"], kind, message)}

    async def stop(self, now=False):
        pass

    async def poll(self):
        return 0  # never running: no server was ever started

c.JupyterHub.spawner_class = KubeEventsSpawner
'''

UNSCHEDULABLE = [
    [0.3, "Warning", "FailedScheduling",
     "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are "
     "available: 3 Preemption is not helpful for scheduling."],
    [0.8, "Normal", "NotTriggerScaleUp", "pod didn't trigger scale-up: 1 node(s) didn't match Pod's node affinity/selector"],
]
IMAGE_PULL = [
    [0.3, "Normal", "Scheduled", "Successfully assigned jhub/jupyter-canary to node-1"],
    [0.5, "Normal", "Pulling", 'Pulling image "quay.io/jupyter/missing:1.0"'],
    [0.8, "Warning", "Failed", 'Failed to pull image "quay.io/jupyter/missing:1.0": rpc error: code = NotFound '
     'desc = failed to pull and unpack image "quay.io/jupyter/missing:1.0": not found'],
    [0.9, "Warning", "Failed", "Error: ErrImagePull"],
    [1.2, "Normal", "BackOff", 'Back-off pulling image "quay.io/jupyter/missing:1.0"'],
    [1.3, "Warning", "Failed", "Error: ImagePullBackOff"],
]


@pytest.fixture(scope="module")
def kube_events_hub(tmp_path_factory):
    from tests.localhub import LocalHub, until_stopped

    # The hub's default slow_spawn_timeout (10 s): the events come while the spawn request is in flight.
    hub = LocalHub(tmp_path_factory.mktemp("kube_events_hub"), slow_spawn_timeout=10, extra_config=KUBE_EVENTS_SPAWNER)
    yield from until_stopped(hub.start(), "the kube events hub")


def _canary(hub, user: str, tmp_path, options: dict, *args: str):
    import json

    from tests.runner import run_main

    hub.create_user(user)
    token = hub.new_token(user)
    termination = tmp_path / "termination-log"
    run = run_main(
        ["--hub-url", hub.url, "--user", user, "--user-options", json.dumps(options), "--attempts", "1",
         "--termination-log", str(termination), *args],
        env={"JUPYTERHUB_API_TOKEN": token},
    )
    run.assert_no_secret(token, hub.admin_token)
    assert hub.servers(user) == {}, "the canary stopped what it started"
    return run, json.loads(termination.read_text())


@pytest.mark.hub
def test_a_pod_no_node_takes_times_out_as_unschedulable(kube_events_hub, hub_user, tmp_path):
    from app.exit_codes import ExitCode

    if not kube_events_hub.cancels_pending_spawns:
        pytest.skip("JupyterHub before 5.1 cannot cancel a pending spawn: a spawn timeout there ends in 13 "
                    "(tests/test_cycle.py::test_spawn_timeout_cleans_up), so its cause cannot be the news")
    run, termination = _canary(kube_events_hub, hub_user(), tmp_path, {"k8s_events": UNSCHEDULABLE},
                               "--spawn-timeout", "4", "--stop-timeout", "30", "--deadline", "60")
    assert run.exit_code == ExitCode.SPAWN_TIMEOUT, run.output
    assert run.result["reason"] == "spawn_timeout"
    assert run.result["cause"] == termination["cause"] == "unschedulable"
    reasons = [e.get("reason") for e in run.result["timeline"]]
    assert reasons.count("FailedScheduling") == 1 and reasons.count("NotTriggerScaleUp") == 1, run.result["timeline"]
    assert [e["cause"] for e in run.named("spawn_cause")] == ["unschedulable"]


@pytest.mark.hub
def test_a_scheduling_failure_the_autoscaler_resolved_is_not_the_timeouts_cause(kube_events_hub, hub_user, tmp_path):
    """The scale-from-zero story on the real hub: the spawn times out while the image is pulled."""
    from app.exit_codes import ExitCode

    if not kube_events_hub.cancels_pending_spawns:
        pytest.skip("JupyterHub before 5.1 cannot cancel a pending spawn: a spawn timeout there ends in 13")
    script = [[0.2 + 0.3 * number, *event] for number, event in enumerate(SCALE_FROM_ZERO)]
    run, termination = _canary(kube_events_hub, hub_user(), tmp_path, {"k8s_events": script},
                               "--spawn-timeout", "4", "--stop-timeout", "30", "--deadline", "60")
    assert run.exit_code == ExitCode.SPAWN_TIMEOUT, run.output
    assert [e.get("reason") for e in run.result["timeline"] if e.get("reason")] == [r for _, r, _ in SCALE_FROM_ZERO]
    assert run.result["cause"] == termination["cause"] == "timeout"
    assert [e["cause"] for e in run.named("spawn_cause")] == ["timeout"]


@pytest.mark.hub
def test_an_image_that_cannot_be_pulled_fails_the_spawn_as_image_pull(kube_events_hub, hub_user, tmp_path):
    from app.exit_codes import ExitCode

    fail = "pod jhub/jupyter-canary did not start in 2 seconds!"  # KubeSpawner's start timeout
    run, termination = _canary(kube_events_hub, hub_user(), tmp_path, {"k8s_events": IMAGE_PULL, "k8s_fail": fail},
                               "--spawn-timeout", "30", "--stop-timeout", "30", "--deadline", "60")
    assert run.exit_code == ExitCode.SPAWN_FAILED, run.output
    assert run.result["reason"] == "spawn_failed"
    assert run.result["cause"] == termination["cause"] == "image_pull"
    timeline = run.result["timeline"]
    assert [e.get("reason") for e in timeline if e.get("reason")] == [r for _, _, r, _ in IMAGE_PULL]
    # JupyterHub's own last word, after the relayed events.
    assert timeline[-1]["message"] == f"Spawn failed: {fail}"
