"""One run of a probe at a time: a Kubernetes Lease (coordination.k8s.io/v1) held for the whole run.

`helm test` or `kubectl create job --from=cronjob/...` runs the probe beside the CronJob's own run;
both would spawn, and one would stop the other's server. With `--lease NAME` the run takes the Lease
before it touches the hub and gives it back at the end; a run that finds it held by another live run
ends with ConcurrentRun (18) without touching anything.

- The Lease exists before the run: the chart makes one per probe (a Lease without a holder), so
  that its Role names every object it touches and holds no unnamed verb (RBAC cannot limit
  `create` by name). The canary only reads and updates it; a missing Lease is a ConfigError (78)
  naming it and how to make it.
- The Lease's duration covers a run's whole life (--deadline plus --stop-timeout, and a margin):
  no renewal is needed, and a run that died (OOM-killed, node lost) leaves a Lease that expires by
  then and is taken over.
- Taking a Lease over and giving it back are updates with the resourceVersion just read: of two runs
  racing for it, one gets a 409 Conflict and stands back (18).
- A takeover whose answer is lost is decided by reading the Lease back (is its holderIdentity this
  run's?), and a signal waits until that is known. A Lease this run may hold (taken, or sent for and
  never shown otherwise) is read at the end and given back if it names this run. A giving back
  whose answer is lost is read back too, and sent once more if it was not made; a failure to give
  it back is logged, not fatal: the Lease expires on its own.
- Expiry is judged on this run's clock against the holder's renewTime, as client-go's leader
  election does: the margin absorbs a skew of clocks. A Lease that lasts past the calendar's end
  is live. A Lease whose fields are not of the API's types is not judged at all (app/kube.py: 21).
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
from app.kube import KubeApi, Refused, WriteOutcomeUnknown
from app.signals import Shield, no_shield

MARGIN_S = 60  # beyond a run's longest life: clock skew, start-up, the report
log = logs.get_logger()


def lease_seconds(deadline: float, stop_timeout: float) -> int:
    """How long a Lease lasts: the longest a run can live, and a margin."""
    return math.ceil(deadline + stop_timeout) + MARGIN_S


class ProbeLease:
    """The Lease `namespace/name`, taken and given back by this run (holder: host name and run id).

    `held`: the apiserver has shown this run as the holder. `may_hold`: a takeover was sent and not
    refused, so this run holds the Lease, or might (its answer was lost): `release` reads and decides.
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        *,
        duration_s: int,
        deadline: Deadline,
        request_timeout: float,
        relaxed_x509: bool = False,
        shield: Shield = no_shield,
        utcnow: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        from kubernetes import client

        self.name, self.namespace = name, namespace
        self.where = f"Lease {namespace}/{name}"
        self.holder = f"{socket.gethostname()}/{uuid.uuid4().hex[:12]}"
        self.duration_s = duration_s
        self._shield = shield
        self._utcnow = utcnow
        self._kube = KubeApi(self.where, deadline, request_timeout=request_timeout, relaxed_x509=relaxed_x509,
                             needs="on leases (coordination.k8s.io)")
        self._api = client.CoordinationV1Api(self._kube.client)
        self.held = False
        self.may_hold = False

    def close(self) -> None:
        self._kube.close()

    # --- the two calls ---

    def _read(self) -> Any:
        """The Lease (a V1Lease); ConfigError naming it and how to make it when it does not exist."""
        try:
            return self._kube.call(
                "get", lambda timeout: self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout),
                passes=(404,),
            )
        except Refused:
            raise self._missing() from None

    def _missing(self) -> ConfigError:
        return ConfigError(
            f"{self.where} does not exist: the canary takes a Lease, it never creates one. The chart makes one "
            "per probe (`helm upgrade` makes it again); without the chart, make it once (README: \"One run of a "
            "probe at a time\")"
        )

    def _update(self, lease: Any) -> None:
        """Replace the Lease with `lease`, guarded by the resourceVersion it was read with."""
        self._kube.call(
            "update",
            lambda timeout: self._api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=timeout),
            passes=(404, 409),
        )

    @staticmethod
    def _holder_of(lease: Any) -> str | None:
        return (lease.spec.holder_identity if lease.spec else None) or None

    # --- taking and giving back ---

    def acquire(self) -> None:
        """Take the Lease, or raise ConcurrentRun when another live run holds it."""
        from kubernetes import client

        current = self._read()
        spec = current.spec
        previous = self._holder_of(current)
        if previous and not self._expired(spec):
            log.warning(
                "lease_held", lease=self.where, holder=previous,
                renewed=spec.renew_time.isoformat() if spec.renew_time else None,
                duration_s=spec.lease_duration_seconds,
            )
            raise ConcurrentRun(f"{self.where} is held by another live run of this probe ({previous}): it is left alone")
        now = self._utcnow()
        current.spec = client.V1LeaseSpec(
            holder_identity=self.holder, lease_duration_seconds=self.duration_s, acquire_time=now, renew_time=now
        )
        # A signal waits until it is known whether this run holds the Lease: cut short, the run
        # would end holding it unknowingly, and every run meanwhile would end with 18.
        with self._shield():
            self._take_over(current, previous)
            log.info(
                "lease_acquired", lease=self.where, holder=self.holder,
                previous_holder=previous, previous_expired=bool(previous), duration_s=self.duration_s,
            )

    def _take_over(self, lease: Any, previous: str | None) -> None:
        self.may_hold = True
        try:
            self._update(lease)
        except Refused as refused:  # 409: another run took it between our read and our update
            self.may_hold = False
            if refused.status == 404:
                raise self._missing() from None
            raise ConcurrentRun(f"{self.where} was taken by another run of this probe just now") from None
        except WriteOutcomeUnknown as unknown:
            log.warning("request_outcome_unknown", request=f"update {self.where}", error=unknown.message)
            # Decided by a read. If that fails too, `may_hold` stays: the release reads again.
            now = self._holder_of(self._read())
            if now != self.holder:
                if now and now != previous:
                    raise ConcurrentRun(f"{self.where} was taken by another run of this probe just now ({now})") from None
                raise KubernetesUnavailable(f"{unknown.message}; read back, the Lease was not taken") from None
        self.held = True

    def _expired(self, spec: Any) -> bool:
        renewed = spec.renew_time or spec.acquire_time
        if renewed is None or not spec.lease_duration_seconds:
            return True
        if renewed.tzinfo is None:
            renewed = renewed.replace(tzinfo=UTC)
        try:
            return renewed + timedelta(seconds=spec.lease_duration_seconds) < self._utcnow()
        except OverflowError:  # it lasts past the calendar's end (a real apiserver keeps renewTime 9999-12-31)
            return False

    def release(self) -> None:
        """Give the Lease back if it names this run; a failure is logged (it expires on its own)."""
        if not self.may_hold:
            return
        try:
            if not self._give_back():
                return
        except (ConfigError, KubernetesUnavailable, PermissionDenied) as exc:
            log.warning("lease_release_failed", lease=self.where, message=exc.message)
            return
        finally:
            self.held = self.may_hold = False
        log.info("lease_released", lease=self.where)

    def _give_back(self) -> bool:
        """Empty the holder if it is this run; False when the Lease does not name this run.

        A giving back whose answer is lost is decided by a read: made, it is done; not made (the Lease
        still names this run), it is sent once more with what was just read. Left, the Lease would
        name a finished run until it expires, and every run of the probe meanwhile would end with 18.
        """
        current = self._read()
        holder = self._holder_of(current)
        if holder != self.holder:
            if self.held:
                log.warning("lease_lost", lease=self.where, holder=holder)
            return False
        resent = False
        while True:
            current.spec.holder_identity = None
            current.spec.renew_time = self._utcnow()
            try:
                self._update(current)
                return True
            except Refused:  # changed since our read: taken (after an expiry) or deleted
                log.warning("lease_lost", lease=self.where, holder=self._holder_of(self._read()))
                return False
            except WriteOutcomeUnknown as unknown:
                log.warning("request_outcome_unknown", request=f"update {self.where}", error=unknown.message)
                current = self._read()
                if self._holder_of(current) != self.holder:
                    return True
                if resent:
                    raise KubernetesUnavailable(f"{unknown.message}; read back, the Lease still names this run") from None
                resent = True


@contextlib.contextmanager
def holding(
    config: Config,
    deadline: Deadline,
    shield: Shield = no_shield,
) -> Iterator[None]:
    """Hold the run's Lease (--lease) for the block; nothing without one (no Kubernetes API at hand).

    The block ends with the run's server stopped (cli.py stops it there after a signal too). Taking
    the Lease and giving it back are `shield`ed: a signal cutting either short would leave the Lease
    held until it expires, and every run of the probe meanwhile would end with 18.
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
        shield=shield,
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
