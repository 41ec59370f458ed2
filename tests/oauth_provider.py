"""A tiny fake OAuth2 provider on 127.0.0.1, enough for oauthenticator's GenericOAuthenticator.

It lets a real JupyterHub run with OAuth, auth_state and auth refresh in the tests, with no
network: the hub sends browsers to `/authorize`, swaps the code at `/token` and asks `/userinfo`
who the token belongs to, both at login and at every auth refresh. The provider counts the
`/userinfo` and `/token` calls per user, which is how a test sees that the hub refreshed a user.

    with FakeOAuthProvider() as provider:
        c.GenericOAuthenticator.authorize_url = provider.authorize_url  # and token_url, userdata_url

Who logs in: `/authorize?...&login=<name>` (a test appends it to the hub's redirect), else
`default_user`. Every code, access token and refresh token is accepted once issued, for good;
the hub's client id and secret are not checked.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.background import serve_in_background, stop_serving

ACCESS_TOKEN_LIFETIME = 3600  # seconds, as announced in `expires_in`; never enforced


class FakeOAuthProvider:
    """The provider's state (issued codes and tokens, call counts) and its HTTP server thread."""

    def __init__(self, default_user: str = "oauth-user"):
        self.default_user = default_user
        self._lock = threading.Lock()
        self._codes: dict[str, str] = {}  # code -> user name
        self._access: dict[str, str] = {}  # access token -> user name
        self._refresh: dict[str, str] = {}  # refresh token -> user name
        self._userinfo_calls: Counter[str] = Counter()
        self._token_calls: Counter[tuple[str, str]] = Counter()  # (user, grant_type)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- lifecycle ---

    def start(self) -> FakeOAuthProvider:
        provider = self

        class Handler(_Handler):
            state = provider

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = serve_in_background(self._server, "fake-oauth")
        return self

    def stop(self) -> None:
        if self._server is not None:
            stop_serving(self._server, self._thread)
            self._server = None

    def __enter__(self) -> FakeOAuthProvider:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def authorize_url(self) -> str:
        return self.url + "/authorize"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def userdata_url(self) -> str:
        return self.url + "/userinfo"

    # --- what tests read ---

    def userinfo_calls(self, user: str) -> int:
        """How often `/userinfo` answered for `user`: once per login, once per refresh."""
        with self._lock:
            return self._userinfo_calls[user]

    def token_calls(self, user: str, grant_type: str = "authorization_code") -> int:
        with self._lock:
            return self._token_calls[(user, grant_type)]

    # --- the protocol ---

    def _issue_code(self, user: str) -> str:
        code = secrets.token_urlsafe(16)
        with self._lock:
            self._codes[code] = user
        return code

    def _exchange(self, form: dict[str, str]) -> tuple[int, dict]:
        grant_type = form.get("grant_type", "")
        with self._lock:
            if grant_type == "authorization_code":
                user = self._codes.pop(form.get("code", ""), None)
            elif grant_type == "refresh_token":
                user = self._refresh.get(form.get("refresh_token", ""))
            else:
                return 400, {"error": "unsupported_grant_type"}
            if user is None:
                return 400, {"error": "invalid_grant"}
            self._token_calls[(user, grant_type)] += 1
            access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
            self._access[access] = user
            self._refresh[refresh] = user
        return 200, {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_LIFETIME,
            "scope": "openid profile",
        }

    def _userinfo(self, authorization: str) -> tuple[int, dict]:
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            user = self._access.get(token) if scheme.lower() == "bearer" else None
            if user is None:
                return 401, {"error": "invalid_token"}
            self._userinfo_calls[user] += 1
        return 200, {"username": user, "sub": user, "name": user}


class _Handler(BaseHTTPRequestHandler):
    state: FakeOAuthProvider  # set on the subclass made per provider

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/authorize":
            redirect_uri = query.get("redirect_uri")
            if not redirect_uri:
                self._json(400, {"error": "invalid_request", "error_description": "no redirect_uri"})
                return
            code = self.state._issue_code(query.get("login") or self.state.default_user)
            back = {"code": code, **({"state": query["state"]} if "state" in query else {})}
            separator = "&" if "?" in redirect_uri else "?"
            self.send_response(302)
            self.send_header("Location", redirect_uri + separator + urlencode(back))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/userinfo":
            self._json(*self.state._userinfo(self.headers.get("Authorization", "")))
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8")
        if urlsplit(self.path).path != "/token":
            self._json(404, {"error": "not_found"})
            return
        form = {k: v[0] for k, v in parse_qs(body).items()}
        self._json(*self.state._exchange(form))

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: pytest shows failures
        pass
