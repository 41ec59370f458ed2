"""Command-line flags and CANARY_* variables, parsed and validated once into a frozen Config.

Every flag of `run` has a variable: `--spawn-timeout` <-> `CANARY_SPAWN_TIMEOUT`. A flag wins
over its variable. Errors name the flag or variable the bad value came from.
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from app import kube
from app.deadline import MAX_SECONDS
from app.errors import ConfigError
from app.models import Notebook

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
ADMIN_TOKEN_ENV = "JUPYTERHUB_ADMIN_TOKEN"
TOKEN_NOTE = "jupyterhub-canary"


# --- parsers: str -> value, raising ValueError with a message that omits the value's source ---


def _text(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _text_or_none(raw: str) -> str | None:
    """Text, or None when empty: what the downward API gives for a label the Pod does not have."""
    return raw.strip() or None


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a positive number of seconds, got {raw!r}")
    if value > MAX_SECONDS:  # no run means it, and timers overflow (app/deadline.py)
        raise ValueError(f"must be at most {MAX_SECONDS:.0f} seconds (a year), got {raw!r}")
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


# The white space Helm's `trim` (Go's strings.TrimSpace) removes around a value: str.strip() also
# removes \x1c-\x1f, which the chart would then refuse as control characters.
_TRIMMED = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


def _hub_url(raw: str) -> str:
    value = raw.strip(_TRIMMED)
    # urlsplit drops tabs and newlines while it parses, and a label or request would keep them.
    if any(unicodedata.category(c) in ("Cc", "Zs", "Zl", "Zp") for c in value):
        raise ValueError(f"must not contain white space or control characters, got {raw!r}")
    # Even empty ones: the API paths appended to the URL would land in its query or fragment.
    if "?" in value or "#" in value:
        raise ValueError(f"must not have a query or fragment, got {raw!r}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL such as https://hub.example.org/, got {raw!r}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError(f"has an invalid port, got {raw!r}") from None
    # The pushed metrics' `hub` label; the chart's "canary.hubUrl" helper (_helpers.tpl) applies the
    # same rule, and refuses what this refuses (tests/test_chart.py checks they agree, input by input).
    return value if value.endswith("/") else value + "/"


def _pushgateway_url(raw: str) -> str:
    """The Pushgateway's base URL, e.g. http://pushgateway.monitoring:9091 (no trailing slash)."""
    return _hub_url(raw).rstrip("/")


