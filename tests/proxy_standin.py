"""A stand-in for a jupyter-server-proxy app (RStudio, VS Code, a desktop) on the test hub's single-user
servers (tests/test_checks.py, --check-url), as a jupyter-server extension: enabled with
`ServerApp.jpserver_extensions` {"tests.proxy_standin": true}.

`<server>/standin-app` redirects to `<server>/standin-app/` (as jupyter-server-proxy adds the slash),
which answers the app's page; both only to an authenticated request, as the proxy's are.
"""

from __future__ import annotations

from jupyter_server.base.handlers import JupyterHandler
from tornado import web

PAGE = "<!doctype html><html><body>a stand-in for a proxied app</body></html>"


class AppHandler(JupyterHandler):
    @web.authenticated
    def get(self) -> None:
        self.set_header("Content-Type", "text/html")
        self.finish(PAGE)


class AddSlash(JupyterHandler):
    @web.authenticated
    def get(self) -> None:
        self.redirect(self.base_url + "standin-app/")


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "tests.proxy_standin"}]


def _load_jupyter_server_extension(serverapp) -> None:
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", [(f"{base}standin-app", AddSlash), (f"{base}standin-app/", AppHandler)])
