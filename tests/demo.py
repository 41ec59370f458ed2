"""`make demo`: one real canary cycle against a throw-away local JupyterHub.

Starts a JupyterHub (dummy authenticator, local-process spawner, real configurable-http-proxy) in a
temporary folder, creates the service-account user, mints its token into a file, runs
`jupyterhub-canary run` against the hub with the checks against the server (a file saved in the
home, JupyterLab loaded, a small notebook run), shows its JSON log, exit code and termination
message. Then a fresh-user run (`--fresh-user`): the hub loads hub-config/jupyterhub_canary_config.py,
which defines the canary's JupyterHub service and its least-scope role on the fresh user's name; the
canary, with the service's token, creates the user, spawns, saves a file in the new home, stops and
deletes the user. Then it tears everything down.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.localhub import LocalHub
from tests.runner import CANARY

USER = "canary-demo"
FRESH_USER = "jupyterhub-canary-fresh-demo"
CANARY_HUB_CONFIG = Path(__file__).resolve().parent.parent / "hub-config" / "jupyterhub_canary_config.py"
# The hub loads the canary's hub-side configuration as a plain jupyterhub_config.py would (its docstring).
LOAD_CANARY_CONFIG = f"""
path = {str(CANARY_HUB_CONFIG)!r}
exec(compile(open(path).read(), path, "exec"))
"""
# A small notebook, as a site would ship one to check that its image imports what users need.
NOTEBOOK = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Does the image work?"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["import json, sqlite3, statistics"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["print(statistics.mean([6, 7, 8]) * 6)"]},
    ],
}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="canary-demo-") as tmp:
        workdir = Path(tmp)
        print(f"==> starting a local JupyterHub in {workdir}", flush=True)
        service_token = secrets.token_hex(32)
        hub = LocalHub(
            workdir / "hub", extra_config=LOAD_CANARY_CONFIG,
            # What hub.extraEnv gives a zero-to-jupyterhub hub (hub-config/z2jh-values.yaml).
            env={"JUPYTERHUB_CANARY_FRESH_USERS": FRESH_USER, "JUPYTERHUB_CANARY_SERVICE_TOKEN": service_token},
        )
        try:
            hub.start()
            print(f"==> JupyterHub {hub.version} at {hub.url}", flush=True)
            hub.create_user(USER)
            token_file = workdir / "token"
            token_file.write_text(hub.new_token(USER, note="jupyterhub-canary demo") + "\n")
            token_file.chmod(0o600)
            notebook = workdir / "image-works.ipynb"
            notebook.write_text(json.dumps(NOTEBOOK))
            exit_code = run(
                workdir, "the service-account user's cycle",
                ["--hub-url", hub.url, "--user", USER, "--token-file", str(token_file),
                 "--check-storage", "--check-lab", "--notebook", str(notebook)],
            )
            service_token_file = workdir / "service-token"
            service_token_file.write_text(service_token + "\n")
            service_token_file.chmod(0o600)
            fresh_exit_code = run(
                workdir, "a fresh user's cycle (created, spawned, checked, stopped, deleted)",
                ["--hub-url", hub.url, "--user", FRESH_USER, "--fresh-user", "--token-file", str(service_token_file),
                 "--check-storage"],
            )
            left = hub.servers(USER)
            fresh_left = hub.api("GET", f"users/{FRESH_USER}").status_code != 404
        finally:
            hub.stop()
        leftovers = hub.leftover_processes()
        print(
            f"==> hub stopped; servers left running: {len(left)}; fresh user left: {'yes' if fresh_left else 'no'}; "
            f"processes left: {len(leftovers)}",
            flush=True,
        )
        return (exit_code or fresh_exit_code) if not (left or fresh_left or leftovers) else 1


def run(workdir: Path, what: str, args: list[str]) -> int:
    """One `jupyterhub-canary run`: its JSON log as it comes, then its exit code and termination message."""
    termination_log = workdir / "termination-log"
    termination_log.unlink(missing_ok=True)
    command = [CANARY, "run", *args, "--termination-log", str(termination_log)]
    shown = [Path(c).name if c.startswith(str(workdir)) else c for c in command[1:]]
    print(f"==> {what}\n==> {' '.join(command[:1] + shown)}", flush=True)
    exit_code = subprocess.run(command, check=False).returncode
    print(f"==> exit code: {exit_code}", flush=True)
    if termination_log.exists():
        print(f"==> termination message: {termination_log.read_text().strip()}", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
