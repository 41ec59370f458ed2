"""hub-config/jupyterhub_canary_config.py in real JupyterHubs with OAuth, auth_state and a 2 s auth refresh.

The seed's problem, reproduced: with `enable_auth_state`, OAuthenticator refreshes a user's auth
from their stored OAuth tokens, and a service-account user who never logged in has none. What the
hub then does with that user's API token depends on its version (measured here, not assumed):

- JupyterHub < 6.1, and 6.1+ with `Authenticator.auth_refresh_strict = True`: every request with
  the token answers 403, from the very first one. There is no "works at first" phase: a user who
  never logged in has never been refreshed, so a refresh is due at once.
- JupyterHub 6.1+ by default keeps the stale auth for token requests: the account works, and the
  hub logs "has stale auth info. Cannot refresh on API requests." on each of its requests.

With our config file loaded (and the hub strict where it can be), the canary's full cycle works
with a least-scope token minted as the product does, while an OAuth user who logged in through the
(fake) provider is still refreshed, through whatever refresh hook the deployer had before.

The provider is tests/oauth_provider.py; the hubs are tests/localhub.py with `extra_config`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import pytest
import requests

from app.exit_codes import ExitCode
from app.token_command import least_scopes
from tests.localhub import LocalHub, until_stopped, wait_for
from tests.oauth_provider import FakeOAuthProvider
from tests.runner import run_main, run_token

pytestmark = pytest.mark.hub

CANARY_CONFIG = Path(__file__).resolve().parent.parent / "hub-config" / "jupyterhub_canary_config.py"
ROLE_NAME = "jupyterhub-canary-service-account"
REFRESH_AGE = 2  # seconds: Authenticator.auth_refresh_age of every hub here
SERVICE_ACCOUNT = "canary-sa"
NORMAL_USER = "oauth-alice"


def _major_minor(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


# The test process runs the same jupyterhub as the hubs it starts (the same venv).
HAS_STRICT_KNOB = _major_minor(version("jupyterhub")) >= (6, 1)  # Authenticator.auth_refresh_strict


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOAuthProvider]:
    with FakeOAuthProvider(default_user=NORMAL_USER) as fake:
        yield fake


def oauth_config(provider: FakeOAuthProvider, *, strict: bool | None = None) -> str:
    """extra_config for LocalHub: GenericOAuthenticator at the fake provider, auth_state, a short refresh."""
    lines = [
        "import os",
        'c.JupyterHub.authenticator_class = "generic-oauth"',
        f"c.GenericOAuthenticator.authorize_url = {provider.authorize_url!r}",
        f"c.GenericOAuthenticator.token_url = {provider.token_url!r}",
        f"c.GenericOAuthenticator.userdata_url = {provider.userdata_url!r}",
        'c.GenericOAuthenticator.client_id = "jupyterhub"',
        'c.GenericOAuthenticator.client_secret = "not-checked"',
        "c.Authenticator.enable_auth_state = True",
        "c.CryptKeeper.keys = [os.urandom(32)]",
        f"c.Authenticator.auth_refresh_age = {REFRESH_AGE}",
        "c.Authenticator.allow_all = True",
    ]
    if strict is not None:
        lines.append(f"c.Authenticator.auth_refresh_strict = {strict!r}")
    return "\n".join(lines) + "\n"


@contextmanager
def running(workdir: Path, extra_config: str) -> Iterator[LocalHub]:
    yield from until_stopped(LocalHub(workdir, extra_config=extra_config).start(), "the hub")


def mint(hub: LocalHub, user: str) -> tuple[str, list[str], str]:
    """The service account's token as the product mints it: (token, its scopes, what happened to the user)."""
    run = run_token(
        ["--hub-url", hub.url, "--user", user, "--print", "--create-user"],
        env={"JUPYTERHUB_ADMIN_TOKEN": hub.admin_token},
    )
    assert run.exit_code == ExitCode.OK, run.log
    user_event = next(e["event"] for e in run.events if e["event"] in ("user_created", "user_exists"))
    return run.stdout.strip(), run.named("token_minted")[0]["scopes"], user_event


def canary_run(hub: LocalHub, user: str, token: str, tmp_path: Path):
    run = run_main(
        ["--hub-url", hub.url, "--user", user, "--termination-log", str(tmp_path / "termination-log")],
        env={"JUPYTERHUB_API_TOKEN": token},
    )
    run.assert_no_secret(token)
    return run


