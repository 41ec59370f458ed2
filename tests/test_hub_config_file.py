"""hub-config/jupyterhub_canary_config.py without a hub: its scopes, and what loading it does to a config
(the service accounts' role and refresh hook; the fresh-user service, its role and the blocked names).

The file is loaded the ways deployers load it (exec in the config's namespace as z2jh's extraConfig
does, traitlets' load_subconfig), into configs that already hold roles and refresh hooks, because it
must be safe to add to any hub. Real hubs run it in tests/test_hub_side_config.py.
"""

from __future__ import annotations

import asyncio
import copy
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from traitlets.config import Config, PyFileConfigLoader

from app.token_command import least_scopes
from scripts import hub_config_values

CONFIG_FILE = Path(__file__).resolve().parent.parent / "hub-config" / "jupyterhub_canary_config.py"
ROLE_NAME = "jupyterhub-canary-service-account"
VARIABLE = "JUPYTERHUB_CANARY_SERVICE_ACCOUNTS"
OAUTHENTICATOR_WITH_HOOK = (17, 3)


@pytest.fixture
def module() -> dict:
    """The file's functions, as a test imports them: without a `c`, loading it configures nothing."""
    return runpy.run_path(str(CONFIG_FILE))


def load(c: Config, **variables) -> dict:
    """Run the file as z2jh's `exec(config_py)` does: in the namespace of the config that loads it."""
    namespace = {"c": c, **variables}
    exec(compile(CONFIG_FILE.read_text(encoding="utf-8"), str(CONFIG_FILE), "exec"), namespace)
    return namespace


def roles_of(c: Config) -> list[dict]:
    """The roles the hub would load. A LazyConfigValue is read from a copy: get_value() caches."""
    roles = c.JupyterHub.load_roles
    return roles if isinstance(roles, list) else copy.deepcopy(roles).get_value([])


def canary_role(c: Config) -> dict:
    [role] = [r for r in roles_of(c) if r["name"] == ROLE_NAME]
    return role


def authenticator(normalize=str.lower):
    return SimpleNamespace(normalize_username=normalize)


def user(name: str):
    return SimpleNamespace(name=name)


# --- the scopes: in step with the product ---


@pytest.mark.parametrize("hub_version", ["5.0.0", "5.5.4", "6.0.0", "6.1.1", "6.2.0b1"])
def test_the_role_scopes_are_the_least_scopes_the_token_command_asks_for(module, hub_version):
    """A token can only carry scopes its owner holds: the role must grant exactly what
    app.token_command.least_scopes asks for, with `!user=<name>` as the role's `!user` filter."""
    name = "jupyterhub-canary"
    asked = [scope.replace(f"!user={name}", "!user") for scope in least_scopes(hub_version, name)]
    assert sorted(module["canary_role_scopes"](hub_version)) == sorted(asked)
    assert all(scope.endswith("!user") for scope in asked), "only the user's own resources"


def test_hub_6_splits_servers_and_5_does_not(module):
    assert "servers!user" in module["canary_role_scopes"]("5.5.4")
    assert {"start:servers!user", "delete:servers!user", "read:servers!user"} <= set(
        module["canary_role_scopes"]("6.1.1")
    )


# --- which accounts ---


def test_accounts_default_then_variable_then_python_variable(module):
    accounts = module["canary_service_accounts"]
    assert accounts({}, {}) == ["jupyterhub-canary"]
    assert accounts({}, {VARIABLE: " canary-a, canary-b,,canary-a "}) == ["canary-a", "canary-b"]
    assert accounts({VARIABLE: ["py-a", "py-b"]}, {VARIABLE: "env"}) == ["py-a", "py-b"], "Python wins"
    assert accounts({VARIABLE: "py-a,py-b"}, {}) == ["py-a", "py-b"]
    assert accounts({}, {VARIABLE: ""}) == []


def test_the_environment_variable_names_the_accounts_when_loaded(monkeypatch):
    monkeypatch.setenv(VARIABLE, "canary-a,canary-b")
    c = Config()
    load(c)
    assert canary_role(c)["users"] == ["canary-a", "canary-b"]


def test_no_accounts_configures_nothing(caplog):
    c = Config()
    load(c, **{VARIABLE: []})
    assert roles_of(c) == [] and "refresh_user_hook" not in c.OAuthenticator
    assert "names no service accounts" in caplog.text


# --- the role: appended, never replacing ---


