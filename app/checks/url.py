"""--check-url PATH (repeatable): the pages users open besides JupyterLab (RStudio, VS Code, a desktop
through jupyter-server-proxy; any page of the server).

GET <server>/<PATH> with the canary's token must answer 2xx with a body. The transport follows no
redirect itself; this check follows a 3xx whose Location stays under the server's own URL on the
hub's origin (a proxied app's `rstudio` -> `rstudio/`), at most MAX_REDIRECTS hops, each request
within what is left of the checks' budget. A redirect anywhere else (the hub's login, another host)
is a failure that names it, and nothing is sent there: the token least of all.

A failure is JupyterLab's check's family (LabFailed, exit 17), its message naming the path. Causes:
`not_served` (404, a redirect out of the server or too many, an empty body), `error` (anything else:
a 5xx, no answer).
"""

from __future__ import annotations

from urllib.parse import urljoin

import requests

from app import logs
from app.checks import Check
from app.errors import HubUnavailable, LabFailed
from app.hub import hub_message

MAX_REDIRECTS = 5

log = logs.get_logger()


class Urls(Check):
    name = "urls"
    order = 50
    enabled_by = "check_urls"

    def run(self) -> None:
        for path in self.config.check_urls:
            self._check(path)

    def _check(self, path: str) -> None:
        url = self.server.url + path
        shown = self.server.path(url)
        hops = 0
        while True:
            response = self._get(url, shown)
            if not response.is_redirect:
                break
            where = response.headers.get("Location", "")
            target = urljoin(url, where)
            if not (self.server.client.is_own_origin(target) and target.startswith(self.server.url)):
                raise LabFailed(
                    f"GET {shown} answered {response.status_code} (redirect to {where}), out of the server: "
                    "not served to the canary there",
                    cause="not_served",
                )
            if hops == MAX_REDIRECTS:
                raise LabFailed(f"GET {shown} redirected more than {MAX_REDIRECTS} times within the server", cause="not_served")
            url, hops = target, hops + 1
        answer = f"GET {shown}" + (f" (redirected to {self.server.path(url)})" if url != self.server.url + path else "")
        if response.status_code == 404:
            raise LabFailed(f"{answer} answered 404 {hub_message(response)}: not served there", cause="not_served")
        if not 200 <= response.status_code < 300:
            raise LabFailed(f"{answer} answered {response.status_code} {hub_message(response)}", cause="error")
        if not response.content:
            raise LabFailed(f"{answer} answered {response.status_code} with an empty body", cause="not_served")
        log.info("url_served", path=shown, status=response.status_code, bytes=len(response.content), redirects=hops)

    def _get(self, url: str, shown: str) -> requests.Response:
        deadline = self.server.deadline.within(self.config.request_timeout)
        try:
            return self.server.request("GET", url, deadline, headers={"Accept": "text/html,*/*"})
        except HubUnavailable as exc:
            raise LabFailed(f"GET {shown}: no answer from the server ({exc})", cause="error") from None