def hub_log(hub: LocalHub) -> str:
    return hub.log_file.read_text(encoding="utf-8", errors="replace")


def whoami(hub: LocalHub, token: str) -> requests.Response:
    return requests.get(hub.api_url + "user", headers={"Authorization": f"token {token}"}, timeout=10)


# --- without the hook: the problem the seed describes ---


@pytest.mark.skipif(not HAS_STRICT_KNOB, reason="JupyterHub < 6.1 always refuses: see the test below")
def test_without_the_hook_hub_6_1_keeps_stale_auth_for_api_tokens_and_warns(provider, tmp_path):
    """6.1+ by default: a refresh that fails on a token request is logged and ignored, so the
    service account works without the hook, but every one of its requests tries (and logs) a refresh."""
    with running(tmp_path / "hub", oauth_config(provider)) as hub:
        token, _, _ = mint(hub, SERVICE_ACCOUNT)
        assert whoami(hub, token).status_code == 200
        assert whoami(hub, token).status_code == 200
        warning = f"User {SERVICE_ACCOUNT} has stale auth info. Cannot refresh on API requests."
        assert hub_log(hub).count(warning) >= 2, "one refresh attempt per request"
    assert provider.userinfo_calls(SERVICE_ACCOUNT) == 0, "no OAuth token to refresh with"


def test_without_the_hook_a_service_account_that_never_logged_in_is_refused(provider, tmp_path):
    """JupyterHub < 6.1 (and 6.1+ with auth_refresh_strict): the token is refused from its first
    request, because the user has never been refreshed, so a refresh is due at once, and it fails."""
    strict = True if HAS_STRICT_KNOB else None  # < 6.1 has no knob and behaves as strict
    with running(tmp_path / "hub", oauth_config(provider, strict=strict)) as hub:
        token, _, user_event = mint(hub, SERVICE_ACCOUNT)
        assert user_event == "user_created", "the admin API made it; it never logged in"

        first = whoami(hub, token)
        assert first.status_code == 403, "refused at once: there is no working first phase"
        spawn = requests.post(
            hub.api_url + f"users/{SERVICE_ACCOUNT}/server", headers={"Authorization": f"token {token}"}, timeout=30
        )
        assert spawn.status_code == 403 and spawn.json()["message"] == "Missing or invalid credentials."

        run = canary_run(hub, SERVICE_ACCOUNT, token, tmp_path)
        assert run.exit_code == ExitCode.PERMISSION, run.output
        assert run.result["outcome"] != "ok"
        assert hub.servers(SERVICE_ACCOUNT) == {}
        assert f"User {SERVICE_ACCOUNT} has stale auth info." in hub_log(hub)
    assert provider.userinfo_calls(SERVICE_ACCOUNT) == 0


# --- with hub-config/jupyterhub_canary_config.py loaded ---


@pytest.fixture(scope="module")
def canary_hub(provider, tmp_path_factory) -> Iterator[LocalHub]:
    """A strict OAuth hub (where the knob exists) that loads our config file the way z2jh's
    extraConfig does (exec in the config's namespace), after a deployer's own refresh hook.

    - The default `user` role is trimmed to one scope, so that minting a least-scope token proves
      our role grants those scopes, whatever the hub's default role.
    - The service accounts come from the Python variable (LocalHub clears JUPYTERHUB_* variables).
    - Every call of the deployer's hook and of ours is written to hooks.jsonl: the test reads
      who was refreshed through which hook and what our hook answered.
    """
    workdir = tmp_path_factory.mktemp("canary_hub")
    hook_log = workdir / "hooks.jsonl"
    extra = oauth_config(provider, strict=True if HAS_STRICT_KNOB else None) + f"""
import json, time
HOOK_LOG = {str(hook_log)!r}

def record(hook, user, result):
    with open(HOOK_LOG, "a") as f:
        f.write(json.dumps({{"hook": hook, "user": user.name, "result": result, "time": time.monotonic()}}) + "\\n")

def deployers_refresh_user_hook(authenticator, user, auth_state):
    record("deployer", user, None)
    return None

c.OAuthenticator.refresh_user_hook = deployers_refresh_user_hook
c.JupyterHub.load_roles.append({{"name": "user", "scopes": ["read:users:name!user"]}})

JUPYTERHUB_CANARY_SERVICE_ACCOUNTS = ["{SERVICE_ACCOUNT}", "second-canary"]
path = {str(CANARY_CONFIG)!r}
exec(compile(open(path).read(), path, "exec"))

canary_hook = c.OAuthenticator.refresh_user_hook
def spy(authenticator, user, auth_state):
    result = canary_hook(authenticator, user, auth_state)
    record("canary", user, result)
    return result

c.OAuthenticator.refresh_user_hook = spy
"""
    with running(workdir, extra) as hub:
        hub.hook_log = hook_log
        yield hub