def test_the_role_is_appended_to_a_list_of_roles(monkeypatch):
    c = Config()
    c.JupyterHub.load_roles = [{"name": "teacher", "scopes": ["read:users"], "users": ["t"]}]
    load(c, **{VARIABLE: "canary-a"})
    assert [r["name"] for r in c.JupyterHub.load_roles] == ["teacher", ROLE_NAME]
    role = canary_role(c)
    assert role["users"] == ["canary-a"]
    assert all(scope.endswith("!user") for scope in role["scopes"])


def test_the_role_is_appended_to_traitlets_lazy_value_and_to_a_list_set_later():
    """Loaded first (nothing set yet), it appends to a LazyConfigValue, which traitlets merges into
    the list another file sets with load_subconfig-style merging."""
    c = Config()
    load(c, **{VARIABLE: "canary-a"})
    assert [r["name"] for r in roles_of(c)] == [ROLE_NAME]
    earlier = Config()
    earlier.JupyterHub.load_roles = [{"name": "teacher", "scopes": ["read:users"]}]
    earlier.merge(c)
    assert [r["name"] for r in roles_of(earlier)] == ["teacher", ROLE_NAME]


def test_the_hub_application_sees_the_role_and_the_authenticator_the_hook():
    """What the hub's traitlets objects make of the loaded config, lazy value included."""
    from jupyterhub.app import JupyterHub
    from oauthenticator.generic import GenericOAuthenticator

    c = Config()
    load(c, **{VARIABLE: "canary-a"})
    c.JupyterHub.load_roles.append({"name": "teacher", "scopes": ["read:users"]})  # a later file
    assert [r["name"] for r in JupyterHub(config=c).load_roles] == [ROLE_NAME, "teacher"]
    hook = GenericOAuthenticator(config=c).refresh_user_hook
    assert hook(authenticator(), user("canary-a"), None) is True


def test_loading_twice_adds_one_role_and_one_hook_layer():
    c = Config()

    def deployers_hook(authenticator, user, auth_state):
        return "deployer"

    c.OAuthenticator.refresh_user_hook = deployers_hook
    load(c, **{VARIABLE: "canary-a"})
    load(c, **{VARIABLE: "canary-a"})
    assert [r["name"] for r in roles_of(c)] == [ROLE_NAME]
    hook = c.OAuthenticator.refresh_user_hook
    assert hook._jupyterhub_canary_previous_hook is deployers_hook
    assert hook(authenticator(), user("alice"), {}) == "deployer"


def test_with_manage_roles_the_role_has_no_users_and_says_so(caplog):
    """The hub refuses to start when load_roles assigns users while the authenticator manages roles."""
    c = Config()
    c.GenericOAuthenticator.manage_roles = True
    load(c, **{VARIABLE: "canary-a"})
    assert "users" not in canary_role(c)
    assert "manage_roles is set" in caplog.text and "canary-a" in caplog.text


def test_through_load_subconfig(tmp_path, monkeypatch):
    """`load_subconfig(path)` in a jupyterhub_config.py: the role joins the parent's roles."""
    monkeypatch.setenv(VARIABLE, "canary-a")
    parent = tmp_path / "jupyterhub_config.py"
    parent.write_text(
        'c.JupyterHub.load_roles = [{"name": "teacher", "scopes": ["read:users"]}]\n'
        f"load_subconfig({str(CONFIG_FILE)!r})\n",
        encoding="utf-8",
    )
    c = PyFileConfigLoader(parent.name, str(tmp_path)).load_config()
    assert [r["name"] for r in roles_of(c)] == ["teacher", ROLE_NAME]
    assert c.OAuthenticator.refresh_user_hook(authenticator(), user("canary-a"), None) is True


def test_through_load_subconfig_a_hook_of_the_parent_is_replaced_as_the_docstring_warns(tmp_path, monkeypatch):
    """A subconfig starts from an empty `c` and traitlets' merge replaces plain values: the parent's
    earlier hook is lost. The docstring tells deployers to exec the file instead; this keeps it true."""
    monkeypatch.setenv(VARIABLE, "canary-a")
    parent = tmp_path / "jupyterhub_config.py"
    parent.write_text(
        "def parents_hook(authenticator, user, auth_state):\n"
        "    return 'parent'\n"
        "c.OAuthenticator.refresh_user_hook = parents_hook\n"
        f"load_subconfig({str(CONFIG_FILE)!r})\n",
        encoding="utf-8",
    )
    c = PyFileConfigLoader(parent.name, str(tmp_path)).load_config()
    assert c.OAuthenticator.refresh_user_hook(authenticator(), user("alice"), {}) is None


