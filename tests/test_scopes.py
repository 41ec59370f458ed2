"""The scope check's reading of JupyterHub's scope syntax and hierarchy (app/scopes.py); the real hub's
answers are in tests/test_cycle.py."""

from __future__ import annotations

import pytest

from app.scopes import WANTED, least, missing, needed

NEEDS_6 = needed("6.1.1")


def check(*granted: str, owner: str | None = None, server: str = "") -> tuple[list[str], list[str]]:
    return missing(granted, NEEDS_6, owner=owner, user="canary", server_name=server)


def test_the_needs_follow_the_hubs_version():
    assert needed("6.1.1") == ("read:servers", "start:servers", "delete:servers", "access:servers")
    assert needed("5.5.4") == ("read:servers", "servers", "delete:servers", "access:servers")


@pytest.mark.parametrize(
    "granted",
    [
        ("servers!user=canary", "access:servers!user=canary"),
        ("admin:servers", "access:servers"),
        ("read:servers!user=canary", "start:servers!server=canary/", "delete:servers!server=canary/",
         "access:servers!server=canary/"),
        ("servers!user", "shares!user"),  # a bare filter is the owner's own
    ],
    ids=["user-filter", "admin-servers", "server-filter", "own"],
)
def test_enough(granted):
    assert check(*granted, owner="canary") == ([], [])


@pytest.mark.parametrize(
    ("granted", "lacking"),
    [
        (("start:servers", "delete:servers", "access:servers", "read:users"), ["read:servers"]),
        (("servers!user=someone-else", "access:servers!user=canary"), ["read:servers", "start:servers", "delete:servers"]),
        (("servers!server=canary/named", "access:servers"), ["read:servers", "start:servers", "delete:servers"]),
        # The hub shows `servers` in the user model only with read:servers on the user.
        (("servers!server=canary/", "access:servers"), ["read:servers"]),
        (("admin:users", "access:servers"), ["read:servers", "start:servers", "delete:servers"]),  # users, not servers
        (("servers!user",), ["read:servers", "start:servers", "delete:servers", "access:servers"]),  # owner is not canary
    ],
    ids=["no-read", "other-user", "other-server", "server-wide-read", "admin-users", "other-owner"],
)
def test_lacking(granted, lacking):
    assert check(*granted, owner="someone") == (lacking, [])


def test_a_group_filter_is_uncertain_not_missing():
    assert check("servers!group=canaries", "access:servers") == ([], ["read:servers", "start:servers", "delete:servers"])


def test_a_named_server():
    granted = ("servers!server=canary/probe", "read:servers!user=canary", "access:servers!user=canary")
    assert check(*granted, server="probe") == ([], [])


@pytest.mark.parametrize("version", ["5.5.4", "6.1.1"])
def test_the_least_scopes_grant_every_needed_one_and_none_twice(version):
    """What `jupyterhub-canary token` mints (scopes.least) covers what the preflight checks (needed)."""
    fewest = least(version)
    assert missing(fewest, needed(version), owner="u", user="u", server_name="") == ([], [])
    for scope in fewest:  # none is implied by the others: leaving any out loses something needed or wanted
        rest = [other for other in fewest if other != scope]
        assert missing(rest, (*needed(version), *WANTED), owner="u", user="u", server_name="")[0], scope


# --- --fresh-user: the service's token (app/fresh_user.py) ---

FRESH = "jupyterhub-canary-fresh-x"


def fresh_check(*granted: str, version: str = "6.1.1") -> tuple[list[str], list[str]]:
    return missing(granted, needed(version, fresh_user=True), owner=None, user=FRESH, server_name="")


def test_a_fresh_user_needs_admin_users_and_read_tokens_first():
    assert needed("6.1.1", fresh_user=True)[:2] == ("admin:users", "tokens")


@pytest.mark.parametrize("version", ["6.1.1", "5.5.4"])
def test_the_services_least_scopes_filtered_to_the_name_are_enough(version):
    servers = ("read:servers", "start:servers", "delete:servers") if version.startswith("6") else ("servers",)
    scopes = ("admin:users", "tokens", "access:servers", *servers)
    assert fresh_check(*(f"{scope}!user={FRESH}" for scope in scopes), version=version) == ([], [])


def test_scopes_on_another_name_or_a_server_filter_do_not_make_or_delete_the_user():
    other = ("admin:users!user=alice", "tokens!user=alice")
    server_only = (f"admin:users!server={FRESH}/", f"tokens!server={FRESH}/")
    rest = (f"servers!user={FRESH}", f"access:servers!user={FRESH}")
    assert fresh_check(*other, *rest) == (["admin:users", "tokens"], [])
    assert fresh_check(*server_only, *rest) == (["admin:users", "tokens"], [])
    assert fresh_check("admin:users!group=canaries", "tokens!group=canaries", *rest) == ([], ["admin:users", "tokens"])
