"""A stand-in for the kubelet in the k8s tests: it runs the Pods the real Job controller makes.

The test control plane (tests/controlplane.py) has no scheduler and no kubelet, so a Job's Pod stays
Pending. `PodRunner` does, for one Pod at a time, what a scheduler and a kubelet would:

1. registers a Node object for itself (no heartbeats: the control plane runs without the node
   lifecycle controller, which would taint a silent Node and evict its Pods);
2. binds the Job's Pending Pod to that Node (the `binding` subresource, as kube-scheduler does);
3. requests a ServiceAccount token bound to the Pod (TokenRequest, as the kubelet does for the
   projected `kube-api-access-*` volume) and writes it with the CA and namespace into a directory;
4. runs the Pod's one container through a `Runtime`: the Pod's env, args and user, the
   ServiceAccount files where the in-cluster configuration reads them, KUBERNETES_SERVICE_HOST and
   _PORT set to 127.0.0.1 and the apiserver's port (never the Service range), /tmp an emptyDir;
5. writes the container's exit code and termination message (the file at terminationMessagePath,
   or the log tail under FallbackToLogsOnError) into the Pod's status through the status
   subresource; the real Job controller takes it from there.

Runtimes: `DockerRuntime` runs the project's image with docker (`--network host`, read-only root);
`ProcessRuntime`, where docker cannot run, runs the container's command as a local process of this
checkout (not read-only, not as the Pod's user) and says so. `kubectl logs` needs a kubelet to serve
logs: it cannot work here; `ContainerRun.logs` holds what the container wrote instead.

Only what the chart's canary Pods use is supported: one container, env `value`s (no `valueFrom`),
emptyDir volumes and the projected ServiceAccount token. Anything else is refused, by name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from tests.controlplane import HOST, ISSUER, ControlPlane, free_port

NODE = "canary-podrunner"
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
ENTRYPOINT = ["jupyterhub-canary"]  # the image's ENTRYPOINT (Dockerfile)
TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048  # what the kubelet takes from the log tail


@dataclass
class ContainerSpec:
    """What a runtime needs to run the Pod's container."""

    args: list[str]
    env: dict[str, str]
    user: str  # "uid:gid"
    serviceaccount_dir: Path | None  # to appear at SERVICEACCOUNT_DIR
    termination_log: Path  # to appear at the container's terminationMessagePath
    termination_message_path: str = "/dev/termination-log"


@dataclass
class ContainerRun:
    exit_code: int
    logs: str
    runtime: str
    started: datetime
    finished: datetime


class Runtime(Protocol):
    name: str

    def run(self, spec: ContainerSpec, timeout: float) -> ContainerRun: ...


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class ProcessRuntime:
    """The container's command as a local process of this checkout, for where docker cannot run.

    The ServiceAccount directory cannot be mounted at its in-pod path here, so the process is
    started through a two-line entry that points app.secret.SERVICEACCOUNT_DIR at it; the
    termination log is passed as CANARY_TERMINATION_LOG (the image's default path is the file the
    kubelet mounts). Not read-only, not as the Pod's user.
    """

    name = "process"
    _ENTRY = (
        "import sys; from pathlib import Path; import app.secret; "
        "app.secret.SERVICEACCOUNT_DIR = Path(sys.argv[1]); from app.cli import main; sys.exit(main(sys.argv[2:]))"
    )

    def run(self, spec: ContainerSpec, timeout: float) -> ContainerRun:
        if spec.args[: len(ENTRYPOINT)] != ENTRYPOINT:
            raise NotImplementedError(f"process runtime: runs the image's entrypoint only, not {spec.args[0]!r}")
        args = spec.args[len(ENTRYPOINT):]
        sa_dir = str(spec.serviceaccount_dir or "/nonexistent")
        env = {"PATH": os.environ.get("PATH", ""), **spec.env, "CANARY_TERMINATION_LOG": str(spec.termination_log)}
        started = _now()
        done = subprocess.run([sys.executable, "-c", self._ENTRY, sa_dir, *args], env=env, capture_output=True,
                              text=True, timeout=timeout, check=False, cwd=spec.termination_log.parent)
        return ContainerRun(done.returncode, done.stdout + done.stderr, self.name, started, _now())


