"""A real JupyterHub with KubeSpawner (PyPI `jupyterhub-kubespawner`) on the host, spawning real user
pods on the test node: `LocalHub` (tests/localhub.py) with tests/kubespawner_config.py as its extra
configuration.

The hub and its proxy listen on the node network's gateway address (the pods, the canary's CronJob
pod among them, reach them there); KubeSpawner reads and writes pods through the apiserver as a
ServiceAccount with the Role zero-to-jupyterhub gives its hub, in the test's namespace (which enforces
the "restricted" Pod Security Standard).

Nothing is left: `stop()` stops the hub (which deletes its pods: cleanup_servers), then `leftover_pods()`
says whether any single-user pod is still there.

Fresh users (issue 20, the canary's --fresh-user): the hub has the service FRESH_SERVICE whose token
(`fresh_token`) has the least scopes the canary needs for the users FRESH_USERS, filtered to each
name; their servers get a home on a PersistentVolumeClaim of their own (the "home" behaviours of
tests/kubespawner_config.py) that binds only to a PersistentVolume a test makes with `home_volume`:
a hostPath directory on the node, prebound to that user's claim, reclaim policy Retain (a deleted
claim leaves it Released, never bound again: each run gets a new one, as the issue has it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

from kubespawner.slugs import safe_slug

from tests import userimage
from tests.localhub import LocalHub

CONFIG = Path(__file__).resolve().parent / "kubespawner_config.py"
SERVICE_ACCOUNT = "canary-test-hub"
# zero-to-jupyterhub's hub Role (jupyterhub/templates/hub/rbac.yaml), less what KubeSpawner needs only
# for internal TLS (secrets).
HUB_RULES = [
    {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims", "services"],
     "verbs": ["get", "watch", "list", "create", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
]
# KubeSpawner labels each user pod so (kubespawner/spawner.py: common_labels, component).
USER_POD_SELECTOR = "component=singleuser-server"
MISSING_IMAGE = f"{userimage.NAME}:not-on-this-node"
MISSING_CLAIM = "claim-that-does-not-exist"
# KubeSpawner labels each user's claim so (kubespawner/spawner.py: get_pvc_manifest).
USER_CLAIM_SELECTOR = "component=singleuser-storage"
STORAGE_CLASS = "manual"  # no StorageClass of that name: nothing provisions, claims bind to our volumes only
STORAGE_CAPACITY = "16Mi"
# The stand-in proxied app (tests/proxy_standin.py) in the "home" pods, from this ConfigMap.
STANDIN_CONFIGMAP = "canary-proxy-standin"
# The "home_init" init container passes only on a home that holds this file (a new home does not).
SEEDED_MARKER = ".canary-home-seeded"
STANDIN_FILE = Path(__file__).resolve().parent / "proxy_standin.py"
FRESH_SERVICE = "jupyterhub-canary-service"
FRESH_PREFIX = "jupyterhub-canary-fresh-"
FRESH_USERS = tuple(f"{FRESH_PREFIX}{probe}" for probe in ("home", "novolume", "init", "quota", "urls", "sigterm"))


class KubeSpawnerHub(LocalHub):
    """See the module docstring. `cluster` is the started node (tests/node.py): its `bridge_address`
    (the pod network's gateway), `kubectl` and the ServiceAccount helpers of tests/controlplane.py."""

    def __init__(self, workdir: Path, cluster, namespace: str, *, start_timeout: int = 60,
                 http_timeout: int = 30, slow_spawn_timeout: float | None = None):
        workdir = Path(workdir)
        self.cluster = cluster
        self.namespace = namespace
        self.fresh_token = secrets.token_hex(16)
        self._standin_configmap()
        token = cluster.service_account_with_role(namespace, SERVICE_ACCOUNT, HUB_RULES)
        kubeconfig = cluster.write_kubeconfig(workdir.parent / f"{workdir.name}-hub.kubeconfig", token, namespace)
        settings = {
            "address": cluster.bridge_address,
            "namespace": namespace,
            "image": userimage.tag(),
            "missing_image": MISSING_IMAGE,
            "missing_claim": MISSING_CLAIM,
            "uid": userimage.UID,
            "start_timeout": start_timeout,
            "http_timeout": http_timeout,
            "workdir": str(workdir.resolve()),
            "home": userimage.HOME,
            "storage_class": STORAGE_CLASS,
            "storage_capacity": STORAGE_CAPACITY,
            "standin_configmap": STANDIN_CONFIGMAP,
            "seeded_marker": SEEDED_MARKER,
            "fresh_service": FRESH_SERVICE,
            "fresh_token": self.fresh_token,
            "fresh_users": list(FRESH_USERS),
        }
        super().__init__(
            workdir, slow_spawn_timeout=slow_spawn_timeout, ip=cluster.bridge_address,
            extra_config=CONFIG.read_text(encoding="utf-8"), settings=settings,
            # kubernetes_asyncio reads $KUBECONFIG when imported; no in-cluster config on the host.
            env={"KUBECONFIG": str(kubeconfig)},
        )

    def user_pods(self) -> list[dict]:
        """The single-user pods in the namespace (any hub's: the namespace is this test's)."""
        done = self.cluster.kubectl("-n", self.namespace, "get", "pods", "-l", USER_POD_SELECTOR, "-o", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["items"]

    def pod_events(self, pod: str) -> list[dict]:
        """The Kubernetes events of one pod, oldest first."""
        done = self.cluster.kubectl("-n", self.namespace, "get", "events", "--field-selector",
                                    f"involvedObject.name={pod}", "-o", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["items"]

    # --- fresh users' homes ---

    def _standin_configmap(self) -> None:
        data = {"init": "", "proxy_standin": STANDIN_FILE.read_text(encoding="utf-8"),
                "server_config": json.dumps({"ServerApp": {"jpserver_extensions": {"tests.proxy_standin": True}}})}
        manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": STANDIN_CONFIGMAP}, "data": data}
        done = self.cluster.kubectl("-n", self.namespace, "apply", "-f", "-", input=json.dumps(manifest))
        assert done.returncode == 0, done.stderr

    @staticmethod
    def claim_name(user: str) -> str:
        """The name KubeSpawner gives the user's claim (pvc_name_template "claim-{user_server}", safe slugs)."""
        return f"claim-{safe_slug(user, max_length=48)}"

    def home_volume(self, user: str, *, seeded: bool = False) -> str:
        """A new PersistentVolume for `user`'s claim: an empty directory on the node owned by the pods'
        user (with the init container's marker if `seeded`), prebound to the claim. Its name."""
        name = f"home-{secrets.token_hex(4)}"
        directory = self.workdir / "homes" / name
        directory.mkdir(parents=True)
        if seeded:
            (directory / SEEDED_MARKER).write_text("seeded\n")
        for path in (directory, *directory.iterdir()):
            os.chown(path, userimage.UID, userimage.UID)
        manifest = {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": STORAGE_CAPACITY}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {"namespace": self.namespace, "name": self.claim_name(user)},
            },
        }
        done = self.cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
        assert done.returncode == 0, done.stderr
        return name

    def volume(self, name: str) -> dict | None:
        """A PersistentVolume, or None once it is gone."""
        done = self.cluster.kubectl("get", "pv", name, "-o", "json", "--ignore-not-found")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else None

    def remove_home_volume(self, name: str) -> None:
        done = self.cluster.kubectl("delete", "pv", name, "--ignore-not-found", "--wait=true", timeout=60)
        assert done.returncode == 0, done.stderr
        shutil.rmtree(self.workdir / "homes" / name, ignore_errors=True)

    def claims(self) -> list[dict]:
        """The users' claims in the namespace."""
        done = self.cluster.kubectl("-n", self.namespace, "get", "pvc", "-l", USER_CLAIM_SELECTOR, "-o", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["items"]

    def user_exists(self, name: str) -> bool:
        r = self.api("GET", f"users/{name}")
        assert r.status_code in (200, 404), r.text
        return r.status_code == 200
