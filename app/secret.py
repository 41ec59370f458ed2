"""Reading the API token from a Kubernetes Secret with the `kubernetes` client.

The client is imported only here and only when a Secret is read: importing its CoreV1Api costs
most of a second, which a token file or variable should not pay.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from app.errors import ConfigError, KubernetesUnavailable, PermissionDenied

# Where Kubernetes mounts a pod's service-account token, CA and namespace. Tests point it elsewhere.
SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def own_namespace() -> str | None:
    """The pod's own namespace, when running in a pod."""
    try:
        return (SERVICEACCOUNT_DIR / "namespace").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _api_client():
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
        raise ConfigError(f"cannot configure the Kubernetes client to read the token Secret: {exc}") from None
    configuration.retries = 2
    return client.ApiClient(configuration)


def read_secret_token(name: str, key: str, namespace: str, request_timeout: float) -> str:
    """Return the decoded value of `key` in Secret `namespace/name`, whitespace stripped."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    where = f"Secret {namespace}/{name}"
    api = client.CoreV1Api(_api_client())
    try:
        found = api.read_namespaced_secret(name, namespace, _request_timeout=request_timeout)
    except ApiException as exc:
        # Only the status: the exception's text carries the response headers and body.
        if exc.status == 404:
            raise ConfigError(f"{where} not found (check --token-secret and --token-secret-namespace)") from None
        if exc.status in (401, 403):
            raise PermissionDenied(
                f"Kubernetes answered {exc.status} {exc.reason} when reading {where}: "
                "the canary's ServiceAccount needs 'get' on that Secret"
            ) from None
        raise KubernetesUnavailable(f"Kubernetes answered {exc.status} {exc.reason} when reading {where}") from None
    except (HTTPError, OSError) as exc:
        raise KubernetesUnavailable(f"cannot reach the Kubernetes API to read {where}: {type(exc).__name__}") from None
    finally:
        api.api_client.close()

    data = found.data or {}
    if key not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise ConfigError(f"{where} has no key {key!r} (keys: {keys}); set --token-secret-key")
    try:
        return base64.b64decode(data[key], validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        raise ConfigError(f"{where} key {key!r} is not base64-encoded UTF-8 text") from None
