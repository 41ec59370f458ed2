"""Command-line flags and CANARY_* variables, parsed and validated once into a frozen Config.

Every flag of `run` has a variable: `--spawn-timeout` <-> `CANARY_SPAWN_TIMEOUT`. A flag wins
over its variable. Errors name the flag or variable the bad value came from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app import secret
from app.errors import ConfigError

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"


# --- parsers: str -> value, raising ValueError with a message that omits the value's source ---


def _text(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a positive number of seconds, got {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"must be a whole number, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1, got {raw!r}")
    return value


def _switch(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _hub_url(raw: str) -> str:
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL such as https://hub.example.org/, got {raw!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"must not have a query or fragment, got {raw!r}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError(f"has an invalid port, got {raw!r}") from None
    return value if value.endswith("/") else value + "/"


def _json_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, got {type(value).__name__}")
    return value


def _existing_file(raw: str) -> Path:
    path = Path(raw.strip())
    if not path.is_file():
        raise ValueError(f"file not found: {str(path)!r}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"file not readable: {str(path)!r}")
    return path


def _path(raw: str) -> Path:
    return Path(_text(raw))


@dataclass(frozen=True)
class Option:
    """One flag of a command and its CANARY_* variable."""

    flag: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    switch: bool = False  # a flag without a value; its variable takes true/false

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return "CANARY_" + self.dest.upper()


RUN_OPTIONS: tuple[Option, ...] = (
    Option("--hub-url", _hub_url, None, "the hub's public URL, with its base path if any", "URL"),
    Option("--user", _text, None, "the service-account user whose server is spawned", "NAME"),
    Option("--server-name", str.strip, "", "a named server to spawn (default: the default server)", "NAME"),
    Option("--user-options", _json_object, None, "spawner options: a JSON object sent as the spawn request body", "JSON"),
    Option("--user-options-file", _existing_file, None, "read the spawner options (a JSON object) from this file", "PATH"),
    Option("--token-secret", _text, None, "read the API token from this Kubernetes Secret", "NAME"),
    Option("--token-secret-key", _text, "token", "the key of the token in that Secret", "KEY"),
    Option("--token-secret-namespace", _text, None, "the Secret's namespace (default: the pod's own, else 'default')", "NS"),
    Option("--token-file", _existing_file, None, f"read the API token from this file (after the Secret, before ${TOKEN_ENV})", "PATH"),
    Option("--spawn-timeout", _positive_seconds, 300.0, "seconds from the spawn request until the server must be ready", "S"),
    Option("--stop-timeout", _positive_seconds, 120.0, "seconds the server may take to stop", "S"),
    Option("--request-timeout", _positive_seconds, 30.0, "seconds for one HTTP request", "S"),
    Option("--attempts", _positive_int, 3, "cycles to try when a failure may be transient", "N"),
    Option("--deadline", _positive_seconds, 900.0, "seconds for all attempts, cleanup included", "S"),
    Option("--ca-bundle", _existing_file, None, "CA certificates (PEM) to verify the hub's TLS certificate", "PATH"),
    Option("--insecure-skip-tls-verify", _switch, False, "do not verify the hub's TLS certificate (logs a warning)", switch=True),
    Option("--log-format", _choice(*LOG_FORMATS), "json", "json (one object per line) or console", "FORMAT"),
    Option("--log-level", _choice(*LOG_LEVELS), "info", "the least severe level logged", "LEVEL"),
    Option("--termination-log", _path, None, f"where to write the one-line summary (default {DEFAULT_TERMINATION_LOG} when writable)", "PATH"),
)


@dataclass(frozen=True)
class SecretToken:
    name: str
    key: str
    namespace: str

    def describe(self) -> str:
        return f"Secret {self.namespace}/{self.name} key {self.key!r}"


@dataclass(frozen=True)
class FileToken:
    path: Path

    def describe(self) -> str:
        return f"file {str(self.path)!r}"


@dataclass(frozen=True)
class EnvToken:
    value: str = field(repr=False)

    def describe(self) -> str:
        return f"variable {TOKEN_ENV}"


TokenSource = SecretToken | FileToken | EnvToken


@dataclass(frozen=True)
class Config:
    hub_url: str
    user: str
    server_name: str
    user_options: dict[str, Any] | None
    token_source: TokenSource
    spawn_timeout: float
    stop_timeout: float
    request_timeout: float
    attempts: int
    deadline: float
    ca_bundle: Path | None
    insecure_skip_tls_verify: bool
    log_format: str
    log_level: str
    termination_log: Path | None

    @property
    def tls_verify(self) -> bool | str:
        """The `verify` argument for requests."""
        if self.insecure_skip_tls_verify:
            return False
        return str(self.ca_bundle) if self.ca_bundle else True


def resolve(options: tuple[Option, ...], given: Mapping[str, str | None], env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """Pick each option's raw value (flag first, then variable), parse it, and remember where it came from.

    Returns {dest: (value, source)} where source names the flag or variable ("" for the default).
    """
    values: dict[str, tuple[Any, str]] = {}
    for option in options:
        raw, source = given.get(option.dest), option.flag
        if raw is None and option.env in env:
            raw, source = env[option.env], option.env
        if raw is None:
            values[option.dest] = (option.default, "")
            continue
        try:
            values[option.dest] = (option.parse(raw), source)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return values


def _token_source(values: dict[str, tuple[Any, str]], env: Mapping[str, str]) -> TokenSource:
    secret_name = values["token_secret"][0]
    if secret_name:
        namespace = values["token_secret_namespace"][0] or secret.own_namespace() or "default"
        return SecretToken(secret_name, values["token_secret_key"][0], namespace)
    if values["token_file"][0]:
        return FileToken(values["token_file"][0])
    if env.get(TOKEN_ENV, "").strip():
        return EnvToken(env[TOKEN_ENV].strip())
    raise ConfigError(
        f"no token: set --token-secret (CANARY_TOKEN_SECRET), --token-file (CANARY_TOKEN_FILE) or {TOKEN_ENV}"
    )


def _user_options(values: dict[str, tuple[Any, str]]) -> dict[str, Any] | None:
    inline, inline_source = values["user_options"]
    path, path_source = values["user_options_file"]
    if inline is not None and path is not None:
        raise ConfigError(f"{inline_source} and {path_source} are mutually exclusive: give one")
    if path is None:
        return inline
    try:
        return _json_object(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path_source}: {str(path)!r} {exc}") from None


def default_termination_log() -> Path | None:
    path = Path(DEFAULT_TERMINATION_LOG)
    writable = os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK)
    return path if writable else None


def build_run_config(given: Mapping[str, str | None], env: Mapping[str, str]) -> Config:
    """Validate the `run` command's flags (raw strings from argparse) and variables into a Config."""
    values = resolve(RUN_OPTIONS, given, env)
    for dest in ("hub_url", "user"):
        if values[dest][0] is None:
            option = next(o for o in RUN_OPTIONS if o.dest == dest)
            raise ConfigError(f"{option.flag} (or {option.env}) is required")

    def value(dest: str) -> Any:
        return values[dest][0]

    if value("insecure_skip_tls_verify") and value("ca_bundle"):
        raise ConfigError("--ca-bundle and --insecure-skip-tls-verify contradict each other: give one")
    if value("deadline") <= value("stop_timeout"):
        raise ConfigError(
            f"--deadline ({value('deadline'):g}s) must exceed --stop-timeout ({value('stop_timeout'):g}s): "
            "the deadline has to leave time to stop the server"
        )
    return Config(
        hub_url=value("hub_url"),
        user=value("user"),
        server_name=value("server_name"),
        user_options=_user_options(values),
        token_source=_token_source(values, env),
        spawn_timeout=value("spawn_timeout"),
        stop_timeout=value("stop_timeout"),
        request_timeout=value("request_timeout"),
        attempts=value("attempts"),
        deadline=value("deadline"),
        ca_bundle=value("ca_bundle"),
        insecure_skip_tls_verify=value("insecure_skip_tls_verify"),
        log_format=value("log_format"),
        log_level=value("log_level"),
        termination_log=value("termination_log") or default_termination_log(),
    )