def hook_calls(hub: LocalHub, hook: str, user: str) -> list[dict]:
    try:
        lines = hub.hook_log.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = (json.loads(line) for line in lines if line.strip())
    return [r for r in records if r["hook"] == hook and r["user"] == user]


def test_the_role_gives_the_service_accounts_exactly_the_least_scopes(canary_hub):
    """The role with `!user` filters is accepted by the hub, assigned to each configured account
    (the hub creates them at start), and a least-scope token mints from it alone."""
    for name in (SERVICE_ACCOUNT, "second-canary"):
        assert ROLE_NAME in canary_hub.user_model(name)["roles"]
    token, scopes, user_event = mint(canary_hub, SERVICE_ACCOUNT)
    assert user_event == "user_exists", "the role made the user at hub start"
    assert set(least_scopes(canary_hub.version, SERVICE_ACCOUNT)) <= set(scopes), scopes
    # The hub also lists what those scopes imply (5.x: the subscopes of `servers`; read:users:name),
    # all for that one user.
    assert all(scope.endswith(f"!user={SERVICE_ACCOUNT}") for scope in scopes), scopes
    assert whoami(canary_hub, token).status_code == 200


def test_the_canary_cycle_works_after_refresh_is_due(canary_hub, tmp_path):
    """Our hook answers "fresh" for the service account each time a refresh comes due (and before
    the spawn), so the full cycle passes on a hub that refuses stale auth; the deployer's hook is
    never asked about the service account."""
    token, _, _ = mint(canary_hub, SERVICE_ACCOUNT)
    assert whoami(canary_hub, token).status_code == 200
    first = hook_calls(canary_hub, "canary", SERVICE_ACCOUNT)
    assert first, "the first request of a never-refreshed user is a refresh"

    def refreshed_again() -> bool:  # poll with the token until the refresh age has passed
        assert whoami(canary_hub, token).status_code == 200
        calls = hook_calls(canary_hub, "canary", SERVICE_ACCOUNT)
        return calls[-1]["time"] - first[-1]["time"] >= REFRESH_AGE

    wait_for(refreshed_again, timeout=REFRESH_AGE + 8, what="a second auth refresh", interval=0.25)

    before = len(hook_calls(canary_hub, "canary", SERVICE_ACCOUNT))
    run = canary_run(canary_hub, SERVICE_ACCOUNT, token, tmp_path)
    assert run.exit_code == ExitCode.OK, run.output
    assert run.result["outcome"] == "ok"
    assert canary_hub.servers(SERVICE_ACCOUNT) == {}

    calls = hook_calls(canary_hub, "canary", SERVICE_ACCOUNT)
    assert len(calls) > before, "the spawn forces a refresh (refresh_pre_spawn), answered by our hook"
    assert {c["result"] for c in calls} == {True}
    assert hook_calls(canary_hub, "deployer", SERVICE_ACCOUNT) == []
    # OAuthenticator's own refresh never ran for it (it logs this when it finds no auth_state).
    assert f"No auth_state found for user {SERVICE_ACCOUNT}" not in hub_log(canary_hub)


