"""JupyterHub configuration for the jupyterhub-canary service account(s): load it into your hub.

The canary logs in as a *service-account user*: a hub user that an admin created (never through
a browser login) and for whom `jupyterhub-canary token` minted an API token with the least scopes
the canary's spawn -> verify -> stop cycle needs. This file gives the hub the two things such a
user needs:

1. A role, `jupyterhub-canary-service-account`, assigned to the service accounts, holding exactly
   those scopes for the user's *own* server (the `!user` owner filter), so a least-privilege token
   can be minted even on a hub that trimmed the default `user` role. The scopes follow the hub's
   version, as `app.token_command.least_scopes` does (tests/test_hub_config_file.py keeps them in
   step): JupyterHub 6+ `start:servers`, `delete:servers`, `read:servers`; 5.x `servers`; plus
   `access:servers` and `read:tokens`. Listing a user in a role makes the hub create that user at
   start-up, so `token --create-user` will find it there already.

2. An `OAuthenticator.refresh_user_hook` that treats the service accounts as always fresh. With
   `enable_auth_state`, the hub asks the authenticator to refresh a user's auth every
   `auth_refresh_age` seconds and before each spawn (`refresh_pre_spawn`). A user who never logged
   in has no auth_state (no OAuth tokens), so OAuthenticator answers "log in again". What that does
   to an API-token request depends on the hub: JupyterHub < 6.1, and 6.1+ with
   `Authenticator.auth_refresh_strict = True`, answer 403 to every request with the token from the
   first one on (a user who never logged in was never refreshed, so a refresh is due at once);
   6.1+ by default keeps the stale auth and logs a warning on every request. The hook returns
   True ("fresh") for the service accounts and None ("refresh as usual") for everyone else, so
   real users keep their normal refresh. A hook that was already configured keeps running for
   every other user. `refresh_user_hook` exists from oauthenticator 17.3 on; with an older one
   the hook is not installed and the hub logs why.

Which users are service accounts: the variable JUPYTERHUB_CANARY_SERVICE_ACCOUNTS, comma-separated
(default: `jupyterhub-canary`). A Python variable of the same name (a comma-separated string or a
list of names), set earlier in the same namespace, wins over the environment variable; for
zero-to-jupyterhub that is an `hub.extraConfig` entry that sorts before this one, e.g.
`00-canary-accounts: JUPYTERHUB_CANARY_SERVICE_ACCOUNTS = ["canary-a", "canary-b"]`. An empty
list configures nothing.

How to load it:

- zero-to-jupyterhub: as an `hub.extraConfig` entry (hub-config/z2jh-values.yaml shows it; the
  names go into `hub.extraEnv`). z2jh runs extraConfig entries in the order of their keys, after
  its own configuration: give this entry a key that sorts after any entry that sets a
  `refresh_user_hook`, so that hook is chained rather than replaced.
- a plain hub: at the end of your jupyterhub_config.py,
      path = "/etc/jupyterhub/jupyterhub_canary_config.py"
      exec(compile(open(path).read(), path, "exec"))
  which runs it in your config's namespace (it sees your `c`, your earlier hook and the Python
  variable). `load_subconfig(path)` also works for the role, but traitlets loads a subconfig into
  a fresh `c` and merges it, so a `refresh_user_hook` your own file set before is *replaced*, not
  chained, and only the environment variable names the accounts. It can also be the whole config
  (`jupyterhub -f`), though that is rarely what you want.

Safe to load into any hub: it only appends a role (to a list or to traitlets' lazy value) and sets
one hook of OAuthenticator, which other authenticators never read; loading it twice changes nothing
more. One exception: with `Authenticator.manage_roles = True` the hub refuses roles in `load_roles`
that assign users, so the role is then defined without users and your authenticator must assign it.

This file cannot import the canary (`app`): the hub does not have it installed. It only imports
what a hub has. Without a `c` in its namespace (imported by tests) it only defines its functions.
"""

import logging
import os

CANARY_ROLE_NAME = "jupyterhub-canary-service-account"
CANARY_ACCOUNTS_VARIABLE = "JUPYTERHUB_CANARY_SERVICE_ACCOUNTS"
CANARY_DEFAULT_ACCOUNTS = "jupyterhub-canary"
CANARY_HOOK_MIN_OAUTHENTICATOR = (17, 3)
_CANARY_HOOK_MARK = "_jupyterhub_canary_previous_hook"  # set on our hook; holds the hook it chains to

canary_log = logging.getLogger("JupyterHub")


def canary_version_tuple(version):
    """(major, minor) of a version string such as "6.1.1" or "17.3.0b1"; unparsable parts are 0."""
    parts = []
    for piece in str(version).split(".")[:2]:
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (2 - len(parts)))


def canary_role_scopes(hub_version):
    """The role's scopes on a hub of this version: what the canary's token needs, for the user's own server.

    Must agree with app.token_command.least_scopes (with `!user=<name>` written as `!user`): a token
    can only be minted with scopes its owner holds.
    """
    if canary_version_tuple(hub_version)[0] >= 6:
        server_scopes = ["start:servers", "delete:servers", "read:servers"]
    else:
        server_scopes = ["servers"]
    return [scope + "!user" for scope in server_scopes + ["access:servers", "read:tokens"]]


def canary_service_accounts(namespace=None, environ=None):
    """The service-account names: a Python variable in `namespace` wins over the environment variable."""
    environ = os.environ if environ is None else environ
    value = (namespace or {}).get(CANARY_ACCOUNTS_VARIABLE)
    if value is None:
        value = environ.get(CANARY_ACCOUNTS_VARIABLE, CANARY_DEFAULT_ACCOUNTS)
    if isinstance(value, str):
        value = value.split(",")
    names = []
    for name in value:
        name = str(name).strip()
        if name and name not in names:
            names.append(name)
    return names


