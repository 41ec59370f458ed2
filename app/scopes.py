"""What a token may do, from the scopes the hub says it has (`GET /hub/api/user` answers `scopes`).

The cycle must see, start, stop and reach one server. JupyterHub includes `servers` in a user model
only when the token may read them, so a token without `read:servers` would spawn a server it cannot
see; the preflight names what is missing (77) before anything is started.

Scopes are `name` or `name!filter`, filters `user=NAME`, `server=USER/SERVER` (the default server's
name is empty: `server=USER/`), `group=NAME` or a bare `user` (the token owner's own resources).
Implications follow JupyterHub's scope hierarchy (its scopes.py): the hub answers the expanded
scopes already, the hierarchy here only makes the check independent of that. A group filter cannot
be judged without the user's groups: it is given the benefit of the doubt (logged, never a failure).

The server is read from the user model, which shows `servers` only with `read:servers` on the user:
`read:servers!server=USER/` is not enough (seen on JupyterHub 6.1), the other three may be per server.
"""

from __future__ import annotations

from collections.abc import Iterable

# What each scope implies (JupyterHub 4-6; `start:servers` exists from 6, before it `servers` starts).
# What the cycle does with each scope it needs: for the message that names a missing one.
USES = {
    "read:servers": "see the server (the hub hides `servers` from the user model without it)",
    "start:servers": "start the server",
    "servers": "start the server",
    "delete:servers": "stop the server",
    "access:servers": "reach the server through the proxy",
    "admin:users": "create and delete the fresh user (--fresh-user)",
    "tokens": "mark the fresh user the canary's (a token with no scopes) and read a leftover's tokens (--fresh-user)",
}
# Needed for the whole user: a server filter does not cover them.
USER_WIDE = frozenset({"read:servers", "admin:users", "tokens"})
IMPLIES: dict[str, tuple[str, ...]] = {
    "admin:servers": ("admin:server_state", "servers"),
    "admin:users": ("admin:auth_state", "users", "read:roles:users", "admin:server_state"),
    "users": ("read:users", "list:users", "users:activity"),
    "tokens": ("read:tokens",),
    "servers": ("read:servers", "start:servers", "delete:servers"),
    "shares": ("access:servers", "read:shares", "users:shares", "groups:shares"),
}


def needed(hub_version: str, *, fresh_user: bool = False) -> tuple[str, ...]:
    """The scopes the cycle needs on a hub of this version, in the order they are used; with --fresh-user
    also those that create, prove and delete the user (app/fresh_user.py)."""
    start = "start:servers" if _major(hub_version) >= 6 else "servers"
    fresh = ("admin:users", "tokens") if fresh_user else ()
    return (*fresh, "read:servers", start, "delete:servers", "access:servers")


# Wanted beside what the cycle needs: the preflight reads the token's own expiry to warn in time
# (without it, that is only logged).
WANTED = ("read:tokens",)


def least(hub_version: str) -> tuple[str, ...]:
    """The fewest scopes that grant what the cycle needs and WANTED (`jupyterhub-canary token` mints
    them): a needed scope that another one implies is left out (before 6, `servers` holds three)."""
    wanted = (*needed(hub_version), *WANTED)
    return tuple(scope for scope in wanted if not any(scope in _expand(other) - {other} for other in wanted))


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def _expand(name: str) -> set[str]:
    names = {name}
    for implied in IMPLIES.get(name, ()):
        names |= _expand(implied)
    return names


def _covers(scope_filter: str, owner: str | None, user: str, server_name: str) -> bool | None:
    """Whether a filter covers the server of `user`: True, False, or None when it cannot be told."""
    if not scope_filter:
        return True
    kind, _, value = scope_filter.partition("=")
    if kind == "user":
        return (value or owner) == user
    if kind == "server":
        return value == f"{user}/{server_name}"
    if kind == "group":
        return None
    return False


def missing(
    scopes: Iterable[str], needs: Iterable[str], *, owner: str | None, user: str, server_name: str
) -> tuple[list[str], list[str]]:
    """(missing, uncertain): the needed scopes no granted scope covers for this server, and those only a
    filter that cannot be judged here (a group) may cover."""
    granted: dict[str, list[bool | None]] = {}
    for scope in scopes:
        name, _, scope_filter = str(scope).partition("!")
        coverage = _covers(scope_filter, owner, user, server_name)
        for implied in _expand(name):
            per_server = scope_filter.startswith("server=")
            granted.setdefault(implied, []).append(False if per_server and implied in USER_WIDE else coverage)
    lacking, uncertain = [], []
    for need in needs:
        coverage = granted.get(need, [])
        if True in coverage:
            continue
        (uncertain if None in coverage else lacking).append(need)
    return lacking, uncertain