def test_a_user_who_logged_in_through_oauth_is_still_refreshed(canary_hub, provider):
    """A browser login through the provider, then cookie requests: once the refresh age has passed,
    the hub asks the provider's /userinfo again, through the deployer's hook (chained by ours)."""
    session = requests.Session()
    to_provider = session.get(canary_hub.url + "hub/oauth_login", allow_redirects=False, timeout=10)
    assert to_provider.status_code == 302
    authorize = to_provider.headers["Location"]
    assert authorize.startswith(provider.authorize_url)
    to_hub = session.get(authorize + f"&login={NORMAL_USER}", allow_redirects=False, timeout=10)
    assert to_hub.status_code == 302
    callback = session.get(to_hub.headers["Location"], allow_redirects=False, timeout=30)
    assert callback.status_code == 302, callback.text[:500]  # logged in: on to the hub
    assert provider.userinfo_calls(NORMAL_USER) == 1 and provider.token_calls(NORMAL_USER) == 1

    def refreshed() -> bool:
        home = session.get(canary_hub.url + "hub/home", allow_redirects=False, timeout=10)
        assert home.status_code == 200, f"the session should stay logged in: {home.status_code}"
        return provider.userinfo_calls(NORMAL_USER) >= 2

    wait_for(refreshed, timeout=REFRESH_AGE + 8, what=f"a refresh of {NORMAL_USER}", interval=0.25)
    assert hook_calls(canary_hub, "deployer", NORMAL_USER), "our hook passed the user on to the deployer's"
    assert {c["result"] for c in hook_calls(canary_hub, "canary", NORMAL_USER)} == {None}
    assert provider.token_calls(NORMAL_USER, "refresh_token") == 0, "the access token still worked"


# --- fresh-user probes: the service and its role on a real hub (issue 20, notes/FRESH.md) ---

FRESH_USER = "jupyterhub-canary-fresh-default"
OTHER_FRESH_USER = "jupyterhub-canary-fresh-gpu"  # configured too: the role names each by name
FRESH_SERVICE = "jupyterhub-canary-service"
FRESH_ROLE = "jupyterhub-canary-fresh-users"


def fresh_env(fresh_users: str, token: str | None) -> dict[str, str]:
    """The hub's variables as hub-config/z2jh-values.yaml's hub.extraEnv gives them (LocalHub clears
    the test process's own JUPYTERHUB_* variables)."""
    env = {"JUPYTERHUB_CANARY_FRESH_USERS": fresh_users}
    if token is not None:
        env["JUPYTERHUB_CANARY_SERVICE_TOKEN"] = token
    return env


LOAD_CANARY_CONFIG = f"""
path = {str(CANARY_CONFIG)!r}
exec(compile(open(path).read(), path, "exec"))
"""
# The test hub's admin service may also read services (a z2jh admin has it): to see which exist.
ADMIN_READS_SERVICES = 'c.JupyterHub.load_roles[0]["scopes"] += ["read:services", "list:services"]\n'


@pytest.fixture(scope="module")
def fresh_hub(tmp_path_factory) -> Iterator[LocalHub]:
    """tests/hub_config.py's hub (dummy authenticator, anyone may log in) loading our file as z2jh
    does, with two fresh users and the service's token from the environment, as from a Secret made
    from a file (a trailing newline). The hub's own `user` role is trimmed, so the service's scopes
    can only come from our role."""
    workdir = tmp_path_factory.mktemp("fresh_hub")
    token = secrets.token_hex(32)
    extra = 'c.JupyterHub.load_roles.append({"name": "user", "scopes": ["read:users:name!user"]})\n' + LOAD_CANARY_CONFIG
    hub = LocalHub(workdir, extra_config=extra, env=fresh_env(f"{FRESH_USER},{OTHER_FRESH_USER}", token + "\n"))
    hub.service_token = token
    yield from until_stopped(hub.start(), "the hub")


def as_service(hub: LocalHub, method: str, path: str, **kw) -> requests.Response:
    headers = {"Authorization": f"token {hub.service_token}"}
    return requests.request(method, hub.api_url + path, headers=headers, timeout=30, **kw)


def test_the_services_token_is_the_service_with_only_the_fresh_users_scopes(fresh_hub):
    me = as_service(fresh_hub, "GET", "user")
    assert me.status_code == 200, me.text
    model = me.json()
    assert model["kind"] == "service" and model["name"] == FRESH_SERVICE
    servers = ["servers"] if _major_minor(fresh_hub.version)[0] < 6 else ["read:servers", "start:servers", "delete:servers"]
    for name in (FRESH_USER, OTHER_FRESH_USER):
        for scope in ["admin:users", "tokens", "access:servers", *servers]:
            assert f"{scope}!user={name}" in model["scopes"], (scope, model["scopes"])
    # Everything else the hub lists is implied by those, for those users (or about the service itself).
    for scope in model["scopes"]:
        assert scope.endswith((f"!user={FRESH_USER}", f"!user={OTHER_FRESH_USER}", f"!service={FRESH_SERVICE}")), scope