# --- the hook ---


def test_the_hook_says_fresh_for_service_accounts_and_refresh_as_usual_for_others():
    c = Config()
    load(c, **{VARIABLE: ["Canary-A", "canary-b"]})
    hook = c.OAuthenticator.refresh_user_hook
    # The hub stores normalized (lower-cased) names; the configured ones are normalized the same way.
    assert hook(authenticator(), user("canary-a"), None) is True
    assert hook(authenticator(), user("canary-b"), {}) is True
    assert hook(authenticator(), user("alice"), {"access_token": "x"}) is None


def test_an_earlier_hook_still_decides_for_everyone_else_even_async():
    c = Config()
    seen = []

    async def deployers_hook(authenticator, user, auth_state):
        seen.append(user.name)
        return False  # "log in again"

    c.OAuthenticator.refresh_user_hook = deployers_hook
    load(c, **{VARIABLE: "canary-a"})
    hook = c.OAuthenticator.refresh_user_hook
    assert hook(authenticator(), user("canary-a"), None) is True
    # OAuthenticator awaits what the hook returns when it is awaitable.
    assert asyncio.run(hook(authenticator(), user("alice"), {})) is False
    assert seen == ["alice"]


def test_a_hook_on_a_subclass_section_is_wrapped_there_too():
    """c.GenericOAuthenticator.refresh_user_hook beats c.OAuthenticator's for that class: wrapping
    only the base section would leave the service accounts unprotected."""
    c = Config()

    def generic_hook(authenticator, user, auth_state):
        return "generic"

    c.GenericOAuthenticator.refresh_user_hook = generic_hook
    load(c, **{VARIABLE: "canary-a"})
    for section in ("GenericOAuthenticator", "OAuthenticator"):
        assert c[section].refresh_user_hook(authenticator(), user("canary-a"), None) is True
    assert c.GenericOAuthenticator.refresh_user_hook(authenticator(), user("alice"), {}) == "generic"
    assert c.OAuthenticator.refresh_user_hook(authenticator(), user("alice"), {}) is None


def test_an_oauthenticator_without_the_hook_trait_gets_no_hook_and_a_warning(module, caplog):
    """Before 17.3 traitlets would only warn about an unknown option: say what it means instead."""
    c = Config()
    module["canary_configure"](c, ["canary-a"], hub_version="5.5.4", oauthenticator_version=(17, 2))
    assert "refresh_user_hook" not in c.OAuthenticator
    assert canary_role(c)["users"] == ["canary-a"], "the role does not depend on the authenticator"
    assert "has no refresh_user_hook" in caplog.text


def test_without_oauthenticator_only_the_role_is_added(module):
    c = Config()
    module["canary_configure"](c, ["canary-a"], hub_version="6.1.1", oauthenticator_version=None)
    assert "refresh_user_hook" not in c.OAuthenticator
    assert canary_role(c)["scopes"] == module["canary_role_scopes"]("6.1.1")


def test_the_installed_oauthenticator_has_the_hook():
    """The tests (and a hub image) need oauthenticator >= 17.3 for refresh_user_hook."""
    oauthenticator = pytest.importorskip("oauthenticator")
    from oauthenticator.oauth2 import OAuthenticator

    assert tuple(int(p) for p in oauthenticator.__version__.split(".")[:2]) >= OAUTHENTICATOR_WITH_HOOK
    assert OAuthenticator.class_traits(config=True).get("refresh_user_hook") is not None


# --- the z2jh example ---


def test_the_z2jh_example_embeds_exactly_the_config_file():
    values = yaml.safe_load(hub_config_values.VALUES_FILE.read_text(encoding="utf-8"))
    embedded = values["hub"]["extraConfig"][hub_config_values.KEY]
    assert embedded == CONFIG_FILE.read_text(encoding="utf-8"), "run python scripts/hub_config_values.py --write"
    assert hub_config_values.main(["--check"]) == 0
    assert values["hub"]["extraEnv"][VARIABLE] == "jupyterhub-canary"
    assert values["hub"]["extraEnv"][FRESH_VARIABLE] == "jupyterhub-canary-fresh-default"


