"""The token from a Kubernetes Secret, read by the real `kubernetes` client from a local HTTPS stub
of the Secret endpoint — through in-cluster config and through a kubeconfig."""

from __future__ import annotations

import pytest

from app import secret
from app.exit_codes import ExitCode
from tests.runner import run_main

NAMESPACE = "jhub"
SA_TOKEN = "serviceaccount-bearer-token-0123456789"
DEAD_HUB = ["--hub-url", "http://127.0.0.1:9/", "--user", "canary"]


@pytest.fixture(params=["in-cluster", "kubeconfig"])
def kube_access(request, secret_stub, tmp_path, monkeypatch):
    """Point the kubernetes client at the stub one way or the other."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    if request.param == "in-cluster":
        serviceaccount = secret_stub.write_serviceaccount_dir(tmp_path / "serviceaccount", SA_TOKEN, NAMESPACE)
        monkeypatch.setattr(secret, "SERVICEACCOUNT_DIR", serviceaccount)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", secret_stub.host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(secret_stub.port))
        monkeypatch.delenv("KUBECONFIG", raising=False)
    else:
        monkeypatch.setattr(secret, "SERVICEACCOUNT_DIR", tmp_path / "not-in-a-pod")
        monkeypatch.setenv("KUBECONFIG", str(secret_stub.write_kubeconfig(tmp_path / "kubeconfig", SA_TOKEN, NAMESPACE)))
    return request.param


def test_token_from_the_secret_runs_a_full_cycle(kube_access, secret_stub, hub, hub_user, tmp_path):
    user = hub_user()
    hub.create_user(user)
    token = hub.new_token(user)
    secret_stub.put_secret(NAMESPACE, "canary-token", {"token": token + "\n"})  # as `kubectl create secret --from-file` leaves it
    namespace = [] if kube_access == "in-cluster" else ["--token-secret-namespace", NAMESPACE]
    run = run_main(
        ["--hub-url", hub.url, "--user", user, "--token-secret", "canary-token", *namespace,
         "--termination-log", str(tmp_path / "t")],
        env={},
    )
    run.assert_no_secret(token, SA_TOKEN)
    assert run.exit_code == ExitCode.OK, run.output
    assert f"Secret {NAMESPACE}/canary-token" in run.named("token_loaded")[0]["source"]
    seen = [r for r in secret_stub.requests_seen if r["path"].endswith("/secrets/canary-token")]
    assert seen and seen[-1]["authorization"].lower() == f"bearer {SA_TOKEN}"
    assert hub.servers(user) == {}


def test_missing_secret_is_a_configuration_error(kube_access, secret_stub):
    run = run_main([*DEAD_HUB, "--token-secret", "nope", "--token-secret-namespace", NAMESPACE], env={})
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert f"Secret {NAMESPACE}/nope not found" in run.result["message"]
    run.assert_no_secret(SA_TOKEN)


def test_forbidden_secret_is_a_permission_error(kube_access, secret_stub):
    secret_stub.put_secret(NAMESPACE, "locked", {"token": "hub-token-that-must-not-leak"})
    secret_stub.forbid(NAMESPACE, "locked")
    run = run_main([*DEAD_HUB, "--token-secret", "locked", "--token-secret-namespace", NAMESPACE], env={})
    assert run.exit_code == ExitCode.PERMISSION, run.output
    assert "403" in run.result["message"] and "get" in run.result["message"]
    run.assert_no_secret(SA_TOKEN, "hub-token-that-must-not-leak")


def test_missing_key_is_a_configuration_error(kube_access, secret_stub):
    secret_stub.put_secret(NAMESPACE, "wrong-key", {"api-token": "hub-token-that-must-not-leak"})
    run = run_main([*DEAD_HUB, "--token-secret", "wrong-key", "--token-secret-namespace", NAMESPACE], env={})
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert "no key 'token'" in run.result["message"] and "api-token" in run.result["message"]
    run.assert_no_secret(SA_TOKEN, "hub-token-that-must-not-leak")


def test_custom_key(kube_access, secret_stub):
    secret_stub.put_secret(NAMESPACE, "custom", {"api-token": "a-token-for-a-dead-hub"})
    run = run_main(
        [*DEAD_HUB, "--token-secret", "custom", "--token-secret-key", "api-token",
         "--token-secret-namespace", NAMESPACE, "--deadline", "4", "--stop-timeout", "1"],
        env={},
    )
    # The token was found; the hub at port 9 is down: that is the failure reported.
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    run.assert_no_secret("a-token-for-a-dead-hub", SA_TOKEN)


def test_unreachable_api_server(monkeypatch, tmp_path, secret_stub, free_port):
    monkeypatch.setattr(secret, "SERVICEACCOUNT_DIR", secret_stub.write_serviceaccount_dir(tmp_path / "sa", SA_TOKEN, NAMESPACE))
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
