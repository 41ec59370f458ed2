"""JupyterHub configuration for the jupyterhub-canary service account(s) and fresh-user probes: load it into your hub.

The canary logs in as a *service-account user*: a hub user that an admin created (never through
a browser login) and for whom `jupyterhub-canary token` minted an API token with the least scopes
the canary's spawn -> verify -> stop cycle needs. This file gives the hub the two things such a
user needs (1 and 2), and what a fresh-user probe, which deletes and recreates its user every run,
needs instead (3):

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

3. Fresh-user probes (`jupyterhub-canary --fresh-user`, chart/README.md "Fresh-user probes"), only
   when the operator sets JUPYTERHUB_CANARY_SERVICE_TOKEN (from a Secret the operator makes, never
   the hub's own): a JupyterHub *service*, `jupyterhub-canary-service` (JUPYTERHUB_CANARY_SERVICE_NAME
   renames it), with that token, and a role, `jupyterhub-canary-fresh-users`, that gives the service
   the least scopes a fresh-user run needs, each filtered `!user=<name>` for each fresh user:
   `admin:users` (create and delete the user; there is no `create:users`), `tokens` (the canary's
   mark on the user it made, and its ownership guard), `access:servers`, and the server scopes of the hub's version (as in 1).
   A `!user=` filter matches by name, so the role works for a user who does not exist yet. The
   fresh users' names come from JUPYTERHUB_CANARY_FRESH_USERS, comma-separated (default: none),
   or a Python variable of the same name, which wins as in 1. Every name must start with
   `jupyterhub-canary-fresh-` and have at least one more character, the name rule the canary
   checks too: any other name (a real person's, a service account of 1) makes the hub refuse to
   start with a ValueError that names it, because the service may delete that user. Each name is
   also added to `Authenticator.blocked_users` (to what is there, on every authenticator section
   that sets it), so nobody can log in as a fresh user; the API can still create, spawn and
   delete it. JupyterHub 5.2+ strips a blocked user's roles at start-up, so a fresh user left
   over across a hub restart has no roles. A token read from the variable is stripped of white
   space at its ends (a Secret made from a file often ends with a newline), as the canary strips
   the token it reads.

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

Safe to load into any hub: it only appends roles (to a list or to traitlets' lazy value), appends
the fresh-user service (when its token is set) and adds names to `blocked_users`, and sets one hook
of OAuthenticator, which other authenticators never read; loading it twice changes nothing more.
One exception: with `Authenticator.manage_roles = True` the hub refuses roles in `load_roles`
that assign users, so the role of 1 is then defined without users and your authenticator must
assign it (the role of 3 is assigned to a service, which manage_roles allows).

This file cannot import the canary (`app`): the hub does not have it installed. It only imports
what a hub has. Without a `c` in its namespace (imported by tests) it only defines its functions.
"""

import logging
import os

CANARY_ROLE_NAME = "jupyterhub-canary-service-account"
CANARY_ACCOUNTS_VARIABLE = "JUPYTERHUB_CANARY_SERVICE_ACCOUNTS"
CANARY_DEFAULT_ACCOUNTS = "jupyterhub-canary"
CANARY_HOOK_MIN_OAUTHENTICATOR = (17, 3)
# Fresh-user probes (3 in the docstring).
CANARY_FRESH_USERS_VARIABLE = "JUPYTERHUB_CANARY_FRESH_USERS"
CANARY_FRESH_USER_PREFIX = "jupyterhub-canary-fresh-"  # the canary's name rule (app/fresh_user.py)
CANARY_SERVICE_TOKEN_VARIABLE = "JUPYTERHUB_CANARY_SERVICE_TOKEN"
CANARY_SERVICE_NAME_VARIABLE = "JUPYTERHUB_CANARY_SERVICE_NAME"
CANARY_DEFAULT_SERVICE_NAME = "jupyterhub-canary-service"
CANARY_FRESH_ROLE_NAME = "jupyterhub-canary-fresh-users"
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
    return _canary_names(CANARY_ACCOUNTS_VARIABLE, CANARY_DEFAULT_ACCOUNTS, namespace, environ)


def canary_fresh_users(namespace=None, environ=None):
    """The fresh users' names (none by default): a Python variable in `namespace` wins over the environment
    variable. Not checked here: canary_configure_fresh_users refuses a name that breaks the rule."""
    return _canary_names(CANARY_FRESH_USERS_VARIABLE, "", namespace, environ)


