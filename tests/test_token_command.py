"""`jupyterhub-canary token`: minting into a Secret and rotating, against a real JupyterHub and a real
kube-apiserver (tests/controlplane.py), with exactly the Kubernetes rights the README's Role grants.
Neither the admin token nor a minted one may leak."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from app.exit_codes import ExitCode
from app.hub import HubClient
from app.token_command import ANNOTATION, LABELS, least_scopes
from tests.faultproxy import FaultProxy
from tests.runner import CANARY, TokenRun, parse_events, run_main, run_token

pytestmark = pytest.mark.hub

SECRET = "canary-token"
README = Path(__file__).resolve().parent.parent / "README.md"


def readme_token_writer_rules(secret_name: str, without_verb: str | None = None) -> list[dict]:
    """The rules of the README's jupyterhub-canary-token-writer Role, for `secret_name`, less one verb."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    (role,) = [yaml.safe_load(b) for b in blocks if "jupyterhub-canary-token-writer" in b]
    rules = []
    for rule in role["rules"]:
        if "resourceNames" in rule:
            assert rule["resourceNames"] == ["jupyterhub-canary-token"], "the README's Role names its Secret"
            rule = {**rule, "resourceNames": [secret_name]}
        rule = {**rule, "verbs": [v for v in rule["verbs"] if v != without_verb]}
        if rule["verbs"]:
            rules.append(rule)
    return rules


class Kube:
    """The token command's view of Kubernetes: a kubeconfig with a ServiceAccount's token that has the
    README's Role (less `without_verb`), in a fresh namespace; Secrets read back as the admin."""

    def __init__(self, plane, namespace: str, tmp_path, without_verb: str | None = None):
        self.plane, self.namespace = plane, namespace
        self.token = plane.service_account_with_role(namespace, "token-writer",
                                                     readme_token_writer_rules(SECRET, without_verb))
        self.kubeconfig = plane.write_kubeconfig(tmp_path / "kubeconfig", self.token, namespace)

    def get_secret(self, name: str) -> dict | None:
        return self.plane.read_secret(self.namespace, name)


