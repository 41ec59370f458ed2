"""The single-user image of the KubeSpawner hub (tests/kubespawner_hub.py): Debian's Python with
`jupyterhub` and `jupyter-server` from PyPI, as a `docker save` tarball that the node imports into
containerd.

Built in a private dockerd (tests/images.py) on the "slim" stand-in (Debian 13's python3, made with
debootstrap from this machine's own apt mirror): pip runs in a builder stage on the stand-in plus the
test-only layer that trusts this machine's CA; the image itself is the plain stand-in plus the virtual
environment, so neither the CA nor the index setting is in it. The versions are the ones the hub runs
(requirements/test.lock), so that the single-user server and the hub agree.

The tarball is cached in .tools/image-test/ under a key of everything that goes into it (this
module's Dockerfile, the two pins, the stand-in's release and packages): a second test session, or a second
run of the same one, does not start a dockerd at all.

    python -m tests.userimage      # build (or find) it; prints the tarball's path
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from tests import images

LOCK = images.ROOT / "requirements" / "test.lock"
NAME = "jupyterhub-canary-user"
# The user the pods run as (the restricted Pod Security Standard needs a non-zero one), and its home.
UID = 65532
HOME = "/home/jovyan"
STANDIN = "slim"

DOCKERFILE = """\
FROM {builder} AS builder
RUN python3 -m venv /opt/jupyter \\
    && /opt/jupyter/bin/pip install --quiet --no-cache-dir --disable-pip-version-check {requirements} \\
    && /opt/jupyter/bin/pip uninstall --quiet --yes pip \
    && rm -rf /opt/jupyter/share/jupyterhub/static

# (The hub's own web assets, 63 MB, are served by the hub, never by a single-user server.)
# The stand-in without the test-only CA layer: only the environment comes across.
FROM {base}
COPY --from=builder /opt/jupyter /opt/jupyter
RUN mkdir -p {home} && chown {uid}:{uid} {home}
ENV PATH=/opt/jupyter/bin:/usr/local/bin:/usr/bin:/bin HOME={home} LANG=C.UTF-8
WORKDIR {home}
USER {uid}:{uid}
CMD ["jupyterhub-singleuser"]
"""


def pins() -> list[str]:
    """`jupyterhub==X` and `jupyter-server==Y` as requirements/test.lock has them."""
    locked = dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", LOCK.read_text(encoding="utf-8"), flags=re.MULTILINE))
    return [f"{name}=={locked[name]}" for name in ("jupyterhub", "jupyter-server")]


def _dockerfile(builder: str, base: str) -> str:
    return DOCKERFILE.format(builder=builder, base=base, requirements=" ".join(pins()), home=HOME, uid=UID)


def key() -> str:
    """What the image is made of, hashed: a change to any of it makes a new tarball."""
    recipe = _dockerfile("builder", "base") + " ".join((STANDIN, images.SUITE, *images.PYTHON_PACKAGES))
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def tag() -> str:
    """The image's reference; the pods name it with imagePullPolicy Never."""
    return f"{NAME}:{key()}"


def tarball() -> Path:
    """The `docker save` tarball of `tag()`, built when the cache has none (needs root: a dockerd)."""
    path = images.CACHE / f"{NAME}-{key()}.tar"
    if path.exists():
        return path
    if os.geteuid() != 0:
        raise images.ImageError("the user image is built in a private dockerd: run as root")
    images.ensure_packages()
    dockerd = images.Dockerd().start()
    try:
        base = images.import_standin(dockerd, STANDIN)
        with tempfile.TemporaryDirectory(prefix="canary-user-image-") as work:
            builder = images.harness_layer(dockerd, base, Path(work) / "harness")
            context = Path(work) / "context"
            context.mkdir()
            (context / "Dockerfile").write_text(_dockerfile(builder, base), encoding="utf-8")
            images._check(dockerd.docker("build", "--network=host", "--tag", tag(), str(context), timeout=1200),
                          "docker build of the user image")
        partial = path.with_suffix(".partial")
        images._check(dockerd.docker("save", "--output", str(partial), tag(), timeout=300), "docker save")
        partial.rename(path)
    finally:
        dockerd.stop()
    return path


if __name__ == "__main__":
    print(tarball())
