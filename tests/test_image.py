"""The container image, built from the Dockerfile and run the way Kubernetes runs it (`make image-test`).

Needs root: it installs docker.io and debootstrap when missing and starts its own dockerd, with its
state in a temporary directory, no bridge and no iptables, on its own socket; it stops it afterwards.
Docker Hub and gcr.io cannot be reached here, so the bases are stand-ins made with debootstrap from the
machine's own apt mirror (tests/images.py says what each reproduces of the real one). The image is
built and tested twice: on the Dockerfile's default bases (distroless Python, built on Debian 13) and
on python:3.13-slim as both builder and runtime, the override a site with its own base would use.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import app
from app.exit_codes import ExitCode
from tests import images
from tests.images import Dockerd

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parent.parent
USER = "65532:65532"
KINDS = ("distroless", "slim")
REVISION = "0123456789abcdef0123456789abcdef01234567"
SOURCE = "https://git.example.org/ops/jupyterhub-canary"


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    if os.geteuid() != 0:
        pytest.fail("the image test starts its own dockerd: run it as root", pytrace=False)
    images.ensure_packages()
    daemon = Dockerd().start()
    try:
        yield daemon
    finally:
        state = daemon.dir
        daemon.stop()
    assert not state.exists(), f"{state} left behind"
    assert not daemon.processes(), "dockerd processes left behind"


@pytest.fixture(scope="module")
def base_image(dockerd: Dockerd) -> str:
    """The stand-in for the Dockerfile's default runtime base (distroless)."""
    return images.import_standin(dockerd, "distroless")


def _build(dockerd: Dockerd, kind: str, workdir: Path) -> str:
    # No VERSION build argument: the Dockerfile's default must be the package version.
    return images.build_product(
        dockerd, kind, f"jupyterhub-canary:{app.__version__}-test-{kind}", workdir,
        extra_args=("--build-arg", f"REVISION={REVISION}", "--build-arg", f"SOURCE={SOURCE}"),
    )


@pytest.fixture(scope="module")
def image(dockerd: Dockerd, base_image: str, tmp_path_factory) -> str:
    """The product image on the stand-ins of its default bases (other test modules use it too)."""
    return _build(dockerd, "distroless", tmp_path_factory.mktemp("build-distroless"))


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def product(request, dockerd: Dockerd, kind: str, tmp_path_factory) -> str:
    """The product image on the stand-ins of each kind of base: the default and python:*-slim."""
    if kind == "distroless":
        return request.getfixturevalue("image")
    return _build(dockerd, kind, tmp_path_factory.mktemp(f"build-{kind}"))


def _locked(lock: Path) -> dict[str, str]:
    return {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", lock.read_text(), re.M)}


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


def test_image_metadata(dockerd, product):
    done = dockerd.docker("image", "inspect", product)
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)[0]["Config"]
    user, _, group = config["User"].partition(":")
    assert user.isdigit() and int(user) > 0 and group.isdigit(), config["User"]
    assert config["Entrypoint"] == ["jupyterhub-canary"]
    assert config["Labels"]["org.opencontainers.image.version"] == app.__version__
    assert config["Labels"]["org.opencontainers.image.title"] == "jupyterhub-canary"
    assert config["Labels"]["org.opencontainers.image.revision"] == REVISION
    assert config["Labels"]["org.opencontainers.image.source"] == SOURCE
    assert config["Labels"]["org.opencontainers.image.licenses"] == "BSD-3-Clause"