@pytest.fixture
def kube_as(control_plane, k8s_namespace, tmp_path, monkeypatch):
    """Kube(...) with the kubernetes client pointed at it through the kubeconfig, as an operator's laptop is."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr("app.kube.SERVICEACCOUNT_DIR", tmp_path / "not-in-a-pod")

    def make(without_verb: str | None = None) -> Kube:
        kube = Kube(control_plane, k8s_namespace, tmp_path / (without_verb or "all"), without_verb)
        monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
        return kube

    return make


@pytest.fixture
def kube(kube_as) -> Kube:
    return kube_as()


def admin_env(hub):
    return {"JUPYTERHUB_ADMIN_TOKEN": hub.admin_token}


def hub_tells_token_ids(hub):
    """JupyterHub 5+ names the token in GET /hub/api/user (token_id); before, its expiry cannot be read."""
    return int(hub.version.split(".")[0]) >= 5


def token_works(hub, token):
    return requests.get(hub.api_url + "user", headers={"Authorization": f"token {token}"}, timeout=10).status_code == 200


def assert_clean(run, *secrets):
    for value in secrets:
        assert value not in run.log, "a token appeared in the token command's log"


def test_mint_creates_the_user_and_prints_a_least_privilege_token_that_runs_a_cycle(hub, hub_user, tmp_path):
    user = hub_user()
    run = run_token(["--hub-url", hub.url, "--user", user, "--create-user", "--print"], env=admin_env(hub))
    assert run.exit_code == 0, run.log
    token = run.stdout.strip()
    assert token and "\n" not in token, "--print writes the bare token, one line"
    assert_clean(run, token, hub.admin_token)
    assert run.named("user_created") and run.result["outcome"] == "ok"
    minted = run.named("token_minted")[0]
    least, scopes = set(least_scopes(hub.version, user)), set(minted["scopes"])
    assert least <= scopes
    assert all(scope.endswith(f"!user={user}") for scope in scopes), "every scope is limited to this one user"
    # The hub adds only what the asked scopes imply: read:users:* always, and on 5.x the parts of `servers`.
    implied = {"read:users:name", "read:users:groups", "read:servers", "delete:servers"}
    assert {scope.split("!")[0] for scope in scopes - least} <= implied, scopes
    assert re.fullmatch(r"jupyterhub-canary [0-9a-f]{12}", minted["note"]), "the note: --note and this run's id"

    cycle = run_main(["--hub-url", hub.url, "--user", user, "--termination-log", str(tmp_path / "t")],
                     env={"JUPYTERHUB_API_TOKEN": token})
    cycle.assert_no_secret(token)
    assert cycle.exit_code == ExitCode.OK, cycle.output
    if hub_tells_token_ids(hub):
        assert cycle.named("token_expiry")[0]["token_expires_in_s"] is None  # never expires, and it can say so
    else:
        assert cycle.named("token_expiry_unknown"), cycle.output
    assert hub.servers(user) == {}


def test_an_existing_user_is_fine_and_a_missing_one_is_named(hub, hub_user):
    user = hub_user()
    hub.create_user(user)
    again = run_token(["--hub-url", hub.url, "--user", user, "--create-user", "--print"], env=admin_env(hub))
    assert again.exit_code == 0 and again.named("user_exists"), again.log
    missing = run_token(["--hub-url", hub.url, "--user", hub_user(), "--print"], env=admin_env(hub))
    assert missing.exit_code == ExitCode.CONFIGURATION and "--create-user" in missing.result["message"]
    assert missing.stdout == ""


def test_a_scope_the_user_lacks_is_refused_with_a_clear_message(hub, hub_user):
    user = hub_user()
    hub.create_user(user)
    run = run_token(["--hub-url", hub.url, "--user", user, "--scopes", "admin:users", "--print"], env=admin_env(hub))
    assert run.exit_code == ExitCode.PERMISSION, run.log
    message = run.result["message"]
    assert "admin:users" in message and "--inherit-scopes" in message and "--scopes" in message
    assert run.stdout == "", "no token is printed when none was minted"
    assert_clean(run, hub.admin_token)


def test_an_expiring_token_warns_in_the_canary(hub, hub_user, tmp_path):
    user = hub_user()
    run = run_token(
        ["--hub-url", hub.url, "--user", user, "--create-user", "--print", "--expires-in", "3600"], env=admin_env(hub)
    )
    assert run.exit_code == 0, run.log
    token = run.stdout.strip()
    cycle = run_main(["--hub-url", hub.url, "--user", user, "--termination-log", str(tmp_path / "t")],
                     env={"JUPYTERHUB_API_TOKEN": token})
    assert cycle.exit_code == 0, cycle.output
    if not hub_tells_token_ids(hub):
        assert cycle.named("token_expiry_unknown"), cycle.output
        return
    (warning,) = cycle.named("token_expires_soon")
    assert warning["level"] == "warning" and 3500 < warning["token_expires_in_s"] <= 3600


@pytest.mark.k8s
def test_mint_into_a_secret_with_labels_and_annotations(kube, hub, hub_user):
    user = hub_user()
    run = run_token(
        ["--hub-url", hub.url, "--user", user, "--create-user", "--secret", SECRET, "--namespace", kube.namespace],
        env=admin_env(hub),
    )
    assert run.exit_code == 0, run.log
    assert run.stdout == "", "without --print nothing goes to stdout"
    stored = kube.get_secret(SECRET)
    token = stored["data"]["token"]
    assert token_works(hub, token)
    assert_clean(run, token, hub.admin_token, kube.token)
    assert stored["metadata"]["labels"] == LABELS
    annotations = stored["metadata"]["annotations"]
    assert annotations[ANNOTATION + "user"] == user
    assert annotations[ANNOTATION + "token-id"] == run.named("token_minted")[0]["token_id"]
    assert run.named("secret_created")


@pytest.mark.k8s
def test_dry_run_changes_nothing_and_shows_no_token(kube, hub, hub_user):
    import yaml

    user = hub_user()
    hub.create_user(user)
    tokens_before = hub.api("GET", f"users/{user}/tokens").json()["api_tokens"]
    run = run_token(
        ["--hub-url", hub.url, "--user", user, "--secret", SECRET, "--namespace", kube.namespace, "--dry-run"],
        env=admin_env(hub),
    )
    assert run.exit_code == 0, run.log
    manifest = yaml.safe_load(run.stdout)
    assert manifest["kind"] == "Secret" and manifest["metadata"]["name"] == SECRET
    assert manifest["stringData"] == {"token": "[REDACTED]"}
    assert kube.get_secret(SECRET) is None
    assert hub.api("GET", f"users/{user}/tokens").json()["api_tokens"] == tokens_before
    assert_clean(run, hub.admin_token)


@pytest.mark.k8s
def test_rotate_writes_a_working_token_then_revokes_the_old_one(kube, hub, hub_user, tmp_path):
    user = hub_user()
    args = ["--hub-url", hub.url, "--user", user, "--secret", SECRET, "--namespace", kube.namespace]
    first = run_token([*args, "--create-user"], env=admin_env(hub))
    assert first.exit_code == 0, first.log
    old = kube.get_secret(SECRET)["data"]["token"]

    rotated = run_token(["rotate", *args], env=admin_env(hub))
    assert rotated.exit_code == 0, rotated.log
    new = kube.get_secret(SECRET)["data"]["token"]
    assert new != old
    assert token_works(hub, new)
    assert requests.get(hub.api_url + "user", headers={"Authorization": f"token {old}"}, timeout=10).status_code == 403
    assert_clean(rotated, old, new, hub.admin_token, kube.token)
    events = [e["event"] for e in rotated.events]
    assert events.index("secret_updated") < events.index("token_revoked"), "revoke only after the Secret holds the new token"

    # The canary reads the rotated token from the Secret and passes.
    cycle = run_main(["--hub-url", hub.url, "--user", user, "--token-secret", SECRET,
                      "--token-secret-namespace", kube.namespace, "--termination-log", str(tmp_path / "t")], env={})
    cycle.assert_no_secret(new, old, kube.token)
    assert cycle.exit_code == 0, cycle.output


@pytest.mark.k8s
def test_rotate_without_a_secret_to_rotate(kube, hub, hub_user):
    user = hub_user()
    hub.create_user(user)
    run = run_token(["rotate", "--hub-url", hub.url, "--user", user, "--secret", SECRET, "--namespace", kube.namespace],
                    env=admin_env(hub))
    assert run.exit_code == ExitCode.CONFIGURATION and "not found" in run.result["message"]
    assert hub.api("GET", f"users/{user}/tokens").json()["api_tokens"] == [], "nothing minted"


@pytest.mark.k8s
@pytest.mark.parametrize(("missing", "action"), [("get", []), ("create", []), ("update", ["rotate"])])
def test_fewer_kubernetes_rights_than_the_readme_grants_fail_with_77(kube_as, hub, hub_user, missing, action):
    """Without any one verb of the README's Role, the step that needs it is refused: 77, naming the verb."""
    kube = kube_as(without_verb=missing)
    user = hub_user()
    hub.create_user(user)
    if action:  # rotate needs a Secret to update
        kube.plane.create_secret(kube.namespace, SECRET, {"token": hub.new_token(user)})
    run = run_token([*action, "--hub-url", hub.url, "--user", user, "--secret", SECRET, "--namespace", kube.namespace],
                    env=admin_env(hub))
    assert run.exit_code == ExitCode.PERMISSION, run.log
    assert "403" in run.result["message"] and f"'{missing}'" in run.result["message"], run.result["message"]
    assert_clean(run, hub.admin_token, kube.token)


