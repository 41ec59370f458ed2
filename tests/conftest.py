"""Shared fixtures. Sections: real JupyterHubs, users, the Kubernetes Secret stub, tools, a real
Kubernetes control plane, reporting.

Tests that use a real hub are marked `hub` (`pytestmark = pytest.mark.hub` in their module, or
the decorator per test) so that `pytest -m hub` (make test-compat) selects them.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import app
from tests import images
from tests.controlplane import ControlPlane, missing_binaries
from tests.k8s_stub import SecretStub
from tests.localhub import LocalHub, until_stopped
from tests.node import Node, cannot_run_node, missing_node_binaries

# --- real JupyterHubs: one per kind per session, started on first use ---

# The `hub` fixture's slow_spawn_timeout: far beyond a normal spawn (2-4 s idle, over 10 s seen under load).
SLOW_SPAWN_TIMEOUT = 60


def _running_hub(tmp_path_factory: pytest.TempPathFactory, name: str, **options) -> Iterator[LocalHub]:
    yield from until_stopped(LocalHub(tmp_path_factory.mktemp(name), **options).start(), name)


@pytest.fixture(scope="session")
def hub(tmp_path_factory) -> Iterator[LocalHub]:
    """A hub that holds the spawn POST open until the spawn ends, as deployed hubs do for a spawn
    within their slow_spawn_timeout: a spawn that completes answers 201, one that fails an error.

    Its slow_spawn_timeout is SLOW_SPAWN_TIMEOUT, not JupyterHub's default 10 s: on a loaded machine a
    normal server took longer than 10 s, the hub answered 202, and the tests of the 201 path failed.
    """
    yield from _running_hub(tmp_path_factory, "hub", slow_spawn_timeout=SLOW_SPAWN_TIMEOUT)


@pytest.fixture(scope="session")
def hub_202(tmp_path_factory) -> Iterator[LocalHub]:
    """A hub with slow_spawn_timeout=0: every accepted spawn POST answers 202 at once, and
    success or failure shows only in the progress stream and the server model."""
    yield from _running_hub(tmp_path_factory, "hub_202", slow_spawn_timeout=0)


@pytest.fixture(scope="session")
def hub_keeps_servers(tmp_path_factory) -> Iterator[LocalHub]:
    """A hub whose servers and proxy outlive the hub process (cleanup_servers = cleanup_proxy =
    False, as zero-to-jupyterhub runs it), with slow_spawn_timeout=0: restart it with
    `stop_hub_process()` then `start()`."""
    extra = "c.JupyterHub.cleanup_servers = False\nc.JupyterHub.cleanup_proxy = False\n"
    yield from _running_hub(tmp_path_factory, "hub_keeps_servers", slow_spawn_timeout=0, extra_config=extra)


# --- users ---

_user_numbers = itertools.count(1)


@pytest.fixture
def hub_user() -> Callable[..., str]:
    """A factory of fresh user names, f"{prefix}canary-{n}", unique in the session.

    It only makes the name (the test creates the user on the hub it uses, with
    `hub.create_user`). The prefix picks the hub's behaviour: "slow3-", "failexit-", ...
    (see tests/hub_config.py).
    """

    def make(prefix: str = "") -> str:
        return f"{prefix}canary-{next(_user_numbers)}"

    return make


# --- the Kubernetes Secret stub ---


@pytest.fixture
def secret_stub(tmp_path) -> Iterator[SecretStub]:
    """A started HTTPS stub of the Kubernetes Secret endpoint, empty, with its own CA."""
    with SecretStub(tmp_path / "k8s-stub") as stub:
        yield stub


# --- tools of `make tools` (.tools/bin), or $HELM / $PROMTOOL ---


def tool(name: str, variable: str) -> str:
    root = Path(__file__).resolve().parent.parent
    for candidate in (os.environ.get(variable), root / ".tools" / "bin" / name, shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"{name} not found: run `make tools` (or set {variable})", pytrace=False)


@pytest.fixture(scope="session")
def helm() -> str:
    return tool("helm", "HELM")


@pytest.fixture(scope="session")
def promtool() -> str:
    return tool("promtool", "PROMTOOL")


# --- a real Kubernetes control plane (tests/controlplane.py): one per session, started on first use ---


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver and kube-controller-manager on loopback; stopped by PID at the end."""
    missing = missing_binaries()
    if missing:
        pytest.fail(f"{', '.join(missing)} missing from .tools/bin: run `make control-plane`", pytrace=False)
    yield from until_stopped(ControlPlane(tmp_path_factory.mktemp("k8s")).start(), "the control plane")


