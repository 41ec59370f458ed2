"""hub-config/jupyterhub_canary_config.py without a hub: its scopes, and what loading it does to a config.

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


def test_the_z2jh_entry_runs_as_z2jh_runs_it(monkeypatch):
    """z2jh: hub.extraEnv in the environment, then `exec(config_py)` at the top level of its
    jupyterhub_config.py, after hub.config and hub.loadRoles are applied (load_roles is a list)."""
    values = yaml.safe_load(hub_config_values.VALUES_FILE.read_text(encoding="utf-8"))
    for name, value in values["hub"]["extraEnv"].items():
        monkeypatch.setenv(name, value)
    c = Config()
    c.JupyterHub.load_roles = []
    exec(values["hub"]["extraConfig"][hub_config_values.KEY], {"c": c})
    assert canary_role(c)["users"] == ["jupyterhub-canary"]