def _python(dockerd: Dockerd, image: str, code: str, user: str = USER) -> dict:
    """Run `code` with the image's base python3, read-only, and return what it printed as JSON."""
    done = dockerd.docker(
        "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--network=host", f"--user={user}", "--entrypoint=python3",
        image, "-c", code,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_standin_bases_reproduce_the_real_ones(dockerd, product, kind):
    """What the Dockerfile must cope with on the real bases: distroless has no shell, no apt and no
    standard-library bytecode; python:*-slim has pip in /usr/local/bin and no bytecode either."""
    probe = (
        "import glob, json, shutil, sysconfig; "
        "print(json.dumps({'which': {t: shutil.which(t) for t in ('sh', 'bash', 'apt-get', 'dpkg', 'pip')}, "
        "'pyc': len(glob.glob(sysconfig.get_paths()['stdlib'] + '/**/*.pyc', recursive=True))}))"
    )
    base = _python(dockerd, f"jupyterhub-canary-standin:{kind}", probe, user="0:0")
    assert base["pyc"] == 0, base
    if kind == "distroless":
        assert base["which"] == {"sh": None, "bash": None, "apt-get": None, "dpkg": None, "pip": None}, base
    else:
        assert base["which"]["pip"] == "/usr/local/bin/pip" and base["which"]["sh"], base
    # ... and the builder stand-in of the default bases has no Python: the Dockerfile installs Debian's.
    if kind == "distroless":
        done = dockerd.docker("run", "--rm", "jupyterhub-canary-standin:builder", "sh", "-c", "command -v python3")
        assert done.returncode != 0 and not done.stdout.strip(), done.stdout


def test_no_installers_or_caches_in_the_final_image(dockerd, product, kind):
    probe = (
        "import glob, importlib.util, json, shutil; "
        "print(json.dumps({'tools': [t for t in ('gcc', 'cc', 'make', 'pip', 'pip3', 'sh') if shutil.which(t)], "
        "'pip_module': importlib.util.find_spec('pip') is not None, "
        "'caches': glob.glob('/root/.cache/pip') + glob.glob('/tmp/.cache/pip') + glob.glob('/src') "
        "+ glob.glob('/opt/canary/finish_image.py')}))"
    )
    # As root, to see into /root.
    found = _python(dockerd, product, probe, user="0:0")
    # The slim base keeps its shell; the distroless one has none.
    assert found == {"tools": ["sh"] if kind == "slim" else [], "pip_module": False, "caches": []}


def compiled_from_source(output: str) -> list[str]:
    """Modules a PYTHONVERBOSE=1 run compiled from source (no usable bytecode in the image)."""
    return re.findall(r"code object from '?(\S+?\.py)'?$", output, flags=re.MULTILINE)


def test_nothing_is_compiled_at_start_with_a_secret(dockerd, product, tmp_path):
    """On the read-only root nothing can be compiled for later: `--help` and a run that reads its token
    from a Secret (the chart's default; the kubernetes client) find the bytecode of every module they
    import in the image, standard library and venv alike."""
    from tests.k8s_stub import SecretStub

    done = run(dockerd, product, "--help", options=("--env", "PYTHONVERBOSE=1"))
    assert done.returncode == 0 and "code object from" in done.stderr, done.stderr[-2000:]
    assert compiled_from_source(done.stderr) == []
    with SecretStub(tmp_path / "stub") as stub:
        stub.put_secret("default", "canary-token", {"token": "0123456789abcdef0123456789abcdef"})
        kubeconfig = stub.write_kubeconfig(stub.tmpdir / "kubeconfig", "sa-token", "default")
        stub.tmpdir.chmod(0o755)
        kubeconfig.chmod(0o644)
        done = run(
            dockerd, product, "run", "--hub-url", "http://127.0.0.1:9/", "--user", "u", "--attempts", "1",
            "--token-secret", "canary-token", "--token-secret-namespace", "default", "--termination-log", "/tmp/m",
            options=("--volume", f"{stub.tmpdir}:{stub.tmpdir}:ro", "--env", f"KUBECONFIG={kubeconfig}",
                     "--env", "PYTHONVERBOSE=1"),
        )
        assert [r["path"] for r in stub.requests_seen] == ["/api/v1/namespaces/default/secrets/canary-token"], (
            done.stdout + done.stderr[-3000:])
    assert done.returncode != ExitCode.OK  # nothing listens on port 9
    assert compiled_from_source(done.stderr) == []


def _venv_python(dockerd: Dockerd, image: str, code: str) -> dict:
    done = dockerd.docker(
        "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--network=host", f"--user={USER}",
        "--entrypoint=/opt/canary/bin/python", image, "-c", code,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_the_image_holds_exactly_the_runtime_lock_and_its_sbom_says_so(dockerd, product):
    locked = _locked(ROOT / "requirements" / "runtime.lock")
    installed = _venv_python(dockerd, product, (
        "import json, importlib.metadata as m; "
        "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))"
    ))
    assert installed == {**locked, "jupyterhub-canary": app.__version__}
    assert not {"aiohttp", "pydantic", "kubernetes-asyncio"} & set(installed)
    done = dockerd.docker("run", "--rm", "--entrypoint=/opt/canary/bin/python", product, "-c",
                          "print(open('/opt/canary/sbom.cdx.json').read())")
    assert done.returncode == 0, done.stderr
    sbom = json.loads(done.stdout)
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == "jupyterhub-canary"
    components = {c["name"].lower().replace("_", "-"): c["version"] for c in sbom["components"]}
    assert components == locked


def test_help(dockerd, product):
    done = run(dockerd, product, "--help")
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout
    done = run(dockerd, product, "run", "--help")
    assert done.returncode == 0, done.stderr
    assert "--hub-url" in done.stdout


def test_bad_configuration_exits_78_and_writes_the_termination_message(dockerd, product, tmp_path):
    shared = _shared_dir(tmp_path)
    done = run(
        dockerd, product, "run", "--hub-url", "not-a-url", "--user", "canary", "--termination-log", "/shared/message",
        options=("--volume", f"{shared}:/shared", "--env", "JUPYTERHUB_API_TOKEN=unused"),
    )
    assert done.returncode == ExitCode.CONFIGURATION, done.stdout + done.stderr
    message = (shared / "message").read_text()
    assert message and len(message.encode()) <= 4096
    assert "--hub-url" in message


def test_configuration_from_variables_only(dockerd, product):
    """The chart configures the container with CANARY_* variables and the default `run` command."""
    done = run(dockerd, product, options=("--env", "CANARY_HUB_URL=http://127.0.0.1:9/", "--env", "CANARY_ATTEMPTS=zero"))
    assert done.returncode == ExitCode.CONFIGURATION, done.stdout + done.stderr
    assert "CANARY_ATTEMPTS" in done.stdout + done.stderr


def test_full_cycle_against_a_real_hub(dockerd, product, tmp_path):
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
            dockerd, product, "run", "--termination-log", "/shared/message",
            options=(
                "--volume", f"{shared}:/shared",
                "--env", f"CANARY_HUB_URL={hub.url}",
                "--env", "CANARY_USER=canary",
                "--env", "CANARY_TOKEN_FILE=/shared/token",
                "--env", "CANARY_DEADLINE=120",
                "--env", "CANARY_STOP_TIMEOUT=60",
                "--env", "PYTHONVERBOSE=1",
            ),
            timeout=180,
        )
        assert done.returncode == ExitCode.OK, done.stdout + done.stderr[-5000:] + hub.log_tail()
        assert compiled_from_source(done.stderr) == [], "modules without bytecode in the image"
        assert hub.servers("canary") == {}, "the canary left its server running"
    assert not hub.leftover_processes()
    message = (shared / "message").read_text()
    assert message and len(message.encode()) <= 4096


def test_make_image_labels_the_image_and_writes_its_sbom_next_to_the_build(dockerd, tmp_path):
    """`make image` (the docker of the machine; here the private one) on the default kind of bases."""
    runtime = images.import_standin(dockerd, "distroless")
    builder = images.harness_layer(dockerd, images.import_standin(dockerd, "builder"), tmp_path / "harness")
    tag = f"jupyterhub-canary:{app.__version__}-make"
    sbom = tmp_path / "build" / "sbom.cdx.json"
    done = subprocess.run(
        ["make", "--no-print-directory", "image", f"DOCKER={dockerd.client}", "DOCKER_BUILD_OPTIONS=--network=host",
         f"IMAGE={tag}", f"BASE_IMAGE={runtime}",
         f"BUILDER_IMAGE={builder}", f"SBOM={sbom}", "SOURCE=https://git.example.org/ops/canary"],
        cwd=ROOT, env=dockerd.env, capture_output=True, text=True, timeout=1200, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    components = {c["name"].lower().replace("_", "-"): c["version"] for c in json.loads(sbom.read_text())["components"]}
    assert components == _locked(ROOT / "requirements" / "runtime.lock")
    labels = json.loads(dockerd.docker("image", "inspect", tag).stdout)[0]["Config"]["Labels"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert labels["org.opencontainers.image.revision"] in (head, f"{head}-dirty")
    assert labels["org.opencontainers.image.source"] == "https://git.example.org/ops/canary"
    assert labels["org.opencontainers.image.version"] == app.__version__