def test_the_service_creates_spawns_reaches_stops_and_deletes_the_fresh_user(fresh_hub):
    """The fresh-user cycle, step by step, with the service's token alone: the user does not exist
    before (a `!user=` filter needs no user), is created (201), spawned, reached through the proxy,
    stopped, its tokens read (the canary's guard), and deleted (204)."""
    assert as_service(fresh_hub, "GET", f"users/{FRESH_USER}").status_code == 404
    created = as_service(fresh_hub, "POST", f"users/{FRESH_USER}")
    assert created.status_code == 201, created.text
    assert created.json()["name"] == FRESH_USER and created.json()["admin"] is False
    try:
        spawned = as_service(fresh_hub, "POST", f"users/{FRESH_USER}/server")
        assert spawned.status_code in (201, 202), spawned.text

        def ready() -> bool:
            model = as_service(fresh_hub, "GET", f"users/{FRESH_USER}")
            assert model.status_code == 200, model.text
            server = model.json()["servers"].get("")
            assert server is not None, f"the spawn failed: {fresh_hub.log_tail(20)}"
            return bool(server["ready"])

        wait_for(ready, timeout=60, what="the fresh user's server")
        status = requests.get(
            fresh_hub.url + f"user/{FRESH_USER}/api/status",
            headers={"Authorization": f"token {fresh_hub.service_token}"}, timeout=30,
        )
        assert status.status_code == 200, status.text
        tokens = as_service(fresh_hub, "GET", f"users/{FRESH_USER}/tokens")
        assert tokens.status_code == 200, tokens.text

        stopped = as_service(fresh_hub, "DELETE", f"users/{FRESH_USER}/server")
        assert stopped.status_code in (202, 204), stopped.text
        wait_for(lambda: as_service(fresh_hub, "GET", f"users/{FRESH_USER}").json()["servers"] == {}, timeout=60,
                 what="the fresh user's server to stop")
    finally:
        deleted = as_service(fresh_hub, "DELETE", f"users/{FRESH_USER}")
    assert deleted.status_code == 204, deleted.text
    assert fresh_hub.api("GET", f"users/{FRESH_USER}").status_code == 404


# What a scope filtered to other users answers (6.1.1 and 5.5.4 alike): 404 with this message, not
# 403; a token without the scope at all gets 403 "Action is not authorized with current scopes".
# A user that does not exist, asked for with the scope, is a 404 without it (6: null, 5: "Not Found").
FILTERED_OUT = "No access to resources or resources not found"


@pytest.mark.parametrize("name", ["alice", "jupyterhub-canary-fresh-unlisted", "jupyterhub-canary"])
def test_the_service_cannot_create_or_delete_any_other_user(fresh_hub, name):
    """The role is the first guard: a name outside JUPYTERHUB_CANARY_FRESH_USERS, even one that
    follows the name rule, cannot be created; an existing user cannot be deleted, read or spawned.
    The hub refuses with 404 "No access to resources or resources not found" (measured; not 403)."""
    existed = fresh_hub.api("GET", f"users/{name}").status_code == 200  # the service account (1) exists
    created = as_service(fresh_hub, "POST", f"users/{name}")
    assert (created.status_code, created.json()["message"]) == (404, FILTERED_OUT), created.text
    assert (fresh_hub.api("GET", f"users/{name}").status_code == 200) == existed, "not created"

    fresh_hub.create_user(name)  # a real person's account, made by the admin
    try:
        for method, path in (("DELETE", f"users/{name}"), ("POST", f"users/{name}/server"), ("GET", f"users/{name}")):
            refused = as_service(fresh_hub, method, path)
            assert (refused.status_code, refused.json()["message"]) == (404, FILTERED_OUT), (method, refused.text)
        assert fresh_hub.user_model(name)["servers"] == {}, "still there, nothing started"
    finally:
        if not existed:
            assert fresh_hub.api("DELETE", f"users/{name}").status_code == 204


def test_the_service_cannot_make_the_fresh_user_an_admin(fresh_hub):
    refused = as_service(fresh_hub, "POST", f"users/{OTHER_FRESH_USER}", json={"admin": True})
    assert refused.status_code == 403, refused.text
    assert fresh_hub.api("GET", f"users/{OTHER_FRESH_USER}").status_code == 404


