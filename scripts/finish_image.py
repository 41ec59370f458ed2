"""The last build step of the image, run by the runtime base's own python3 (no shell needed).

    python3 -I finish_image.py VENV

1. Checks that the virtual environment copied from the builder runs on this base's interpreter
   (same Python version, its interpreter link resolves): else the build fails and names the
   arguments to fix (BASE_IMAGE / BUILDER_IMAGE).
2. Writes the bytecode of the standard-library modules the canary uses, in place, while the
   filesystem is still writable: it imports what the canary imports and runs its `--help`, with
   the optimization level the image runs at (PYTHONOPTIMIZE), and Python writes the .pyc files.
   Distroless bases ship no bytecode and python:*-slim deletes it; on the read-only root every start
   would otherwise recompile each module it imports (`--help` 0.2 s -> ~0.5 s). Only what is used:
   bytecode for the whole standard library would be 11 MB of the image.
3. Removes installers a base may carry (python:*-slim has pip in /usr/local/bin): the image runs
   one program and installs nothing.
Then it deletes itself.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

INSTALLERS = ("pip", "pip3", f"pip{sys.version_info.major}.{sys.version_info.minor}", "easy_install", "pipx")
# What the canary imports: every module of the package (some import their dependencies only when
# an option needs them, e.g. the kubernetes client for --token-secret), what requests imports on its
# first request, and the help's formatting. tests/test_image.py runs the image with PYTHONVERBOSE=1
# and fails on any module compiled from source: it names what to add here.
IMPORT_ALL = """
import importlib, pkgutil, app
for module in pkgutil.walk_packages(app.__path__, "app."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
import kubernetes.client, kubernetes.config, prometheus_client, websocket
# requests imports more when it prepares a request (netrc: credentials from ~/.netrc)
import requests
requests.Session().prepare_request(requests.Request("GET", "http://127.0.0.1/"))
"""
RUNS = (["--help"], ["run", "--help"], ["token", "--help"])


def check_interpreter(venv: Path) -> None:
    config = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in (venv / "pyvenv.cfg").read_text().splitlines())
    )
    built_with = config.get("version_info") or config.get("version", "")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if built_with.split(".")[:2] != here.split("."):
        sys.exit(f"finish_image: the builder made the venv with Python {built_with}, BASE_IMAGE runs Python "
                 f"{sys.version.split()[0]}: give BUILDER_IMAGE the same Python as BASE_IMAGE")
    python = venv / "bin" / "python"
    if not python.resolve().exists():
        sys.exit(f"finish_image: the venv's interpreter link {python} -> {os.readlink(python)} does not exist in "
                 "BASE_IMAGE: give BUILDER_IMAGE its Python at the same path")


def write_bytecode(venv: Path) -> None:
    # As the image runs, but writing bytecode (PYTHONDONTWRITEBYTECODE unset).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    canary = str(venv / "bin" / "jupyterhub-canary")
    for command in ([str(venv / "bin" / "python"), "-c", IMPORT_ALL], *([canary, *run] for run in RUNS)):
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            sys.exit(f"finish_image: {' '.join(command[:2])} failed:\n{done.stderr[-3000:]}")


def remove_installers() -> list[str]:
    removed = []
    for name in INSTALLERS:
        while tool := shutil.which(name):
            os.unlink(tool)
            removed.append(tool)
    spec = importlib.util.find_spec("pip")
    if spec and spec.submodule_search_locations:
        package = Path(next(iter(spec.submodule_search_locations)))
        for path in [package, *package.parent.glob("pip-*.dist-info")]:
            shutil.rmtree(path)
            removed.append(str(path))
    return removed


def main() -> int:
    venv = Path(sys.argv[1])
    check_interpreter(venv)
    write_bytecode(venv)
    for path in remove_installers():
        print(f"finish_image: removed {path}")
    Path(__file__).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
