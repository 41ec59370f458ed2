"""One run of a probe at a time: a Kubernetes Lease (coordination.k8s.io/v1) held for the whole run.

`helm test` or `kubectl create job --from=cronjob/...` runs the probe beside the CronJob's own run;
both would spawn, and one would stop the other's server. With `--lease NAME` the run takes the Lease
before it touches the hub and gives it back at the end; a run that finds it held by another live run
ends with ConcurrentRun (18) without touching anything.

- The Lease's duration covers a run's whole life (--deadline plus --stop-timeout, and a margin):
  no renewal is needed, and a run that died (OOM-killed, node lost) leaves a Lease that expires by
  then and is taken over.
- Taking a Lease over and giving it back are updates with the resourceVersion just read: of two runs
  racing for it, one gets a 409 Conflict and stands back (18). A Lease that does not exist is created
  (a race for that gives 409 AlreadyExists: read again, once).
- Given back only when this run still holds it (its holderIdentity: host name and a run id); a
  failure to give it back is logged, not fatal: the Lease expires on its own.
- Expiry is judged on this run's clock against the holder's renewTime, as client-go's leader
  election does: the margin absorbs a skew of clocks.
"""

from __future__ import annotations

import contextlib
import math
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from app import logs
from app.config import Config
from app.deadline import Deadline
from app.errors import ConcurrentRun, ConfigError, KubernetesUnavailable, PermissionDenied
from app.secret import api_call, call_timeout
from app.signals import Shield, no_shield

MARGIN_S = 60  # beyond a run's longest life: clock skew, start-up, the report
log = logs.get_logger()


def lease_seconds(deadline: float, stop_timeout: float) -> int:
    """How long a Lease lasts: the longest a run can live, and a margin."""
    return math.ceil(deadline + stop_timeout) + MARGIN_S