def login(hub: LocalHub, name: str) -> requests.Response:
    """The dummy authenticator's login form, as a browser sends it (with the form's _xsrf)."""
    session = requests.Session()
    form = session.get(hub.url + "hub/login", timeout=10)
    assert form.status_code == 200, form.text[:300]
    xsrf = session.cookies.get("_xsrf")
    assert xsrf, "the login form sets its _xsrf cookie"
    return session.post(
        hub.url + "hub/login", data={"username": name, "password": "anything", "_xsrf": xsrf},
        allow_redirects=False, timeout=30,
    )


def test_nobody_can_log_in_as_a_fresh_user(fresh_hub):
    """Authenticator.blocked_users: the login form refuses the fresh users' names (and makes no user),
    while any other name logs in, as this hub lets anyone."""
    for name in (FRESH_USER, OTHER_FRESH_USER):
        refused = login(fresh_hub, name)
        # 403 from JupyterHub 5 on; 4.1 shows the login form again (200): either way no redirect into the hub.
        assert refused.status_code in (200, 403) and "Location" not in refused.headers, (name, refused.status_code)
        assert fresh_hub.api("GET", f"users/{name}").status_code == 404
    walk_in = login(fresh_hub, "walk-in")
    assert walk_in.status_code == 302, walk_in.text[:300]
    assert fresh_hub.api("DELETE", "users/walk-in").status_code == 204


def test_without_the_token_the_hub_has_no_service_but_blocks_the_name(tmp_path):
    with running_with_env(tmp_path / "hub", ADMIN_READS_SERVICES + LOAD_CANARY_CONFIG, fresh_env(FRESH_USER, None)) as hub:
        assert hub.api("GET", "services").json().keys() == {"localhub-admin"}
        assert hub.api("GET", f"services/{FRESH_SERVICE}").status_code in (404, 500)  # 4.1: 500 for no such service
        refused = login(hub, FRESH_USER)
        assert refused.status_code in (200, 403) and "Location" not in refused.headers, refused.status_code


def test_a_name_outside_the_rule_stops_the_hub_at_start(tmp_path):
    """`alice` would give the service admin:users on a real person: the hub must not start."""
    hub = LocalHub(tmp_path / "hub", extra_config=LOAD_CANARY_CONFIG,
                   env=fresh_env(f"{FRESH_USER},alice", secrets.token_hex(32)))
    with pytest.raises(RuntimeError) as refused:
        hub.start()
    hub.stop()
    assert not hub.leftover_processes()
    assert "JUPYTERHUB_CANARY_FRESH_USERS names 'alice', which cannot be a fresh user" in str(refused.value)


@contextmanager
def running_with_env(workdir: Path, extra_config: str, env: dict[str, str]) -> Iterator[LocalHub]:
    yield from until_stopped(LocalHub(workdir, extra_config=extra_config, env=env).start(), "the hub")


def test_a_new_token_leaves_the_old_one_valid_until_the_service_is_renamed(tmp_path):
    """What chart/README.md says about rotating the service's token, measured: JupyterHub adds a
    configured token at start but keeps one that left the configuration; a service that left it is
    deleted at start with its tokens."""
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    hub = LocalHub(tmp_path / "hub", extra_config=LOAD_CANARY_CONFIG, env=fresh_env(FRESH_USER, old))

    def owner(token: str) -> tuple[int, str | None]:
        r = requests.get(hub.api_url + "user", headers={"Authorization": f"token {token}"}, timeout=10)
        return r.status_code, r.json().get("name") if r.status_code == 200 else None

    with contextmanager(until_stopped)(hub.start(), "the hub"):
        assert owner(old) == (200, FRESH_SERVICE)
        hub.stop_hub_process()
        hub.env.update(fresh_env(FRESH_USER, new))
        hub.start()
        assert owner(new) == (200, FRESH_SERVICE)
        assert owner(old) == (200, FRESH_SERVICE), "the old token still works"
        hub.stop_hub_process()
        hub.env["JUPYTERHUB_CANARY_SERVICE_NAME"] = "jupyterhub-canary-service-2"
        hub.start()
        assert owner(new) == (200, "jupyterhub-canary-service-2")
        assert owner(old) == (403, None), "gone with the service it belonged to"
