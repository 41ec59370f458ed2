"""What the canary reports: JSON log lines, the termination message, masking of secrets, exit 1 for bugs."""

from __future__ import annotations

import io
import json
from urllib.parse import quote, quote_plus

import pytest

from app import logs, termination
from app.cycle import Canary
from app.hub import retry_after_seconds
from tests.runner import run_main

TOKEN = "s3cr3t-t0ken-value-0123456789"
ARGS = ["--hub-url", "http://127.0.0.1:9/", "--user", "canary"]


def test_log_lines_are_json_with_the_basics_first():
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    logs.bind(hub="http://h/", user="u")
    logs.get_logger().info("something_happened", answer=42)
    logs.get_logger().debug("not_shown")
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert list(event)[:3] == ["timestamp", "level", "event"]
    assert event["event"] == "something_happened" and event["level"] == "info" and event["answer"] == 42
    assert event["hub"] == "http://h/" and event["user"] == "u"
    assert event["timestamp"].endswith("Z") and "T" in event["timestamp"]


def test_secrets_are_masked_everywhere_even_in_tracebacks():
    out = io.StringIO()
    for log_format in ("json", "console"):
        logs.configure(log_format, "debug", stream=out)
        logs.add_secret(TOKEN)
        try:
            raise RuntimeError(f"boom with {TOKEN}")
        except RuntimeError:
            logs.get_logger().exception("failed", nested={"list": [TOKEN]}, header=f"token {TOKEN}")
    text = out.getvalue()
    assert TOKEN not in text
    assert text.count(logs.REDACTED) >= 6


class Holder:
    """An object whose repr carries the secret: the JSON renderer falls back to repr()."""

    def __repr__(self) -> str:
        return f"Holder(token={TOKEN!r})"


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_the_mask_covers_the_rendered_line_keys_reprs_and_escapes(log_format):
    out = io.StringIO()
    logs.configure(log_format, "debug", stream=out)
    quoted = 'qu"ote\\d-secret-value'  # one the JSON renderer escapes
    logs.add_secret(TOKEN)
    logs.add_secret(quoted)
    log = logs.get_logger()
    log.info("in_a_key", **{f"header_{TOKEN}": "x"})
    log.info("in_a_repr", holder=Holder(), items=(Holder(), {TOKEN: [Holder()]}))
    log.info("escaped", value=f"the {quoted} here", nested={"deep": [quoted]})
    text = out.getvalue()
    assert TOKEN not in text and quoted not in text
    assert json.dumps(quoted)[1:-1] not in text
    assert text.count(logs.REDACTED) >= 6, text


def test_an_unexpected_exception_is_exit_1_with_a_masked_traceback(monkeypatch, tmp_path):
    def explode(self):
        raise RuntimeError(f"bug near {TOKEN}")

    monkeypatch.setattr(Canary, "run", explode)
    run = run_main([*ARGS, "--termination-log", str(tmp_path / "t")], env={"JUPYTERHUB_API_TOKEN": TOKEN})
    assert run.exit_code == 1
    assert run.result["reason"] == "internal_error"
    assert "Traceback" in run.named("internal_error")[0]["exception"]
    run.assert_no_secret(TOKEN)
    assert TOKEN not in (tmp_path / "t").read_text()


def test_console_format_renders_the_same_events(tmp_path):
    run = run_main([*ARGS, "--log-format", "console", "--deadline", "x"], env={}, json_lines=False)
    assert run.exit_code == 78
    assert "canary_result" in run.output and "--deadline" in run.output


def test_termination_summary_is_one_short_json_line():
    line = termination.summary("failed", 10, "x" * 10_000)
    assert "\n" not in line and len(line.encode()) < termination.MAX_BYTES
    record = json.loads(line)
    assert record["exit_code"] == 10 and record["outcome"] == "failed" and record["timestamp"]


def test_unwritable_termination_log_is_a_warning_not_a_failure(tmp_path):
    run = run_main([*ARGS, "--termination-log", str(tmp_path / "missing-dir" / "t")], env={})
    assert run.exit_code == 78  # the configuration error, not a crash while reporting it
    assert run.named("termination_log_not_written")


@pytest.mark.parametrize(
    ("header", "expected"),
    [("30", 30.0), ("0", 0.0), ("-4", 0.0), ("soon", None), (None, None)],
)
def test_retry_after_header(header, expected):
    import requests

    response = requests.Response()
    if header is not None:
        response.headers["Retry-After"] = header
    assert retry_after_seconds(response) == expected


def test_retry_after_http_date():
    import email.utils
    import time

    import requests

    response = requests.Response()
    response.headers["Retry-After"] = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 <= retry_after_seconds(response) <= 20


@pytest.mark.parametrize("encode", [quote, lambda s: quote(s, safe=""), quote_plus], ids=["path", "component", "query"])
def test_a_url_encoded_token_is_masked_in_the_log_the_event_and_the_pushed_message(encode):
    """A Secret may hold any token: one with `+`, `/`, `=` reads differently in a URL or an error quoting one."""
    from app import job_event, metrics

    token = "b64+t0k/en=value 0123456789"
    out = io.StringIO()
    logs.forget_secrets()
    logs.configure("json", "debug", stream=out)
    logs.add_secret(token)
    try:
        said = f"GET http://hub/hub/api/users?token={encode(token)} failed"
        logs.get_logger().error("failed", message=said)
        outputs = [out.getvalue(), job_event.event_message({"exit_code": 11, "message": said}),
                   metrics.result_message(said)]
    finally:
        logs.forget_secrets()
    assert encode(token) != token
    for text in outputs:
        assert encode(token) not in text and logs.REDACTED in text, text