def test_a_rejected_admin_token(hub, hub_user):
    run = run_token(["--hub-url", hub.url, "--user", hub_user(), "--print"],
                    env={"JUPYTERHUB_ADMIN_TOKEN": "not-an-admin-token-0123456789"})
    assert run.exit_code == ExitCode.PERMISSION and "rejected the token" in run.result["message"]
    assert_clean(run, "not-an-admin-token-0123456789")


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--print"], "--admin-token"),
        ([], "--secret"),
        (["rotate", "--print"], "--secret"),
        (["--scopes", "a", "--inherit-scopes", "--print"], "--inherit-scopes"),
        (["--expires-in", "0", "--print"], "--expires-in"),
    ],
)
def test_token_command_bad_input_is_78(args, culprit):
    env = {} if culprit == "--admin-token" else {"JUPYTERHUB_ADMIN_TOKEN": "x" * 32}
    action = [args[0]] if args[:1] == ["rotate"] else []
    rest = args[1:] if action else args
    run = run_token([*action, "--hub-url", "http://127.0.0.1:9/", "--user", "u", *rest], env=env)
    assert run.exit_code == ExitCode.CONFIGURATION, run.log
    assert culprit in run.result["message"]


# --- two concurrent runs, each with a lost answer: neither revokes the other's token ---


