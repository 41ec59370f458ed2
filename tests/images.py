"""Stand-ins for the product image's base images, and a private dockerd to build them in.

Used by tests/test_image.py (`make image-test`) and by the image part of the benchmark
(`make bench-image`). Docker Hub and gcr.io cannot be reached here, so each real base is replaced by
one made with debootstrap from this machine's own apt mirror (cached in .tools/image-test/) that
reproduces the properties of the real one that matter to the Dockerfile:

- "builder", for `debian:13-slim`: a minbase Debian 13 with no Python at all, so the Dockerfile's
  own `apt-get install python3-venv` runs, as it does on the real one.
- "distroless", for `gcr.io/distroless/python3-debian13`: only the files of the Debian packages that
  image is assembled from (distroless python3/config.bzl: the interpreter, its standard library, the
  shared libraries they link; base-files, netbase, tzdata, the CA bundle), an /etc/passwd with
  `nonroot` (65532), `python3` -> `python3.13`. No shell, no apt, no dpkg, and no bytecode for the
  standard library: distroless unpacks the packages without running their maintainer scripts, which
  is where Debian compiles it.
- "slim", for `python:3.13-slim`: Debian's Python with pip as `/usr/local/bin/pip` and `pip3`
  (where the official image has it) and the standard library's `__pycache__` deleted (the official
  image deletes its .pyc files to save space).

On top of the builder bases, a test-only layer trusts this machine's CA bundle so that pip inside
the build reaches the package index. None of that enters the product Dockerfile.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".tools" / "image-test"
SUITE = "trixie"  # Debian 13, the release of the real bases
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# gcr.io/distroless/python3-debian13: the packages of its //cc base and of python3/config.bzl.
DISTROLESS_PACKAGES = (
    "base-files", "netbase", "tzdata", "ca-certificates", "libc6", "libgcc-s1", "libstdc++6", "libssl3t64",
    "libzstd1",  # Debian 13's OpenSSL links it
    "libbz2-1.0", "libdb5.3t64", "libexpat1", "liblzma5", "libsqlite3-0", "libuuid1", "libncursesw6", "libtinfo6",
    "zlib1g", "libcom-err2", "libcrypt1", "libgssapi-krb5-2", "libk5crypto3", "libkeyutils1", "libkrb5-3",
    "libkrb5support0", "libnsl2", "libreadline8t64", "libtirpc3t64", "libffi8", "libpython3.13-minimal",
    "libpython3.13-stdlib", "python3.13-minimal", "python3.13-venv",
)
PYTHON_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")


class ImageError(RuntimeError):
    pass


def _run(command: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kw)


def _check(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        raise ImageError(f"{what} failed ({done.returncode}):\n{done.stdout[-4000:]}{done.stderr[-3000:]}")
    return done


# --- the machine: packages, apt mirror, pip settings ---


DOCKER_PACKAGES = {"docker.io": "dockerd", "debootstrap": "debootstrap"}


def ensure_packages(needed: dict[str, str] = DOCKER_PACKAGES) -> None:
    """apt-get install the Debian packages (package -> a command it ships) whose command is missing."""
    missing = [package for package, tool in needed.items() if not shutil.which(tool)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ImageError(f"{', '.join(missing)} missing and not root: install them or run as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _check(_run(["apt-get", "update", "-qq"], timeout=600, env=env), "apt-get update")
    _check(_run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], timeout=600, env=env),
           "apt-get install")


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
    raise ImageError(f"no apt source for {codename} found in /etc/apt")


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
            # dockerd turns net.ipv4.ip_forward on otherwise, and leaves it on: this machine routes nothing.
            "--ip-forward=false",
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.docker("version", timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ImageError(f"dockerd did not start:\n{self.log.read_text()[-3000:]}")
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


# --- the stand-in bases: root filesystems as tarballs, built once and cached ---


def _debootstrap(rootfs: Path, include: tuple[str, ...]) -> None:
    mirror = apt_mirror(_os_release().get("VERSION_CODENAME") or "bookworm")
    command = ["debootstrap", "--variant=minbase", *([f"--include={','.join(include)}"] if include else []),
               SUITE, str(rootfs), mirror]
    _check(_run(command, timeout=1200), "debootstrap")
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / junk).glob("*"):
            if path.is_file():
                path.unlink()


def _tar(rootfs: Path, tarball: Path, members: list[str] | None = None) -> None:
    partial = tarball.with_suffix(".partial")
    command = ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial)]
    if members is None:
        command.append(".")
    else:
        listing = rootfs.parent / "members"
        listing.write_text("\n".join(members) + "\n")
        command += ["--no-recursion", "-T", str(listing)]
    _check(_run(command, timeout=600), "tar")
    partial.rename(tarball)


def _package_files(rootfs: Path, package: str) -> list[str]:
    info = rootfs / "var/lib/dpkg/info"
    for name in (f"{package}.list", f"{package}:amd64.list", f"{package}:{_dpkg_arch(rootfs)}.list"):
        if (info / name).exists():
            return [line for line in (info / name).read_text().splitlines() if line and line != "/."]
    raise ImageError(f"{package} is not installed in the debootstrap root (needed for the distroless stand-in)")


def _dpkg_arch(rootfs: Path) -> str:
    return (rootfs / "var/lib/dpkg/arch").read_text().split()[0] if (rootfs / "var/lib/dpkg/arch").exists() else "amd64"


def _distroless_members(rootfs: Path) -> list[str]:
    """The files of DISTROLESS_PACKAGES plus what distroless adds itself; no maintainer script output."""
    members: set[str] = set()
    for package in DISTROLESS_PACKAGES:
        members.update(_package_files(rootfs, package))
    # distroless' own additions: the CA bundle (made by ca-certificates' script), users, /tmp, python3.
    (rootfs / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    (rootfs / "etc/group").write_text("root:x:0:\nnonroot:x:65532:\n")
    (rootfs / "home/nonroot").mkdir(parents=True, exist_ok=True)
    for alias in ("usr/bin/python3", "usr/bin/python"):
        (rootfs / alias).unlink(missing_ok=True)
        (rootfs / alias).symlink_to("python3.13")
    extra = ["/etc/ssl/certs/ca-certificates.crt", "/etc/passwd", "/etc/group", "/tmp", "/root", "/home",
             "/home/nonroot", "/usr/bin/python3", "/usr/bin/python", "/etc/os-release"]
    # The merged-/usr links (/bin, /lib, /lib64, /sbin -> usr/...): the dynamic loader is reached through /lib64.
    extra += [f"/{name}" for name in ("bin", "lib", "lib64", "sbin") if (rootfs / name).is_symlink()]
    members.update(extra)
    # Parents first, so that tar recreates directories with their modes.
    paths = set()
    for member in members:
        parts = Path(member).parts[1:]
        paths.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(f"./{p}" for p in paths if (rootfs / p).exists() or (rootfs / p).is_symlink())


def _slim_rootfs(rootfs: Path) -> None:
    """pip where python:3.13-slim has it, and no bytecode for the standard library."""
    (rootfs / "usr/local/bin").mkdir(parents=True, exist_ok=True)
    for tool in ("pip", "pip3", "pip3.13"):
        source = rootfs / "usr/bin" / tool
        if source.exists():
            shutil.move(source, rootfs / "usr/local/bin" / tool)
    if not (rootfs / "usr/local/bin/pip").exists():
        (rootfs / "usr/local/bin/pip").symlink_to("pip3")
    for cache in (rootfs / "usr/lib/python3.13").rglob("__pycache__"):
        shutil.rmtree(cache)


def standin_tarball(kind: str) -> Path:
    """The root filesystem of the stand-in for `kind` ("builder", "distroless", "slim"), cached."""
    tarball = CACHE / f"standin-{kind}-{SUITE}-v2.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="canary-rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        if kind == "builder":
            _debootstrap(rootfs, ())
            _tar(rootfs, tarball)
        elif kind == "distroless":
            _debootstrap(rootfs, DISTROLESS_PACKAGES)
            _tar(rootfs, tarball, _distroless_members(rootfs))
        elif kind == "slim":
            _debootstrap(rootfs, PYTHON_PACKAGES)
            _slim_rootfs(rootfs)
            _tar(rootfs, tarball)
        else:
            raise ValueError(kind)
    return tarball


# What `docker import` sets from the real bases' configuration.
IMPORT_CHANGES = {
    "builder": ['CMD ["bash"]'],
    "distroless": ['ENTRYPOINT ["/usr/bin/python3.13"]', "ENV LANG=C.UTF-8",
                   "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "slim": ['CMD ["python3"]', "ENV LANG=C.UTF-8",
             "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"],
}


def import_standin(dockerd: Dockerd, kind: str) -> str:
    """`docker import` the stand-in for `kind`; returns its tag."""
    tag = f"jupyterhub-canary-standin:{kind}"
    changes = [arg for change in IMPORT_CHANGES[kind] for arg in ("--change", change)]
    _check(dockerd.docker("import", *changes, str(standin_tarball(kind)), tag, timeout=300), f"docker import {kind}")
    return tag


def save(dockerd: Dockerd, image: str, archive: Path) -> Path:
    """`docker save` of `image` into the file `archive`."""
    with archive.open("wb") as out:
        done = subprocess.run([dockerd.client, "save", image], stdout=out, stderr=subprocess.PIPE, text=False,
                              env=dockerd.env, timeout=300, check=False)
    if done.returncode != 0:
        raise ImageError(f"docker save {image} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return archive


def harness_layer(dockerd: Dockerd, base: str, context: Path) -> str:
    """`base` plus the test-only layer for this machine's network: its CA bundle and index for pip."""
    context.mkdir(parents=True, exist_ok=True)
    lines = [f"FROM {base}"]
    ca_bundle = Path(pip_setting("cert") or HOST_CA_BUNDLE)
    if ca_bundle.is_file():
        shutil.copy(ca_bundle, context / "ca.crt")
        lines += ["COPY ca.crt /usr/local/share/canary-test/ca.crt", "ENV PIP_CERT=/usr/local/share/canary-test/ca.crt"]
    if index := pip_setting("index-url"):
        lines.append(f"ENV PIP_INDEX_URL={index}")
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    tag = f"{base}-harness"
    _check(dockerd.docker("build", "--quiet", "--network=host", "--tag", tag, str(context), timeout=300),
           f"the harness layer on {base}")
    return tag


def build_product(dockerd: Dockerd, kind: str, tag: str, workdir: Path, context: Path = ROOT,
                  extra_args: tuple[str, ...] = ()) -> str:
    """Build the product image on the stand-ins of `kind` ("distroless": the Dockerfile's default
    pair of bases; "slim": python:3.13-slim as both builder and runtime)."""
    runtime = import_standin(dockerd, kind)
    builder = import_standin(dockerd, "builder") if kind == "distroless" else runtime
    builder = harness_layer(dockerd, builder, workdir / f"harness-{kind}")
    _check(dockerd.docker(
        "build", "--network=host", "--build-arg", f"BASE_IMAGE={runtime}", "--build-arg", f"BUILDER_IMAGE={builder}",
        *extra_args, "--tag", tag, str(context), timeout=1200,
    ), f"docker build on the {kind} stand-ins")
    return tag