def z2jh_environment(monkeypatch, values: dict, secrets: dict[tuple[str, str], str]) -> None:
    """hub.extraEnv as the hub pod gets it: plain values as they are, a secretKeyRef resolved from
    `secrets` ((name, key) -> value), an optional one that is missing left unset."""
    for name, value in values["hub"]["extraEnv"].items():
        monkeypatch.delenv(name, raising=False)
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
            continue
        ref = value["valueFrom"]["secretKeyRef"]
        if (ref["name"], ref["key"]) in secrets:
            monkeypatch.setenv(name, secrets[ref["name"], ref["key"]])
        else:
            assert ref.get("optional") is True, f"{name}: the hub would not start without Secret {ref['name']}"


def test_the_z2jh_entry_runs_as_z2jh_runs_it(monkeypatch):
    """z2jh: hub.extraEnv in the environment, then `exec(config_py)` at the top level of its
    jupyterhub_config.py, after hub.config and hub.loadRoles are applied (load_roles is a list,
    services a list). Without the service's Secret: no service, but the fresh user is blocked."""
    values = yaml.safe_load(hub_config_values.VALUES_FILE.read_text(encoding="utf-8"))
    z2jh_environment(monkeypatch, values, {})
    c = Config()
    c.JupyterHub.load_roles = []
    c.JupyterHub.services = []
    exec(values["hub"]["extraConfig"][hub_config_values.KEY], {"c": c})
    assert canary_role(c)["users"] == ["jupyterhub-canary"]
    assert c.JupyterHub.services == [] and FRESH_ROLE_NAME not in {r["name"] for r in roles_of(c)}
    assert blocked_of(c) == {"jupyterhub-canary-fresh-default"}


def test_the_z2jh_entry_with_the_operators_secret_defines_the_service(monkeypatch):
    """The token comes from the Secret the operator made (hub.extraEnv's secretKeyRef), not from
    z2jh's hub.services, whose apiToken lives in the hub's own Secret."""
    values = yaml.safe_load(hub_config_values.VALUES_FILE.read_text(encoding="utf-8"))
    assert "services" not in values["hub"] and "loadRoles" not in values["hub"]
    ref = values["hub"]["extraEnv"][TOKEN_VARIABLE]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "jupyterhub-canary-service-token" and ref["key"] == "token"
    z2jh_environment(monkeypatch, values, {(ref["name"], ref["key"]): SERVICE_TOKEN + "\n"})
    c = Config()
    c.JupyterHub.load_roles = []
    c.JupyterHub.services = []
    exec(values["hub"]["extraConfig"][hub_config_values.KEY], {"c": c})
    assert c.JupyterHub.services == [{"name": SERVICE_NAME, "api_token": SERVICE_TOKEN}]
    assert fresh_role(c)["services"] == [SERVICE_NAME]
    assert set(fresh_role(c)["scopes"]) == set(expected_fresh_scopes(jupyterhub_version(), "jupyterhub-canary-fresh-default"))


# --- fresh-user probes: the service, its role, the blocked names (issue 20, notes/FRESH.md) ---

FRESH_VARIABLE = "JUPYTERHUB_CANARY_FRESH_USERS"
TOKEN_VARIABLE = "JUPYTERHUB_CANARY_SERVICE_TOKEN"
NAME_VARIABLE = "JUPYTERHUB_CANARY_SERVICE_NAME"
FRESH_ROLE_NAME = "jupyterhub-canary-fresh-users"
SERVICE_NAME = "jupyterhub-canary-service"
SERVICE_TOKEN = "c0ffee" * 8
FRESH_A, FRESH_B = "jupyterhub-canary-fresh-default", "jupyterhub-canary-fresh-gpu"


def jupyterhub_version() -> str:
    import jupyterhub

    return jupyterhub.__version__


def expected_fresh_scopes(hub_version: str, name: str) -> list[str]:
    """notes/FRESH.md's least scopes, written out here (not derived from the file under test)."""
    servers = ["servers"] if int(hub_version.split(".")[0]) < 6 else ["read:servers", "start:servers", "delete:servers"]
    return [f"{scope}!user={name}" for scope in ["admin:users", "tokens", "access:servers", *servers]]


def fresh_role(c: Config) -> dict:
    [role] = [r for r in roles_of(c) if r["name"] == FRESH_ROLE_NAME]
    return role


def services_of(c: Config) -> list[dict]:
    services = c.JupyterHub.services
    return services if isinstance(services, list) else copy.deepcopy(services).get_value([])


