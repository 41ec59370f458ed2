"""The API token in a Kubernetes Secret: read by `run`, written by `token mint` and `token rotate`.

Through app/kube.py (the client, its bounds, its typed refusals). A write is guarded by the
resourceVersion of the Secret as the writer read it: a concurrent writer since then makes it fail
with a conflict (ConcurrentRun), not vanish. A write whose answer is lost is decided by reading
the Secret back: does it hold this run's value? (compared, never logged).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any

from app import logs
from app.deadline import Deadline
from app.errors import ConcurrentRun, ConfigError, KubernetesUnavailable, PermissionDenied
from app.kube import KubeApi, Refused, WriteOutcomeUnknown

log = logs.get_logger()


class SecretStore:
    """One Secret, read and written through the Kubernetes API."""

    def __init__(
        self, name: str, namespace: str, deadline: Deadline, *, request_timeout: float, relaxed_x509: bool = False
    ):
        from kubernetes import client

        self.name = name
        self.namespace = namespace
        self.where = f"Secret {namespace}/{name}"
        self._kube = KubeApi(self.where, deadline, request_timeout=request_timeout, relaxed_x509=relaxed_x509,
                             needs="on that Secret")
        self._api = client.CoreV1Api(self._kube.client)

    def close(self) -> None:
        self._kube.close()

    def __enter__(self) -> SecretStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _not_found(self) -> ConfigError:
        return ConfigError(f"{self.where} not found (check the Secret's name and namespace)")

    def read(self) -> Any:
        """The Secret (a V1Secret); ConfigError when it does not exist."""
        try:
            return self._kube.call(
                "get", lambda timeout: self._api.read_namespaced_secret(self.name, self.namespace, _request_timeout=timeout),
                passes=(404,),
            )
        except Refused:
            raise self._not_found() from None

    def read_key(self, key: str) -> str:
        """The decoded value of `key`, whitespace stripped."""
        return self.key_value(self.read(), key)

    def key_value(self, secret: Any, key: str) -> str:
        """The decoded value of `key` in `secret` (as `read` returned it), whitespace stripped."""
        data = secret.data or {}
        if key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise ConfigError(f"{self.where} has no key {key!r} (keys: {keys}); set the Secret key option")
        try:
            return base64.b64decode(data[key], validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError(f"{self.where} key {key!r} is not base64-encoded UTF-8 text") from None

    def write_key(
        self, key: str, value: str, labels: Mapping[str, str], annotations: Mapping[str, str], *, read: Any = None
    ) -> str:
        """Set `key` (and labels and annotations) in the Secret; 'created' or 'updated'.

        `read` is the Secret as this run read it before deciding to write (a rotation reads the old
        token from it): the update is made only if nobody has written it since. Without `read`, the
        Secret is read now: created when absent, else updated.

        ConcurrentRun: another writer came first (this run's value is not stored).
        WriteOutcomeUnknown: the write's answer was lost and reading the Secret back failed too:
        it may or may not hold `value`. KubernetesUnavailable otherwise: `value` is not stored.
        """
        if read is None:
            try:
                read = self.read()
            except ConfigError:
                read = None
        encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
        if read is None:
            return self._create(key, encoded, value, labels, annotations)
        return self._replace(read, key, encoded, value, labels, annotations)

    def _create(self, key: str, encoded: str, value: str, labels: Mapping[str, str], annotations: Mapping[str, str]) -> str:
        from kubernetes import client

        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=self.name, namespace=self.namespace, labels=dict(labels), annotations=dict(annotations)
            ),
            type="Opaque",
            data={key: encoded},
        )
        try:
            self._kube.call(
                "create", lambda timeout: self._api.create_namespaced_secret(self.namespace, body, _request_timeout=timeout),
                passes=(409,),
            )
        except Refused:  # 409 AlreadyExists
            raise ConcurrentRun(
                f"{self.where} was created by another writer while this run wrote it (a concurrent token command?)"
            ) from None
        except WriteOutcomeUnknown as unknown:
            self._decide(unknown, key, value)
        return "created"

    def _replace(
        self, read: Any, key: str, encoded: str, value: str, labels: Mapping[str, str], annotations: Mapping[str, str]
    ) -> str:
        # The object as read, its resourceVersion included: the apiserver refuses it (409) if the
        # Secret changed since.
        read.data = {**(read.data or {}), key: encoded}
        read.metadata.labels = {**(read.metadata.labels or {}), **labels}
        read.metadata.annotations = {**(read.metadata.annotations or {}), **annotations}
        try:
            self._kube.call(
                "update",
                lambda timeout: self._api.replace_namespaced_secret(self.name, self.namespace, read, _request_timeout=timeout),
                passes=(404, 409),
            )
        except Refused as refused:
            if refused.status == 404:
                raise ConcurrentRun(f"{self.where} was deleted by another writer since this run read it") from None
            raise ConcurrentRun(
                f"{self.where} was written by another writer since this run read it (a concurrent `token rotate`?): "
                "it holds that writer's token"
            ) from None
        except WriteOutcomeUnknown as unknown:
            self._decide(unknown, key, value)
        return "updated"

    def _decide(self, unknown: WriteOutcomeUnknown, key: str, value: str) -> None:
        """The write's answer was lost: return if the Secret holds `value` under `key` (the write was
        made), else raise KubernetesUnavailable (it was not); WriteOutcomeUnknown if the read fails too."""
        log.warning("request_outcome_unknown", request=f"write {self.where}", error=unknown.message)
        try:
            stored = self.read()
        except ConfigError:  # 404: not created
            stored = None
        except (KubernetesUnavailable, PermissionDenied) as failed:
            raise WriteOutcomeUnknown(
                f"{unknown.message}; reading it back to see whether it was written failed too: {failed.message}"
            ) from None
        data = (stored.data or {}) if stored is not None else {}
        holds = key in data and hmac.compare_digest(str(data[key]).encode("utf-8"), base64.b64encode(value.encode("utf-8")))
        if not holds:
            raise KubernetesUnavailable(f"{unknown.message}; read back, {self.where} does not hold this run's value") from None
        log.info("secret_write_confirmed", secret=self.where)


def read_secret_token(
    name: str, key: str, namespace: str, deadline: Deadline, *, request_timeout: float, relaxed_x509: bool = False
) -> str:
    """Return the decoded value of `key` in Secret `namespace/name`, whitespace stripped, within `deadline`."""
    with SecretStore(name, namespace, deadline, request_timeout=request_timeout, relaxed_x509=relaxed_x509) as store:
        return store.read_key(key)