def _token_process(args: list[str], env: dict[str, str]) -> TokenRun:
    """The token command as its own process (the other run, beside the one in this process)."""
    child_env = {"PATH": os.environ.get("PATH", ""), **env}
    done = subprocess.run([CANARY, "token", *args], capture_output=True, text=True, env=child_env, timeout=120)
    return TokenRun(done.returncode, done.stdout, done.stderr, parse_events(done.stderr))


def _concurrent_with_lost_answers(hub, args_a: list[str], args_b: list[str], env: dict[str, str]):
    """Run A in this process through a proxy that loses its mint's answer; while A's POST waits at the
    proxy, run B to its end as another process, through a second proxy that loses B's mint's answer too.
    So B's token is minted between A's start and A's search for its own orphan."""
    others: list[TokenRun] = []
    with FaultProxy(hub.url) as proxy_a, FaultProxy(hub.url) as proxy_b:
        proxy_b.cut_next(1, after_bytes=0, path_contains="/tokens", method="POST")
        proxy_a.cut_next(1, after_bytes=0, path_contains="/tokens", method="POST",
                         before=lambda: others.append(_token_process(["--hub-url", proxy_b.url, *args_b], env)))
        run_a = run_token(["--hub-url", proxy_a.url, *args_a], env=env)
    (run_b,) = others
    return run_a, run_b


def _assert_each_kept_its_own(hub, user, run_a, run_b):
    for run in (run_a, run_b):
        assert run.exit_code == 0, run.log
        (orphan,) = run.named("token_orphan_revoked")  # its own lost token, and only that
        assert run.named("request_outcome_unknown"), run.log
    minted = {name: run.named("token_minted")[-1] for name, run in (("a", run_a), ("b", run_b))}
    assert minted["a"]["note"] != minted["b"]["note"], "each run's note is its own"
    revoked = {name: {e["token_id"] for e in run.named("token_orphan_revoked") + run.named("token_revoked")}
               for name, run in (("a", run_a), ("b", run_b))}
    assert minted["b"]["token_id"] not in revoked["a"] and minted["a"]["token_id"] not in revoked["b"]
    alive = {str(t["id"]) for t in hub.api("GET", f"users/{user}/tokens").json()["api_tokens"]}
    assert {minted["a"]["token_id"], minted["b"]["token_id"]} <= alive


def test_two_concurrent_mints_with_lost_answers_keep_each_others_token(hub, hub_user):
    user = hub_user()
    hub.create_user(user)
    args = ["--user", user, "--print"]
    run_a, run_b = _concurrent_with_lost_answers(hub, args, args, admin_env(hub))
    _assert_each_kept_its_own(hub, user, run_a, run_b)
    assert token_works(hub, run_a.stdout.strip()) and token_works(hub, run_b.stdout.strip())
    assert_clean(run_a, hub.admin_token)
    assert_clean(run_b, hub.admin_token)


def live_token_ids(hub, user: str) -> set[str]:
    return {str(t["id"]) for t in hub.api("GET", f"users/{user}/tokens").json()["api_tokens"]}


def _assert_the_first_writer_won(hub, user: str, kube, old_id: str, *, winner: TokenRun, loser: TokenRun) -> None:
    """Of two rotations that read the same Secret, the one that wrote it first holds it; the other got
    the conflict (18) and revoked its own new token: one valid token, the one the Secret holds."""
    new = {run is winner: run.named("token_minted")[-1]["token_id"] for run in (winner, loser)}
    assert winner.exit_code == 0, winner.log
    assert loser.exit_code == ExitCode.CONCURRENT_RUN, loser.log
    assert loser.result["reason"] == "concurrent_run" and "another writer" in loser.result["message"]
    assert [e["token_id"] for e in loser.named("token_revoked")] == [new[False]], "the loser revokes its own, only"
    assert [e["token_id"] for e in winner.named("token_revoked")] == [old_id]
    stored = kube.get_secret(SECRET)
    assert stored["metadata"]["annotations"][ANNOTATION + "token-id"] == new[True]
    assert token_works(hub, stored["data"]["token"])
    assert live_token_ids(hub, user) == {new[True]}, "a live token that no Secret holds"
    for run in (winner, loser):
        assert_clean(run, hub.admin_token, kube.token, stored["data"]["token"])


