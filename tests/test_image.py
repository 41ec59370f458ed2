"""The container image, built from the Dockerfile and run the way Kubernetes runs it (`make image-test`).

Needs root: it installs docker.io and debootstrap when missing and starts its own dockerd, with its
state in a temporary directory, no bridge and no iptables, on its own socket; it stops it afterwards.
Docker Hub cannot be reached here, so the base image is a stand-in: a minimal Debian made with
debootstrap from the machine's own apt mirror (cached in .tools/image-test/), plus a test-only layer
that trusts this machine's CA bundle so that pip inside the build reaches the package index. None of
that enters the product Dockerfile.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import app
from app.exit_codes import ExitCode

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".tools" / "image-test"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE = f"jupyterhub-canary:{app.__version__}-test"
HARNESS_BASE = "jupyterhub-canary-test-base:harness"
USER = "65532:65532"


# --- the machine: packages, apt mirror, pip settings ---


def _run(command: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kw)


def _ensure_packages() -> None:
    needed = {"docker.io": "dockerd", "debootstrap": "debootstrap"}
    missing = [package for package, tool in needed.items() if not shutil.which(tool)]
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.fail(f"{', '.join(missing)} missing and not root: install them or run as root", pytrace=False)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    for command in (["apt-get", "update", "-qq"], install):
        done = _run(command, timeout=600, env=env)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"


def _os_release() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return {key: value.strip('"') for key, value in pairs}


def apt_mirror(codename: str) -> str:
    """The Debian mirror this machine's apt uses for `codename` (never written into the repository)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, flags=re.MULTILINE))
            enabled = fields.get("Enabled", "yes") != "no"
            if enabled and codename in fields.get("Suites", "").split() and "URIs" in fields:
                return fields["URIs"].split()[0]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.exists():
            line = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{codename}\s", path.read_text(), flags=re.MULTILINE)
            if line:
                return line.group(1)
    pytest.fail(f"no apt source for {codename} found in /etc/apt", pytrace=False)


def pip_setting(name: str) -> str | None:
    """`name` (e.g. "index-url", "cert") as this machine's pip sees it: variables, then config files."""
    done = _run([sys.executable, "-m", "pip", "config", "list"])
    settings = dict(re.findall(r"^(\S+?)=(.*)$", done.stdout, flags=re.MULTILINE))
    for scope in (":env:", "install", "global"):
        if f"{scope}.{name}" in settings:
            return settings[f"{scope}.{name}"].strip("'\"")
    return None


# --- a private dockerd ---


class Dockerd:
    """dockerd with its state in a temporary directory; `docker()` runs the client against it."""

    def __init__(self) -> None:
        # Short: the socket path must fit in 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="canary-dockerd-", dir="/tmp"))
        self.socket = self.dir / "docker.sock"
        self.log = self.dir / "dockerd.log"
        self.client = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.dir / "client"),
            "DOCKER_BUILDKIT": "0",  # no buildx here: the classic builder
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Dockerd:
        command = [
            "dockerd",
            f"--data-root={self.dir / 'data'}",
            f"--exec-root={self.dir / 'exec'}",
            f"--pidfile={self.dir / 'dockerd.pid'}",
            f"--host=unix://{self.socket}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.docker("version", timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"dockerd did not start:\n{self.log.read_text()[-3000:]}", pytrace=False)
            time.sleep(0.5)
        return self

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run([self.client, *args], timeout=timeout, env=self.env)

    def processes(self) -> list[psutil.Process]:
        """Processes that belong to this dockerd: it, its containerd, shims and containers."""
        found = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if str(self.dir) in " ".join(p.info["cmdline"] or []):
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        leftovers = self.processes()
        for p in leftovers:
            p.kill()
        psutil.wait_procs(leftovers, timeout=10)
        # dockerd unmounts on a clean stop; unmount whatever a killed one left, deepest first.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.dir))), key=len, reverse=True):
            _run(["umount", "--lazy", mount])
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    if os.geteuid() != 0:
        pytest.fail("the image test starts its own dockerd: run it as root", pytrace=False)
    _ensure_packages()
    daemon = Dockerd().start()
    try:
        yield daemon
    finally:
        state = daemon.dir
        daemon.stop()
    assert not state.exists(), f"{state} left behind"
    assert not daemon.processes(), "dockerd processes left behind"


# --- the images ---


def _debootstrap_tarball() -> Path:
    """A minimal Debian of this machine's release with python3, as a tarball (built once, cached)."""
    codename = _os_release().get("VERSION_CODENAME") or "bookworm"
    tarball = CACHE / f"debian-{codename}-{'-'.join(BASE_PACKAGES)}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="canary-rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        mirror = apt_mirror(codename)
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", codename, str(rootfs), mirror]
        done = _run(command, timeout=900)
        assert done.returncode == 0, f"debootstrap failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = tarball.with_suffix(".partial")
        done = _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], timeout=300)
        assert done.returncode == 0, done.stderr
        partial.rename(tarball)
    return tarball


