"""The Kubernetes API as the canary reaches it: the client, every call bounded, its refusals typed.

The token Secret (app/secret.py) and the probe's Lease (app/lease.py) sit on this module as equals:
each names its object and what its ServiceAccount needs; this module speaks the API's dialect.

The client is imported only here and only when the API is used: importing its API classes costs
most of a second, which a token file or variable (and `--help`) should not pay.

- Every call is bounded by the run's deadline as a whole: the client takes a timeout only as an
  `int` or a (connect, read) tuple (a float is silently ignored), and a read timeout is per socket
  read, so its connections are also watched by app/transport.py's watchdog.
- Its TLS is verified with VERIFY_X509_STRICT set explicitly (Python 3.13, which the image ships,
  sets it by default; 3.11 does not), so a CA certificate that strict checks reject fails alike
  everywhere, with the reason named; --kube-relaxed-x509 clears that one flag, nothing else.
- A write is never resent by the client: urllib3 would resend a PUT whose answer was lost, and
  the resend's 409 (the first one changed the resourceVersion) would read as another writer's.
  A write whose answer is lost (the connection dropped, a 5xx) is `WriteOutcomeUnknown`, and the
  caller decides it by reading the object back.
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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

READS = frozenset({"get", "list", "watch"})
T = TypeVar("T")


class Refused(Exception):
    """An answer the caller asked to decide itself (`KubeApi.call`'s `passes`): 404, 409."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class WriteOutcomeUnknown(KubernetesUnavailable):
    """A write sent whose answer was lost: the apiserver may or may not have made it. Read to decide."""


def own_namespace() -> str | None:
    """The pod's own namespace, when running in a pod."""
    try:
        return (SERVICEACCOUNT_DIR / "namespace").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def kube_tls_context(relaxed_x509: bool) -> ssl.SSLContext:
    """The Kubernetes client's TLS context: urllib3's, strict X.509 checks set or cleared explicitly.
    (Not app/transport.py's `tls_context`, the hub's, which takes the hub's CA bundle.)"""
    from urllib3.util.ssl_ import create_urllib3_context

    context = create_urllib3_context()
    # As Python 3.13 does by default, on every Python: the same certificates pass or fail everywhere.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    if relaxed_x509:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


def _chain(exc: BaseException, before: BaseException | None = None) -> list[BaseException]:
    """`exc` and what it wraps, outermost first (urllib3 wraps the cause in MaxRetryError's `reason`),
    up to `before`: the exception the caller was handling when the request began (a call made in an
    `except` block, e.g. the Event after a failed run), which Python links as the implicit context of
    the request's own errors, and which is no part of them."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and current is not before:
        seen.append(current)
        inner = getattr(current, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in current.args if isinstance(a, BaseException)), None)
        current = inner or current.__cause__ or current.__context__
    return seen


def _cause(exc: BaseException, before: BaseException | None = None) -> str:
    """What ended a Kubernetes API call, in a few words: a TLS verification failure's own reason,
    else the innermost error's type and text."""
    chain = _chain(exc, before)
    for error in chain:
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {error.verify_message}"
    innermost = chain[-1]
    text = " ".join(str(innermost).split())[:200]
    return f"{type(exc).__name__}" + (f" ({type(innermost).__name__}: {text})" if innermost is not exc else "")


def _never_sent(exc: BaseException, before: BaseException | None = None) -> bool:
    """True when the request provably never reached the apiserver: no connection, or a certificate
    refused in the handshake. Anything later (a reset, a timeout, a cut answer) leaves it unknown."""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    never = (NewConnectionError, ConnectTimeoutError, ssl.SSLCertVerificationError)
    return any(isinstance(error, never) for error in _chain(exc, before))


def _api_client(relaxed_x509: bool, purpose: str) -> Any:
    """A kubernetes ApiClient, in-cluster or from the kubeconfig; ConfigError naming `purpose` if neither works."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException
    from urllib3.util.retry import Retry

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
        raise ConfigError(f"cannot configure the Kubernetes client to reach {purpose}: {exc}") from None
    # Two more tries of what failed to connect (nothing was sent) and of a read; never of a write
    # whose answer was lost (see the module docstring).
    configuration.retries = Retry(total=2, allowed_methods=frozenset({"GET"}))
    api_client = client.ApiClient(configuration)
    manager = watch_pools(api_client.rest_client.pool_manager)
    manager.connection_pool_kw["ssl_context"] = kube_tls_context(relaxed_x509)
    return api_client


class KubeApi:
    """The Kubernetes API for one object of this run (`where`, e.g. "Lease ns/name"): its client, and
    `call` that makes one request within the run's deadline and types what comes back."""

    def __init__(self, where: str, deadline: Deadline, *, request_timeout: float, relaxed_x509: bool, needs: str):
        self.where = where
        self.client = _api_client(relaxed_x509, where)
        self._deadline = deadline
        self._request_timeout = request_timeout
        self._relaxed_x509 = relaxed_x509
        self._needs = needs

    def close(self) -> None:
        self.client.close()

    def call(self, verb: str, request: Callable[[tuple[float, float]], T], *, passes: tuple[int, ...] = ()) -> T:
        """Make one request (`request(timeout)`, the `verb` on this object) and return its answer.

        Bounded by the deadline whatever the apiserver does: a watchdog cuts a silent or trickling
        answer. Typed: 401 and 403 are PermissionDenied naming the `verb` the ServiceAccount needs;
        a status in `passes` is Refused, for the caller to decide; a write that got no answer, or a
        5xx, is WriteOutcomeUnknown (it may have been made); anything else KubernetesUnavailable,
        naming the cause (and the way out of a strict-X.509 refusal). Only the status is quoted:
        the client's exception text carries the response's headers and body.
        """
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        what = f"{verb} {self.where}"
        handled = sys.exception()  # what the caller is handling, if anything: no part of this call's errors
        unknown = KubernetesUnavailable if verb in READS else WriteOutcomeUnknown
        seconds = self._deadline.for_wait(self._request_timeout)
        with Watchdog(self._deadline) as watchdog, watchdog.active():
            try:
                return request((seconds, seconds))
            except ApiException as exc:
                if exc.status in passes:
                    raise Refused(exc.status, str(exc.reason)) from None
                if exc.status in (401, 403):
                    raise PermissionDenied(
                        f"Kubernetes answered {exc.status} {exc.reason} to {what}: "
                        f"the ServiceAccount needs '{verb}' {self._needs}"
                    ) from None
                failure = unknown if (exc.status or 0) >= 500 else KubernetesUnavailable
                raise failure(f"Kubernetes answered {exc.status} {exc.reason} to {what}") from None
            except (HTTPError, OSError) as exc:
                cause = _cause(exc, handled)
                if watchdog.fired:
                    cause = f"no complete answer within the deadline ({self._deadline.seconds:g}s): {cause}"
                strict = "certificate verify failed" in cause and not self._relaxed_x509
                hint = f"; if {RELAXED_HINT}" if strict else ""
                failure = KubernetesUnavailable if _never_sent(exc, handled) else unknown
                raise failure(f"cannot reach the Kubernetes API to {what}: {cause}{hint}") from None
