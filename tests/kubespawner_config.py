"""The KubeSpawner part of the test hub's configuration: LocalHub runs it after tests/hub_config.py as
its `extra_config` (tests/kubespawner_hub.py passes this file's text), so everything here wins.

KubeSpawner starts each single-user server as a pod on the test node (tests/node.py), in the test's
namespace, from the locally built user image (tests/userimage.py) with imagePullPolicy Never. It
talks to the apiserver with the kubeconfig in $KUBECONFIG (a ServiceAccount bound to the Role
zero-to-jupyterhub gives its hub). The pods reach the hub at the node network's gateway address
(LocalHub's `ip`, where the hub and the proxy listen); the proxy reaches each pod at its pod IP
(KubeSpawner's default without Services): no name is ever looked up.

The settings come from the parameters file (params["settings"], see kubespawner_hub.py). One hub
covers success and the real spawn failures: a `pre_spawn_hook` picks a *behaviour* per spawn from
the user_options key "behaviour" (the canary's --user-options), else "normal":

=============  =======================================================  ============================
behaviour      what the pod gets                                        what Kubernetes then says
=============  =======================================================  ============================
normal         the user image, `jupyterhub-singleuser`                  Scheduled, Pulled ("already
                                                                        present"), Created, Started
unschedulable  a nodeSelector that no node matches                      FailedScheduling
image_pull     an image that is not on the node (pull policy Never)     ErrImageNeverPull
crash          a command that is not in the image: the container        BackOff ("Back-off
               cannot start, the kubelet tries again and again          restarting failed container")
exits          a command that runs 2 s, then exits 3                    Started, then BackOff; but
                                                                        KubeSpawner saw it running
volume         a volume from a PersistentVolumeClaim that does not      FailedScheduling naming the
               exist                                                    missing claim
=============  =======================================================  ============================

user_options "start_timeout" and "http_timeout" (seconds) set KubeSpawner's for that spawn: a
failure that shows within seconds need not wait for the configured ones.
"""

import json as _json
import os as _os
from pathlib import Path as _Path

_settings = _json.loads(_Path(_os.environ["LOCALHUB_PARAMS"]).read_text(encoding="utf-8"))["settings"]

KUBESPAWNER_BEHAVIOURS = ("normal", "unschedulable", "image_pull", "crash", "exits", "volume")
CRASH_COMMAND = "/opt/jupyter/bin/no-such-command"

c = globals()["c"]  # the hub's config: tests/hub_config.py runs this file with it
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
# The hub's own API (the single-user servers report to it) on the bridge address too, not loopback.
c.JupyterHub.hub_ip = _settings["address"]
c.JupyterHub.hub_connect_ip = _settings["address"]
c.KubeSpawner.namespace = _settings["namespace"]
c.KubeSpawner.image = _settings["image"]
c.KubeSpawner.image_pull_policy = "Never"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.ip = "0.0.0.0"  # in the pod, for the proxy (hub_config.py's 127.0.0.1 is for local processes)
c.KubeSpawner.args = []  # not hub_config.py's --allow-root: the pod runs as a user
c.KubeSpawner.start_timeout = _settings["start_timeout"]
c.KubeSpawner.http_timeout = _settings["http_timeout"]
# The namespace enforces the "restricted" Pod Security Standard.
c.KubeSpawner.uid = _settings["uid"]
c.KubeSpawner.gid = _settings["uid"]
c.KubeSpawner.container_security_context = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Small requests: the node is a shared 2-core machine.
c.KubeSpawner.cpu_guarantee = 0.05
c.KubeSpawner.mem_guarantee = "64M"
# A stopped pod goes at once: the server holds no user data worth a grace period.
c.KubeSpawner.delete_grace_period = 1
# A request to the apiserver may take seconds on this shared machine: a create that times out is sent
# again, finds its own pod (409) and deletes it.
c.KubeSpawner.k8s_api_request_timeout = 20

def _kubespawner_pre_spawn_hook(spawner):
    options = dict(spawner.user_options or {})
    behaviour = options.get("behaviour", "normal")
    if behaviour not in KUBESPAWNER_BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}; known: {', '.join(KUBESPAWNER_BEHAVIOURS)}")
    with open(_Path(_settings["workdir"]) / "spawns.jsonl", "a", encoding="utf-8") as f:
        f.write(_json.dumps({"user": spawner.user.name, "server_name": spawner.name, "user_options": options,
                             "behaviour": behaviour, "pod": spawner.pod_name}) + "\n")
    # The spawner object is reused for the next spawn of the same server: reset what a behaviour changes.
    if not hasattr(spawner, "_localhub_initial"):
        spawner._localhub_initial = {name: getattr(spawner, name) for name in (
            "image", "cmd", "node_selector", "volumes", "volume_mounts", "start_timeout", "http_timeout")}
    for name, value in spawner._localhub_initial.items():
        setattr(spawner, name, value)
    for timeout in ("start_timeout", "http_timeout"):
        if timeout in options:
            setattr(spawner, timeout, int(options[timeout]))
    if behaviour == "unschedulable":
        spawner.node_selector = {"jupyterhub-canary.test/no-such-node": "true"}
    elif behaviour == "image_pull":
        spawner.image = _settings["missing_image"]
    elif behaviour == "crash":
        # Not a command that runs and exits: KubeSpawner's start ends (and its relay of events with it)
        # the moment the container runs once; a command that cannot start never runs.
        spawner.cmd = [CRASH_COMMAND]
    elif behaviour == "exits":
        spawner.cmd = ["python3", "-c", "import sys, time; time.sleep(2); sys.exit(3)"]
    elif behaviour == "volume":
        spawner.volumes = [{"name": "home", "persistentVolumeClaim": {"claimName": _settings["missing_claim"]}}]
        spawner.volume_mounts = [{"name": "home", "mountPath": "/home/jovyan/work"}]


c.KubeSpawner.pre_spawn_hook = _kubespawner_pre_spawn_hook