def _json_object(raw: str) -> dict[str, Any]:
    """A JSON object that can be sent as it is: JSON proper, which has no NaN or Infinity (Python's json
    reads them, and 1e999 as infinity; requests refuses to send them)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise ValueError("is not valid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, got {type(value).__name__}")
    where = _not_finite(value)
    if where is not None:
        path, number = where
        spelled = "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
        raise ValueError(f"`{path}` is {spelled}, which JSON does not have: give a finite number (or a string)")
    return value


def _not_finite(value: Any) -> tuple[str, float] | None:
    """The path and value of the first NaN or infinity in a parsed JSON value, else None."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return path, item
        if isinstance(item, dict):
            stack.extend((f"{path}.{key}" if path else str(key), inner) for key, inner in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", inner) for index, inner in reversed(list(enumerate(item))))
    return None


def _existing_file(raw: str) -> Path:
    path = Path(raw.strip())
    if not path.is_file():
        raise ValueError(f"file not found: {str(path)!r}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"file not readable: {str(path)!r}")
    return path


def _path(raw: str) -> Path:
    return Path(_text(raw))


def _server_path(raw: str) -> str:
    """A path inside the user's server, relative to its root ("" is the root itself)."""
    value = raw.strip().strip("/")
    if ".." in value.split("/"):
        raise ValueError(f"must not leave the server's root (no '..'), got {raw!r}")
    return value


def _check_url(raw: str) -> str:
    """A page of the user's server (--check-url): a path relative to the server's URL, as given (a
    trailing "/" matters to jupyter-server-proxy), that cannot leave the server."""
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    if any(unicodedata.category(c) in ("Cc", "Zs", "Zl", "Zp") for c in value):
        raise ValueError(f"must not contain white space or control characters, got {raw!r}")
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith(("/", "\\")):
        raise ValueError(f"must be a path relative to the server's URL (no scheme, host or leading '/'), got {raw!r}")
    if parts.fragment or "#" in value:
        raise ValueError(f"must not have a fragment, got {raw!r}")
    # As a proxy or the server would read it: %2e%2e is "..", and a backslash may be a "/".
    if ".." in unquote(parts.path).replace("\\", "/").split("/"):
        raise ValueError(f"must not leave the server's root (no '..'), got {raw!r}")
    return value


def _notebook(raw: str) -> Notebook:
    from app.checks.notebook import read_notebook  # here, when parsing: app.checks imports this module

    return read_notebook(_existing_file(raw))


@dataclass(frozen=True)
class Option:
    """One flag of a command and its CANARY_* variable."""

    flag: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    switch: bool = False  # a flag without a value; its variable takes true/false
    repeat: bool = False  # a flag given once per value; its variable takes them separated by white space; default ()

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return "CANARY_" + self.dest.upper()


RUN_OPTIONS: tuple[Option, ...] = (
    Option("--hub-url", _hub_url, None, "the hub's public URL, with its base path if any", "URL"),
    Option("--user", _text, None, "the service-account user whose server is spawned", "NAME"),
    Option(
        "--server-name", str.strip, "",
        "a named server to spawn (default: the default server); JupyterHub 6 takes 1-30 lowercase ASCII letters, digits "
        "and single hyphens, from a letter to a letter or digit", "NAME",
    ),
    Option(
        "--fresh-user", _switch, False,
        "each attempt creates --user anew, spawns, checks, stops and deletes it: the path of a first-time user "
        "(its volume, its new home); the token is a service's, the name starts with jupyterhub-canary-fresh-",
        switch=True,
    ),
    Option("--probe", _text, "default", "the probe's name: a label of every metric, in the result and the log", "NAME"),
    Option("--user-options", _json_object, None, "spawner options: a JSON object sent as the spawn request body", "JSON"),
    Option("--user-options-file", _existing_file, None, "read the spawner options (a JSON object) from this file", "PATH"),
    Option("--token-secret", _text, None, "read the API token from this Kubernetes Secret", "NAME"),
    Option("--token-secret-key", _text, "token", "the key of the token in that Secret", "KEY"),
    Option("--token-secret-namespace", _text, None, "the Secret's namespace (default: the pod's own, else 'default')", "NS"),
    Option(
        "--token-file", _existing_file, None, f"read the API token from this file (after the Secret, before ${TOKEN_ENV})", "PATH"
    ),
    Option(
        "--lease", _text, None,
        "hold this Kubernetes Lease (coordination.k8s.io; it must exist, the chart makes it) during the run: "
        "another run of the probe then exits 18", "NAME",
    ),
    Option("--lease-namespace", _text, None, "the Lease's namespace (default: the pod's own, else 'default')", "NS"),
    Option(
        "--job-name", _text_or_none, None,
        "record the run's outcome as a Kubernetes Event on this Job (the chart sets it from the Pod's job-name label; "
        "empty: no Event)",
        "NAME",
    ),
    Option("--job-uid", _text_or_none, None, "that Job's uid, for the Event's involvedObject (the chart sets it)", "UID"),
    Option("--job-namespace", _text_or_none, None, "that Job's namespace (default: the pod's own, else 'default')", "NS"),
    Option("--token-expiry-warning", _positive_seconds, 7 * 86400.0, "warn when the token expires within this many seconds", "S"),
    Option("--spawn-timeout", _positive_seconds, 300.0, "seconds from the spawn request until the server must be ready", "S"),
    Option("--stop-timeout", _positive_seconds, 120.0, "seconds the server may take to stop", "S"),
    Option("--request-timeout", _positive_seconds, 30.0, "seconds for one HTTP request", "S"),
    Option("--check-kernel", _switch, False, "also start a kernel, run code on it over its websocket, delete it", switch=True),
    Option("--kernel-name", _text, None, "the kernelspec --check-kernel starts (default: the server's default kernel)", "NAME"),
    Option("--kernel-timeout", _positive_seconds, 60.0, "seconds for the whole kernel check (start, run, delete)", "S"),
    Option(
        "--check-storage", _switch, False,
        "also save a file in the home through the server's contents API, read it back, delete it", switch=True,
    ),
    Option("--storage-path", _server_path, "", "the directory --check-storage writes in (default: the server's root)", "DIR"),
    Option("--notebook", _notebook, None, "also run this notebook's (nbformat 4 .ipynb) code cells on a new kernel", "PATH"),
    Option("--notebook-timeout", _positive_seconds, 300.0, "seconds for the whole notebook (start, cells, delete)", "S"),
    Option("--check-lab", _switch, False, "also load JupyterLab's page and the bundles it loads, as a browser does", switch=True),
    Option("--lab-path", _server_path, "lab", "JupyterLab's page under the server's URL (tree for Notebook 7)", "PATH"),
    Option(
        "--check-url", _check_url, (),
        "also GET this page under the server's URL (e.g. rstudio/, a jupyter-server-proxy app): it must answer 2xx "
        "with a body, redirects followed within the server; repeatable", "PATH", repeat=True,
    ),
    Option("--attempts", _positive_int, 3, "cycles to try when a failure may be transient", "N"),
    Option("--deadline", _positive_seconds, 900.0, "seconds for all attempts, cleanup included", "S"),
    Option("--ca-bundle", _existing_file, None, "CA certificates (PEM) to verify the hub's TLS certificate", "PATH"),
    Option("--insecure-skip-tls-verify", _switch, False, "do not verify the hub's TLS certificate (logs a warning)", switch=True),
    Option(
        "--kube-relaxed-x509", _switch, False,
        "accept a Kubernetes API CA certificate that strict X.509 checks reject (e.g. no keyUsage); "
        "it is still verified", switch=True,
    ),
    Option("--pushgateway-url", _pushgateway_url, None, "push the run's metrics to this Prometheus Pushgateway", "URL"),
    Option("--log-format", _choice(*LOG_FORMATS), "json", "json (one object per line) or console", "FORMAT"),
    Option("--log-level", _choice(*LOG_LEVELS), "info", "the least severe level logged", "LEVEL"),
    Option(
        "--termination-log", _path, None,
        f"where to write the one-line summary (default {DEFAULT_TERMINATION_LOG} when writable)", "PATH",
    ),
)


def _shared(*flags: str) -> tuple[Option, ...]:
    by_flag = {o.flag: o for o in RUN_OPTIONS}
    return tuple(by_flag[f] for f in flags)


def _scope_list(raw: str) -> tuple[str, ...]:
    scopes = tuple(part for part in raw.replace(",", " ").split() if part)
    if not scopes:
        raise ValueError("must name at least one scope (or use --inherit-scopes)")
    return scopes


TOKEN_COMMAND_OPTIONS: tuple[Option, ...] = (
    *_shared("--hub-url", "--user"),
    Option("--admin-token-secret", _text, None, "read the admin token from this Kubernetes Secret", "NAME"),
    Option("--admin-token-secret-key", _text, "token", "the key of the admin token in that Secret", "KEY"),
    Option(
        "--admin-token-secret-namespace", _text, None, "that Secret's namespace (default: the pod's own, else 'default')", "NS"
    ),
    Option(
        "--admin-token-file", _existing_file, None,
        f"read the admin token from this file (after the Secret, before ${ADMIN_TOKEN_ENV})", "PATH",
    ),
    Option("--create-user", _switch, False, "create the user if it does not exist", switch=True),
    Option("--scopes", _scope_list, None, "the token's scopes, comma-separated (default: the least the canary needs)", "SCOPES"),
    Option("--inherit-scopes", _switch, False, "give the token all of the user's own permissions", switch=True),
    Option("--expires-in", _positive_int, None, "seconds until the token expires (default: never)", "S"),
    Option("--note", _text, TOKEN_NOTE, "the token's note, shown in the hub's token page", "TEXT"),
    Option("--secret", _text, None, "store the token in this Kubernetes Secret (created or updated)", "NAME"),
    Option("--namespace", _text, None, "the Secret's namespace (default: the pod's own, else 'default')", "NS"),
    Option("--key", _text, "token", "the key of the token in the Secret", "KEY"),
    Option("--dry-run", _switch, False, "change nothing; print the Secret that would be written, token redacted", switch=True),
    Option("--print", _switch, False, "write the bare token to stdout (only when asked)", switch=True),
    Option("--deadline", _positive_seconds, 120.0, "seconds for the whole command, the Kubernetes API included", "S"),
    *_shared(
        "--request-timeout", "--ca-bundle", "--insecure-skip-tls-verify", "--kube-relaxed-x509", "--log-format",
        "--log-level",
    ),
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
    variable: str = TOKEN_ENV

    def describe(self) -> str:
        return f"variable {self.variable}"


TokenSource = SecretToken | FileToken | EnvToken


@dataclass(frozen=True)
class Config:
    hub_url: str
    user: str
    probe: str
    server_name: str
    user_options: dict[str, Any] | None
    token_source: TokenSource
    lease: str | None  # the Lease held during the run, None: none (no Kubernetes API at hand)
    lease_namespace: str
    job_name: str | None  # the Job whose Event records the run's outcome, None: no Event (app/job_event.py)
    job_uid: str | None
    job_namespace: str
    spawn_timeout: float
    stop_timeout: float
    request_timeout: float
    attempts: int
    token_expiry_warning: float
    check_kernel: bool
    kernel_name: str | None
    kernel_timeout: float
    check_storage: bool
    storage_path: str
    notebook: Notebook | None  # read and validated here
    notebook_timeout: float
    check_lab: bool
    lab_path: str
    check_urls: tuple[str, ...]  # --check-url: pages under the server's URL, checked in order
    pushgateway_url: str | None
    deadline: float
    ca_bundle: Path | None
    insecure_skip_tls_verify: bool
    kube_relaxed_x509: bool
    log_format: str
    log_level: str
    termination_log: Path | None
    fresh_user: bool = False  # --fresh-user: each attempt creates the user and deletes it (app/fresh_user.py)

    @property
    def tls_verify(self) -> bool | str:
        return _tls_verify(self.ca_bundle, self.insecure_skip_tls_verify)


def _tls_verify(ca_bundle: Path | None, insecure: bool) -> bool | str:
    """The `verify` argument for requests."""
    if insecure:
        return False
    return str(ca_bundle) if ca_bundle else True


@dataclass(frozen=True)
class TokenCommandConfig:
    action: str  # "mint" or "rotate"
    hub_url: str
    user: str
    admin_token_source: TokenSource
    create_user: bool
    scopes: tuple[str, ...] | None  # None: the least the canary needs on that hub's version
    inherit_scopes: bool
    expires_in: int | None
    note: str
    secret: SecretToken | None  # where to store the token
    dry_run: bool
    print_token: bool
    deadline: float
    request_timeout: float
    ca_bundle: Path | None
    insecure_skip_tls_verify: bool
    kube_relaxed_x509: bool
    log_format: str
    log_level: str

    @property
    def tls_verify(self) -> bool | str:
        return _tls_verify(self.ca_bundle, self.insecure_skip_tls_verify)


def resolve(options: tuple[Option, ...], given: Mapping[str, str | None], env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """Pick each option's raw value (flag first, then variable), parse it, and remember where it came from.

    Returns {dest: (value, source)} where source names the flag or variable ("" for the default).
    """
    values: dict[str, tuple[Any, str]] = {}
    for option in options:
        raw, source = given.get(option.dest), option.flag
        if option.repeat:
            values[option.dest] = _resolve_repeated(option, raw, env)
            continue
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


def _resolve_repeated(option: Option, given: Any, env: Mapping[str, str]) -> tuple[tuple[Any, ...], str]:
    """A repeatable option's values: the flags' (a list from argparse), else its variable's, split on white space."""
    if given:
        raws, source = list(given), option.flag
    elif option.env in env:
        raws, source = env[option.env].split(), option.env
    else:
        return option.default, ""
    parsed = []
    for raw in raws:
        try:
            parsed.append(option.parse(raw))
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return tuple(parsed), source


def _token_source(
    values: dict[str, tuple[Any, str]], env: Mapping[str, str], prefix: str = "token", variable: str = TOKEN_ENV
) -> TokenSource:
    """The first configured of --<prefix>-secret, --<prefix>-file and the variable."""
    secret_name = values[f"{prefix}_secret"][0]
    if secret_name:
        namespace = values[f"{prefix}_secret_namespace"][0] or kube.own_namespace() or "default"
        return SecretToken(secret_name, values[f"{prefix}_secret_key"][0], namespace)
    if values[f"{prefix}_file"][0]:
        return FileToken(values[f"{prefix}_file"][0])
    if env.get(variable, "").strip():
        return EnvToken(env[variable].strip(), variable)
    flag = "--" + prefix.replace("_", "-")
    raise ConfigError(
        f"no {prefix.replace('_', ' ')}: set {flag}-secret (CANARY_{prefix.upper()}_SECRET), "
        f"{flag}-file (CANARY_{prefix.upper()}_FILE) or {variable}"
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


def _resolve_common(
    options: tuple[Option, ...], given: Mapping[str, str | None], env: Mapping[str, str]
) -> dict[str, tuple[Any, str]]:
    """Resolve the options and check what every command needs: a hub, a user, one TLS choice."""
    values = resolve(options, given, env)
    for dest in ("hub_url", "user"):
        if values[dest][0] is None:
            option = next(o for o in options if o.dest == dest)
            raise ConfigError(f"{option.flag} (or {option.env}) is required")
    if values["insecure_skip_tls_verify"][0] and values["ca_bundle"][0]:
        raise ConfigError("--ca-bundle and --insecure-skip-tls-verify contradict each other: give one")
    return values


def build_run_config(given: Mapping[str, str | None], env: Mapping[str, str]) -> Config:
    """Validate the `run` command's flags (raw strings from argparse) and variables into a Config."""
    values = _resolve_common(RUN_OPTIONS, given, env)

    def value(dest: str) -> Any:
        return values[dest][0]

    if value("deadline") <= value("stop_timeout"):
        raise ConfigError(
            f"--deadline ({value('deadline'):g}s) must exceed --stop-timeout ({value('stop_timeout'):g}s): "
            "the deadline has to leave time to stop the server"
        )
    if value("fresh_user"):
        from app.fresh_user import NAME_RULE, name_allowed  # here: app.fresh_user's types come from this module

        if not name_allowed(value("user")):
            raise ConfigError(
                f"--fresh-user deletes the user every run: {values['user'][1]} {value('user')!r} is refused ({NAME_RULE}), "
                "so that no person's account can ever be a fresh user"
            )
    return Config(
        hub_url=value("hub_url"),
        user=value("user"),
        fresh_user=value("fresh_user"),
        probe=value("probe"),
        server_name=value("server_name"),
        user_options=_user_options(values),
        token_source=_token_source(values, env),
        lease=value("lease"),
        lease_namespace=value("lease_namespace") or kube.own_namespace() or "default",
        job_name=value("job_name"),
        job_uid=value("job_uid"),
        job_namespace=value("job_namespace") or kube.own_namespace() or "default",
        spawn_timeout=value("spawn_timeout"),
        stop_timeout=value("stop_timeout"),
        request_timeout=value("request_timeout"),
        attempts=value("attempts"),
        token_expiry_warning=value("token_expiry_warning"),
        check_kernel=value("check_kernel"),
        kernel_name=value("kernel_name"),
        kernel_timeout=value("kernel_timeout"),
        check_storage=value("check_storage"),
        storage_path=value("storage_path"),
        notebook=value("notebook"),
        notebook_timeout=value("notebook_timeout"),
        check_lab=value("check_lab"),
        lab_path=value("lab_path"),
        check_urls=value("check_url"),
        pushgateway_url=value("pushgateway_url"),
        deadline=value("deadline"),
        ca_bundle=value("ca_bundle"),
        insecure_skip_tls_verify=value("insecure_skip_tls_verify"),
        kube_relaxed_x509=value("kube_relaxed_x509"),
        log_format=value("log_format"),
        log_level=value("log_level"),
        termination_log=value("termination_log") or default_termination_log(),
    )


def build_token_config(action: str, given: Mapping[str, str | None], env: Mapping[str, str]) -> TokenCommandConfig:
    """Validate the `token` command's flags and variables."""
    values = _resolve_common(TOKEN_COMMAND_OPTIONS, given, env)

    def value(dest: str) -> Any:
        return values[dest][0]

    if value("scopes") and value("inherit_scopes"):
        raise ConfigError("--scopes and --inherit-scopes contradict each other: give one")
    secret_ref = None
    if value("secret"):
        namespace = value("namespace") or kube.own_namespace() or "default"
        secret_ref = SecretToken(value("secret"), value("key"), namespace)
    if action == "rotate" and secret_ref is None:
        raise ConfigError("token rotate needs --secret (CANARY_SECRET): the Secret that holds the current token")
    if action == "mint" and secret_ref is None and not value("print") and not value("dry_run"):
        raise ConfigError("nowhere to put the token: give --secret NAME (or CANARY_SECRET), or --print")
    return TokenCommandConfig(
        action=action,
        hub_url=value("hub_url"),
        user=value("user"),
        admin_token_source=_token_source(values, env, prefix="admin_token", variable=ADMIN_TOKEN_ENV),
        create_user=value("create_user"),
        scopes=value("scopes"),
        inherit_scopes=value("inherit_scopes"),
        expires_in=value("expires_in"),
        note=value("note"),
        secret=secret_ref,
        dry_run=value("dry_run"),
        print_token=value("print"),
        deadline=value("deadline"),
        request_timeout=value("request_timeout"),
        ca_bundle=value("ca_bundle"),
        insecure_skip_tls_verify=value("insecure_skip_tls_verify"),
        kube_relaxed_x509=value("kube_relaxed_x509"),
        log_format=value("log_format"),
        log_level=value("log_level"),
    )