@pytest.mark.k8s
def test_two_concurrent_rotations_with_lost_answers_leave_one_token_the_secret_holds(kube, hub, hub_user):
    user = hub_user()
    args = ["--user", user, "--secret", SECRET, "--namespace", kube.namespace]
    first = run_token(["--hub-url", hub.url, *args, "--create-user"], env=admin_env(hub))
    assert first.exit_code == 0, first.log
    env = {**admin_env(hub), "KUBECONFIG": os.environ["KUBECONFIG"]}
    run_a, run_b = _concurrent_with_lost_answers(hub, ["rotate", *args], ["rotate", *args], env)
    for run in (run_a, run_b):
        (orphan,) = run.named("token_orphan_revoked")  # its own lost token, and only that
        assert run.named("request_outcome_unknown"), run.log
    # B ran inside A's mint: it read the Secret after A, wrote it first. A's write, guarded by the
    # version A read, is refused: A takes its new token back.
    _assert_the_first_writer_won(hub, user, kube, first.named("token_minted")[-1]["token_id"], winner=run_b, loser=run_a)


# --- rotation races and lost Kubernetes answers: the real apiserver where it can, the stub where only it can ---


class StubKube:
    """The token command's Kubernetes played by the HTTPS stub (tests/k8s_stub.py), for what a real
    apiserver cannot be made to do on demand: make a write and lose its answer."""

    def __init__(self, stub, tmp_path):
        self.stub, self.namespace, self.token = stub, "jhub", "stub-kube-token-0123456789"
        self.kubeconfig = stub.write_kubeconfig(tmp_path / "stub-kubeconfig", self.token, self.namespace)

    def get_secret(self, name: str) -> dict | None:
        return self.stub.get_secret(self.namespace, name)


@pytest.fixture
def stub_kube(secret_stub, tmp_path, monkeypatch) -> StubKube:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr("app.kube.SERVICEACCOUNT_DIR", tmp_path / "not-in-a-pod")
    stub_kube = StubKube(secret_stub, tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(stub_kube.kubeconfig))
    return stub_kube


@pytest.fixture(params=["stub", pytest.param("apiserver", marks=pytest.mark.k8s)])
def any_kube(request):
    """The real apiserver with the README's Role, or the stub with the apiserver's conflict semantics."""
    return request.getfixturevalue("stub_kube" if request.param == "stub" else "kube")


def minted_into_secret(hub, hub_user, kube) -> tuple[str, list[str], str]:
    """A user whose token the command minted into the Secret: (user, the command's args, the token's id)."""
    user = hub_user()
    args = ["--user", user, "--secret", SECRET, "--namespace", kube.namespace]
    first = run_token(["--hub-url", hub.url, *args, "--create-user"], env=admin_env(hub))
    assert first.exit_code == 0, first.log
    return user, args, first.named("token_minted")[-1]["token_id"]


def test_two_concurrent_rotations_one_wins_and_the_other_takes_its_token_back(any_kube, hub, hub_user, monkeypatch):
    """B reads the Secret after A and writes it before A: A's replace carries the version A read, so
    the apiserver refuses it; re-reading just before writing would overwrite B and leave B's token live."""
    user, args, old_id = minted_into_secret(hub, hub_user, any_kube)
    env = {**admin_env(hub), "KUBECONFIG": os.environ["KUBECONFIG"]}
    others: list[TokenRun] = []
    real_mint = HubClient.mint_token

    def mint_after_another_rotation(self, *a, **kw):
        if not others:
            others.append(_token_process(["rotate", "--hub-url", hub.url, *args], env))
        return real_mint(self, *a, **kw)

    monkeypatch.setattr(HubClient, "mint_token", mint_after_another_rotation)
    run_a = run_token(["rotate", "--hub-url", hub.url, *args], env=env)
    (run_b,) = others
    _assert_the_first_writer_won(hub, user, any_kube, old_id, winner=run_b, loser=run_a)


