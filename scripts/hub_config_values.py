"""Keeps the copy of hub-config/jupyterhub_canary_config.py inside hub-config/z2jh-values.yaml in step.

The values file embeds the config file as its last block, `hub.extraConfig.<KEY>: |`, so a deployer
can read (and `helm upgrade -f`) one self-contained example. Everything after that line is the
config file, indented by six spaces.

    python scripts/hub_config_values.py --write   # rewrite the embedded copy from the .py file
    python scripts/hub_config_values.py --check   # exit 1 when the copy differs from the .py file
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HUB_CONFIG = Path(__file__).resolve().parent.parent / "hub-config"
CONFIG_FILE = HUB_CONFIG / "jupyterhub_canary_config.py"
VALUES_FILE = HUB_CONFIG / "z2jh-values.yaml"
KEY = "zz-jupyterhub-canary"
BLOCK_START = f"    {KEY}: |\n"
INDENT = " " * 6


def render(values_text: str, config_text: str) -> str:
    """The values file with its embedded block replaced by `config_text`."""
    head, found, _ = values_text.partition(BLOCK_START)
    if not found:
        raise ValueError(f"{VALUES_FILE.name} has no line {BLOCK_START.strip()!r} under hub.extraConfig")
    body = "".join(INDENT + line if line.strip() else "\n" for line in config_text.splitlines(keepends=True))
    return head + BLOCK_START + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the embedded copy")
    action.add_argument("--check", action="store_true", help="exit 1 when the embedded copy is stale")
    args = parser.parse_args(argv)

    current = VALUES_FILE.read_text(encoding="utf-8")
    wanted = render(current, CONFIG_FILE.read_text(encoding="utf-8"))
    if args.write:
        if wanted != current:
            VALUES_FILE.write_text(wanted, encoding="utf-8")
        return 0
    if wanted != current:
        print(f"{VALUES_FILE} is stale: run python scripts/hub_config_values.py --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