def canary_role(hub_version, service_accounts, assign_users=True):
    """The role spec for `c.JupyterHub.load_roles`."""
    role = {
        "name": CANARY_ROLE_NAME,
        "description": "jupyterhub-canary service accounts: start, watch, reach and stop their own server",
        "scopes": canary_role_scopes(hub_version),
    }
    if assign_users:
        role["users"] = list(service_accounts)
    return role


def canary_refresh_user_hook(service_accounts, previous=None):
    """An OAuthenticator.refresh_user_hook: service accounts are always fresh, others go to `previous`.

    Returns True for a service account (it never logged in, so it has no OAuth tokens to refresh);
    otherwise what `previous` returns (it may be async: OAuthenticator awaits what the hook returns),
    or None when there is none, which means "OAuthenticator's normal refresh".
    """
    configured = tuple(service_accounts)

    def refresh_user_hook(authenticator, user, auth_state):
        # Compare normalized names, as the hub stores them (e.g. lower-cased).
        if user.name in {authenticator.normalize_username(name) for name in configured}:
            return True
        if previous is not None:
            return previous(authenticator, user, auth_state)
        return None

    refresh_user_hook.service_accounts = configured
    setattr(refresh_user_hook, _CANARY_HOOK_MARK, previous)
    return refresh_user_hook


def _canary_role_names(roles):
    """Names of the roles already in `load_roles`, a list or traitlets' LazyConfigValue."""
    if isinstance(roles, (list, tuple)):
        return {r.get("name") for r in roles if isinstance(r, dict)}
    to_dict = getattr(roles, "to_dict", None)
    if to_dict is None:
        return set()
    # LazyConfigValue: what it will add. Not get_value(), which would freeze it to what it holds now.
    pending = to_dict()
    specs = pending.get("extend", []) + pending.get("prepend", []) + [r for _, r in pending.get("inserts", [])]
    return {r.get("name") for r in specs if isinstance(r, dict)}


def _canary_manages_roles(config):
    """True if any section of the config sets manage_roles (then load_roles may not assign users)."""
    for section in config.values():
        if hasattr(section, "get") and section.get("manage_roles") is True:
            return True
    return False


def _canary_oauthenticator_version():
    """oauthenticator's (major, minor), or None if it is not installed (then the hub cannot be using it)."""
    try:
        import oauthenticator
    except ImportError:
        return None
    return canary_version_tuple(getattr(oauthenticator, "__version__", "0"))


def canary_configure(config, service_accounts, hub_version=None, oauthenticator_version=...):
    """Add the role and the refresh hook to a traitlets Config. Idempotent."""
    if not service_accounts:
        canary_log.warning("jupyterhub-canary: %s names no service accounts", CANARY_ACCOUNTS_VARIABLE)
        return
    if hub_version is None:
        import jupyterhub

        hub_version = jupyterhub.__version__

    # (1) the role, appended: `load_roles` may be a list already or traitlets' lazy value (which
    # appends to whatever an earlier or later file sets).
    roles = config.JupyterHub.load_roles
    if isinstance(roles, tuple):
        roles = config.JupyterHub.load_roles = list(roles)
    if CANARY_ROLE_NAME not in _canary_role_names(roles):
        assign_users = not _canary_manages_roles(config)
        if not assign_users:
            canary_log.warning(
                "jupyterhub-canary: manage_roles is set, so role %s is defined without users: "
                "your authenticator must assign it to %s",
                CANARY_ROLE_NAME,
                ", ".join(service_accounts),
            )
        roles.append(canary_role(hub_version, service_accounts, assign_users=assign_users))
        canary_log.info(
            "jupyterhub-canary: role %s with %s for %s",
            CANARY_ROLE_NAME,
            ", ".join(canary_role_scopes(hub_version)),
            ", ".join(service_accounts),
        )

    # (2) the hook, chained to one configured earlier (on OAuthenticator or a subclass section).
    if oauthenticator_version is ...:
        oauthenticator_version = _canary_oauthenticator_version()
    if oauthenticator_version is None:
        return  # no OAuthenticator in this hub: no auth refresh to bypass
    if oauthenticator_version < CANARY_HOOK_MIN_OAUTHENTICATOR:
        canary_log.warning(
            "jupyterhub-canary: oauthenticator %s has no refresh_user_hook (17.3+): with auth_state, "
            "JupyterHub < 6.1 (or auth_refresh_strict) refuses the tokens of service accounts %s",
            ".".join(map(str, oauthenticator_version)),
            ", ".join(service_accounts),
        )
        return
    # A hook on a subclass's section (c.GenericOAuthenticator) wins over c.OAuthenticator's: wrap each.
    hooked = {
        name
        for name, section in config.items()
        if name.endswith("OAuthenticator") and hasattr(section, "get") and "refresh_user_hook" in section
    }
    for name in sorted(hooked | {"OAuthenticator"}):
        previous = config[name].get("refresh_user_hook")
        if hasattr(previous, _CANARY_HOOK_MARK):  # ours, from loading this file before: wrap what it wrapped
            previous = getattr(previous, _CANARY_HOOK_MARK)
        config[name].refresh_user_hook = canary_refresh_user_hook(service_accounts, previous)
        canary_log.info(
            "jupyterhub-canary: %s.refresh_user_hook treats %s as fresh%s",
            name,
            ", ".join(service_accounts),
            f", and passes other users to {getattr(previous, '__name__', previous)}" if previous else "",
        )


if "c" in globals():
    canary_configure(c, canary_service_accounts(globals()))  # noqa: F821 - `c` is the hub's config