def blocked_of(c: Config, section: str = "Authenticator") -> set[str]:
    blocked = c[section].blocked_users
    return set(blocked) if isinstance(blocked, (set, list)) else copy.deepcopy(blocked).get_value(set())


@pytest.fixture
def fresh_env(monkeypatch):
    """The operator's variables for two fresh users and the service's token (LocalHub-free: only this process)."""
    for variable in (FRESH_VARIABLE, TOKEN_VARIABLE, NAME_VARIABLE):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(FRESH_VARIABLE, f"{FRESH_A}, {FRESH_B}")
    monkeypatch.setenv(TOKEN_VARIABLE, SERVICE_TOKEN)
    return monkeypatch


@pytest.mark.parametrize("hub_version", ["5.0.0", "5.5.4", "6.0.0", "6.1.1"])
def test_the_fresh_user_role_has_the_least_scopes_for_each_fresh_user_by_name(module, hub_version):
    scopes = module["canary_fresh_user_scopes"](hub_version, [FRESH_A, FRESH_B])
    assert sorted(scopes) == sorted(expected_fresh_scopes(hub_version, FRESH_A) + expected_fresh_scopes(hub_version, FRESH_B))
    assert all("!user=" in scope for scope in scopes), "every scope filtered to one fresh user"


def test_fresh_users_none_by_default_then_variable_then_python_variable(module):
    names = module["canary_fresh_users"]
    assert names({}, {}) == []
    assert names({}, {FRESH_VARIABLE: f" {FRESH_A},,{FRESH_B},{FRESH_A} "}) == [FRESH_A, FRESH_B]
    assert names({FRESH_VARIABLE: [FRESH_B]}, {FRESH_VARIABLE: FRESH_A}) == [FRESH_B], "Python wins"
    assert names({FRESH_VARIABLE: FRESH_B}, {}) == [FRESH_B]


def test_the_service_token_only_from_the_environment_and_stripped(module):
    token = module["canary_service_token"]
    assert token({}) == ""
    assert token({TOKEN_VARIABLE: f"  {SERVICE_TOKEN}\n"}) == SERVICE_TOKEN
    name = module["canary_service_name"]
    assert name({}, {}) == SERVICE_NAME
    assert name({}, {NAME_VARIABLE: "probe-svc"}) == "probe-svc"
    assert name({NAME_VARIABLE: "py-svc"}, {NAME_VARIABLE: "probe-svc"}) == "py-svc"


def test_with_a_token_the_service_and_its_role_are_added_and_the_names_blocked(fresh_env):
    c = Config()
    c.JupyterHub.services = [{"name": "localhub-admin", "api_token": "x" * 32}]
    c.JupyterHub.load_roles = [{"name": "teacher", "scopes": ["read:users"]}]
    c.Authenticator.blocked_users = {"mallory"}
    fresh_env.setenv(TOKEN_VARIABLE, SERVICE_TOKEN + "\n")  # a Secret made from a file
    load(c)
    assert c.JupyterHub.services == [
        {"name": "localhub-admin", "api_token": "x" * 32},
        {"name": SERVICE_NAME, "api_token": SERVICE_TOKEN},
    ]
    assert [r["name"] for r in c.JupyterHub.load_roles][:2] == ["teacher", FRESH_ROLE_NAME]
    role = fresh_role(c)
    assert role["services"] == [SERVICE_NAME] and "users" not in role and "groups" not in role
    version = jupyterhub_version()
    assert sorted(role["scopes"]) == sorted(expected_fresh_scopes(version, FRESH_A) + expected_fresh_scopes(version, FRESH_B))
    assert blocked_of(c) == {"mallory", FRESH_A, FRESH_B}, "added to, never replacing"


def test_the_service_name_can_be_changed(fresh_env):
    fresh_env.setenv(NAME_VARIABLE, "probe-svc")
    c = Config()
    load(c)
    assert [s["name"] for s in services_of(c)] == ["probe-svc"]
    assert fresh_role(c)["services"] == ["probe-svc"]