class ProbeLease:
    """The Lease `namespace/name`, taken and given back by this run (holder: host name and run id)."""

    def __init__(
        self,
        name: str,
        namespace: str,
        *,
        duration_s: int,
        deadline: Deadline,
        request_timeout: float,
        relaxed_x509: bool = False,
        utcnow: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        from kubernetes import client

        from app.secret import _api_client

        self.name, self.namespace = name, namespace
        self.where = f"Lease {namespace}/{name}"
        self.holder = f"{socket.gethostname()}/{uuid.uuid4().hex[:12]}"
        self.duration_s = duration_s
        self._deadline = deadline
        self._request_timeout = request_timeout
        self._relaxed_x509 = relaxed_x509
        self._utcnow = utcnow
        try:
            self._api = client.CoordinationV1Api(_api_client(relaxed_x509))
        except ConfigError as exc:
            raise ConfigError(f"--lease {name}: {exc.message.replace('the token Secret', 'the Lease')}") from None
        self.held = False

    def close(self) -> None:
        self._api.api_client.close()

    @property
    def _timeout(self) -> tuple[float, float]:
        return call_timeout(self._deadline, self._request_timeout)

    def _errors(self, verb: str) -> contextlib.AbstractContextManager[None]:
        """One API call within the run's deadline (app/secret.py `api_call`); 404 and 409 are the caller's."""
        return api_call(self._deadline, verb, self.where, relaxed_x509=self._relaxed_x509,
                        needs="on leases (coordination.k8s.io)", callers=(404, 409))

    # --- taking and giving back ---

    def acquire(self) -> None:
        """Take the Lease, or raise ConcurrentRun when another live run holds it."""
        from kubernetes.client.exceptions import ApiException

        for _ in range(2):
            try:
                with self._errors("get"):
                    current = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout)
            except ApiException as exc:  # 404: nobody has made it yet
                if exc.status != 404:
                    raise
                if self._create():
                    return
                continue  # created by another run meanwhile: judge its holder
            self._take_over(current)
            return
        raise ConcurrentRun(f"{self.where} was created by another run just now: it runs this probe")

    def _spec(self) -> Any:
        from kubernetes import client

        now = self._utcnow()
        return client.V1LeaseSpec(
            holder_identity=self.holder, lease_duration_seconds=self.duration_s, acquire_time=now, renew_time=now
        )

    def _create(self) -> bool:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace), spec=self._spec())
        try:
            with self._errors("create"):
                self._api.create_namespaced_lease(self.namespace, body, _request_timeout=self._timeout)
        except ApiException as exc:  # 409 AlreadyExists, 404 namespace gone
            if exc.status == 404:
                raise ConfigError(f"{self.where}: the namespace does not exist (set --lease-namespace)") from None
            return False
        self.held = True
        log.info("lease_acquired", lease=self.where, holder=self.holder, created=True, duration_s=self.duration_s)
        return True

    def _take_over(self, current: Any) -> None:
        from kubernetes.client.exceptions import ApiException

        spec = current.spec
        holder = spec.holder_identity if spec else None
        if holder and not self._expired(spec):
            log.warning(
                "lease_held", lease=self.where, holder=holder,
                renewed=spec.renew_time.isoformat() if spec.renew_time else None,
                duration_s=spec.lease_duration_seconds,
            )
            raise ConcurrentRun(f"{self.where} is held by another live run of this probe ({holder}): it is left alone")
        current.spec = self._spec()
        try:
            with self._errors("update"):
                self._api.replace_namespaced_lease(self.name, self.namespace, current, _request_timeout=self._timeout)
        except ApiException:  # 409: another run took it between our read and our update
            raise ConcurrentRun(f"{self.where} was taken by another run of this probe just now") from None
        self.held = True
        log.info(
            "lease_acquired", lease=self.where, holder=self.holder, created=False,
            previous_holder=holder or None, previous_expired=bool(holder), duration_s=self.duration_s,
        )

    def _expired(self, spec: Any) -> bool:
        renewed = spec.renew_time or spec.acquire_time
        if renewed is None or not spec.lease_duration_seconds:
            return True
        if renewed.tzinfo is None:
            renewed = renewed.replace(tzinfo=UTC)
        return renewed + timedelta(seconds=spec.lease_duration_seconds) < self._utcnow()

    def release(self) -> None:
        """Give the Lease back if this run still holds it; a failure is logged (it expires on its own)."""
        if not self.held:
            return
        from kubernetes.client.exceptions import ApiException

        try:
            with self._errors("get"):
                current = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout)
            if current.spec is None or current.spec.holder_identity != self.holder:
                log.warning("lease_lost", lease=self.where, holder=current.spec.holder_identity if current.spec else None)
                return
            current.spec.holder_identity = None
            current.spec.renew_time = self._utcnow()
            with self._errors("update"):
                self._api.replace_namespaced_lease(self.name, self.namespace, current, _request_timeout=self._timeout)
        except (ApiException, KubernetesUnavailable, PermissionDenied) as exc:
            log.warning("lease_release_failed", lease=self.where, message=str(getattr(exc, "message", exc.__class__.__name__)))
            return
        finally:
            self.held = False
        log.info("lease_released", lease=self.where)


@contextlib.contextmanager
def held(
    config: Config,
    deadline: Deadline,
    shield: Shield = no_shield,
) -> Iterator[None]:
    """Hold the run's Lease (--lease) for the block; nothing without one (no Kubernetes API at hand).

    The block ends with the run's server stopped (cli.py stops it there after a signal too). Giving the
    Lease back is `shield`ed: a signal cutting it short would leave the Lease held until it expires,
    and every run of the probe meanwhile would end with 18.
    """
    if not config.lease:
        yield
        return
    lease = ProbeLease(
        config.lease,
        config.lease_namespace,
        duration_s=lease_seconds(config.deadline, config.stop_timeout),
        deadline=deadline,
        request_timeout=config.request_timeout,
        relaxed_x509=config.kube_relaxed_x509,
    )
    try:
        lease.acquire()
        yield
    finally:
        try:
            with shield():
                lease.release()
        finally:
            lease.close()
