"""A real JupyterHub with KubeSpawner (PyPI `jupyterhub-kubespawner`) on the host, spawning real user
pods on the test node: `LocalHub` (tests/localhub.py) with tests/kubespawner_config.py as its extra
configuration.

The hub and its proxy listen on the node network's gateway address (the pods, the canary's CronJob
pod among them, reach them there); KubeSpawner reads and writes pods through the apiserver as a
ServiceAccount with the Role zero-to-jupyterhub gives its hub, in the test's namespace (which enforces
the "restricted" Pod Security Standard).

Nothing is left: `stop()` stops the hub (which deletes its pods: cleanup_servers), then `leftover_pods()`
says whether any single-user pod is still there.
"""

from __future__ import annotations

import json
from pathlib import Path

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


class KubeSpawnerHub(LocalHub):
    """See the module docstring. `cluster` is the started node (tests/node.py): its `bridge_address`
    (the pod network's gateway), `kubectl` and the ServiceAccount helpers of tests/controlplane.py."""

    def __init__(self, workdir: Path, cluster, namespace: str, *, start_timeout: int = 60,
                 http_timeout: int = 30, slow_spawn_timeout: float | None = None):
        workdir = Path(workdir)
        self.cluster = cluster
        self.namespace = namespace
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