class DockerRuntime:
    """The project's image, run with docker as the kubelet would run the container."""

    name = "docker"

    def __init__(self, docker, image: str):
        self.docker = docker  # docker(*args, timeout=) -> CompletedProcess, e.g. tests/test_image.py's Dockerd.docker
        self.image = image

    def run(self, spec: ContainerSpec, timeout: float) -> ContainerRun:
        options = ["--network=host", "--read-only", "--tmpfs=/tmp", f"--user={spec.user}",
                   f"--volume={spec.termination_log}:{spec.termination_message_path}"]
        if spec.serviceaccount_dir:
            options.append(f"--volume={spec.serviceaccount_dir}:{SERVICEACCOUNT_DIR}:ro")
        for name, value in spec.env.items():
            options.append(f"--env={name}={value}")
        entrypoint = spec.args[: len(ENTRYPOINT)] == ENTRYPOINT
        args = spec.args[len(ENTRYPOINT):] if entrypoint else spec.args
        if not entrypoint:
            options.append(f"--entrypoint={args.pop(0)}")
        started = _now()
        done = self.docker("run", "--rm", *options, self.image, *args, timeout=timeout)
        return ContainerRun(done.returncode, done.stdout + done.stderr, self.name, started, _now())


@dataclass
class PodRun:
    """One Pod the runner ran: its name, the container's run and the termination message written."""

    pod: str
    container: ContainerRun
    message: str
    notes: list[str] = field(default_factory=list)


