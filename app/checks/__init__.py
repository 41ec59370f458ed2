"""The checks that run against the user's server once it answers: one module per check, one interface.

A check is a subclass of `Check` in a module of this package. The cycle (app/cycle.py) asks
`enabled_checks(config)` which of them the configuration turns on, and runs each as a phase of its
own, in `order`: kernel, notebook, storage, JupyterLab, the --check-url pages. Adding a check is adding a module here; the
cycle does not learn its name.

Every check reaches the server the same way, through `Server`: the server's URL as the hub's model
gives it, the canary's token (held by the `HubClient`'s transport, never copied, and sent to the
hub's own origin only: a URL of any other origin goes without it), and the budget before the stop.
`Server.request` is `HubClient.request`: its retries of what is safe to resend, its per-request
timeout and its watchdog, which cuts a request that is still running when its budget ends.

A check raises a `CheckFailed` subclass (a typed failure with its exit code, reason and `cause`);
what it wants in the run's result (e.g. the notebook's cells) it returns, or attaches to that
failure as `details`, under the check's `name`.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar

import requests

from app.config import Config
from app.deadline import Deadline
from app.hub import HubClient
from app.signals import Shield, no_shield


@dataclass(frozen=True)
class Server:
    """How a check reaches the user's server: through the proxy, with the canary's token."""

    client: HubClient
    user: str
    url: str  # ends with "/"
    deadline: Deadline  # what the checks may spend: the run's budget before the stop
    # Holds signals off while something must finish (a check's own cleanup: a file, a kernel).
    shield: Shield = no_shield

    def request(self, method: str, path: str, deadline: Deadline, **kwargs: Any) -> requests.Response:
        """`method` on <server>/<path> (or on `path` when it is a whole URL), within `deadline` (see
        HubClient.request). The token goes with it only when the URL is of the hub's own origin."""
        url = path if "://" in path else self.url + path
        return self.client.request(method, url, deadline, **kwargs)

    def path(self, url: str) -> str:
        """A URL without the hub's own part, for messages (short, and the same on every hub)."""
        return "/" + url.removeprefix(self.client.hub_url)


class Check:
    """One check against the user's server. Subclasses set the class variables and `run`."""

    name: ClassVar[str]  # its phase in `phases_ms`, the metric's label, the result's key for `run`'s report
    order: ClassVar[int]  # when it runs, relative to the other checks
    enabled_by: ClassVar[str]  # the Config field that turns it on (a switch, or a value that is set)

    def __init__(self, config: Config, server: Server):
        self.config = config
        self.server = server

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return bool(getattr(config, cls.enabled_by))

    def run(self) -> dict[str, Any] | None:
        """Check; return what the result should report under `name` (None: nothing)."""
        raise NotImplementedError


def all_checks() -> list[type[Check]]:
    """Every check of this package, in order."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return sorted(_subclasses(Check), key=lambda check: check.order)


def _subclasses(cls: type[Check]) -> list[type[Check]]:
    found = []
    for sub in cls.__subclasses__():
        # A concrete check of this package: not an intermediate base, not a subclass made elsewhere.
        if "name" in vars(sub) and sub.__module__.startswith(f"{__name__}."):
            found.append(sub)
        found.extend(_subclasses(sub))
    return found


def enabled_checks(config: Config) -> list[type[Check]]:
    return [check for check in all_checks() if check.enabled(config)]