def _canary_names(variable, default, namespace, environ):
    """A list of names from a Python variable (a list or a comma-separated string), else the environment."""
    environ = os.environ if environ is None else environ
    value = (namespace or {}).get(variable)
    if value is None:
        value = environ.get(variable, default)
    if isinstance(value, str):
        value = value.split(",")
    names = []
    for name in value:
        name = str(name).strip()
        if name and name not in names:
            names.append(name)
    return names


def canary_service_name(namespace=None, environ=None):
    """The fresh-user service's name: a Python variable in `namespace`, else the environment, else the default."""
    environ = os.environ if environ is None else environ
    value = (namespace or {}).get(CANARY_SERVICE_NAME_VARIABLE) or environ.get(CANARY_SERVICE_NAME_VARIABLE, "")
    return str(value).strip() or CANARY_DEFAULT_SERVICE_NAME


def canary_service_token(environ=None):
    """The fresh-user service's token from the environment, white space at its ends stripped; "" when unset.

    Never from a Python variable: a token written into a config file ends up in a ConfigMap or in git.
    """
    environ = os.environ if environ is None else environ
    return environ.get(CANARY_SERVICE_TOKEN_VARIABLE, "").strip()


def canary_fresh_user_name_problem(name):
    """Why `name` may not be a fresh user (the canary's name rule), or None when it may."""
    if not name.startswith(CANARY_FRESH_USER_PREFIX) or len(name) <= len(CANARY_FRESH_USER_PREFIX):
        return f"it must start with {CANARY_FRESH_USER_PREFIX!r} and have at least one more character"
    return None


def canary_fresh_user_scopes(hub_version, fresh_users):
    """The fresh-user service's scopes: each scope a fresh-user run needs, for each fresh user by name.

    admin:users creates the user (there is no create:users) and holds read:users and delete:users;
    tokens lets the canary mark the user it made (a token with no scopes) and read a leftover user's
    tokens to prove it its own; access:servers reaches the server;
    the server scopes follow the hub's version as canary_role_scopes does.
    """
    if canary_version_tuple(hub_version)[0] >= 6:
        server_scopes = ["start:servers", "delete:servers", "read:servers"]
    else:
        server_scopes = ["servers"]
    per_user = ["admin:users", "tokens", "access:servers", *server_scopes]
    return [f"{scope}!user={name}" for name in fresh_users for scope in per_user]


def canary_fresh_users_role(hub_version, service_name, fresh_users):
    """The fresh-user service's role spec for `c.JupyterHub.load_roles`."""
    return {
        "name": CANARY_FRESH_ROLE_NAME,
        "description": "jupyterhub-canary fresh-user probes: create, spawn, reach, stop and delete these users only",
        "scopes": canary_fresh_user_scopes(hub_version, fresh_users),
        "services": [service_name],
    }


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


def _canary_specs(value):
    """The roles (or services) already in `load_roles` (`services`), a list or traitlets' LazyConfigValue."""
    if isinstance(value, (list, tuple)):
        return [r for r in value if isinstance(r, dict)]
    to_dict = getattr(value, "to_dict", None)
    if to_dict is None:
        return []
    # LazyConfigValue: what it will add. Not get_value(), which would freeze it to what it holds now.
    pending = to_dict()
    specs = pending.get("extend", []) + pending.get("prepend", []) + [r for _, r in pending.get("inserts", [])]
    return [r for r in specs if isinstance(r, dict)]


def _canary_spec_names(value):
    return {spec.get("name") for spec in _canary_specs(value)}


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


def _canary_running_hub_version():
    import jupyterhub

    return jupyterhub.__version__


def _canary_list(section, trait):
    """The trait's list, to append to: a list already, traitlets' lazy value (which appends to whatever
    an earlier or later file sets), or a tuple made a list."""
    value = getattr(section, trait)
    if isinstance(value, tuple):
        value = list(value)
        setattr(section, trait, value)
    return value


