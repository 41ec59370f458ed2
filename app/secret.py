"""Reading and writing the API token in a Kubernetes Secret with the `kubernetes` client.

The client is imported only here and only when a Secret is used: importing its CoreV1Api costs
most of a second, which a token file or variable should not pay.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from app.errors import ConfigError, KubernetesUnavailable, PermissionDenied

# Where Kubernetes mounts a pod's service-account token, CA and namespace. Tests point it elsewhere.
SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def own_namespace() -> str | None:
    """The pod's own namespace, when running in a pod."""
    try:
        return (SERVICEACCOUNT_DIR / "namespace").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _api_client() -> Any:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.incluster_config.InClusterConfigLoader(
                token_filename=str(SERVICEACCOUNT_DIR / "token"),
                cert_filename=str(SERVICEACCOUNT_DIR / "ca.crt"),
            ).load_and_set(configuration)
        else:
            # KUBECONFIG is read by the client at import time; read it now so the caller's value counts.
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config"),
                client_configuration=configuration,
            )
    except (ConfigException, OSError) as exc:
        raise ConfigError(f"cannot configure the Kubernetes client to reach the token Secret: {exc}") from None
    configuration.retries = 2
    return client.ApiClient(configuration)


class SecretStore:
    """One Secret, read and written through the Kubernetes API."""

    def __init__(self, name: str, namespace: str, request_timeout: float):
        from kubernetes import client

        self.name = name
        self.namespace = namespace
        self.where = f"Secret {namespace}/{name}"
        self._timeout = request_timeout
        self._api = client.CoreV1Api(_api_client())

    def close(self) -> None:
        self._api.api_client.close()

    def __enter__(self) -> SecretStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self, verb: str) -> Iterator[None]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            yield
        except ApiException as exc:
            # Only the status: the exception's text carries the response headers and body.
            if exc.status == 404:
                raise ConfigError(f"{self.where} not found (check the Secret's name and namespace)") from None
            if exc.status in (401, 403):
                raise PermissionDenied(
                    f"Kubernetes answered {exc.status} {exc.reason} to {verb} {self.where}: "
                    f"the ServiceAccount needs '{verb}' on that Secret"
                ) from None
            raise KubernetesUnavailable(f"Kubernetes answered {exc.status} {exc.reason} to {verb} {self.where}") from None
        except (HTTPError, OSError) as exc:
            raise KubernetesUnavailable(f"cannot reach the Kubernetes API to {verb} {self.where}: {type(exc).__name__}") from None

    def read(self) -> Any:
        """The Secret (a V1Secret); ConfigError when it does not exist."""
        with self._errors("get"):
            return self._api.read_namespaced_secret(self.name, self.namespace, _request_timeout=self._timeout)

    def read_key(self, key: str) -> str:
        """The decoded value of `key`, whitespace stripped."""
        data = self.read().data or {}
        if key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise ConfigError(f"{self.where} has no key {key!r} (keys: {keys}); set the Secret key option")
        try:
            return base64.b64decode(data[key], validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError(f"{self.where} key {key!r} is not base64-encoded UTF-8 text") from None

    def write_key(self, key: str, value: str, labels: Mapping[str, str], annotations: Mapping[str, str]) -> str:
        """Create the Secret, or update `key`, labels and annotations in place; 'created' or 'updated'."""
        from kubernetes import client

        encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
        try:
            current = self.read()
        except ConfigError:
            current = None
        if current is None:
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(
                    name=self.name, namespace=self.namespace, labels=dict(labels), annotations=dict(annotations)
                ),
                type="Opaque",
                data={key: encoded},
            )
            with self._errors("create"):
                self._api.create_namespaced_secret(self.namespace, body, _request_timeout=self._timeout)
            return "created"
        # Replace with the resourceVersion just read: a concurrent writer makes this fail, not vanish.
        current.data = {**(current.data or {}), key: encoded}
        current.metadata.labels = {**(current.metadata.labels or {}), **labels}
        current.metadata.annotations = {**(current.metadata.annotations or {}), **annotations}
        with self._errors("update"):
            self._api.replace_namespaced_secret(self.name, self.namespace, current, _request_timeout=self._timeout)
        return "updated"


def read_secret_token(name: str, key: str, namespace: str, request_timeout: float) -> str:
    """Return the decoded value of `key` in Secret `namespace/name`, whitespace stripped."""
    with SecretStore(name, namespace, request_timeout) as store:
        return store.read_key(key)
