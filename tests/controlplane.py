"""A real Kubernetes control plane for the k8s test tier: etcd, kube-apiserver, kube-controller-manager.

The binaries are built by `make control-plane` into .tools/bin (the release pinned in
tools/k8s/go.mod; etcd from Debian). `ControlPlane` makes its own certificates (a throw-away CA,
the apiserver's certificate naming 127.0.0.1, client certificates for an admin and the
controller-manager) and a service-account signing key, starts the three processes on free loopback
ports with their state in a temporary directory, waits until the apiserver's /readyz answers 200 and
the controller-manager has made the `default` ServiceAccount, and stops them by PID.

What it has: RBAC (`--authorization-mode=Node,RBAC`), the PodSecurity admission plugin,
ServiceAccount tokens (TokenRequest) and every controller of kube-controller-manager: CronJob,
Job, garbage collection, ... What it has not: a scheduler, a kubelet, a container runtime, cluster
networking: Pods stay Pending, and the Service range is an allocation only. tests/node.py's `Node`
is this control plane with a real node beside it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import requests
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.kubefiles import KubeClientFiles

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
HELM = TOOLS_BIN / "helm"
KUBECTL = TOOLS_BIN / "kubectl"
CHART_DIR = ROOT / "chart"
HOST = "127.0.0.1"
# An allocation only: the apiserver gives the `kubernetes` Service an address in it; nothing connects there.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for(what: str, check, timeout: float, interval: float = 0.5):
    """The first truthy value of check(), polled; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def notes_lines(text: str) -> list[str]:
    """The shell lines of helm's output (NOTES.txt): `JOB=...`, `kubectl ...`, `helm ...`, continuation
    lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip().startswith(("JOB=", "kubectl ", "helm "))]


def missing_binaries() -> list[str]:
    names = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")
    return [name for name in names if not (TOOLS_BIN / name).exists()]


class ControlPlane(KubeClientFiles):
    """See the module docstring. `start()` before use, `stop()` after (or `with`). Kubeconfigs and
    service-account directories for it: KubeClientFiles. tests/node.py's `Node` extends it with a
    kubelet through the hooks `address`, `_apiserver_options`, `_controller_manager_options` and
    `_client_certificates`."""

    # Where the apiserver listens and what it advertises.
    address = HOST

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.url = ""
        self.ca_file = self.dir / "ca.crt"
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: list = []
        self._admin_cert = (str(self.dir / "admin.crt"), str(self.dir / "admin.key"))

    # --- lifecycle ---

    def start(self, timeout: float = 90) -> ControlPlane:
        self._write_certificates()
        etcd_port, peer_port, self.port = free_port(), free_port(), free_port()
        self.url = f"https://{self.address}:{self.port}"
        d = self.dir
        self._spawn("etcd", [
            "etcd", "--name=default", f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls=http://{HOST}:{etcd_port}", f"--advertise-client-urls=http://{HOST}:{etcd_port}",
            f"--listen-peer-urls=http://{HOST}:{peer_port}", f"--initial-advertise-peer-urls=http://{HOST}:{peer_port}",
            f"--initial-cluster=default=http://{HOST}:{peer_port}", "--unsafe-no-fsync",
        ])
        self._spawn("kube-apiserver", [
            "kube-apiserver", f"--etcd-servers=http://{HOST}:{etcd_port}",
            f"--bind-address={self.address}", f"--advertise-address={self.address}", f"--secure-port={self.port}",
            f"--cert-dir={d / 'apiserver-certs'}",
            f"--tls-cert-file={d / 'apiserver.crt'}", f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={self.ca_file}",
            f"--service-account-issuer={ISSUER}", f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=Node,RBAC", "--allow-privileged=false", "--profiling=false",
            *self._apiserver_options(),
        ])
        self._write_client_kubeconfig(self.kubeconfig, "admin")
        self._wait("the apiserver's /readyz", self._ready, timeout)
        self._write_client_kubeconfig(d / "controller-manager.kubeconfig", "controller-manager")
        self._spawn("kube-controller-manager", [
            "kube-controller-manager", f"--kubeconfig={d / 'controller-manager.kubeconfig'}",
            "--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={d / 'sa.key'}", f"--root-ca-file={self.ca_file}",
            "--profiling=false", *self._controller_manager_options(),
        ])
        self._wait("the controller-manager's `default` ServiceAccount", self._default_serviceaccount, timeout)
        return self

    def stop(self) -> None:
        """SIGTERM to each process by PID, newest first; SIGKILL after 20 s."""
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        for log in self._logs:
            log.close()

    def leftover_processes(self) -> list[psutil.Process]:
        """Processes still running from this control plane (their command lines name its directory)."""
        found = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(str(self.dir) in arg for arg in p.info["cmdline"] or []):
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # --- clients ---

    def env(self) -> dict[str, str]:
        """Variables for kubectl and helm: the admin kubeconfig, helm's state in the work directory."""
        return {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.dir / "home"),
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.dir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.dir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.dir / "helm" / "data"),
        }

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(KUBECTL), *args], capture_output=True, text=True, input=input,
                              timeout=timeout, env=self.env(), check=False)

    def helm(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=timeout,
                              env=self.env(), check=False)

    def shell(self, command: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """`command` as a user's shell runs it (a line of NOTES.txt), with kubectl and helm of .tools/bin."""
        return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout,
                              env=self.shell_env(env), check=False)

    def shell_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """`env()` with .tools/bin first on PATH (a shell's `kubectl` and `helm` are ours), plus `extra`."""
        return {**self.env(), "PATH": f"{TOOLS_BIN}:{os.environ.get('PATH', '')}", **(extra or {})}

    def create_manual_job(self, notes: str) -> str:
        """The manual run of NOTES.txt: its `JOB=...` line and the `kubectl create job` after it, in one
        shell; the Job's name (the value of $JOB that the other NOTES.txt lines use)."""
        lines = notes_lines(notes)
        (at,) = [i for i, line in enumerate(lines) if line.startswith("JOB=")]
        assert "create job --from=cronjob/" in lines[at + 1], lines
        done = self.shell(f'{lines[at]}\n{lines[at + 1]}\nprintf "\\n%s" "$JOB"')
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[-1]

    def get_json(self, namespace: str, *what: str) -> dict:
        """`kubectl get <what> -o json` in the namespace, as the admin."""
        done = self.kubectl("-n", namespace, "get", *what, "-o", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def api_client(self):
        """A `kubernetes` ApiClient with admin rights."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        return client.ApiClient(configuration)

    def serviceaccount_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A token of the ServiceAccount, from the TokenRequest API (what a pod's projected volume holds)."""
        from kubernetes import client

        with self.api_client() as api:
            request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
                audiences=[ISSUER], expiration_seconds=seconds))
            return client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request).status.token

    def service_account_with_role(self, namespace: str, name: str, rules: list[dict]) -> str:
        """A ServiceAccount bound to a Role with exactly `rules` (RBAC PolicyRules); its token."""
        manifests = [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
        ]
        done = self.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                                   "items": manifests}))
        assert done.returncode == 0, done.stderr
        return self.serviceaccount_token(namespace, name)

    def create_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """A Secret with `data` (plain text values), as the admin."""
        manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}
        done = self.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))
        assert done.returncode == 0, done.stderr

    def read_secret(self, namespace: str, name: str) -> dict | None:
        """The Secret with its `data` decoded to text, None when there is none (as the admin)."""
        done = self.kubectl("-n", namespace, "get", "secret", name, "-o", "json")
        if done.returncode != 0:
            assert "NotFound" in done.stderr, done.stderr
            return None
        stored = json.loads(done.stdout)
        stored["data"] = {k: base64.b64decode(v).decode("utf-8") for k, v in (stored.get("data") or {}).items()}
        return stored

    def in_cluster_env(self) -> dict[str, str]:
        """What the kubelet would set for a pod's in-cluster config, pointed at loopback."""
        return {"KUBERNETES_SERVICE_HOST": HOST, "KUBERNETES_SERVICE_PORT": str(self.port)}

    # --- hooks (tests/node.py) ---

    def _apiserver_options(self) -> list[str]:
        return [
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,ResourceQuota,PodSecurity",
            # No Endpoints for the `kubernetes` Service: its address would be 127.0.0.1, which the
            # reconciler refuses, and without a node nothing connects through the Service anyway.
            "--endpoint-reconciler-type=none",
        ]

    def _controller_manager_options(self) -> list[str]:
        # No node here: nothing for the node lifecycle controller to watch.
        return ["--controllers=*,-node-lifecycle-controller,-taint-eviction-controller"]

    def _apiserver_names(self) -> list[str]:
        """What the apiserver's serving certificate names: it is reached at 127.0.0.1 only."""
        return [HOST, "localhost"]

    def _client_certificates(self) -> dict[str, tuple[str, str | None]]:
        """Client certificates to issue: file name -> (user, group)."""
        return {"admin": ("admin", "system:masters"),
                "controller-manager": ("system:kube-controller-manager", None)}

    # --- internals ---

    def _write_certificates(self) -> None:
        ca = trustme.CA(organization_name="jupyterhub-canary test control plane")
        ca.cert_pem.write_to_path(str(self.ca_file))
        leaves = {"apiserver": ca.issue_cert(*self._apiserver_names(), common_name="kube-apiserver")}
        for name, (user, group) in self._client_certificates().items():
            leaves[name] = ca.issue_cert(name, common_name=user, **({"organization_name": group} if group else {}))
        for name, leaf in leaves.items():
            leaf.cert_chain_pems[0].write_to_path(str(self.dir / f"{name}.crt"))
            leaf.private_key_pem.write_to_path(str(self.dir / f"{name}.key"))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.dir / "sa.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (self.dir / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def _write_client_kubeconfig(self, path: Path, name: str) -> None:
        """A kubeconfig with the client certificate `name`.crt."""
        self._write_kubeconfig(path, {"client-certificate": str(self.dir / f"{name}.crt"),
                                      "client-key": str(self.dir / f"{name}.key")})

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.dir / f"{name}.log").open("wb")
        process = subprocess.Popen([str(TOOLS_BIN / command[0]), *command[1:]], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.dir)
        self._logs.append(log)
        self.processes[name] = process

    def _wait(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [name for name, p in self.processes.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                tails = "\n".join(f"--- {name}.log ---\n{self.log_tail(name)}" for name in self.processes)
                raise RuntimeError(f"{what}: not ready after {timeout:.0f} s (exited: {dead or 'none'})\n{tails}")
            time.sleep(0.25)

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", cert=self._admin_cert, verify=str(self.ca_file),
                                timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def _default_serviceaccount(self) -> bool:
        done = self.kubectl("-n", "default", "get", "serviceaccount", "default", "-o", "name", timeout=10)
        return done.returncode == 0