_namespace_numbers = itertools.count(1)


def _restricted_namespace(plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace that enforces the "restricted" Pod Security Standard (and warns by it), with
    its `default` ServiceAccount made. Deleted afterwards, without waiting."""
    name = f"canary-k8s-{next(_namespace_numbers)}"
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    done = plane.kubectl("create", "-f", "-", input=json.dumps(manifest))
    assert done.returncode == 0, done.stderr
    done = plane.kubectl("-n", name, "wait", "--for=create", "serviceaccount/default", "--timeout=30s")
    assert done.returncode == 0, done.stderr
    yield name
    plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def k8s_namespace(control_plane) -> Iterator[str]:
    """A restricted namespace of the control plane (no node: its Pods stay Pending)."""
    yield from _restricted_namespace(control_plane)


# --- a real node (tests/node.py): the control plane plus containerd, kubelet, scheduler, kube-proxy ---


@pytest.fixture(scope="session")
def node(tmp_path_factory) -> Iterator[Node]:
    """A `Node` (a ControlPlane too: kubectl, helm, kubeconfig, url), started once per session: at most
    one node runs on the machine (it waits for the lock). `node.bridge_address` is where Pods reach
    the host; `node.import_image(dockerd, image)` copies an image into its containerd. Stopped, and
    everything it changed on the machine restored, at the end of the session."""
    reason = cannot_run_node()
    if reason:
        pytest.skip(f"no Kubernetes node on this machine: {reason}")
    missing = missing_binaries() + missing_node_binaries()
    if missing:
        pytest.fail(f"{', '.join(missing)} missing from .tools/bin: run `make control-plane`", pytrace=False)
    started = Node(tmp_path_factory.mktemp("node")).start()
    yield from until_stopped(started, "the node")
    leftovers = started.leftovers()
    assert not leftovers, f"the node left this on the machine: {leftovers}"


@pytest.fixture
def node_namespace(node) -> Iterator[str]:
    """A restricted namespace on the node's control plane: its Pods run."""
    yield from _restricted_namespace(node)


@pytest.fixture(scope="session")
def node_hub(node, tmp_path_factory) -> Iterator[LocalHub]:
    """A real JupyterHub whose proxy listens on the node's bridge address: the node's Pods reach it there."""
    yield from _running_hub(tmp_path_factory, "node_hub", ip=node.bridge_address)


@pytest.fixture(scope="session")
def product_image_archive(tmp_path_factory) -> tuple[str, Path]:
    """The product image (on the stand-ins of its default bases, tests/images.py), built in a private
    dockerd that is stopped after: its name and its `docker save` archive. Built before the node starts
    (see node_image), so that the node's lock is not held during the build."""
    images.ensure_packages()
    dockerd = images.Dockerd().start()
    try:
        tag = f"jupyterhub-canary:{app.__version__}-node"
        images.build_product(dockerd, "distroless", tag, tmp_path_factory.mktemp("node-image"))
        archive = tmp_path_factory.mktemp("node-image-archive") / "image.tar"
        images.save(dockerd, tag, archive)
        return tag, archive
    finally:
        dockerd.stop()


@pytest.fixture(scope="session")
def node_image(product_image_archive, node) -> str:
    """The product image in the node's containerd: run it with `imagePullPolicy: Never`."""
    tag, archive = product_image_archive
    node.import_archive(archive.read_bytes())
    return tag


# --- the order of a run: the fast tier first, so that a failure shows in minutes ---

NODE_LIFECYCLE_TEST = "test_a_node_leaves_nothing_behind_and_starts_again"
# Session fixtures that start no process worth a tier of its own.
_CHEAP_SHARED_FIXTURES = {"helm", "promtool", "tmp_path_factory"}
FAST, HUB, CONTROL_PLANE, NODE = range(4)
TIER_NAMES = ("fast", "hub", "control plane", "node")
_TIER = pytest.StashKey[int]()


def tier(item: pytest.Item) -> int:
    """Where a test runs in the session: FAST (in-process fakes and stubs, helm, promtool), then HUB (a
    real JupyterHub, or another process that a module or the session shares), then CONTROL_PLANE (the
    k8s tier without a node), then NODE (the node's tests; first the one that starts nodes of its own:
    one node per machine, and the session's `node`, once started, runs until the end)."""
    fixtures = set(item.fixturenames)
    if "node" in fixtures or item.originalname == NODE_LIFECYCLE_TEST:
        return NODE
    if item.get_closest_marker("k8s") or "control_plane" in fixtures:
        return CONTROL_PLANE
    definitions = getattr(item, "_fixtureinfo", None)
    shared = {name for name, defs in (definitions.name2fixturedefs.items() if definitions else ())
              if defs and defs[-1].scope != "function"}
    if item.get_closest_marker("hub") or shared - _CHEAP_SHARED_FIXTURES:
        return HUB
    return FAST


def pytest_addoption(parser):
    parser.addoption("--tier", action="append", choices=TIER_NAMES, default=[],
                     help="run only this tier's tests (repeatable; see tests/conftest.py `tier`). make test runs "
                          "the fast and hub tiers on two workers (pytest-xdist), then the Kubernetes tiers in one")


def pytest_collection_modifyitems(session, config, items):
    """Tiers in order (see `tier`); within a tier, the collection's order (a stable sort), so that each
    module's tests of one tier stay together and a module's fixture starts once. With --tier, only
    those tiers."""
    for item in items:
        item.stash[_TIER] = tier(item)
    items.sort(key=lambda item: (item.stash[_TIER], item.originalname != NODE_LIFECYCLE_TEST))
    wanted = {TIER_NAMES.index(name) for name in config.getoption("tier")}
    if wanted:
        kept, others = [], []
        for item in items:
            (kept if item.stash[_TIER] in wanted else others).append(item)
        config.hook.pytest_deselected(items=others)
        items[:] = kept


_TIER_TIMES = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Each tier's wall-clock time, from its first test's setup to its last one's teardown."""
    began = time.monotonic()
    try:
        return (yield)
    finally:
        times = item.config.stash.setdefault(_TIER_TIMES, {})
        first, _, count = times.get(item.stash.get(_TIER, FAST), (began, 0, 0))
        times[item.stash.get(_TIER, FAST)] = (first, time.monotonic(), count + 1)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def pytest_sessionfinish(session):
    """An xdist worker hands its tiers' times to the controller (the monotonic clock is the machine's)."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["tier_times"] = session.config.stash.get(_TIER_TIMES, {})


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The controller merges its workers' tier times: a tier spans from its first start to its last end."""
    times = node.config.stash.setdefault(_TIER_TIMES, {})
    for key, (first, end, count) in getattr(node, "workeroutput", {}).get("tier_times", {}).items():
        tier_ = int(key)
        if tier_ in times:
            first0, end0, count0 = times[tier_]
            first, end, count = min(first, first0), max(end, end0), count + count0
        times[tier_] = (first, end, count)


def pytest_terminal_summary(terminalreporter, config):
    times = config.stash.get(_TIER_TIMES, {})
    if times and not config.option.setupplan:
        spent = ", ".join(f"{TIER_NAMES[t]} {_minutes(end - first)} ({count} tests)"
                          for t, (first, end, count) in sorted(times.items()))
        terminalreporter.write_line(f"tiers: {spent}")


# --- reporting ---


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of each hub's log to a failed test's report: the hub's view of a spawn
    (and the single-user server's stderr) is usually what explains the failure."""
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, LocalHub):
                report.sections.append((f"{name} log, last 50 lines", value.log_tail(50)))
    return report


# --- ports ---


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on (bound, then released): connections to it are refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
