"""The token from a Kubernetes Secret, read by the real `kubernetes` client from a real kube-apiserver
(tests/controlplane.py) with a ServiceAccount's own token and RBAC enforced, through in-cluster
config and through a kubeconfig. What a real apiserver cannot be made to do on demand (answer 500,
drop the connection) is played by the HTTPS stub of tests/k8s_stub.py."""

from __future__ import annotations

import json
import ssl
import time

import pytest
import trustme

from app import kube
from app.exit_codes import ExitCode
from tests.fakehub import FakeHub
from tests.runner import run_main, run_token
from tests.tcprelay import SilentListener, TrickleRelay

DEAD_HUB = ["--hub-url", "http://127.0.0.1:9/", "--user", "canary"]
# The Secrets the reader's Role may `get` (RBAC answers 403, not 404, for any other name).
READABLE = ("canary-token", "nope", "wrong-key", "custom")


@pytest.fixture
def reader_token(control_plane, k8s_namespace) -> str:
    rules = [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": list(READABLE), "verbs": ["get"]}]
    return control_plane.service_account_with_role(k8s_namespace, "reader", rules)


@pytest.fixture(params=["in-cluster", "kubeconfig"])
def kube_access(request, control_plane, k8s_namespace, reader_token, tmp_path, monkeypatch):
    """Point the kubernetes client at the apiserver one way or the other, with the reader's token."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    if request.param == "in-cluster":
        serviceaccount = control_plane.write_serviceaccount_dir(tmp_path / "serviceaccount", reader_token, k8s_namespace)
        monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", serviceaccount)
        for name, value in control_plane.in_cluster_env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("KUBECONFIG", raising=False)
    else:
        monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", tmp_path / "not-in-a-pod")
        kubeconfig = control_plane.write_kubeconfig(tmp_path / "kubeconfig", reader_token, k8s_namespace)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return request.param


def namespace_args(kube_access: str, namespace: str) -> list[str]:
    """In a pod the Secret's namespace defaults to the pod's own; elsewhere it is given."""
    return [] if kube_access == "in-cluster" else ["--token-secret-namespace", namespace]


@pytest.mark.k8s
def test_token_from_the_secret_runs_a_full_cycle(kube_access, control_plane, k8s_namespace, reader_token, hub,
                                                 hub_user, tmp_path):
    user = hub_user()
    hub.create_user(user)
    token = hub.new_token(user)
    # As `kubectl create secret --from-file` leaves it: with a newline.
    control_plane.create_secret(k8s_namespace, "canary-token", {"token": token + "\n"})
    run = run_main(
        ["--hub-url", hub.url, "--user", user, "--token-secret", "canary-token",
         *namespace_args(kube_access, k8s_namespace), "--termination-log", str(tmp_path / "t")],
        env={},
    )
    run.assert_no_secret(token, reader_token)
    assert run.exit_code == ExitCode.OK, run.output
    assert f"Secret {k8s_namespace}/canary-token" in run.named("token_loaded")[0]["source"]
    assert hub.servers(user) == {}


@pytest.mark.k8s
def test_missing_secret_is_a_configuration_error(kube_access, k8s_namespace, reader_token):
    run = run_main([*DEAD_HUB, "--token-secret", "nope", "--token-secret-namespace", k8s_namespace], env={})
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert f"Secret {k8s_namespace}/nope not found" in run.result["message"]
    run.assert_no_secret(reader_token)


@pytest.mark.k8s
def test_a_secret_rbac_does_not_grant_is_a_permission_error(kube_access, control_plane, k8s_namespace, reader_token):
    control_plane.create_secret(k8s_namespace, "locked", {"token": "hub-token-that-must-not-leak"})
    run = run_main([*DEAD_HUB, "--token-secret", "locked", *namespace_args(kube_access, k8s_namespace)], env={})
    assert run.exit_code == ExitCode.PERMISSION, run.output
    assert "403" in run.result["message"] and "'get'" in run.result["message"]
    run.assert_no_secret(reader_token, "hub-token-that-must-not-leak")


@pytest.mark.k8s
def test_missing_key_is_a_configuration_error(kube_access, control_plane, k8s_namespace, reader_token):
    control_plane.create_secret(k8s_namespace, "wrong-key", {"api-token": "hub-token-that-must-not-leak"})
    run = run_main([*DEAD_HUB, "--token-secret", "wrong-key", "--token-secret-namespace", k8s_namespace], env={})
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert "no key 'token'" in run.result["message"] and "api-token" in run.result["message"]
    run.assert_no_secret(reader_token, "hub-token-that-must-not-leak")


@pytest.mark.k8s
def test_custom_key(kube_access, control_plane, k8s_namespace, reader_token):
    control_plane.create_secret(k8s_namespace, "custom", {"api-token": "a-token-for-a-dead-hub"})
    run = run_main(
        [*DEAD_HUB, "--token-secret", "custom", "--token-secret-key", "api-token",
         "--token-secret-namespace", k8s_namespace, "--deadline", "4", "--stop-timeout", "1"],
        env={},
    )
    # The token was found; the hub at port 9 is down: that is the failure reported.
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    run.assert_no_secret("a-token-for-a-dead-hub", reader_token)


# --- what only the stub can do: a 500, a dropped connection; and no API server at all ---

SA_TOKEN = "serviceaccount-bearer-token-0123456789"
ADMIN = "adm1nt0k3n" * 4


@pytest.fixture
def stub_in_cluster(secret_stub, tmp_path, monkeypatch):
    """In-cluster config pointed at the HTTPS stub."""
    serviceaccount = secret_stub.write_serviceaccount_dir(tmp_path / "serviceaccount", SA_TOKEN, "jhub")
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", serviceaccount)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", secret_stub.host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(secret_stub.port))
    secret_stub.put_secret("jhub", "canary-token", {"token": "hub-token-that-must-not-leak"})
    return secret_stub


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_an_api_server_failure_is_kubernetes_unavailable(stub_in_cluster, fault):
    stub_in_cluster.fail("jhub", "canary-token", fault)
    run = run_main([*DEAD_HUB, "--token-secret", "canary-token"], env={})
    assert run.exit_code == ExitCode.KUBERNETES_UNAVAILABLE, run.output
    expected = "answered 500" if fault == "500" else "cannot reach the Kubernetes API"
    assert expected in run.result["message"], run.result["message"]
    run.assert_no_secret(SA_TOKEN, "hub-token-that-must-not-leak")


# Secrets of shapes a real apiserver never serves (its types forbid them: a null value reads back as ""),
# and those it does: each ends with its documented code, and neither the token nor the bytes are quoted.
ODD_SECRETS = {
    "data a list": ({"data": ["aHViLXRva2Vu"]}, ExitCode.KUBERNETES_UNAVAILABLE, "data is a list"),
    "data a string": ({"data": "aHViLXRva2Vu"}, ExitCode.KUBERNETES_UNAVAILABLE, "data is a string"),
    "value null": ({"data": {"token": None}}, ExitCode.KUBERNETES_UNAVAILABLE, "data.token is null"),
    "value a number": ({"data": {"token": 5}}, ExitCode.KUBERNETES_UNAVAILABLE, "data.token is a number"),
    "annotations a list": ({"metadata": {"annotations": ["x"]}}, ExitCode.KUBERNETES_UNAVAILABLE,
                           "metadata.annotations is a list"),
    "creationTimestamp garbage": ({"metadata": {"creationTimestamp": "hub-token-that-must-not-leak"}},
                                  ExitCode.KUBERNETES_UNAVAILABLE, "a field the client cannot read"),
    "no resourceVersion": ({"metadata": {"resourceVersion": None}}, ExitCode.KUBERNETES_UNAVAILABLE,
                           "without metadata.resourceVersion"),
    "value not base64": ({"data": {"token": "hub-token-that-must-not-leak"}}, ExitCode.CONFIGURATION,
                         "is not base64-encoded UTF-8 text"),
    "value not UTF-8": ({"data": {"token": "/w=="}}, ExitCode.CONFIGURATION, "is not base64-encoded UTF-8 text"),
    "value empty": ({"data": {"token": ""}}, ExitCode.CONFIGURATION, "is empty"),
    "key missing": ({"data": {"other": "aHViLXRva2Vu"}}, ExitCode.CONFIGURATION, "has no key 'token' (keys: other)"),
    "no data": ({"data": None}, ExitCode.CONFIGURATION, "has no key 'token' (keys: none)"),
}


@pytest.mark.parametrize(("change", "code", "named"), list(ODD_SECRETS.values()), ids=list(ODD_SECRETS))
def test_a_secret_of_any_shape_ends_with_a_documented_code(stub_in_cluster, change, code, named):
    stored = stub_in_cluster.objects[("secrets", "jhub", "canary-token")]
    change = dict(change)
    stored["metadata"].update(change.pop("metadata", {}))
    stored.update(change)
    run = run_main([*DEAD_HUB, "--token-secret", "canary-token"], env={})
    assert run.exit_code == code, run.output
    assert named in run.result["message"] and "Secret jhub/canary-token" in run.result["message"], run.result["message"]
    run.assert_no_secret(SA_TOKEN, "hub-token-that-must-not-leak", "aHViLXRva2Vu")


def test_unreachable_api_server(monkeypatch, tmp_path, free_port):
    serviceaccount = tmp_path / "serviceaccount"
    serviceaccount.mkdir()
    for name, text in (("token", SA_TOKEN), ("namespace", "jhub")):
        (serviceaccount / name).write_text(text)
    trustme.CA().cert_pem.write_to_path(str(serviceaccount / "ca.crt"))
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", serviceaccount)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(free_port))
    run = run_main([*DEAD_HUB, "--token-secret", "canary-token"], env={})
    assert run.exit_code == ExitCode.KUBERNETES_UNAVAILABLE, run.output
    assert "cannot reach the Kubernetes API" in run.result["message"]


def test_no_kubeconfig_outside_a_pod(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    run = run_main([*DEAD_HUB, "--token-secret", "canary-token"], env={})
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert "Kubernetes client" in run.result["message"]


# --- every call bounded by the deadline (issue 14): a silent API, a trickling one, a strict-X.509 failure ---

SLACK = 3.0  # s beyond the deadline that a run may take to notice, report and exit


def in_cluster_at(port: int, serviceaccount, ca_pem: bytes, monkeypatch) -> None:
    """In-cluster config pointed at 127.0.0.1:`port`, trusting `ca_pem`."""
    serviceaccount.mkdir(parents=True, exist_ok=True)
    for name, text in (("token", SA_TOKEN), ("namespace", "jhub")):
        (serviceaccount / name).write_text(text)
    (serviceaccount / "ca.crt").write_bytes(ca_pem)
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", serviceaccount)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))


def timed(args: list[str], env: dict[str, str] | None = None):
    started = time.monotonic()
    run = run_main(args, env=env or {})
    return run, time.monotonic() - started


def test_a_silent_kubernetes_api_is_21_within_the_deadline(monkeypatch, tmp_path):
    with SilentListener() as silent:
        in_cluster_at(silent.port, tmp_path / "sa", trustme.CA().cert_pem.bytes(), monkeypatch)
        run, elapsed = timed([*DEAD_HUB, "--token-secret", "canary-token", "--deadline", "4", "--stop-timeout", "1",
                              "--request-timeout", "30", "--termination-log", str(tmp_path / "term")])
        assert silent.accepted >= 1, "the client never reached the silent API"
    assert run.exit_code == ExitCode.KUBERNETES_UNAVAILABLE, run.output
    assert elapsed < 4 + SLACK, f"took {elapsed:.1f}s with --deadline 4"
    assert "no complete answer within the deadline" in run.result["message"], run.result["message"]
    assert json.loads((tmp_path / "term").read_text())["exit_code"] == 21
    run.assert_no_secret(SA_TOKEN)


def test_the_token_commands_secret_store_is_bounded_and_takes_its_token_back(monkeypatch, tmp_path):
    with SilentListener() as silent, FakeHub() as fake:
        in_cluster_at(silent.port, tmp_path / "sa", trustme.CA().cert_pem.bytes(), monkeypatch)
        started = time.monotonic()
        run = run_token(["--hub-url", fake.url, "--user", "canary", "--secret", "canary-token", "--deadline", "4",
                         "--request-timeout", "30"], env={"JUPYTERHUB_ADMIN_TOKEN": ADMIN})
        elapsed = time.monotonic() - started
        assert run.exit_code == ExitCode.KUBERNETES_UNAVAILABLE, run.log
        assert elapsed < 4 + SLACK, f"took {elapsed:.1f}s with --deadline 4"
        assert run.named("token_revoked") and fake.tokens == {}, "the minted token was left on the hub"
        assert ADMIN not in run.log + run.stdout


@pytest.mark.k8s
def test_a_kubernetes_api_that_trickles_is_21_within_the_deadline(control_plane, k8s_namespace, reader_token,
                                                                   tmp_path, monkeypatch):
    control_plane.create_secret(k8s_namespace, "canary-token", {"token": "hub-token-that-must-not-leak"})
    serviceaccount = control_plane.write_serviceaccount_dir(tmp_path / "sa", reader_token, k8s_namespace)
    with TrickleRelay(control_plane.port) as relay:
        in_cluster_at(relay.port, serviceaccount, control_plane.ca_file.read_bytes(), monkeypatch)
        (serviceaccount / "token").write_text(reader_token)
        (serviceaccount / "namespace").write_text(k8s_namespace)
        run, elapsed = timed([*DEAD_HUB, "--token-secret", "canary-token", "--deadline", "4", "--stop-timeout", "1",
                              "--request-timeout", "30"])
        assert relay.accepted >= 1
    assert run.exit_code == ExitCode.KUBERNETES_UNAVAILABLE, run.output
    assert elapsed < 4 + SLACK, f"took {elapsed:.1f}s with --deadline 4"
    run.assert_no_secret(reader_token, "hub-token-that-must-not-leak")


@pytest.mark.k8s
@pytest.mark.parametrize("relaxed", [False, True], ids=["strict", "relaxed"])
def test_a_ca_without_key_usage_is_named_and_relaxed_x509_accepts_it(control_plane, k8s_namespace, reader_token,
                                                                      tmp_path, monkeypatch, relaxed):
    """The apiserver also serves (by SNI) a certificate of a CA without keyUsage, as older EKS and
    MicroK8s clusters have: strict X.509 checks (Python 3.13's default, set explicitly by the
    canary on every Python) reject it, with the reason; --kube-relaxed-x509 accepts it, verified."""
    control_plane.create_secret(k8s_namespace, "canary-token", {"token": "a-token-for-a-dead-hub"})
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", tmp_path / "not-in-a-pod")
    kubeconfig = control_plane.write_no_key_usage_kubeconfig(tmp_path / "kubeconfig", reader_token, k8s_namespace)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    args = [*DEAD_HUB, "--token-secret", "canary-token", "--token-secret-namespace", k8s_namespace,
            "--deadline", "4", "--stop-timeout", "1", "--termination-log", str(tmp_path / "term")]
    run = run_main([*args, "--kube-relaxed-x509"] if relaxed else args, env={})
    run.assert_no_secret(reader_token, "a-token-for-a-dead-hub")
    if relaxed:  # the token was read; the hub at port 9 is down
        assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
        return
    assert run.exit_code == ExitCode.KUBERNETES_UNAVAILABLE, run.output
    message = run.result["message"]
    assert "certificate verify failed: CA cert does not include key usage extension" in message, message
    assert "--kube-relaxed-x509" in message
    assert "key usage" in json.loads((tmp_path / "term").read_text())["message"]


def test_the_kubernetes_tls_context_is_strict_on_every_python():
    assert kube.kube_tls_context(False).verify_flags & ssl.VERIFY_X509_STRICT
    relaxed = kube.kube_tls_context(True)
    assert not relaxed.verify_flags & ssl.VERIFY_X509_STRICT
    assert relaxed.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN, "only the strict flag is cleared"


# --- the stub's write semantics are the apiserver's: the same calls give the same answers ---


def _write_semantics(api_client, namespace: str) -> list:
    """What the apiserver answers to the writes the canary makes, and to the races around them."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core, coordination = client.CoreV1Api(api_client), client.CoordinationV1Api(api_client)
    seen: list = []

    def answer(call):
        try:
            made = call()
        except ApiException as exc:
            seen.append((exc.status, json.loads(exc.body)["reason"]))
            return None
        seen.append("ok")
        return made

    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="semantics"), data={"token": "dg=="})
    answer(lambda: core.read_namespaced_secret("semantics", namespace))  # 404
    first = answer(lambda: core.create_namespaced_secret(namespace, secret))
    answer(lambda: core.create_namespaced_secret(namespace, secret))  # 409 AlreadyExists
    unchanged = answer(lambda: core.replace_namespaced_secret("semantics", namespace, first))  # no change: same version
    seen.append(unchanged.metadata.resource_version == first.metadata.resource_version)
    first.data = {"token": "dzI="}
    second = answer(lambda: core.replace_namespaced_secret("semantics", namespace, first))
    seen.append(second.metadata.resource_version != first.metadata.resource_version)
    answer(lambda: core.replace_namespaced_secret("semantics", namespace, first))  # stale: 409 Conflict
    missing = client.V1Secret(metadata=client.V1ObjectMeta(name="gone", resource_version=second.metadata.resource_version))
    answer(lambda: core.replace_namespaced_secret("gone", namespace, missing))  # 404
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name="semantics"))
    made = answer(lambda: coordination.create_namespaced_lease(namespace, lease))
    answer(lambda: coordination.read_namespaced_lease("semantics", namespace))
    made.spec = client.V1LeaseSpec(holder_identity="a")
    answer(lambda: coordination.replace_namespaced_lease("semantics", namespace, made))
    made.spec = client.V1LeaseSpec(holder_identity="b")
    answer(lambda: coordination.replace_namespaced_lease("semantics", namespace, made))  # stale: 409 Conflict
    seen.append(coordination.read_namespaced_lease("semantics", namespace).spec.holder_identity)
    return seen


EXPECTED_SEMANTICS = [
    (404, "NotFound"), "ok", (409, "AlreadyExists"), "ok", True, "ok", True, (409, "Conflict"), (404, "NotFound"),
    "ok", "ok", "ok", (409, "Conflict"), "a",
]


def test_the_stub_answers_writes_as_the_apiserver_does(secret_stub, tmp_path):
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(secret_stub.write_kubeconfig(tmp_path / "kc", token="t")),
                            client_configuration=configuration)
    assert _write_semantics(client.ApiClient(configuration), "ns") == EXPECTED_SEMANTICS


@pytest.mark.k8s
def test_the_apiserver_answers_writes_as_the_stub_claims(control_plane, k8s_namespace):
    assert _write_semantics(control_plane.api_client(), k8s_namespace) == EXPECTED_SEMANTICS