def canary_configure(config, service_accounts, hub_version=None, oauthenticator_version=...):
    """Add the role and the refresh hook to a traitlets Config. Idempotent."""
    if not service_accounts:
        canary_log.warning("jupyterhub-canary: %s names no service accounts", CANARY_ACCOUNTS_VARIABLE)
        return
    hub_version = hub_version or _canary_running_hub_version()

    # (1) the role, appended: `load_roles` may be a list already or traitlets' lazy value (which
    # appends to whatever an earlier or later file sets).
    roles = _canary_list(config.JupyterHub, "load_roles")
    if CANARY_ROLE_NAME not in _canary_spec_names(roles):
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


def _canary_add_blocked_users(config, names):
    """Add `names` to Authenticator.blocked_users, and to each authenticator section that sets its own
    (c.GenericOAuthenticator.blocked_users wins over c.Authenticator's for that class). Never replaces."""
    sections = {
        name
        for name, section in config.items()
        if name.endswith("Authenticator") and hasattr(section, "get") and "blocked_users" in section
    }
    for section in sorted(sections | {"Authenticator"}):
        blocked = config[section].blocked_users  # a set or list someone set, or traitlets' lazy value
        if isinstance(blocked, (list, tuple)):
            blocked = config[section].blocked_users = set(blocked)
        for name in names:
            blocked.add(name)  # a set, or traitlets' LazyConfigValue: added to whatever the hub ends up with


def canary_configure_fresh_users(config, fresh_users, service_token, service_name=CANARY_DEFAULT_SERVICE_NAME,
                                 hub_version=None, service_accounts=()):
    """Refuse bad fresh-user names, block their logins, and (with a token) add the service and its role. Idempotent.

    Raises ValueError for a name that breaks the name rule or is also a service account (1): the
    service would hold admin:users on that user, so the hub must not start.
    """
    for name in fresh_users:
        problem = canary_fresh_user_name_problem(name)
        if problem is None and name in service_accounts:
            problem = f"it is also one of the service accounts in {CANARY_ACCOUNTS_VARIABLE}, whose user must last"
        if problem is not None:
            raise ValueError(
                f"jupyterhub-canary: {CANARY_FRESH_USERS_VARIABLE} names {name!r}, which cannot be a fresh user: "
                f"{problem}. The service {service_name!r} would get admin:users (create and delete) on that "
                f"user, so the hub refuses to start: fix {CANARY_FRESH_USERS_VARIABLE}."
            )
    if not fresh_users:
        if service_token:
            canary_log.warning(
                "jupyterhub-canary: %s is set but %s names no fresh users: no service %s defined",
                CANARY_SERVICE_TOKEN_VARIABLE, CANARY_FRESH_USERS_VARIABLE, service_name,
            )
        return
    _canary_add_blocked_users(config, fresh_users)
    canary_log.info("jupyterhub-canary: blocked logins of fresh users %s", ", ".join(fresh_users))
    if not service_token:
        canary_log.warning(
            "jupyterhub-canary: %s is unset: no service %s for fresh users %s",
            CANARY_SERVICE_TOKEN_VARIABLE, service_name, ", ".join(fresh_users),
        )
        return
    hub_version = hub_version or _canary_running_hub_version()

    services = _canary_list(config.JupyterHub, "services")
    existing = [spec for spec in _canary_specs(services) if spec.get("name") == service_name]
    if not existing:
        services.append({"name": service_name, "api_token": service_token})
    elif existing[0].get("api_token") != service_token:  # not ours from loading this file before
        canary_log.warning(
            "jupyterhub-canary: a service %s is defined already: its own token is kept, %s is not used",
            service_name, CANARY_SERVICE_TOKEN_VARIABLE,
        )

    roles = _canary_list(config.JupyterHub, "load_roles")
    if CANARY_FRESH_ROLE_NAME not in _canary_spec_names(roles):
        role = canary_fresh_users_role(hub_version, service_name, fresh_users)
        roles.append(role)
        canary_log.info(
            "jupyterhub-canary: service %s with role %s: %s",
            service_name, CANARY_FRESH_ROLE_NAME, ", ".join(role["scopes"]),
        )


if "c" in globals():
    _canary_accounts = canary_service_accounts(globals())
    # The fresh users first: a name that breaks the rule stops the hub before anything is configured.
    canary_configure_fresh_users(
        c,  # noqa: F821 - `c` is the hub's config
        canary_fresh_users(globals()),
        canary_service_token(),
        canary_service_name(globals()),
        service_accounts=_canary_accounts,
    )
    canary_configure(c, _canary_accounts)  # noqa: F821
