"""Running the canary the way tests need it: in-process through main([...]) or as the console script.

Both parse the JSON log lines and hand back the single `canary_result` event, so each test can
assert the exit code, the result's fields and the events in between.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.cli import main

CANARY = shutil.which("jupyterhub-canary", path=str(Path(sys.executable).parent)) or "jupyterhub-canary"


@dataclass
class Run:
    exit_code: int
    output: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def result(self) -> dict[str, Any]:
        results = [e for e in self.events if e.get("event") == "canary_result"]
        assert len(results) == 1, f"expected exactly one canary_result, got {len(results)}:\n{self.output}"
        return results[0]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    def assert_no_secret(self, *secrets: str) -> None:
        for secret in secrets:
            assert secret and secret not in self.output, "a token appeared in the canary's output"


def parse_events(output: str) -> list[dict[str, Any]]:
    events = []
    for line in output.splitlines():
        if line.strip():
            event = json.loads(line)  # every line must be one JSON object
            assert isinstance(event, dict), line
            events.append(event)
    return events


def run_main(args: list[str], env: dict[str, str] | None = None, *, json_lines: bool = True) -> Run:
    """main([...]) in this process, stdout and stderr captured; env replaces os.environ for the canary."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(args, env=env if env is not None else {})
    text = out.getvalue()
    return Run(code, text, parse_events(text) if json_lines else [])


def start_process(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The console script in a child process, for real signals."""
    child_env = {"PATH": os.environ.get("PATH", ""), **(env or {})}
    return subprocess.Popen(
        [CANARY, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env
    )


def finish_process(process: subprocess.Popen[str], timeout: float = 120) -> Run:
    output, _ = process.communicate(timeout=timeout)
    return Run(process.returncode, output, parse_events(output))


@dataclass
class TokenRun:
    """The token command's run: stdout (the product: a token or a manifest) apart from its log (stderr)."""

    exit_code: int
    stdout: str
    log: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def result(self) -> dict[str, Any]:
        results = [e for e in self.events if e.get("event") == "token_result"]
        assert len(results) == 1, f"expected exactly one token_result, got {len(results)}:\n{self.log}"
        return results[0]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]


def run_token(args: list[str], env: dict[str, str] | None = None) -> TokenRun:
    """main(["token", ...]) in this process, stdout and stderr captured apart."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["token", *args], env=env if env is not None else {})
    return TokenRun(code, out.getvalue(), err.getvalue(), parse_events(err.getvalue()))
