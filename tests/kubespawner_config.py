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
home           the user's own PersistentVolumeClaim (KubeSpawner's      Scheduled once the claim is
               storage_pvc_ensure, class "manual") as the home ($HOME,  bound; with no volume to
               the server's root), and the stand-in proxied app         bind: FailedScheduling
               (tests/proxy_standin.py, from the ConfigMap              ("unbound immediate
               STANDIN_CONFIGMAP) at <server>/standin-app/              PersistentVolumeClaims")
home_init      home, and an init container on the home that fails       BackOff ("Back-off restarting
               unless the home holds SEEDED_MARKER (a new home does     failed container seed-home"),
               not: it stands for the chown or gitpuller init           its field path spec.
               container that meets a new home first)                   initContainers{seed-home}
=============  =======================================================  ============================

The claims are statically provisioned: class "manual" has no StorageClass and no provisioner, so a
claim binds only to a PersistentVolume a test made for it (KubeSpawnerHub.home_volume); without one
it stays Pending, as on a cluster whose provisioner is broken. Deleting the user deletes the claim
(delete_pvc, KubeSpawner's delete_forever).

user_options "start_timeout" and "http_timeout" (seconds) set KubeSpawner's for that spawn: a
failure that shows within seconds need not wait for the configured ones.
"""

import json as _json
import os as _os
from pathlib import Path as _Path

_settings = _json.loads(_Path(_os.environ["LOCALHUB_PARAMS"]).read_text(encoding="utf-8"))["settings"]

KUBESPAWNER_BEHAVIOURS = ("normal", "unschedulable", "image_pull", "crash", "exits", "volume", "home", "home_init")
CRASH_COMMAND = "/opt/jupyter/bin/no-such-command"
STANDIN_DIR = "/opt/standin"
SEEDED_MARKER = _settings["seeded_marker"]

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
SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
c.KubeSpawner.container_security_context = SECURITY_CONTEXT
# Small requests: the node is a shared 2-core machine.
c.KubeSpawner.cpu_guarantee = 0.05
c.KubeSpawner.mem_guarantee = "64M"
# A stopped pod goes at once: the server holds no user data worth a grace period.
c.KubeSpawner.delete_grace_period = 1
# The "home" behaviours' claims (storage_pvc_ensure is set per spawn): static provisioning, deleted with the user.
c.KubeSpawner.storage_class = _settings["storage_class"]
c.KubeSpawner.storage_capacity = _settings["storage_capacity"]
c.KubeSpawner.storage_access_modes = ["ReadWriteOnce"]
c.KubeSpawner.delete_pvc = True
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
            "image", "cmd", "node_selector", "volumes", "volume_mounts", "start_timeout", "http_timeout",
            "storage_pvc_ensure", "environment", "init_containers")}
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
    elif behaviour in ("home", "home_init"):
        _home(spawner, init=behaviour == "home_init")


def _home(spawner, *, init):
    """The user's own claim as the home, and the stand-in proxied app (module docstring)."""
    spawner.storage_pvc_ensure = True
    home = {"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}
    standin = {"name": "standin", "configMap": {"name": _settings["standin_configmap"], "items": [
        {"key": "init", "path": "tests/__init__.py"},
        {"key": "proxy_standin", "path": "tests/proxy_standin.py"},
        {"key": "server_config", "path": "config/jupyter_server_config.json"}]}}
    spawner.volumes = [home, standin]
    spawner.volume_mounts = [{"name": "home", "mountPath": _settings["home"]},
                             {"name": "standin", "mountPath": STANDIN_DIR, "readOnly": True}]
    spawner.environment = {**spawner.environment, "PYTHONPATH": STANDIN_DIR,
                           "JUPYTER_CONFIG_PATH": f"{STANDIN_DIR}/config"}
    if init:
        spawner.init_containers = [{
            "name": "seed-home",
            "image": _settings["image"],
            "imagePullPolicy": "Never",
            # (No braces: KubeSpawner formats the init containers' strings with the user's fields.)
            "command": ["sh", "-c", f'test -e "$HOME/{SEEDED_MARKER}" || (echo "a new home, not seeded" >&2; exit 1)'],
            "volumeMounts": [{"name": "home", "mountPath": _settings["home"]}],
            "securityContext": {**SECURITY_CONTEXT, "runAsUser": _settings["uid"],
                                "runAsGroup": _settings["uid"]},
            "resources": {"requests": {"cpu": "10m", "memory": "16M"}},
        }]


c.KubeSpawner.pre_spawn_hook = _kubespawner_pre_spawn_hook

# The canary's service for --fresh-user: the least scopes, each filtered to one fresh user's name.
_major = int(__import__("jupyterhub").__version__.split(".")[0])
_server_scopes = ("read:servers", "start:servers", "delete:servers") if _major >= 6 else ("servers",)
c.JupyterHub.services = [*c.JupyterHub.services, {"name": _settings["fresh_service"], "api_token": _settings["fresh_token"]}]
c.JupyterHub.load_roles = [*c.JupyterHub.load_roles, {
    "name": _settings["fresh_service"],
    "services": [_settings["fresh_service"]],
    "scopes": [f"{scope}!user={name}" for name in _settings["fresh_users"]
               for scope in ("admin:users", "tokens", "access:servers", *_server_scopes)],
}]
