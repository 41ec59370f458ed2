"""The shapes the canary reads, each parsed in one place, where it enters.

Every answer and file the canary reads becomes one of these frozen dataclasses through its
`parse(raw, what)`, or a `WrongShape` whose message names the field and what came instead:

===================  =========================================  ====================================
shape                read from                                  what does not fit is (where parsed)
===================  =========================================  ====================================
HubInfo              GET /hub/api/                              20 (app/hub.py)
TokenOwner           GET /hub/api/user                          20 (app/hub.py)
UserModel,           GET /hub/api/users/<user>, its `servers`   20 (app/hub.py)
ServerModel
TokenModel           GET /hub/api/users/<user>/tokens/<id>      20 (app/hub.py)
ApiToken,            the token list; a minted token             20 (app/hub.py)
MintedToken
ProgressEvent        one event of the spawn's progress stream   the stream is read no further: the
                                                                canary polls instead (app/hub.py)
ApiStatus            GET <server>/api/status                    12 (app/cycle.py)
LabPageConfig        JupyterLab's page config                   17 `not_served` (app/checks/lab.py)
FileModel            the contents API's file (--check-storage)  15 `error` (app/checks/storage.py)
Notebook             the --notebook file                        78, naming it (app/checks/notebook.py)
===================  =========================================  ====================================

Only what the canary uses is read, and it is read strictly: a field of the wrong type is not
coerced (a `token_id` of 5 is not a token id, `true` is not a list of extensions). Absent or null
optional fields take their default. Code deeper in sees attributes, never raw JSON.

The stdlib's dataclasses and a few checks, not a validation library: the image's size and the
canary's start-up (`--help`) are budgets (README, "The image").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.errors import HubUnavailable

SHOWN = 60  # characters of an unexpected value quoted in a message


class WrongShape(HubUnavailable):
    """An answer of the wrong shape (a list where an object belongs, a field of the wrong type): a hub that
    is not itself, or not a hub at all (a proxy's error page, another service behind --hub-url). Where
    the shape is not a hub's answer, the module that reads it turns this into its own failure."""


def loads(text: str | bytes) -> Any:
    """JSON as the stdlib reads it; ValueError for what is not JSON, too deeply nested ones included."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def json_type(value: Any) -> str:
    """The Python type's name, as messages have always said it ("a JSON list", "of type str"); null for None."""
    return "null" if value is None else type(value).__name__


def shown(value: Any) -> str:
    """A short quotation of a value that did not fit."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested too deeply; an int too long to print
        text = f"<a {json_type(value)}>"
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def hub_time(value: Any) -> datetime | None:
    """A timestamp as the hub writes them (ISO 8601, `...Z` or an offset; naive means UTC), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Fields:
    """A JSON object's fields, each read with its type checked; failures name the field (`servers[''].url`)."""

    def __init__(self, raw: Any, what: str, path: str = ""):
        self.what = what
        self.path = path
        if not isinstance(raw, dict):
            if path:
                raise self.wrong_type(path, raw, "an object")
            raise WrongShape(f"{what}: a JSON {json_type(raw)}, not an object (got {shown(raw)})")
        self.raw: dict[str, Any] = raw

    def name(self, key: str | int) -> str:
        inner = f"[{key!r}]" if isinstance(key, int) or not key.isidentifier() else f".{key}"
        return (self.path + inner).lstrip(".")

    def wrong_type(self, name: str, value: Any, expected: str) -> WrongShape:
        return WrongShape(f"{self.what}: `{name}` of type {json_type(value)}, not {expected} (got {shown(value)})")

    def wrong_value(self, name: str, value: Any, expected: str) -> WrongShape:
        return WrongShape(f"{self.what}: `{name}` is {shown(value)}, not {expected}")

    def _typed(self, key: str, kinds: type | tuple[type, ...], expected: str, *, required: bool) -> Any:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise WrongShape(f"{self.what}: no `{self.name(key)}`" + (" (null)" if key in self.raw else ""))
            return None
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
            raise self.wrong_type(self.name(key), value, expected)
        return value

    def text(self, key: str, *, required: bool = False) -> str | None:
        return self._typed(key, str, "a string", required=required)

    def nonempty_text(self, key: str) -> str:
        value = self._typed(key, str, "a string", required=True)
        if not value:
            raise self.wrong_value(self.name(key), value, "a non-empty string")
        return value

    def flag(self, key: str) -> bool:
        return bool(self._typed(key, bool, "true or false", required=False))

    def number(self, key: str) -> int | float | None:
        value = self._typed(key, (int, float), "a number", required=False)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.wrong_value(self.name(key), value, "a finite number")
        return value

    def count(self, key: str) -> int | None:
        value = self._typed(key, int, "a whole number", required=False)
        if value is not None and value < 0:
            raise self.wrong_value(self.name(key), value, "a count")
        return value

    def time(self, key: str) -> datetime | None:
        value = self.text(key)
        if not value:
            return None
        parsed = hub_time(value)
        if parsed is None:
            raise self.wrong_value(self.name(key), value, "an ISO 8601 time")
        return parsed

    def object(self, key: str) -> Fields | None:
        value = self.raw.get(key)
        return None if value is None else Fields(value, self.what, self.name(key))

    def items(self, key: str, *, required: bool = False) -> list[Any] | None:
        return self._typed(key, list, "a list", required=required)

    def texts(self, key: str) -> tuple[str, ...] | None:
        values = self._typed(key, list, "a list of strings", required=False)
        if values is None:
            return None
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise self.wrong_type(f"{self.name(key)}[{index}]", value, "a string")
        return tuple(values)


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


# --- the hub's answers ---


@dataclass(frozen=True)
class HubInfo:
    """GET /hub/api/ (no token needed)."""

    version: str

    @classmethod
    def parse(cls, raw: Any, what: str) -> HubInfo:
        return cls(Fields(raw, what).text("version") or "unknown")


@dataclass(frozen=True)
class TokenOwner:
    """GET /hub/api/user: whose token it is, and what it may do."""

    name: str
    kind: str | None  # "user" or "service"
    scopes: tuple[str, ...] | None  # None: the hub does not say (before JupyterHub 2)
    token_id: str | None  # which token this is (JupyterHub 5+)

    @property
    def is_user(self) -> bool:
        return self.kind == "user"

    @classmethod
    def parse(cls, raw: Any, what: str) -> TokenOwner:
        fields = Fields(raw, what)
        return cls(
            name=fields.nonempty_text("name"),
            kind=fields.text("kind"),
            scopes=fields.texts("scopes"),
            token_id=fields.text("token_id") or None,
        )


@dataclass(frozen=True)
class ServerModel:
    """One entry of a user model's `servers`."""

    ready: bool = False
    pending: str | None = None  # "spawn", "stop" or None
    url: str | None = None  # the server's path through the proxy, as the hub writes it
    started: datetime | None = None
    last_activity: datetime | None = None  # None: never active (a stopped server that never ran)

    def log_fields(self) -> dict[str, Any]:
        """What a log line says of the server: its state and when it started."""
        return {"pending": self.pending, "ready": self.ready, "started": self.started.isoformat() if self.started else None}

    @classmethod
    def parse(cls, fields: Fields) -> ServerModel:
        return cls(
            ready=fields.flag("ready"),
            pending=fields.text("pending"),
            url=fields.text("url") or None,
            started=fields.time("started"),
            last_activity=fields.time("last_activity"),
        )


@dataclass(frozen=True)
class UserModel:
    """GET /hub/api/users/<user> (and POST's answer): its servers, by name ("" is the default server), and
    what --fresh-user's guard reads (app/fresh_user.py): admin, roles, groups, when the hub created it."""

    # None: the hub left `servers` out, as it does for a token without read:servers.
    servers: Mapping[str, ServerModel] | None = None
    admin: bool | None = None  # None: the hub left it out
    # None: the hub left them out (a token without read:users / read:roles:users).
    roles: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    created: datetime | None = None

    @classmethod
    def parse(cls, raw: Any, what: str) -> UserModel:
        fields = Fields(raw, what)
        described = {
            "admin": None if fields.raw.get("admin") is None else fields.flag("admin"),
            "roles": fields.texts("roles"),
            "groups": fields.texts("groups"),
            "created": fields.time("created"),
        }
        if "servers" not in fields.raw:
            return cls(None, **described)
        servers = fields.raw["servers"]
        if not isinstance(servers, dict):
            raise fields.wrong_type("servers", servers, "an object")
        parsed = {
            name: ServerModel.parse(Fields(entry, what, f"servers[{name!r}]"))
            for name, entry in servers.items()
            if entry is not None
        }
        return cls(parsed, **described)


@dataclass(frozen=True)
class TokenModel:
    """GET /hub/api/users/<user>/tokens/<id>: when it expires (None: never)."""

    expires_at: datetime | None

    @classmethod
    def parse(cls, raw: Any, what: str) -> TokenModel:
        return cls(Fields(raw, what).time("expires_at"))


@dataclass(frozen=True)
class ApiToken:
    """One token of the user's token list (the value is never listed)."""

    id: str
    note: str | None
    created: datetime | None = None

    @classmethod
    def parse_list(cls, raw: Any, what: str) -> tuple[ApiToken, ...]:
        """The list as JupyterHub answers it ({"api_tokens": [...]}), or a bare list."""
        if isinstance(raw, dict):
            tokens = Fields(raw, what).items("api_tokens", required=True)
            path = "api_tokens"
        elif isinstance(raw, list):
            tokens, path = raw, ""
        else:
            raise WrongShape(f"{what}: a JSON {json_type(raw)}, not a list of tokens (got {shown(raw)})")
        assert tokens is not None
        parsed = []
        for index, entry in enumerate(tokens):
            fields = Fields(entry, what, f"{path}[{index}]")
            parsed.append(cls(fields.nonempty_text("id"), fields.text("note"), fields.time("created")))
        return tuple(parsed)


@dataclass(frozen=True)
class MintedToken:
    """POST /hub/api/users/<user>/tokens answered 201: the new token, with its id."""

    id: str
    token: str = field(repr=False)
    scopes: tuple[str, ...] | None
    expires_at: str | None  # as the hub wrote it (checked to be a time)
    note: str | None

    @classmethod
    def parse(cls, raw: Any, what: str) -> MintedToken:
        fields = Fields(raw, what)
        fields.time("expires_at")
        return cls(
            id=fields.nonempty_text("id"),
            token=fields.nonempty_text("token"),
            scopes=fields.texts("scopes"),
            expires_at=fields.text("expires_at") or None,
            note=fields.text("note"),
        )

    def as_dict(self) -> dict[str, Any]:
        scopes = list(self.scopes) if self.scopes is not None else None
        return {"id": self.id, "token": self.token, "scopes": scopes, "expires_at": self.expires_at, "note": self.note}


@dataclass(frozen=True)
class ProgressEvent:
    """One event of a spawn's progress stream (or a line the canary adds to the timeline itself).

    `reason` is the Kubernetes event's, when the spawner relays the event itself (KubeSpawner's
    `raw_event`); `field_path` its `involvedObject.fieldPath`, the container it is about
    ("spec.initContainers{<name>}", "spec.containers{notebook}")."""

    message: str | None = None
    progress: int | float | None = None
    ready: bool = False
    failed: bool = False
    reason: str | None = None
    field_path: str | None = None

    @classmethod
    def parse(cls, raw: Any, what: str) -> ProgressEvent:
        fields = Fields(raw, what)
        raw_event = fields.object("raw_event")
        involved = raw_event.object("involvedObject") if raw_event is not None else None
        return cls(
            message=fields.text("message"),
            progress=fields.number("progress"),
            ready=fields.flag("ready"),
            failed=fields.flag("failed"),
            reason=raw_event.text("reason") if raw_event is not None else None,
            field_path=involved.text("fieldPath") if involved is not None else None,
        )


# --- the user's server ---


@dataclass(frozen=True)
class ApiStatus:
    """GET <server>/api/status (jupyter_server): the server answers, and how busy it is."""

    connections: int | None
    kernels: int | None
    started: str | None

    @classmethod
    def parse(cls, raw: Any, what: str) -> ApiStatus:
        fields = Fields(raw, what)
        return cls(fields.count("connections"), fields.count("kernels"), fields.text("started"))


@dataclass(frozen=True)
class FederatedExtension:
    name: str
    load: str  # its remoteEntry, relative to the extension's own URL


@dataclass(frozen=True)
class LabPageConfig:
    """JupyterLab's page config (`<script id="jupyter-config-data">`): where its extensions are served."""

    labextensions_url: str  # fullLabextensionsUrl; "" when the page does not say
    federated_extensions: tuple[FederatedExtension, ...]

    @classmethod
    def parse(cls, raw: Any, what: str) -> LabPageConfig:
        fields = Fields(raw, what)
        extensions = []
        for index, entry in enumerate(fields.items("federated_extensions") or []):
            extension = Fields(entry, what, f"federated_extensions[{index}]")
            extensions.append(FederatedExtension(extension.nonempty_text("name"), extension.nonempty_text("load")))
        return cls(fields.text("fullLabextensionsUrl") or "", tuple(extensions))


@dataclass(frozen=True)
class FileModel:
    """GET <server>/api/contents/<path>?type=file&format=text: the file's text."""

    content: str

    @classmethod
    def parse(cls, raw: Any, what: str) -> FileModel:
        return cls(Fields(raw, what).text("content", required=True) or "")


# --- files ---


@dataclass(frozen=True)
class Notebook:
    """The code cells of an nbformat 4 notebook (--notebook), and the kernel it names."""

    name: str  # the file's name, as the result reports it
    kernel_name: str | None  # its kernelspec
    cells: tuple[str, ...]  # the code cells' sources, in order

    @classmethod
    def parse(cls, raw: Any, name: str, what: str) -> Notebook:
        """`what` names the file in messages; WrongShape says why it is not an nbformat 4 notebook."""
        fields = Fields(raw, f"{what} is not a notebook")
        cell_list = fields.items("cells", required=True)
        nbformat = fields.raw.get("nbformat")
        if type(nbformat) is not int or nbformat != 4:
            raise WrongShape(f"{what} is nbformat {shown(nbformat)}; only nbformat 4 notebooks are run")
        cells = []
        for index, entry in enumerate(cell_list or []):
            cell = Fields(entry, fields.what, f"cells[{index}]")
            if cell.text("cell_type", required=True) != "code":
                continue
            source = cell.raw.get("source", "")
            if isinstance(source, list) and all(isinstance(line, str) for line in source):
                source = "".join(source)
            if not isinstance(source, str):
                raise cell.wrong_type(cell.name("source"), source, "text (a string or a list of strings)")
            cells.append(source)
        if not cells:
            raise WrongShape(f"{what} has no code cell")
        metadata = fields.object("metadata")
        kernelspec = metadata.object("kernelspec") if metadata is not None else None
        kernel_name = kernelspec.text("name") if kernelspec is not None else None
        return cls(name, kernel_name or None, tuple(cells))
