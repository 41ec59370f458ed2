"""The locks (requirements/*.lock, `make lock`) agree with pyproject.toml and with each other.

runtime.lock is what the image installs, test.lock what `make install` installs: a dependency added
to pyproject.toml without `make lock`, a pin outside its range, a missing hash, or a lock whose
dependencies are not all in it fails here. The closure check reads each locked package's own
requirements from the installed test environment (which `make install` made from test.lock).
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"
TEST_LOCK = ROOT / "requirements" / "test.lock"
SBOM_LOCK = ROOT / "requirements" / "sbom.lock"


def pins(lock: Path) -> dict[str, list[tuple[Version, Marker | None, list[str]]]]:
    """name -> [(version, marker, hashes)] (a universal lock may pin a name twice, under exclusive markers)."""
    found: dict[str, list] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()):
        if entry.startswith("#") or not entry.strip():
            continue
        first, *rest = entry.split("\\\n")
        requirement = Requirement(first.strip())
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{lock.name}: {first!r} is not an exact pin"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", "".join(rest))
        found.setdefault(canonicalize_name(requirement.name), []).append(
            (Version(specifier.version), requirement.marker, hashes))
    return found


def pinned_here(lock: Path, name: str) -> Version | None:
    """The version `lock` pins for `name` in this environment (its markers evaluated here)."""
    for version, marker, _ in pins(lock).get(canonicalize_name(name), []):
        if marker is None or marker.evaluate():
            return version
    return None


def direct(lock: Path) -> set[str]:
    """The packages the lock says come straight from pyproject.toml (uv's `# via` annotations)."""
    names = set()
    for entry in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()):
        if "jupyterhub-canary (pyproject.toml)" in entry:
            names.add(canonicalize_name(Requirement(entry.split("\\\n")[0].strip()).name))
    return names


def requirements(extra: str | None = None) -> list[Requirement]:
    listed = PROJECT["dependencies"] + (PROJECT["optional-dependencies"][extra] if extra else [])
    return [Requirement(r) for r in listed]


@pytest.mark.parametrize(("lock", "extra"), [(RUNTIME_LOCK, None), (TEST_LOCK, "test")])
def test_the_lock_pins_what_pyproject_asks_for(lock, extra):
    wanted = requirements(extra)
    assert direct(lock) == {canonicalize_name(r.name) for r in wanted}, f"run `make lock`: {lock.name} is stale"
    for requirement in wanted:
        version = pinned_here(lock, requirement.name)
        assert version is not None, f"{lock.name} has no pin for {requirement}"
        assert requirement.specifier.contains(version, prereleases=True), f"{lock.name}: {version} outside {requirement}"


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, TEST_LOCK, SBOM_LOCK])
def test_every_pin_has_hashes(lock):
    found = pins(lock)
    assert found
    assert not [name for name, entries in found.items() for _, _, hashes in entries if not hashes]


def test_the_tests_run_the_versions_the_image_ships():
    test_pins = pins(TEST_LOCK)
    for name, [(version, marker, _)] in pins(RUNTIME_LOCK).items():
        assert marker is None
        assert [v for v, _, _ in test_pins[name]] == [version], name


def test_the_kubernetes_client_is_the_one_chosen_on_purpose():
    """35.x: 36 adds aiohttp, 37 an async client with aiohttp and pydantic (pyproject.toml, README)."""
    runtime = pins(RUNTIME_LOCK)
    assert [v.major for v, _, _ in runtime["kubernetes"]] == [35]
    assert not {"aiohttp", "pydantic", "kubernetes-asyncio", "google-auth", "cryptography"} & set(runtime)


def test_the_installed_environment_is_the_test_lock_and_each_lock_is_closed():
    """`make install` installed test.lock; every requirement of every locked package is locked too."""
    for lock in (TEST_LOCK, RUNTIME_LOCK):
        for name in pins(lock):
            version = pinned_here(lock, name)
            if version is None:  # for another platform or Python
                continue
            if lock is TEST_LOCK:
                assert Version(importlib.metadata.version(name)) == version, f"{name}: not installed from {lock.name}"
            for requirement in map(Requirement, importlib.metadata.requires(name) or []):
                if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                    continue
                dependency = pinned_here(lock, requirement.name)
                assert dependency is not None, f"{lock.name}: {name} needs {requirement}, which is not locked"
                assert requirement.specifier.contains(dependency, prereleases=True), (name, requirement, dependency)


def test_the_build_backend_is_pinned_and_reads_the_spdx_license():
    """An SPDX `license` string needs setuptools 77 or newer (a TOML table stops working on 2027-02-18)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert PROJECT["license"] == "BSD-3-Clause"
    (backend,) = [Requirement(r) for r in pyproject["build-system"]["requires"]]
    (specifier,) = backend.specifier
    assert backend.name == "setuptools" and specifier.operator == "=="
    assert Version(specifier.version) >= Version("77")
