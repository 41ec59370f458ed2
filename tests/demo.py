"""`make demo`: one real canary cycle against a throw-away local JupyterHub.

Starts a JupyterHub (dummy authenticator, local-process spawner, real configurable-http-proxy) in a
temporary folder, creates the service-account user, mints its token into a file, runs
`jupyterhub-canary run` against the hub with the checks against the server (a file saved in the
home, JupyterLab loaded, a small notebook run), shows its JSON log, exit code and termination
message, and tears everything down.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.localhub import LocalHub
from tests.runner import CANARY

USER = "canary-demo"
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
        hub = LocalHub(workdir / "hub")
        try:
            hub.start()
            print(f"==> JupyterHub {hub.version} at {hub.url}", flush=True)
            hub.create_user(USER)
            token_file = workdir / "token"
            token_file.write_text(hub.new_token(USER, note="jupyterhub-canary demo") + "\n")
            token_file.chmod(0o600)
            termination_log = workdir / "termination-log"
            notebook = workdir / "image-works.ipynb"
            notebook.write_text(json.dumps(NOTEBOOK))
            command = [
                CANARY, "run", "--hub-url", hub.url, "--user", USER,
                "--token-file", str(token_file), "--termination-log", str(termination_log),
                "--check-storage", "--check-lab", "--notebook", str(notebook),
            ]
            print(f"==> {' '.join(command[:1] + [Path(c).name if c.startswith(tmp) else c for c in command[1:]])}", flush=True)
            exit_code = subprocess.run(command, check=False).returncode
            print(f"==> exit code: {exit_code}", flush=True)
            if termination_log.exists():
                print(f"==> termination message: {termination_log.read_text().strip()}", flush=True)
            left = hub.servers(USER)
        finally:
            hub.stop()
        leftovers = hub.leftover_processes()
        print(f"==> hub stopped; servers left running: {len(left)}; processes left: {len(leftovers)}", flush=True)
        return exit_code if not (left or leftovers) else 1


if __name__ == "__main__":
    sys.exit(main())
