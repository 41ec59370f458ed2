"""Tests of the test infrastructure itself: LocalHub and its spawn behaviours, FaultProxy,
SecretStub. The rest of the suite trusts these, so each claim made in their docstrings is
checked here against the real thing."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from datetime import datetime

import jupyterhub
import psutil
import pytest
import requests

from tests.faultproxy import FaultProxy
from tests.localhub import LocalHub, wait_for


def auth(token: str) -> dict:
    return {"Authorization": f"token {token}"}


def new_account(hub: LocalHub, name: str) -> tuple[str, str]:
    hub.create_user(name)
    return name, hub.new_token(name)


def progress_events(url: str, token: str, timeout: float = 30) -> list[tuple[float, dict]]:
    """(monotonic arrival time, event) for each `data:` event of a progress stream, read as it
    arrives (1-byte reads: no buffering on our side either)."""
    events = []
    with requests.get(url, headers=auth(token), stream=True, timeout=timeout) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines(chunk_size=1):
            if line.startswith(b"data:"):
                events.append((time.monotonic(), json.loads(line[len(b"data:") :])))
    return events


def user_processes(hub: LocalHub, name: str) -> list[psutil.Process]:
    """Processes of this hub spawned for user `name` (single-user servers carry JUPYTERHUB_USER)."""
    found = []
    for p in hub.leftover_processes():
        try:
            if p.environ().get("JUPYTERHUB_USER") == name:
                found.append(p)
        except psutil.Error:
            pass
    return found


# --- LocalHub ---


@pytest.mark.hub
def test_hub_answers_on_loopback(hub):
    assert hub.url.startswith("http://127.0.0.1:") and hub.url.endswith("/")
    r = requests.get(hub.api_url, timeout=5)  # no token needed
    assert r.status_code == 200
    assert r.json()["version"] == hub.version == jupyterhub.__version__
    me = hub.api("GET", "user").json()
    assert me["kind"] == "service" and me["name"] == "localhub-admin"


@pytest.mark.hub
def test_new_token_names_its_user(hub, hub_user):
    name, token = new_account(hub, hub_user())
    r = requests.get(hub.api_url + "user", headers=auth(token), timeout=10)
    assert r.status_code == 200 and r.json()["name"] == name
    assert requests.get(hub.api_url + "user", headers=auth(token + "x"), timeout=10).status_code == 403
    limited = hub.new_token(name, scopes=[f"read:users:name!user={name}"], expires_in=600)
    assert requests.get(hub.api_url + "user", headers=auth(limited), timeout=10).json()["name"] == name
    r = requests.post(hub.api_url + f"users/{name}/server", headers=auth(limited), json={}, timeout=10)
    assert r.status_code == 403, r.text  # the scopes were applied: no `servers` scope


@pytest.mark.hub
def test_normal_server_with_the_users_own_token(hub, hub_user):
    """The default `user` role lets a default-scoped token start, reach and stop its own server."""
    name, token = new_account(hub, hub_user())
    r = requests.post(hub.api_url + f"users/{name}/server", headers=auth(token), json={}, timeout=30)
    assert r.status_code == 201, r.text  # a normal spawn completes within the hub's slow_spawn_timeout
    status = requests.get(hub.url + f"user/{name}/api/status", headers=auth(token), timeout=10)
    assert status.status_code == 200 and "started" in status.json()
    assert hub.spawn_records(name)[-1]["behaviour"] == "normal"
    r = requests.delete(hub.api_url + f"users/{name}/server", headers=auth(token), timeout=30)
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: hub.servers(name) == {}, 30, "the server to stop")
    assert not user_processes(hub, name)


@pytest.mark.hub
def test_the_hub_fixture_answers_201_to_a_spawn_longer_than_jupyterhubs_default_10_s(hub, hub_user):
    """The tests of the 201 path hold on a loaded machine: a spawn of over 10 s still answers 201."""
    name, token = new_account(hub, hub_user("slow9-"))  # 9 s late, plus the server's own start
    started = time.monotonic()
    r = requests.post(hub.api_url + f"users/{name}/server", headers=auth(token), json={}, timeout=120)
    took = time.monotonic() - started
    assert r.status_code == 201 and took > 10, (r.status_code, took, r.text)
    hub.stop_all_servers(name)


@pytest.mark.hub
def test_slow_server_starts_delay_seconds_late(hub, hub_user):
    name, token = new_account(hub, hub_user("slow1-"))
    hub.start_server(name)
    record = hub.spawn_records(name)[-1]
    assert (record["behaviour"], record["delay"]) == ("slow", 1.0)
    started = requests.get(hub.url + f"user/{name}/api/status", headers=auth(token), timeout=10).json()["started"]
    # jupyter-server's start time: the server process only began after the delay.
    lag = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() - record["time"]
    assert lag >= 1.0, f"the server started {lag:.2f} s after the spawn hook, expected >= 1 s"
    hub.stop_all_servers(name)


@pytest.mark.hub
def test_failmissing_fails_the_post_at_once(hub, hub_user):
    name, token = new_account(hub, hub_user("failmissing-"))
    started = time.monotonic()
    r = requests.post(hub.api_url + f"users/{name}/server", headers=auth(token), json={}, timeout=30)
    assert r.status_code == 500 and time.monotonic() - started < 5
    ((_, last),) = progress_events(hub.api_url + f"users/{name}/server/progress", token)
    assert last["failed"] and "No such file or directory: '/nonexistent/jupyterhub-singleuser'" in last["message"]
    assert hub.servers(name) == {}


@pytest.mark.hub
def test_failexit_fails_in_the_progress_stream_after_http_timeout(hub_202, hub_user):
    name, token = new_account(hub_202, hub_user("failexit-"))
    started = time.monotonic()
    r = requests.post(hub_202.api_url + f"users/{name}/server", headers=auth(token), json={}, timeout=30)
    assert r.status_code == 202, r.text
    events = progress_events(hub_202.api_url + f"users/{name}/server/progress", token)
    arrived, last = events[-1]
    assert last["failed"] and "didn't respond in 3 seconds" in last["message"], events
    assert 2.5 <= arrived - started < 15
    assert hub_202.servers(name) == {}
    assert "localhub failexit behaviour" in hub_202.log_tail(200)  # the server's stderr


@pytest.mark.hub
def test_user_options_choose_the_behaviour_and_are_recorded(hub, hub_user):
    name, _ = new_account(hub, hub_user())  # a "normal" name: the options must win
    options = {"behaviour": "failmissing", "flavour": ["vanilla", 2]}
    r = hub.api("POST", f"users/{name}/servers/opts", json=options)
    assert r.status_code == 500, r.text
    (record,) = hub.spawn_records(name)
    assert record["server_name"] == "opts" and record["user_options"] == options
    assert record["behaviour"] == "failmissing" and record["time"] <= time.time()


@pytest.mark.hub
def test_delete_cancels_a_pending_slow_spawn(hub_202, hub_user):
    name, token = new_account(hub_202, hub_user("slow30-" if hub_202.cancels_pending_spawns else "slow4-"))
    hub_202.start_server(name, wait=False)
    assert hub_202.servers(name)[""]["pending"] == "spawn"
    started = time.monotonic()
    r = hub_202.api("DELETE", f"users/{name}/server")
    if not hub_202.cancels_pending_spawns:
        # JupyterHub before 5.1 refuses while the spawn is pending; the canary reports this as 13.
        assert r.status_code == 400 and "is pending spawn, please wait" in r.json()["message"], r.text
        hub_202.stop_all_servers(name)
        return
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: hub_202.servers(name) == {}, 15, "the pending spawn to be cancelled")
    assert time.monotonic() - started < 15, "the DELETE waited for the spawn instead of cancelling it"
    wait_for(lambda: not user_processes(hub_202, name), 10, "the delayed server process to go")


@pytest.mark.hub
def test_start_failure_raises_with_the_log_and_leaves_nothing(tmp_path):
    hub = LocalHub(tmp_path, extra_config="raise RuntimeError('broken test-hub config')")
    with pytest.raises(RuntimeError, match="broken test-hub config"):
        hub.start(timeout=30)
    assert hub.leftover_processes() == []


@pytest.mark.hub
def test_stop_leaves_nothing_even_after_the_hub_was_killed(tmp_path, hub_user):
    """The hard case: the hub dies without cleaning up, so the proxy and two single-user
    servers (one of them still in its start delay) are orphans that stop() must find and end."""
    hub = LocalHub(tmp_path, base_url="/jhub", slow_spawn_timeout=0)
    try:
        hub.start()
        assert hub.url.endswith("/jhub/") and requests.get(hub.api_url, timeout=5).status_code == 200
        users = [new_account(hub, hub_user(prefix))[0] for prefix in ("", "slow30-")]
        for name in users:
            hub.start_server(name, wait=False)
        wait_for(lambda: all(user_processes(hub, name) for name in users), 10, "both servers' processes")
        assert len(hub.leftover_processes()) >= 4  # hub, proxy, two servers
        os.kill(hub._proc.pid, signal.SIGKILL)
        hub._proc.wait(timeout=10)
        assert len(hub.leftover_processes()) >= 3, "the orphans should still be there"
    finally:
        hub.stop()
    assert hub.leftover_processes() == []
    hub.stop()  # idempotent


# --- FaultProxy ---


@pytest.mark.hub
def test_fault_proxy_injects_faults_then_forwards(hub, hub_user):
    name, token = new_account(hub, hub_user())
    with FaultProxy(hub.url) as proxy:
        assert proxy.url.startswith("http://127.0.0.1:") and proxy.url.endswith("/")
        proxy.fail_next(2, 503, retry_after=0.5, path_contains="/hub/api/user")
        answers = [requests.get(proxy.url + "hub/api/user", headers=auth(token), timeout=10) for _ in range(3)]
        assert [r.status_code for r in answers] == [503, 503, 200]
        assert answers[0].headers["Retry-After"] == "0.5"
        assert answers[2].json()["name"] == name  # the Authorization header was forwarded

        proxy.fail_next(1, 500, method="POST")
        assert requests.get(proxy.url + "hub/api/user", headers=auth(token), timeout=10).status_code == 200
        r = requests.post(proxy.url + f"hub/api/users/{name}/tokens", headers=auth(token), json={}, timeout=10)
        assert r.status_code == 500 and r.json()["message"] == "faultproxy: injected fault"
        r = requests.post(proxy.url + f"hub/api/users/{name}/tokens", headers=auth(token), json={}, timeout=10)
        assert r.status_code == 201  # forwarded again, body included

        r = requests.get(proxy.url + "hub/", timeout=10, allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"]  # passed back, not followed

        seen = list(proxy.requests_seen)
    assert [f"{method} {status}" for _, method, _, status in seen] == [
        "GET 503", "GET 503", "GET 200", "GET 200", "POST 500", "POST 201", "GET 302",
    ]
    times = [t for t, _, _, _ in seen]
    assert times == sorted(times)
    assert seen[0][2] == "/hub/api/user"


@pytest.mark.hub
def test_fault_proxy_loses_whole_answers_and_watches_requests(hub, hub_user):
    name, token = new_account(hub, hub_user())
    token_path = f"/hub/api/users/{name}/tokens"
    with FaultProxy(hub.url) as proxy:
        made = requests.post(proxy.url + token_path.lstrip("/"), headers=auth(token), json={"note": "lost"}, timeout=10)
        token_id = made.json()["id"]
        meanwhile = []
        # A 204 (no body, which cut_next cannot lose): it reaches the hub, its answer never reaches the client.
        proxy.lose_next(1, path_contains=f"{token_path}/{token_id}", exact=True, method="DELETE",
                        after=lambda: meanwhile.append("after"))
        with pytest.raises(requests.ConnectionError):
            requests.delete(proxy.url + f"{token_path}/{token_id}".lstrip("/"), headers=auth(token), timeout=10)
        assert meanwhile == ["after"]
        assert requests.get(hub.api_url + f"users/{name}/tokens/{token_id}", headers=auth(token), timeout=10).status_code == 404
        # Not forwarded: the hub never sees it.
        proxy.lose_next(1, path_contains=token_path, exact=True, method="POST", forward=False)
        with pytest.raises(requests.ConnectionError):
            requests.post(proxy.url + token_path.lstrip("/"), headers=auth(token), json={"note": "never"}, timeout=10)
        listed = requests.get(hub.api_url + f"users/{name}/tokens", headers=auth(token), timeout=10).json()["api_tokens"]
        assert "never" not in [t["note"] for t in listed]
        # Watched: the hook runs first, the request is forwarded as is; `exact` spares the longer paths.
        proxy.watch_next(1, path_contains=f"/hub/api/users/{name}", exact=True, method="GET",
                         before=lambda: meanwhile.append("before"))
        assert requests.get(proxy.url + token_path.lstrip("/"), headers=auth(token), timeout=10).status_code == 200
        assert meanwhile == ["after"]
        assert requests.get(proxy.url + f"hub/api/users/{name}", headers=auth(token), timeout=10).status_code == 200
        assert meanwhile == ["after", "before"]
        seen = [(method, status) for _, method, _, status in proxy.requests_seen]
    assert seen == [("POST", 201), ("DELETE", 204), ("POST", 0), ("GET", 200), ("GET", 200)]


@pytest.mark.hub
def test_fault_proxy_streams_progress_events_unbuffered(hub_202, hub_user):
    name, token = new_account(hub_202, hub_user("slow1-"))
    with FaultProxy(hub_202.url) as proxy:
        r = requests.post(proxy.url + f"hub/api/users/{name}/server", headers=auth(token), json={}, timeout=30)
        assert r.status_code == 202, r.text
        events = progress_events(proxy.url + f"hub/api/users/{name}/server/progress", token)
    assert events[-1][1].get("ready"), events
    first, last = events[0][0], events[-1][0]
    # Buffered, every event would arrive when the stream ends; streamed, the first one comes
    # at least the 1 s delay (plus the server's start-up) before the "ready" one.
    assert last - first >= 1.0, f"events arrived {last - first:.2f} s apart"
    hub_202.stop_all_servers(name)


def test_fault_proxy_cuts_a_progress_stream_mid_chunk(hub_202, hub_user):
    name, token = new_account(hub_202, hub_user("slow1-"))
    with FaultProxy(hub_202.url) as proxy:
        proxy.cut_next(1, after_bytes=20, path_contains="/progress")
        r = requests.post(proxy.url + f"hub/api/users/{name}/server", headers=auth(token), json={}, timeout=30)
        assert r.status_code == 202, r.text
        stream = requests.get(
            proxy.url + f"hub/api/users/{name}/server/progress", headers=auth(token), stream=True, timeout=30
        )
        assert stream.headers["Transfer-Encoding"] == "chunked"
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            b"".join(stream.iter_content(None))
    hub_202.stop_all_servers(name)


# --- SecretStub ---


def _core_api(configuration):
    from kubernetes import client

    return client.CoreV1Api(client.ApiClient(configuration))


def test_secret_stub_through_a_kubeconfig(secret_stub, tmp_path):
    from kubernetes import client, config

    secret_stub.put_secret("hub-ns", "canary-token", {"token": "s3cret-value"})
    configuration = client.Configuration()
    kubeconfig = secret_stub.write_kubeconfig(tmp_path / "kubeconfig", token="kc-token", namespace="hub-ns")
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    secret = _core_api(configuration).read_namespaced_secret("canary-token", "hub-ns")
    assert base64.b64decode(secret.data["token"]).decode() == "s3cret-value"
    assert secret.metadata.name == "canary-token" and secret.metadata.namespace == "hub-ns"
    assert secret_stub.requests_seen[-1]["authorization"] == "Bearer kc-token"


def test_secret_stub_through_in_cluster_config(secret_stub, tmp_path, monkeypatch):
    from kubernetes import client, config

    secret_stub.put_secret("hub-ns", "canary-token", {"token": "in-cluster-value"})
    sa_dir = secret_stub.write_serviceaccount_dir(tmp_path / "sa", token="sa-token", namespace="hub-ns")
    assert (sa_dir / "namespace").read_text() == "hub-ns"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", secret_stub.host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(secret_stub.port))
    configuration = client.Configuration()
    config.incluster_config.InClusterConfigLoader(
        token_filename=str(sa_dir / "token"), cert_filename=str(sa_dir / "ca.crt")
    ).load_and_set(configuration)
    secret = _core_api(configuration).read_namespaced_secret("canary-token", "hub-ns")
    assert base64.b64decode(secret.data["token"]).decode() == "in-cluster-value"
    assert secret_stub.requests_seen[-1]["authorization"] == "bearer sa-token"


def test_secret_stub_errors_are_kubernetes_status_objects(secret_stub, tmp_path):
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    secret_stub.put_secret("ns", "locked", {"token": "x"})
    secret_stub.forbid("ns", "locked")
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(secret_stub.write_kubeconfig(tmp_path / "kc", token="t")), client_configuration=configuration
    )
    api = _core_api(configuration)
    for name, code, reason in (("absent", 404, "NotFound"), ("locked", 403, "Forbidden")):
        with pytest.raises(ApiException) as caught:
            api.read_namespaced_secret(name, "ns")
        body = json.loads(caught.value.body)
        assert caught.value.status == code
        assert (body["kind"], body["status"], body["reason"], body["code"]) == ("Status", "Failure", reason, code)
        assert body["details"] == {"name": name, "kind": "secrets"}
    assert json.loads(caught.value.body)["message"].startswith('secrets "locked" is forbidden')

    url = f"{secret_stub.url}/api/v1/namespaces/ns/secrets/locked"
    r = requests.get(url, verify=str(secret_stub.ca_file), timeout=10)
    assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, timeout=10)  # real TLS: the system CAs do not trust the stub