@pytest.fixture(scope="module")
def base_image(dockerd: Dockerd, tmp_path_factory) -> str:
    """The stand-in for python:3.12-slim, plus the test-only layer for this machine's network."""
    raw = "jupyterhub-canary-test-base:raw"
    done = dockerd.docker("import", str(_debootstrap_tarball()), raw, timeout=300)
    assert done.returncode == 0, done.stderr
    context = tmp_path_factory.mktemp("harness-base")
    lines = [f"FROM {raw}"]
    # The CA bundle this machine's pip trusts (it holds the package proxy's CA), for pip in the build.
    ca_bundle = Path(pip_setting("cert") or HOST_CA_BUNDLE)
    if ca_bundle.is_file():
        shutil.copy(ca_bundle, context / "ca.crt")
        lines += ["COPY ca.crt /usr/local/share/canary-test/ca.crt", "ENV PIP_CERT=/usr/local/share/canary-test/ca.crt"]
    if index := pip_setting("index-url"):
        lines.append(f"ENV PIP_INDEX_URL={index}")
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    done = dockerd.docker("build", "--quiet", "--network=host", "--tag", HARNESS_BASE, str(context), timeout=300)
    assert done.returncode == 0, done.stderr
    return HARNESS_BASE


@pytest.fixture(scope="module")
def image(dockerd: Dockerd, base_image: str) -> str:
    done = dockerd.docker(
        # No VERSION build argument: the Dockerfile's default must be the package version.
        "build", "--network=host", "--build-arg", f"BASE_IMAGE={base_image}", "--tag", IMAGE, str(ROOT), timeout=900,
    )
    assert done.returncode == 0, f"docker build failed:\n{done.stdout[-5000:]}{done.stderr[-3000:]}"
    return IMAGE


def run(
    dockerd: Dockerd, image: str, *args: str, options: tuple[str, ...] = (), timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the image as Kubernetes runs it under the chart: non-root, read-only, /tmp writable."""
    return dockerd.docker(
        "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--network=host", "--user", USER, *options, image, *args,
        timeout=timeout,
    )


def _shared_dir(tmp_path: Path) -> Path:
    """A host directory the container's non-root user can write to."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    return shared


# --- the tests ---


def test_image_metadata(dockerd, image):
    done = dockerd.docker("image", "inspect", image)
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)[0]["Config"]
    user, _, group = config["User"].partition(":")
    assert user.isdigit() and int(user) > 0 and group.isdigit(), config["User"]
    assert config["Entrypoint"] == ["jupyterhub-canary"]
    assert config["Labels"]["org.opencontainers.image.version"] == app.__version__
    assert config["Labels"]["org.opencontainers.image.title"] == "jupyterhub-canary"


def test_no_installers_or_caches_in_the_final_image(dockerd, image):
    probe = (
        "import glob, json, shutil; "
        "print(json.dumps({'tools': [t for t in ('gcc', 'cc', 'make', 'pip', 'pip3') if shutil.which(t)], "
        "'caches': glob.glob('/root/.cache/pip') + glob.glob('/tmp/.cache/pip') + glob.glob('/src')}))"
    )
    # As root, to see into /root.
    done = dockerd.docker("run", "--rm", "--network=host", "--user=0:0", "--entrypoint=python3", image, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"tools": [], "caches": []}


def test_help(dockerd, image):
    done = run(dockerd, image, "--help")
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout
    done = run(dockerd, image, "run", "--help")
    assert done.returncode == 0, done.stderr
    assert "--hub-url" in done.stdout


def test_bad_configuration_exits_78_and_writes_the_termination_message(dockerd, image, tmp_path):
    shared = _shared_dir(tmp_path)
    done = run(
        dockerd, image, "run", "--hub-url", "not-a-url", "--user", "canary", "--termination-log", "/shared/message",
        options=("--volume", f"{shared}:/shared", "--env", "JUPYTERHUB_API_TOKEN=unused"),
    )
    assert done.returncode == ExitCode.CONFIGURATION, done.stdout + done.stderr
    message = (shared / "message").read_text()
    assert message and len(message.encode()) <= 4096
    assert "--hub-url" in message


def test_configuration_from_variables_only(dockerd, image):
    """The chart configures the container with CANARY_* variables and the default `run` command."""
    done = run(dockerd, image, options=("--env", "CANARY_HUB_URL=http://127.0.0.1:9/", "--env", "CANARY_ATTEMPTS=zero"))
    assert done.returncode == ExitCode.CONFIGURATION, done.stdout + done.stderr
    assert "CANARY_ATTEMPTS" in done.stdout + done.stderr


def test_full_cycle_against_a_real_hub(dockerd, image, tmp_path):
    from tests.localhub import LocalHub

    shared = _shared_dir(tmp_path)
    with LocalHub(tmp_path / "hub") as hub:
        hub.create_user("canary")
        # The scopes chart/README.md tells operators to give the token.
        token = hub.new_token(
            "canary", scopes=["servers!user=canary", "access:servers!user=canary", "read:tokens!user=canary"]
        )
        (shared / "token").write_text(token + "\n")
        (shared / "token").chmod(0o644)
        done = run(
            dockerd, image, "run", "--termination-log", "/shared/message",
            options=(
                "--volume", f"{shared}:/shared",
                "--env", f"CANARY_HUB_URL={hub.url}",
                "--env", "CANARY_USER=canary",
                "--env", "CANARY_TOKEN_FILE=/shared/token",
                "--env", "CANARY_DEADLINE=120",
                "--env", "CANARY_STOP_TIMEOUT=60",
            ),
            timeout=180,
        )
        assert done.returncode == ExitCode.OK, done.stdout + done.stderr + hub.log_tail()
        assert hub.servers("canary") == {}, "the canary left its server running"
    assert not hub.leftover_processes()
    message = (shared / "message").read_text()
    assert message and len(message.encode()) <= 4096
