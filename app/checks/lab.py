"""--check-lab: load JupyterLab as a browser does after login, without a browser.

GET <server>/<--lab-path> (default `lab`; `tree` for Notebook 7) with the canary's token must answer
200 with HTML that carries JupyterLab's page config (`<script id="jupyter-config-data">`). Then every
script the page loads (JupyterLab's main bundle) and the `remoteEntry` of every federated extension
the page config lists (`federated_extensions`, under `fullLabextensionsUrl`) must answer 200 with a
body: a page that answers while one of these is missing is the blank JupyterLab users see. Only
the assets of the hub's own origin are fetched: a script the page loads from another origin (a CDN,
an analytics snippet) is not the hub's to serve, and the canary sends nothing but to the hub (its
token least of all): it is logged (`lab_assets_not_fetched`, with its origin) and counted in
`lab_served`'s `not_fetched`.

Causes: `not_served` (404, a redirect, or a page that is not JupyterLab's), `asset_missing` (a bundle
not served: the message names its URL), `error` (anything else: a 5xx, no answer).
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urljoin

import requests

from app import logs
from app.checks import Check
from app.errors import HubUnavailable, LabFailed
from app.hub import hub_message
from app.models import LabPageConfig, WrongShape, loads
from app.transport import origin_text

PAGE_CONFIG = re.compile(r'<script[^>]*\bid="jupyter-config-data"[^>]*>(.*?)</script>', re.DOTALL)
SCRIPT_SRC = re.compile(r'<script[^>]*\bsrc="([^"]+)"')

log = logs.get_logger()


def page_config_of(text: str, path: str) -> LabPageConfig:
    """JupyterLab's page config, from the page's HTML (app/models.py); anything else is `not_served`."""
    found = PAGE_CONFIG.search(text)
    try:
        raw = loads(html.unescape(found.group(1))) if found else None
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raise LabFailed(
            f"GET {path} answered 200 without JupyterLab's page config (jupyter-config-data): not JupyterLab",
            cause="not_served",
        )
    try:
        return LabPageConfig.parse(raw, f"GET {path} answered 200 with a page config that is not JupyterLab's")
    except WrongShape as exc:
        raise LabFailed(exc.message, cause="not_served") from None


class Lab(Check):
    name = "lab"
    order = 40
    enabled_by = "check_lab"

    def run(self) -> None:
        page_url = self.server.url + self.config.lab_path
        page = self._get(page_url, "JupyterLab's page", headers={"Accept": "text/html"})
        path = self.server.path(page_url)
        if page.status_code == 404 or page.is_redirect:
            where = page.headers.get("Location")
            raise LabFailed(
                f"GET {path} answered {page.status_code}"
                + (f" (redirect to {where})" if where else f" {hub_message(page)}")
                + ": JupyterLab is not served there (not installed, disabled, or another --lab-path)",
                cause="not_served",
            )
        if page.status_code != 200:
            raise LabFailed(f"GET {path} answered {page.status_code} {hub_message(page)}", cause="error")
        assets = self._assets(page_url, page.text, path)
        own = [url for url in assets if self.server.client.is_own_origin(url)]
        elsewhere = sorted({origin_text(url) for url in assets if url not in own})
        if elsewhere:
            # Not the hub's to serve, and the canary's requests go to the hub only (its token above all).
            log.warning("lab_assets_not_fetched", origins=elsewhere, assets=len(assets) - len(own))
        total = 0
        for url in own:
            total += self._asset(url)
        log.info("lab_served", path=path, assets=len(own), bytes=total, not_fetched=len(assets) - len(own))

    def _assets(self, page_url: str, text: str, path: str) -> list[str]:
        """The main bundle(s) the page loads and every federated extension's remoteEntry."""
        page_config = page_config_of(text, path)
        scripts = [urljoin(page_url, html.unescape(src)) for src in SCRIPT_SRC.findall(text)]
        if not scripts:
            raise LabFailed(f"GET {path} answered a page that loads no script bundle", cause="not_served")
        base = page_config.labextensions_url.rstrip("/")
        extensions = [
            urljoin(page_url, f"{base}/{extension.name}/{extension.load}") for extension in page_config.federated_extensions
        ]
        return scripts + extensions

    def _asset(self, url: str) -> int:
        response = self._get(url, "a bundle of JupyterLab")
        if response.status_code != 200 or not response.content:
            answer = f"{response.status_code}" + (" with an empty body" if response.status_code == 200 else "")
            raise LabFailed(
                f"JupyterLab's page loads {self.server.path(url)}, which answered {answer}: the application "
                "would stay blank",
                cause="asset_missing",
            )
        return len(response.content)

    def _get(self, url: str, what: str, **kwargs: Any) -> requests.Response:
        deadline = self.server.deadline.within(self.config.request_timeout)
        try:
            return self.server.request("GET", url, deadline, **kwargs)
        except HubUnavailable as exc:
            raise LabFailed(f"{what}: no answer from the server ({exc})", cause="error") from None
