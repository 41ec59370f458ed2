"""Reading and writing the API token in a Kubernetes Secret with the `kubernetes` client.

The client is imported only here and only when a Secret is used: importing its CoreV1Api costs
most of a second, which a token file or variable should not pay.

Every call is bounded by the run's deadline as a whole: the client takes a timeout only as an `int`
or a (connect, read) tuple (a float is silently ignored), and a read timeout is per socket read, so
its connections are also watched by app/transport.py's watchdog. Its TLS is verified with
VERIFY_X509_STRICT set explicitly (Python 3.13, which the image ships, sets it by default; 3.11 does
not), so a CA certificate that strict checks reject fails alike everywhere, with the reason named;
--kube-relaxed-x509 clears that one flag, nothing else.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from app.deadline import Deadline
from app.errors import ConfigError, KubernetesUnavailable, PermissionDenied
from app.transport import Watchdog, watch_pools

RELAXED_HINT = (
    "the cluster's own CA certificate fails only strict X.509 checks (e.g. it has no keyUsage; "
    "Python 3.13 makes them by default): "
    "mount the token Secret as a file instead (--token-file, the chart's token.mount), "
    "or pass --kube-relaxed-x509 (CANARY_KUBE_RELAXED_X509) to accept it, still verified"
)

# Where Kubernetes mounts a pod's service-account token, CA and namespace. Tests point it elsewhere.
SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def own_namespace() -> str | None:
    """The pod's own namespace, when running in a pod."""
    try:
        return (SERVICEACCOUNT_DIR / "namespace").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def tls_context(relaxed_x509: bool) -> ssl.SSLContext:
    """The Kubernetes client's TLS context: urllib3's, strict X.509 checks set or cleared explicitly."""
    from urllib3.util.ssl_ import create_urllib3_context

    context = create_urllib3_context()
    # As Python 3.13 does by default, on every Python: the same certificates pass or fail everywhere.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    if relaxed_x509:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


def _cause(exc: BaseException) -> str:
    """What ended a Kubernetes API call, in a few words: a TLS verification failure's own reason,
    else the innermost error's type and text (urllib3 wraps it in MaxRetryError)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {current.verify_message}"
        inner = getattr(current, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in current.args if isinstance(a, BaseException)), None)
        current = inner or current.__cause__ or current.__context__
    innermost = seen[-1]
    text = " ".join(str(innermost).split())[:200]
    return f"{type(exc).__name__}" + (f" ({type(innermost).__name__}: {text})" if innermost is not exc else "")


def _api_client(relaxed_x509: bool) -> Any:
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
    api_client = client.ApiClient(configuration)
    manager = watch_pools(api_client.rest_client.pool_manager)
    manager.connection_pool_kw["ssl_context"] = tls_context(relaxed_x509)
    return api_client


def call_timeout(deadline: Deadline, request_timeout: float) -> tuple[float, float]:
    """(connect, read) for one call: the kubernetes client ignores a float."""
    seconds = deadline.for_wait(request_timeout)
    return (seconds, seconds)


@contextlib.contextmanager
def bounded_call(deadline: Deadline, what: str, *, relaxed_x509: bool) -> Iterator[None]:
    """One Kubernetes API call (`what`: its verb and object), within `deadline` whatever the apiserver
    does: a watchdog cuts a silent or trickling answer; a transport failure is KubernetesUnavailable
    naming its cause (and the way out of a strict-X.509 refusal)."""
    from urllib3.exceptions import HTTPError

    with Watchdog(deadline) as watchdog, watchdog.active():
        try:
            yield
        except (HTTPError, OSError) as exc:
            cause = _cause(exc)
            if watchdog.fired:
                cause = f"no complete answer within the deadline ({deadline.seconds:g}s): {cause}"
            strict = "certificate verify failed" in cause and not relaxed_x509
            hint = f"; if {RELAXED_HINT}" if strict else ""
            raise KubernetesUnavailable(f"cannot reach the Kubernetes API to {what}: {cause}{hint}") from None


@contextlib.contextmanager
def api_call(
    deadline: Deadline, verb: str, where: str, *, relaxed_x509: bool, needs: str, callers: tuple[int, ...] = ()
) -> Iterator[None]:
    """One Kubernetes API call (`bounded_call`) whose refusals are typed: 401 and 403 PermissionDenied
    naming what the ServiceAccount `needs`, the statuses in `callers` left to the caller (ApiException),
    any other KubernetesUnavailable. Only the status: the exception's text carries the response's
    headers and body."""
    from kubernetes.client.exceptions import ApiException

    with bounded_call(deadline, f"{verb} {where}", relaxed_x509=relaxed_x509):
        try:
            yield
        except ApiException as exc:
            if exc.status in callers:
                raise
            if exc.status in (401, 403):
                raise PermissionDenied(
                    f"Kubernetes answered {exc.status} {exc.reason} to {verb} {where}: "
                    f"the ServiceAccount needs '{verb}' {needs}"
                ) from None
            raise KubernetesUnavailable(f"Kubernetes answered {exc.status} {exc.reason} to {verb} {where}") from None


class SecretStore:
    """One Secret, read and written through the Kubernetes API."""

    def __init__(
        self, name: str, namespace: str, deadline: Deadline, *, request_timeout: float, relaxed_x509: bool = False
    ):
        from kubernetes import client

        self.name = name
        self.namespace = namespace
        self.where = f"Secret {namespace}/{name}"
        self._deadline = deadline
        self._request_timeout = request_timeout
        self._relaxed_x509 = relaxed_x509
        self._api = client.CoreV1Api(_api_client(relaxed_x509))

    def close(self) -> None:
        self._api.api_client.close()

    def __enter__(self) -> SecretStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timeout(self) -> tuple[float, float]:
        return call_timeout(self._deadline, self._request_timeout)

    @contextlib.contextmanager
    def _call(self, verb: str) -> Iterator[None]:
        """One API call, bounded by the deadline whatever the apiserver does; its failures typed."""
        from kubernetes.client.exceptions import ApiException

        try:
            with api_call(self._deadline, verb, self.where, relaxed_x509=self._relaxed_x509,
                          needs="on that Secret", callers=(404,)):
                yield
        except ApiException:  # 404
            raise ConfigError(f"{self.where} not found (check the Secret's name and namespace)") from None

    def read(self) -> Any:
        """The Secret (a V1Secret); ConfigError when it does not exist."""
        with self._call("get"):
            return self._api.read_namespaced_secret(self.name, self.namespace, _request_timeout=self._timeout())

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
            with self._call("create"):
                self._api.create_namespaced_secret(self.namespace, body, _request_timeout=self._timeout())
            return "created"
        # Replace with the resourceVersion just read: a concurrent writer makes this fail, not vanish.
        current.data = {**(current.data or {}), key: encoded}
        current.metadata.labels = {**(current.metadata.labels or {}), **labels}
        current.metadata.annotations = {**(current.metadata.annotations or {}), **annotations}
        with self._call("update"):
            self._api.replace_namespaced_secret(self.name, self.namespace, current, _request_timeout=self._timeout())
        return "updated"


def read_secret_token(
    name: str, key: str, namespace: str, deadline: Deadline, *, request_timeout: float, relaxed_x509: bool = False
) -> str:
    """Return the decoded value of `key` in Secret `namespace/name`, whitespace stripped, within `deadline`."""
    with SecretStore(name, namespace, deadline, request_timeout=request_timeout, relaxed_x509=relaxed_x509) as store:
        return store.read_key(key)
