"""The last build step of the image, run by the runtime base's own python3 (no shell needed).

    python3 -I finish_image.py VENV

1. Checks that the virtual environment copied from the builder runs on this base's interpreter
   (same Python version, its interpreter link resolves): else the build fails and names the
   arguments to fix (BASE_IMAGE / BUILDER_IMAGE).
2. Compiles the standard library's bytecode, in place, where the filesystem is still writable.
   Distroless bases ship none (their packages are unpacked without Debian's maintainer scripts,
   which compile it) and python:*-slim deletes it; on a read-only root every start would otherwise
   recompile each module it imports (`--help` 0.2 s -> ~0.5 s). The venv is checked too.
3. Removes installers a base may carry (python:*-slim has pip in /usr/local/bin): the image runs
   one program and installs nothing.
Then it deletes itself.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path

INSTALLERS = ("pip", "pip3", f"pip{sys.version_info.major}.{sys.version_info.minor}", "easy_install", "pipx")


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


def compile_bytecode(venv: Path) -> None:
    paths = sysconfig.get_paths()
    for directory in dict.fromkeys([paths["stdlib"], paths["platstdlib"], str(venv / "lib")]):
        if not compileall.compile_dir(directory, quiet=1, workers=0):
            sys.exit(f"finish_image: compiling {directory} failed")


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
    compile_bytecode(venv)
    for path in remove_installers():
        print(f"finish_image: removed {path}")
    Path(__file__).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