def test_the_hub_application_and_the_authenticators_see_service_role_and_blocked_names(fresh_env):
    """Loaded first (everything lazy), with a deployer's own block list on a subclass section, which
    wins over c.Authenticator's for that class: the names are added there too."""
    from jupyterhub.app import JupyterHub
    from jupyterhub.auth import DummyAuthenticator
    from oauthenticator.generic import GenericOAuthenticator

    c = Config()
    c.GenericOAuthenticator.blocked_users = ["mallory"]
    load(c)
    c.JupyterHub.services.append({"name": "later", "api_token": "y" * 32})  # a later file
    hub = JupyterHub(config=c)
    assert [s["name"] for s in hub.services] == [SERVICE_NAME, "later"]
    assert FRESH_ROLE_NAME in [r["name"] for r in hub.load_roles]
    assert DummyAuthenticator(config=c).blocked_users == {FRESH_A, FRESH_B}
    assert GenericOAuthenticator(config=c).blocked_users == {"mallory", FRESH_A, FRESH_B}


def test_loading_twice_adds_one_service_one_role_and_says_nothing_about_its_own_service(fresh_env, caplog):
    c = Config()
    c.Authenticator.blocked_users = {"mallory"}
    load(c)
    load(c)
    assert [s["name"] for s in services_of(c)] == [SERVICE_NAME]
    assert [r["name"] for r in roles_of(c)].count(FRESH_ROLE_NAME) == 1
    assert blocked_of(c) == {"mallory", FRESH_A, FRESH_B}
    assert "defined already" not in caplog.text


def test_a_service_of_that_name_defined_by_the_deployer_keeps_its_token_and_says_so(fresh_env, caplog):
    c = Config()
    c.JupyterHub.services = [{"name": SERVICE_NAME, "api_token": "d" * 32}]
    load(c)
    assert c.JupyterHub.services == [{"name": SERVICE_NAME, "api_token": "d" * 32}]
    assert "defined already" in caplog.text and SERVICE_TOKEN not in caplog.text


def test_without_the_token_no_service_and_no_role_but_the_names_are_blocked(fresh_env, caplog):
    fresh_env.delenv(TOKEN_VARIABLE)
    c = Config()
    load(c)
    assert services_of(c) == [] and FRESH_ROLE_NAME not in {r["name"] for r in roles_of(c)}
    assert blocked_of(c) == {FRESH_A, FRESH_B}
    assert f"{TOKEN_VARIABLE} is unset" in caplog.text


def test_a_token_without_fresh_users_defines_nothing_and_says_so(fresh_env, caplog):
    fresh_env.delenv(FRESH_VARIABLE)
    c = Config()
    load(c)
    assert services_of(c) == [] and FRESH_ROLE_NAME not in {r["name"] for r in roles_of(c)}
    assert "blocked_users" not in c.Authenticator
    assert "names no fresh users" in caplog.text and SERVICE_TOKEN not in caplog.text


@pytest.mark.parametrize(
    "bad", ["alice", "jupyterhub-canary", "jupyterhub-canary-fresh-", "jupyterhub-canary-fresh", "x-jupyterhub-canary-fresh-a"]
)
@pytest.mark.parametrize("with_token", [True, False], ids=["with-token", "without-token"])
def test_a_name_that_breaks_the_rule_stops_the_hub_with_a_clear_message(fresh_env, bad, with_token):
    """admin:users!user=alice would let the canary's service delete a real person: the hub must not start."""
    if not with_token:
        fresh_env.delenv(TOKEN_VARIABLE)
    fresh_env.setenv(FRESH_VARIABLE, f"{FRESH_A},{bad}")
    c = Config()
    with pytest.raises(ValueError) as refused:
        load(c)
    message = str(refused.value)
    assert repr(bad) in message and "jupyterhub-canary-fresh-" in message and FRESH_VARIABLE in message
    assert SERVICE_TOKEN not in message
    # Nothing was configured before the refusal.
    assert services_of(c) == [] and roles_of(c) == [] and "blocked_users" not in c.Authenticator


def test_a_bad_name_from_the_python_variable_is_refused_too(fresh_env):
    c = Config()
    with pytest.raises(ValueError, match="'alice'"):
        load(c, **{FRESH_VARIABLE: ["alice"]})


def test_a_fresh_user_that_is_also_a_service_account_is_refused(fresh_env):
    """A service account's user must last; a fresh user is deleted every run."""
    c = Config()
    with pytest.raises(ValueError, match="service accounts"):
        load(c, **{VARIABLE: [FRESH_A]})


def test_a_fresh_user_role_works_with_manage_roles(fresh_env):
    """manage_roles forbids roles that assign users, not services: the role keeps its service."""
    c = Config()
    c.GenericOAuthenticator.manage_roles = True
    load(c)
    assert fresh_role(c)["services"] == [SERVICE_NAME]
