"""Structured logging: one JSON object per line on stdout (or a console rendering for humans).

Secrets are never passed to the logger; as a second line of defence every configured secret value
is masked in each rendered line as a whole: values, keys, reprs of objects, nested structures and
tracebacks alike, in its plain, JSON-escaped and repr-escaped spellings, and URL-encoded as a URL or
an error's text may quote it (a token with `+`, `/`, `=`: a Secret may hold any bytes).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

import structlog

REDACTED = "[REDACTED]"

_secrets: set[str] = set()


def add_secret(value: str) -> None:
    """Mask `value` in every log line from now on."""
    if value:
        _secrets.add(value)


def forget_secrets() -> None:
    """Mask nothing any more: for a fresh run in the same process (tests call main() repeatedly)."""
    _secrets.clear()


def mask(text: str) -> str:
    for secret in _secrets:
        # As written, as the JSON renderer and repr() (the console renderer) escape it, and as a URL's
        # path or query (a hub URL, an error quoting one) encodes it.
        spellings = {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], quote(secret), quote(secret, safe=""),
                     quote_plus(secret)}
        for spelling in sorted(spellings, key=len, reverse=True):
            text = text.replace(spelling, REDACTED)
    return text


# Control characters (C0, DEL, C1) become spaces in a record meant for a terminal or a chat (an Event's
# message, an alert's description): an ESC would drive the reader's terminal. A lone surrogate (a JSON
# "\udcff" from the hub, a path decoded with surrogateescape) cannot be encoded as UTF-8 at all: it
# would fail a whole push.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def one_line(text: str) -> str:
    """`text` masked, on one line of printable UTF-8 (a lone surrogate becomes U+FFFD), white space collapsed."""
    return " ".join(_CONTROL.sub(" ", _SURROGATE.sub("\ufffd", mask(text))).split())


def cut(text: str, limit: int) -> str:
    """`text`, at most `limit` characters, its end marked when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _redact_line(_logger: Any, _name: str, line: str) -> str:
    """The last step, after rendering: whatever the event held and however it was rendered."""
    return mask(line) if _secrets else line


def _lead_with_basics(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Put timestamp, level and event first: easier to read, and stable for line-oriented tools."""
    lead = {key: event.pop(key) for key in ("timestamp", "level", "event") if key in event}
    return {**lead, **event}


def configure(log_format: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """(Re)configure structlog; called once per `main()` so tests may call main() repeatedly.

    The secrets registered so far stay masked: they may be known before the configuration is.
    """
    structlog.contextvars.clear_contextvars()
    renderer: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks become text before masking, in both formats.
            structlog.processors.format_exc_info,
            _lead_with_basics,
            renderer,
            _redact_line,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


# Context bound for a block, e.g. `with logs.bound(attempt=2):`.
bound = structlog.contextvars.bound_contextvars


def bind(**context: Any) -> None:
    structlog.contextvars.bind_contextvars(**context)


def get_logger() -> Any:
    return structlog.get_logger()