class PodRunner:
    """See the module docstring."""

    def __init__(self, plane: ControlPlane, runtime: Runtime, node: str = NODE):
        self.plane = plane
        self.runtime = runtime
        self.node = node

    def _core(self, api):
        from kubernetes import client

        return client.CoreV1Api(api)

    def register_node(self) -> None:
        """A Node for the runner, Ready, once (a kubelet registers itself the same way)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        with self.plane.api_client() as api:
            core = self._core(api)
            try:
                core.read_node(self.node)
                return
            except ApiException as exc:
                if exc.status != 404:
                    raise
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
                name=self.node, labels={"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux"})))
            now = _now()
            # The "kubelet" is on loopback at a port nothing listens on: `kubectl logs` and `exec`, which
            # the apiserver forwards to the kubelet, are refused there and go nowhere else.
            status = {"status": {
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "PodRunnerReady", "message": "tests/podrunner.py",
                    "lastHeartbeatTime": now.isoformat(), "lastTransitionTime": now.isoformat()}],
                "addresses": [{"type": "InternalIP", "address": HOST}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": free_port()}},
            }}
            core.patch_node_status(self.node, status)

    def run_job_pod(self, namespace: str, job: str, timeout: float = 180) -> PodRun:
        """Wait for the Job's Pending Pod, bind it here, run its container, write its status."""
        return self._run(namespace, lambda pod: (pod.metadata.labels or {}).get("job-name") == job,
                         f"of Job {namespace}/{job}", timeout)

    def run_pod(self, namespace: str, name: str, timeout: float = 180) -> PodRun:
        """The same for the Pod `name` (e.g. a `helm test` hook Pod)."""
        return self._run(namespace, lambda pod: pod.metadata.name == name, f"{namespace}/{name}", timeout)

    def _run(self, namespace: str, wanted, what: str, timeout: float) -> PodRun:
        self.register_node()
        with self.plane.api_client() as api:
            core = self._core(api)
            pod = self._pending_pod(core, namespace, wanted, what)
            name = pod.metadata.name
            self._bind(core, namespace, name)
            spec, workdir = self._container_spec(core, namespace, pod)
            try:
                self._set_running(core, namespace, name)
                run = self.runtime.run(spec, timeout)
                message = self._termination_message(spec.termination_log, run, pod)
                self._set_terminated(core, namespace, name, run, message)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
        notes = []
        if self.runtime.name == "process":
            notes.append("pod runner: docker not used here; the container's command ran as a local process "
                         "(not read-only, not as the Pod's user)")
        return PodRun(name, run, message, notes)

    # --- the steps ---

    def _pending_pod(self, core, namespace: str, wanted, what: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pod in core.list_namespaced_pod(namespace).items:
                if wanted(pod) and pod.status.phase == "Pending" and not pod.spec.node_name:
                    return pod
            time.sleep(0.25)
        raise AssertionError(f"no Pending Pod {what} within {timeout} s")

    def _bind(self, core, namespace: str, name: str) -> None:
        from kubernetes import client

        binding = client.V1Binding(metadata=client.V1ObjectMeta(name=name),
                                   target=client.V1ObjectReference(api_version="v1", kind="Node", name=self.node))
        # The client cannot read the Status it gets back as a Binding: do not deserialize it.
        core.create_namespaced_pod_binding(name, namespace, binding, _preload_content=False)

    def _container_spec(self, core, namespace: str, pod) -> tuple[ContainerSpec, str]:
        (container,) = pod.spec.containers
        for var in container.env or []:
            if var.value_from is not None:
                raise NotImplementedError(f"pod runner: env {var.name} uses valueFrom, which it does not support")
        unsupported = [v.name for v in pod.spec.volumes or [] if not (v.empty_dir or v.projected)]
        if unsupported:
            raise NotImplementedError(f"pod runner: volumes {unsupported} are not emptyDir or the ServiceAccount token")
        mounts = {m.mount_path: m.name for m in container.volume_mounts or []}
        workdir = tempfile.mkdtemp(prefix="canary-pod-", dir="/tmp")
        os.chmod(workdir, 0o755)
        termination_log = Path(workdir) / "termination-log"
        termination_log.touch()
        termination_log.chmod(0o666)
        sa_dir = None
        if SERVICEACCOUNT_DIR in mounts:
            token = self._bound_token(core, namespace, pod)
            sa_dir = self.plane.write_serviceaccount_dir(Path(workdir) / "serviceaccount", token, namespace)
            sa_dir.chmod(0o755)
            for f in sa_dir.iterdir():
                f.chmod(0o644)
        security = container.security_context
        pod_security = pod.spec.security_context
        uid = (security and security.run_as_user) or (pod_security and pod_security.run_as_user)
        gid = (security and security.run_as_group) or (pod_security and pod_security.run_as_group)
        if uid is None:
            raise NotImplementedError("pod runner: the Pod sets no runAsUser (the image's user is not looked up)")
        env = {var.name: var.value or "" for var in container.env or []}
        env.update({"HOSTNAME": pod.metadata.name, **self.plane.in_cluster_env()})
        spec = ContainerSpec(
            args=[*(container.command or ENTRYPOINT), *(container.args or [])],
            env=env,
            user=f"{uid}:{gid if gid is not None else uid}",
            serviceaccount_dir=sa_dir,
            termination_log=termination_log,
            termination_message_path=container.termination_message_path or "/dev/termination-log",
        )
        return spec, workdir

    def _bound_token(self, core, namespace: str, pod) -> str:
        from kubernetes import client

        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[ISSUER], expiration_seconds=3607,
            bound_object_ref=client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid)))
        account = pod.spec.service_account_name or "default"
        return core.create_namespaced_service_account_token(account, namespace, request).status.token

    def _termination_message(self, path: Path, run: ContainerRun, pod) -> str:
        """The file's content; under FallbackToLogsOnError, the log tail when the file is empty and the run failed."""
        message = path.read_bytes()[:TERMINATION_MESSAGE_BYTES].decode("utf-8", errors="replace")
        (container,) = pod.spec.containers
        if not message and run.exit_code != 0 and container.termination_message_policy == "FallbackToLogsOnError":
            tail = "\n".join(run.logs.splitlines()[-FALLBACK_LOG_LINES:])
            message = tail.encode()[-FALLBACK_LOG_BYTES:].decode("utf-8", errors="replace")
        return message

    def _status(self, core, namespace: str, name: str, phase: str, state: dict, ready: bool) -> None:
        pod = core.read_namespaced_pod_status(name, namespace)
        (container,) = pod.spec.containers
        now = _now().isoformat()
        body = {
            "metadata": {"resourceVersion": pod.metadata.resource_version},
            "status": {
                "phase": phase,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "startTime": (pod.status.start_time or _now()).isoformat(),
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": now},
                    {"type": "Ready", "status": str(ready), "lastTransitionTime": now},
                ],
                "containerStatuses": [{
                    "name": container.name, "image": container.image, "imageID": "",
                    "containerID": f"podrunner://{name}", "ready": ready, "restartCount": 0,
                    "started": "running" in state, "state": state,
                }],
            },
        }
        core.patch_namespaced_pod_status(name, namespace, body)

    def _set_running(self, core, namespace: str, name: str) -> None:
        self._status(core, namespace, name, "Running", {"running": {"startedAt": _now().isoformat()}}, ready=True)

    def _set_terminated(self, core, namespace: str, name: str, run: ContainerRun, message: str) -> None:
        terminated = {
            "exitCode": run.exit_code,
            "reason": "Completed" if run.exit_code == 0 else "Error",
            "message": message,
            "startedAt": run.started.isoformat(),
            "finishedAt": run.finished.isoformat(),
            "containerID": f"podrunner://{name}",
        }
        self._status(core, namespace, name, "Succeeded" if run.exit_code == 0 else "Failed",
                     {"terminated": terminated}, ready=False)


def describe(run: PodRun) -> str:
    """For a failed test's message: what the runner did and what the container said."""
    return json.dumps({"pod": run.pod, "runtime": run.container.runtime, "exit_code": run.container.exit_code,
                       "message": run.message, "notes": run.notes}, indent=1) + "\n--- logs ---\n" + run.container.logs