def test_a_signal_during_the_rotations_mint_waits_until_the_old_token_is_revoked(any_kube, hub, hub_user, monkeypatch):
    user, args, old_id = minted_into_secret(hub, hub_user, any_kube)
    old = any_kube.get_secret(SECRET)["data"]["token"]
    real_mint = HubClient.mint_token

    def signalled_mint(self, *a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # acted on at the next bytecode, unless shielded
        return real_mint(self, *a, **kw)

    monkeypatch.setattr(HubClient, "mint_token", signalled_mint)
    run = run_token(["rotate", "--hub-url", hub.url, *args], env=admin_env(hub))
    assert run.exit_code == ExitCode.SIGTERM and run.result["outcome"] == "interrupted", run.log
    new = any_kube.get_secret(SECRET)["data"]["token"]
    assert new != old and token_works(hub, new)
    assert not token_works(hub, old), "the rotated-out token is still valid after the signal"
    assert [e["token_id"] for e in run.named("token_revoked")] == [old_id] and run.named("signal_received")
    assert live_token_ids(hub, user) == {run.named("token_minted")[-1]["token_id"]}
    assert_clean(run, old, new, hub.admin_token, any_kube.token)


def test_a_rotation_whose_secret_update_answer_is_lost_reads_it_back_and_completes(stub_kube, hub, hub_user):
    """The apiserver made the update; the answer was lost. Not resent (the resend's 409 would read as
    another writer's, and the token the Secret now holds would be revoked): read back, it holds ours."""
    user, args, old_id = minted_into_secret(hub, hub_user, stub_kube)
    old = stub_kube.get_secret(SECRET)["data"]["token"]
    stub_kube.stub.after_write("PUT", "secrets", stub_kube.namespace, SECRET)
    run = run_token(["rotate", "--hub-url", hub.url, *args], env=admin_env(hub))
    assert run.exit_code == 0, run.log
    new = stub_kube.get_secret(SECRET)["data"]["token"]
    assert new != old and token_works(hub, new), "the Secret holds a token that does not work"
    assert not token_works(hub, old)
    assert run.named("request_outcome_unknown") and run.named("secret_write_confirmed")
    assert [e["token_id"] for e in run.named("token_revoked")] == [old_id]
    assert_clean(run, old, new, hub.admin_token, stub_kube.token)


def test_a_mint_whose_secret_create_answer_is_lost_reads_it_back(stub_kube, hub, hub_user):
    user = hub_user()
    stub_kube.stub.after_write("POST", "secrets", stub_kube.namespace, SECRET)
    run = run_token(["--hub-url", hub.url, "--user", user, "--create-user", "--secret", SECRET,
                     "--namespace", stub_kube.namespace], env=admin_env(hub))
    assert run.exit_code == 0, run.log
    stored = stub_kube.get_secret(SECRET)["data"]["token"]
    assert token_works(hub, stored), "the Secret holds a revoked token"
    assert run.named("secret_write_confirmed") and not run.named("token_revoked")
    assert_clean(run, stored, hub.admin_token, stub_kube.token)


def test_a_lost_update_that_was_not_made_is_21_and_the_new_token_is_taken_back(stub_kube, hub, hub_user):
    user, args, old_id = minted_into_secret(hub, hub_user, stub_kube)
    old = stub_kube.get_secret(SECRET)["data"]["token"]
    stub_kube.stub.after_write("PUT", "secrets", stub_kube.namespace, SECRET, commit=False)
    run = run_token(["rotate", "--hub-url", hub.url, *args], env=admin_env(hub))
    assert run.exit_code == ExitCode.KUBERNETES_UNAVAILABLE, run.log
    assert "does not hold this run's value" in run.result["message"]
    assert stub_kube.get_secret(SECRET)["data"]["token"] == old and token_works(hub, old), "the old token goes on"
    (revoked,) = run.named("token_revoked")
    assert revoked["token_id"] == run.named("token_minted")[-1]["token_id"] and live_token_ids(hub, user) == {old_id}


def test_a_lost_update_that_cannot_be_read_back_revokes_neither_token_and_names_both(stub_kube, hub, hub_user):
    """Whether the Secret holds the new token is unknown: revoking either could take the canary's
    token away. Both stay valid, and the log names both for a human to check."""
    user, args, old_id = minted_into_secret(hub, hub_user, stub_kube)
    stub = stub_kube.stub
    stub.after_write("PUT", "secrets", stub_kube.namespace, SECRET, then=lambda: stub.fail(stub_kube.namespace, SECRET, "500"))
    run = run_token(["rotate", "--hub-url", hub.url, *args], env=admin_env(hub))
    assert run.exit_code == ExitCode.KUBERNETES_UNAVAILABLE, run.log
    new_id = run.named("token_minted")[-1]["token_id"]
    assert not run.named("token_revoked"), run.log
    assert [e["token_id"] for e in run.named("new_token_not_revoked")] == [new_id]
    assert [e["token_id"] for e in run.named("old_token_not_revoked")] == [old_id]
    assert live_token_ids(hub, user) == {old_id, new_id}
    assert token_works(hub, stub.get_secret(stub_kube.namespace, SECRET)["data"]["token"])


@pytest.mark.parametrize("answer", [True, False], ids=["answered", "answer-lost"])
def test_a_signal_during_the_rotations_secret_update_waits_until_the_old_token_is_revoked(stub_kube, hub, hub_user,
                                                                                         answer):
    """SIGTERM while the Secret's update is on its way (its answer sent, or lost and read back): the run
    ends 143 only once the Secret holds the new token and the old one is revoked."""
    user, args, old_id = minted_into_secret(hub, hub_user, stub_kube)
    old = stub_kube.get_secret(SECRET)["data"]["token"]
    stub_kube.stub.after_write("PUT", "secrets", stub_kube.namespace, SECRET, answer=answer,
                               then=lambda: os.kill(os.getpid(), signal.SIGTERM))
    run = run_token(["rotate", "--hub-url", hub.url, *args], env=admin_env(hub))
    assert run.exit_code == ExitCode.SIGTERM and run.named("signal_received"), run.log
    new = stub_kube.get_secret(SECRET)["data"]["token"]
    assert token_works(hub, new) and not token_works(hub, old)
    assert [e["token_id"] for e in run.named("token_revoked")] == [old_id]
    assert live_token_ids(hub, user) == {run.named("token_minted")[-1]["token_id"]}
    assert_clean(run, old, new, hub.admin_token, stub_kube.token)


# --- which token a rotation revokes: the one it read from the Secret, proven, never one the annotations name ---


@pytest.mark.parametrize("replaced_by", ["a revoked token", "a valid token"])
def test_a_rotation_revokes_the_token_it_read_never_the_one_a_stale_annotation_names(stub_kube, hub, hub_user,
                                                                                    replaced_by):
    """The Secret's token was put in by hand (`kubectl apply` keeps the annotations the command wrote):
    its token-id annotation names the token the command minted, still live (copied elsewhere, say),
    no longer the Secret's. The rotation revokes the token it read, whose id the hub tells; a token
    the hub rejects has nothing left to revoke. The annotated one is not provably the Secret's: untouched."""
    if not hub_tells_token_ids(hub):
        pytest.skip("JupyterHub before 5 cannot name a token: the annotation is the only evidence there")
    user, args, annotated_id = minted_into_secret(hub, hub_user, stub_kube)
    annotated = stub_kube.get_secret(SECRET)["data"]["token"]
    by_hand = hub.new_token(user, note="put in the Secret by hand")
    by_hand_id = str(hub.api("GET", f"users/{user}/tokens").json()["api_tokens"][-1]["id"])
    if replaced_by == "a revoked token":
        assert hub.api("DELETE", f"users/{user}/tokens/{by_hand_id}").status_code == 204
    stored = stub_kube.stub.objects[("secrets", stub_kube.namespace, SECRET)]
    stored["data"]["token"] = base64.b64encode(by_hand.encode()).decode()

    run = run_token(["rotate", "--hub-url", hub.url, *args], env=admin_env(hub))
    assert run.exit_code == 0, run.log
    new = stub_kube.get_secret(SECRET)["data"]["token"]
    assert token_works(hub, new)
    assert token_works(hub, annotated), "the rotation revoked the token a stale annotation named"
    revoked = [e["token_id"] for e in run.named("token_revoked")]
    if replaced_by == "a valid token":
        assert revoked == [by_hand_id] and not token_works(hub, by_hand), run.log
    else:
        assert revoked == [] and run.named("old_token_not_revoked"), run.log
    assert annotated_id in live_token_ids(hub, user)
    assert_clean(run, annotated, by_hand, new, hub.admin_token, stub_kube.token)


# --- a JupyterHub service's token is the hub's configuration, not minted (issue 20, fresh-user probes) ---

SERVICE = "jupyterhub-canary-service"


@pytest.fixture(scope="module")
def service_hub(tmp_path_factory):
    """A hub with hub-config/jupyterhub_canary_config.py's fresh-user service, whose admin may read
    services (a z2jh admin may)."""
    from tests.localhub import LocalHub, until_stopped
    from tests.test_hub_side_config import ADMIN_READS_SERVICES, LOAD_CANARY_CONFIG, fresh_env

    # A second admin, as the test hub's own was before ADMIN_READS_SERVICES: it may not read services.
    blind_admin = f"""
c.JupyterHub.services.append({{"name": "blind-admin", "api_token": {BLIND_ADMIN_TOKEN!r}}})
c.JupyterHub.load_roles.append({{"name": "blind-admin", "services": ["blind-admin"],
                                "scopes": list(c.JupyterHub.load_roles[0]["scopes"])}})
"""
    hub = LocalHub(tmp_path_factory.mktemp("service_hub"),
                   extra_config=blind_admin + ADMIN_READS_SERVICES + LOAD_CANARY_CONFIG,
                   env=fresh_env("jupyterhub-canary-fresh-default", "f" * 64))
    yield from until_stopped(hub.start(), "the hub")


BLIND_ADMIN_TOKEN = "b1" * 32


def test_a_service_named_as_the_user_ends_78_showing_the_way_and_creates_nothing(service_hub):
    """Without the check, --create-user made a *user* of the service's name and minted it a token."""
    run = run_token(["--hub-url", service_hub.url, "--user", SERVICE, "--create-user", "--print"],
                    env=admin_env(service_hub))
    assert run.exit_code == ExitCode.CONFIGURATION, run.log
    assert run.result["reason"] == "service_token_not_mintable"
    message = run.result["message"]
    assert f"--user '{SERVICE}' is a JupyterHub service, not a user" in message
    for way in ("mints tokens through its API for users only", "openssl rand -hex 32", "JUPYTERHUB_CANARY_SERVICE_TOKEN",
                "hub-config/z2jh-values.yaml", 'chart/README.md, "Fresh-user probes"'):
        assert way in message, way
    assert run.stdout == "" and not run.named("token_minted") and not run.named("user_created")
    assert service_hub.api("GET", f"users/{SERVICE}").status_code == 404, "no user of the service's name"
    assert_clean(run, service_hub.admin_token, "f" * 64)


def test_a_service_is_refused_before_kubernetes_is_touched(service_hub, stub_kube):
    run = run_token(["rotate", "--hub-url", service_hub.url, "--user", SERVICE, "--secret", SECRET,
                     "--namespace", stub_kube.namespace], env=admin_env(service_hub))
    assert run.exit_code == ExitCode.CONFIGURATION and run.result["reason"] == "service_token_not_mintable", run.log
    assert stub_kube.stub.requests_seen == [], "the Secret was not read"


def test_a_user_beside_the_service_still_mints(service_hub):
    run = run_token(["--hub-url", service_hub.url, "--user", "canary-beside-a-service", "--create-user", "--print"],
                    env=admin_env(service_hub))
    assert run.exit_code == ExitCode.OK, run.log
    assert token_works(service_hub, run.stdout.strip())
    assert not run.named("service_lookup_forbidden")


def test_an_admin_token_that_cannot_read_services_goes_on_as_for_a_user_and_says_so(service_hub):
    """Without read:services the command cannot tell: the service's name is taken for a user's, as the
    README's fault table says, with --create-user too."""
    env = {"JUPYTERHUB_ADMIN_TOKEN": BLIND_ADMIN_TOKEN}
    run = run_token(["--hub-url", service_hub.url, "--user", SERVICE, "--print"], env=env)
    assert run.named("service_lookup_forbidden"), run.log
    assert run.exit_code == ExitCode.CONFIGURATION and "--create-user" in run.result["message"]
    created = run_token(["--hub-url", service_hub.url, "--user", SERVICE, "--create-user", "--print"], env=env)
    try:
        assert created.exit_code == ExitCode.OK and created.named("user_created"), created.log
        assert token_works(service_hub, created.stdout.strip()), "a user's token, not the service's"
    finally:
        assert service_hub.api("DELETE", f"users/{SERVICE}").status_code == 204
