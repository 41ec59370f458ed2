"""The files a Kubernetes client is configured with, for an API server of the tests (the real one of
tests/controlplane.py, the HTTPS stub of tests/k8s_stub.py): a kubeconfig, and the directory a pod's
service-account token, CA and namespace are mounted in."""

from __future__ import annotations

import json
from pathlib import Path


class KubeClientFiles:
    """Mixed into a server class that has `url` and `ca_file`."""

    url: str
    ca_file: Path

    def write_kubeconfig(self, path: Path, token: str, namespace: str = "default") -> Path:
        """A kubeconfig whose current context reaches this server with a bearer `token`."""
        return self._write_kubeconfig(path, {"token": token}, namespace)

    def _write_kubeconfig(self, path: Path, user: dict, namespace: str | None = None) -> Path:
        """Written as JSON, which is YAML too, so no YAML writer is needed."""
        context = {"cluster": "local", "user": "user", **({"namespace": namespace} if namespace else {})}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "local", "context": context}],
            "current-context": "local",
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    def write_serviceaccount_dir(self, dir: Path, token: str, namespace: str) -> Path:
        """`token`, `ca.crt` and `namespace` files, like a pod's /var/run/secrets/kubernetes.io/serviceaccount."""
        dir = Path(dir)
        dir.mkdir(parents=True, exist_ok=True)
        (dir / "token").write_text(token, encoding="utf-8")
        (dir / "ca.crt").write_bytes(self.ca_file.read_bytes())
        (dir / "namespace").write_text(namespace, encoding="utf-8")
        return dir
