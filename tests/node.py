"""A real Kubernetes node beside the test control plane: containerd, kubelet, kube-scheduler, kube-proxy.

`Node` is a `ControlPlane` (tests/controlplane.py) whose apiserver listens on the address of a bridge
that only this machine has, plus a node that runs real Pods:

- containerd (Debian's, with runc and the CNI plugins) with its root, state, socket and CNI
  configuration in the work directory; images come only from `import_image` (`ctr import`): the
  Pods use `imagePullPolicy: Never`, and the sandbox image is a locally built pause image
  (tools/pause), so nothing is ever pulled;
- the Pod network: the bridge BRIDGE with BRIDGE_ADDRESS on POD_SUBNET, the CNI `bridge` plugin
  without gateway and without NAT, a route to the Service range only, no default route, a FORWARD
  rule that drops whatever would leave the bridge, and net.ipv4.ip_forward left at 0: Pods reach the
  host's bridge address and each other, nothing else; the host reaches Pod IPs directly;
- kubelet (cgroupfs, cgroup v1 allowed), kube-scheduler, and kube-proxy in iptables mode (the
  `kubernetes` Service's ClusterIP reaches the apiserver: in-cluster config works as in a cluster).

Only one node may run on the machine at a time (the bridge, iptables, sysctls, cgroups and
/var/log/containers are the machine's): `start()` takes an exclusive flock on LOCK_FILE, waiting at
most LOCK_TIMEOUT seconds, and holds it until `stop()` has undone everything.

What the node changes outside its work directory, and `stop()` restores: the sysctls the kubelet
sets (SYSCTLS: kernel.panic, kernel.panic_on_oops, vm.overcommit_memory, ...), the kubepods cgroups,
the KUBE-* iptables chains (`kube-proxy --cleanup`, then any the kubelet made), the bridge and the
FORWARD rule, mounts, and HOST_PATHS that did not exist before (/var/log/containers, /var/lib/cni,
/run/containerd, ...). `leftovers()` lists whatever is still there; the tests assert it is empty.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import psutil

from tests import images
from tests.controlplane import TOOLS_BIN, ControlPlane, free_port, wait_for

LOCK_FILE = Path("/run/lock/jupyterhub-canary-node.lock")
LOCK_TIMEOUT = float(os.environ.get("CANARY_NODE_LOCK_TIMEOUT", "1800"))
NODE_NAME = "canary-node"
BRIDGE = "canary-br0"
POD_SUBNET = "10.244.0.0/24"
BRIDGE_ADDRESS = "10.244.0.1"
# The apiserver gives the `kubernetes` Service the first address of the range (ControlPlane's).
KUBERNETES_SERVICE_IP = "10.0.0.1"
CNI_NETWORK = "canary-pods"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
PAUSE_IMAGE = "localhost/jupyterhub-canary-pause:1"
PAUSE_BINARY = TOOLS_BIN / "pause"
NODE_BINARIES = ("kubelet", "kube-scheduler", "kube-proxy", "pause")
PACKAGES = {"containerd": "containerd", "runc": "runc", "containernetworking-plugins": f"{CNI_BIN_DIR}/bridge",
            "iptables": "iptables", "conntrack": "conntrack"}
FORWARD_RULE = ["FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"]
KUBE_PROXY_FORWARD_JUMPS = ("KUBE-PROXY-FIREWALL", "KUBE-FORWARD", "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES")
# What the kubelet and kube-proxy may set (the kubelet's kernel tunables; kube-proxy's conntrack and
# route_localnet, which our configuration keeps it from touching) and what must stay as it was.
SYSCTLS = (
    "kernel.panic", "kernel.panic_on_oops", "vm.overcommit_memory", "vm.panic_on_oom", "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes", "net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet",
    "net.ipv4.conf.all.forwarding", "net.bridge.bridge-nf-call-iptables", "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established", "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)
# Outside the work directory, hard-coded in the kubelet, containerd (shim sockets) and libcni.
HOST_PATHS = ("/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/var/lib/cni", "/run/containerd",
              "/opt/containerd", "/etc/cni", "/var/run/kubernetes", "/usr/libexec/kubernetes")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def missing_node_binaries() -> list[str]:
    return [name for name in NODE_BINARIES if not (TOOLS_BIN / name).exists()]


def cannot_run_node() -> str | None:
    """Why this machine cannot run a node (the k8s tier then skips), or None."""
    if os.geteuid() != 0:
        return "a Kubernetes node needs root (containerd, cgroups, a bridge, iptables)"
    if not (CGROUP_ROOT / "cpu").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").exists():
        return f"no cgroups under {CGROUP_ROOT}"
    return None


def _run(*command: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), capture_output=True, input=input, timeout=timeout, check=False)


def _check(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
    return done


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    """SYSCTLS that exist on this machine, with their values."""
    return {name: _sysctl_path(name).read_text().strip() for name in SYSCTLS if _sysctl_path(name).exists()}


def kube_chains() -> list[str]:
    """`table:chain` of every KUBE-* iptables chain (IPv4 and IPv6)."""
    found = []
    for save in ("iptables-save", "ip6tables-save"):
        table = ""
        for line in _run(save).stdout.decode().splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":KUBE-"):
                found.append(f"{save[:-5]}:{table}:{line[1:].split()[0]}")
    return found


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _unix_sockets_in_use() -> set[str]:
    """Paths of the unix sockets some process has bound (/proc/net/unix)."""
    lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    return {fields[7] for fields in (line.split() for line in lines) if len(fields) > 7}


def pause_image_archive() -> bytes:
    """A `docker save` archive of PAUSE_IMAGE: the tools/pause binary as /pause, run as 65535."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("pause")
        data = PAUSE_BINARY.read_bytes()
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [PAUSE_IMAGE], "Layers": ["layer.tar"]}]).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (("layer.tar", layer_bytes), (config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive.getvalue()


class Node(ControlPlane):
    """See the module docstring. `start()` before use, `stop()` after (or `with`)."""

    address = BRIDGE_ADDRESS
    _held = 0  # nodes of this process holding the lock: a second one would wait for itself

    @classmethod
    def held_in_this_process(cls) -> bool:
        return cls._held > 0

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.node_name = NODE_NAME
        self.bridge_address = BRIDGE_ADDRESS
        self.containerd_socket = self.dir / "containerd.sock"
        self.kubelet_dir = self.dir / "kubelet"
        self._lock_fd: int | None = None
        self._sysctls: dict[str, str] = {}
        self._absent_paths: list[str] = []

    # --- lifecycle ---

    def start(self, timeout: float = 120) -> Node:
        missing = missing_node_binaries()
        if missing:
            raise RuntimeError(f"{', '.join(missing)} missing from {TOOLS_BIN}: run `make control-plane`")
        self._lock()
        self._sysctls = read_sysctls()
        self._absent_paths = [p for p in HOST_PATHS if not os.path.lexists(p)]
        try:
            images.ensure_packages(PACKAGES)
            self._remove_stale()
            self._bridge()
            super().start(timeout)
            self._containerd(timeout)
            self.import_archive(pause_image_archive())
            self._kubelet()
            self._spawn("kube-scheduler", [
                "kube-scheduler", f"--kubeconfig={self._kubeconfig('scheduler')}", "--leader-elect=false",
                "--bind-address=127.0.0.1", f"--secure-port={free_port()}", f"--cert-dir={self.dir / 'scheduler-certs'}",
                "--profiling=false",
            ])
            self._kube_proxy()
            self._wait("the node's Ready condition", self._node_ready, timeout)
            # kube-proxy prepends its jumps to FORWARD (KUBE-FORWARD accepts established flows): once all are
            # there, the drop goes back above them (with ip_forward at 0 nothing is forwarded anyway).
            self._wait("kube-proxy's FORWARD rules", lambda: all(
                any(rule.endswith(f"-j {chain}") for rule in self.forward_chain()) for chain in KUBE_PROXY_FORWARD_JUMPS),
                timeout)
            _check(_run("iptables", "-D", *FORWARD_RULE), "iptables -D FORWARD")
            _check(_run("iptables", "-I", *FORWARD_RULE), "iptables -I FORWARD")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Pods first (the kubelet stops their containers), then every process by PID, then the machine."""
        try:
            if self.processes.get("kubelet") and self.processes["kubelet"].poll() is None:
                self._delete_all_pods()
            super().stop()
            self._kill_containers()
            self._restore_machine()
        finally:
            self._unlock()

    def leftovers(self) -> list[str]:
        """Whatever of this node is still on the machine (empty after `stop()`)."""
        found = [f"process {p.pid} {' '.join(p.cmdline()[:2])}" for p in self.leftover_processes()]
        found += [f"mount {m}" for m in self._mounts()]
        found += [f"cgroup {c}" for c in self._kubepods_cgroups()]
        found += [f"iptables chain {c}" for c in kube_chains()]
        if self._forward_rule_present():
            found.append("the FORWARD drop rule")
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            found.append(f"the bridge {BRIDGE}")
        now = read_sysctls()
        found += [f"sysctl {k}={now.get(k)} (was {v})" for k, v in self._sysctls.items() if now.get(k) != v]
        found += [f"path {p}" for p in self._absent_paths if os.path.lexists(p)]
        return found

    # --- what the tests use ---

    def import_archive(self, archive: bytes) -> None:
        """`ctr images import` an image archive (`docker save` format) into the kubelet's namespace."""
        _check(_run("ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", "images", "import", "-",
                    input=archive, timeout=300), "ctr images import")

    def import_image(self, dockerd, image: str) -> str:
        """Copy `image` from a tests/images.py Dockerd into the node's containerd; returns the name."""
        archive = images.save(dockerd, image, self.dir / "image-import.tar")
        try:
            self.import_archive(archive.read_bytes())
        finally:
            archive.unlink()
        return image

    def forward_chain(self) -> list[str]:
        """`iptables -S FORWARD`, one rule a line."""
        return _check(_run("iptables", "-S", "FORWARD"), "iptables -S").stdout.decode().splitlines()

    def pod_ip(self, namespace: str, pod: str) -> str:
        return self.get_json(namespace, "pod", pod)["status"].get("podIP", "")

    # --- the pieces ---

    def _lock(self) -> None:
        if Node.held_in_this_process():
            raise RuntimeError("this process already runs a node: one node per machine (tests/node.py)")
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise TimeoutError(f"another test node holds {LOCK_FILE} for more than {LOCK_TIMEOUT:.0f} s "
                                       "(one node per machine; CANARY_NODE_LOCK_TIMEOUT sets the wait)") from None
                time.sleep(1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.dir}\n".encode())
        self._lock_fd = fd
        Node._held += 1

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
            Node._held -= 1

    def _remove_stale(self) -> None:
        """What a killed run left (we hold the lock: no other node is running): the bridge, rules, chains."""
        self._remove_network()

    def _bridge(self) -> None:
        _check(_run("ip", "link", "add", BRIDGE, "type", "bridge"), "ip link add")
        _check(_run("ip", "addr", "add", f"{BRIDGE_ADDRESS}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE), "ip addr add")
        _check(_run("ip", "link", "set", BRIDGE, "up"), "ip link set up")
        _check(_run("iptables", "-I", *FORWARD_RULE), "iptables -I FORWARD")

    def _forward_rule_present(self) -> bool:
        return _run("iptables", "-C", *FORWARD_RULE).returncode == 0

    def _remove_network(self) -> None:
        while self._forward_rule_present():
            _check(_run("iptables", "-D", *FORWARD_RULE), "iptables -D FORWARD")
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            _check(_run("ip", "link", "delete", BRIDGE), "ip link delete")

    # apiserver, controller-manager and client certificates for a node (ControlPlane's hooks)

    def _apiserver_options(self) -> list[str]:
        return [
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,ResourceQuota,PodSecurity,"
            "NodeRestriction",
            f"--kubelet-client-certificate={self.dir / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={self.dir / 'apiserver-kubelet-client.key'}",
            # Else `kubectl logs` makes the apiserver look the node's name up in DNS.
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _controller_manager_options(self) -> list[str]:
        return []

    def _apiserver_names(self) -> list[str]:
        # Pods reach it at the bridge address and through the `kubernetes` Service's ClusterIP.
        return [BRIDGE_ADDRESS, KUBERNETES_SERVICE_IP]

    def _client_certificates(self) -> dict[str, tuple[str, str | None]]:
        return {
            **super()._client_certificates(),
            "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
            "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
            "scheduler": ("system:kube-scheduler", None),
            "proxy": ("system:kube-proxy", None),
        }

    def _kubeconfig(self, name: str) -> Path:
        path = self.dir / f"{name}.kubeconfig"
        self._write_client_kubeconfig(path, name)
        return path

    def _containerd(self, timeout: float) -> None:
        d = self.dir / "containerd"
        cni_conf = d / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-canary.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": CNI_NETWORK,
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": False, "ipMasq": False, "hairpinMode": False,
                "ipam": {
                    "type": "host-local", "dataDir": str(d / "ipam"),
                    "ranges": [[{"subnet": POD_SUBNET, "rangeStart": "10.244.0.10", "rangeEnd": "10.244.0.250",
                                 "gateway": BRIDGE_ADDRESS}]],
                    # The Service range only: no default route, nothing leaves the machine.
                    "routes": [{"dst": "10.0.0.0/24", "gw": BRIDGE_ADDRESS}],
                },
            }],
        }, indent=1))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (d / "config.toml").write_text(f"""version = 2
root = "{d / 'root'}"
state = "{d / 'state'}"
# "opt" would create /opt/containerd; the rest need kernel features this machine lacks.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[metrics]
  address = ""
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{cni_conf}"
  max_conf_num = 1
""")
        self._spawn_system("containerd", ["containerd", f"--config={d / 'config.toml'}"])
        self._wait("containerd's socket", self._containerd_answers, timeout)

    def _containerd_answers(self) -> bool:
        """`ctr version` succeeds. Before the socket exists ctr may wait out its timeout (a loaded machine
        took 10 s to start containerd): not an answer yet, not an error."""
        try:
            return _run("ctr", f"--address={self.containerd_socket}", "version", timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _kubelet(self) -> None:
        d = self.kubelet_dir
        d.mkdir(parents=True, exist_ok=True)
        (self.dir / "resolv.conf").write_text("")  # no cluster DNS, and no host resolver for Pods
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": BRIDGE_ADDRESS, "port": free_port(), "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.ca_file)}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            # cgroup v1 (hybrid) here; no systemd.
            "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
            "resolvConf": str(self.dir / "resolv.conf"), "clusterDomain": "cluster.local",
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                             "imagefs.available": "1%"},
            # Image GC would delete the imported images, which can never be pulled again.
            "imageGCHighThresholdPercent": 100,
            "podLogsDir": str(self.dir / "pod-logs"),
            "volumePluginDir": str(self.dir / "volume-plugins"),
            "hairpinMode": "none",
            "serializeImagePulls": False,
            # Its own oom_score_adj: lowering it needs CAP_SYS_RESOURCE, which this VM lacks.
            "oomScoreAdj": 0,
        }
        (self.dir / "kubelet-config.json").write_text(json.dumps(config, indent=1))
        self._spawn_system("kubelet", [
            "kubelet", f"--config={self.dir / 'kubelet-config.json'}", f"--kubeconfig={self._kubeconfig('kubelet')}",
            f"--root-dir={d}", f"--cert-dir={self.dir / 'kubelet-certs'}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={BRIDGE_ADDRESS}",
        ])

    def _kube_proxy(self) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "mode": "iptables", "clientConnection": {"kubeconfig": str(self._kubeconfig("proxy"))},
            "hostnameOverride": NODE_NAME,
            "healthzBindAddress": f"127.0.0.1:{free_port()}", "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "clusterCIDR": POD_SUBNET, "detectLocalMode": "ClusterCIDR",
            "nodePortAddresses": [f"{BRIDGE_ADDRESS}/32"],
            # Zeros: kube-proxy leaves the conntrack sysctls alone; no route_localnet for localhost NodePorts.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
            "oomScoreAdj": 0,  # as the kubelet's
        }
        (self.dir / "kube-proxy-config.json").write_text(json.dumps(config, indent=1))
        self._spawn_system("kube-proxy", ["kube-proxy", f"--config={self.dir / 'kube-proxy-config.json'}"])

    def _spawn_system(self, name: str, command: list[str]) -> None:
        """Like `_spawn`, for a command that is not in .tools/bin (Debian's containerd) or is."""
        path = TOOLS_BIN / command[0]
        self._spawn(name, [str(path) if path.exists() else shutil.which(command[0]) or command[0], *command[1:]])

    def _node_ready(self) -> bool:
        done = self.kubectl("get", "node", NODE_NAME, "-o", "json", timeout=10)
        if done.returncode != 0:
            return False
        conditions = json.loads(done.stdout)["status"].get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    # --- teardown ---

    def _delete_all_pods(self, timeout: float = 60) -> None:
        """Every Pod on the node deleted through the API; the kubelet stops their containers."""
        # CronJobs and Jobs first, or their controllers make new Pods.
        self.kubectl("delete", "cronjobs,jobs,pods", "--all", "--all-namespaces", "--wait=false", "--grace-period=5",
                     timeout=30)

        def gone() -> bool:
            done = self.kubectl("get", "pods", "--all-namespaces", "-o", "name", timeout=10)
            return done.returncode == 0 and not done.stdout.strip()

        try:
            wait_for("the node's Pods to go", gone, timeout)
        except AssertionError:
            pass  # the containers are killed below

    def _kubepods_cgroups(self) -> list[Path]:
        return [p for p in CGROUP_ROOT.glob("*/kubepods*") if p.is_dir()] if CGROUP_ROOT.is_dir() else []

    def _kill_containers(self) -> None:
        """Container processes the kubelet could not stop (they live in the kubepods cgroups), and
        containerd's shims (their command lines name our containerd socket)."""
        victims = set()
        for top in self._kubepods_cgroups():
            for procs in top.rglob("cgroup.procs"):
                victims.update(int(pid) for pid in procs.read_text().split())
        victims.update(p.pid for p in self.leftover_processes())
        victims.discard(os.getpid())
        processes = []
        for pid in victims:
            try:
                processes.append(psutil.Process(pid))
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        psutil.wait_procs(processes, timeout=10)

    def _mounts(self) -> list[str]:
        roots = (str(self.dir), "/var/lib/kubelet", "/run/containerd")
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        return [m for m in mounts if m.startswith(roots)]

    def _restore_machine(self) -> None:
        """Every step, even after one failed (the failures are raised together at the end)."""
        errors = []
        for step in (self._unmount, self._remove_cgroups, self._kube_proxy_cleanup, self._remove_kube_chains,
                     self._remove_network, self._restore_sysctls, self._remove_host_paths):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the remaining steps must still run
                errors.append(f"{step.__name__}: {exc!r}")
        if errors:
            raise RuntimeError("the node's teardown failed: " + "; ".join(errors))

    def _unmount(self) -> None:
        for mount in sorted(self._mounts(), key=len, reverse=True):
            _run("umount", "--lazy", mount)

    def _remove_cgroups(self) -> None:
        """Deepest first; a cgroup whose last process is still exiting is busy for a moment."""
        for top in self._kubepods_cgroups():
            for cgroup in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                wait_for(f"rmdir {cgroup}", lambda c=cgroup: _rmdir(c), 10, interval=0.2)
            wait_for(f"rmdir {top}", lambda t=top: _rmdir(t), 10, interval=0.2)

    def _kube_proxy_cleanup(self) -> None:
        if "kube-proxy" not in self.processes:
            return  # it never ran
        _check(_run(str(TOOLS_BIN / "kube-proxy"), "--cleanup", timeout=60), "kube-proxy --cleanup")

    def _restore_sysctls(self) -> None:
        for name, value in self._sysctls.items():
            if read_sysctls().get(name) != value:
                _sysctl_path(name).write_text(value)

    def _remove_kube_chains(self) -> None:
        """What `kube-proxy --cleanup` leaves: the kubelet's chains (KUBE-KUBELET-CANARY, KUBE-FIREWALL, ...)."""
        for save, tool in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
            table, chains = "", []
            for line in _run(save).stdout.decode().splitlines():
                if line.startswith("*"):
                    table = line[1:]
                elif line.startswith(":KUBE-"):
                    chains.append((table, line[1:].split()[0]))
                elif line.startswith("-A ") and " -j KUBE-" in line and not line.split()[1].startswith("KUBE-"):
                    _run(tool, "-t", table, "-D", *line.split()[1:])
            for table, chain in chains:
                _run(tool, "-t", table, "-F", chain)
            for table, chain in chains:
                _run(tool, "-t", table, "-X", chain)

    def _remove_host_paths(self) -> None:
        """HOST_PATHS that did not exist before the node started. /run/containerd also holds the shim
        sockets of any other containerd (a private dockerd's): only sockets nobody has bound go, then
        empty directories."""
        in_use = _unix_sockets_in_use()
        for path in self._absent_paths:
            if not os.path.lexists(path):
                continue
            if path != "/run/containerd":
                shutil.rmtree(path, ignore_errors=True)
                continue
            for entry in sorted(Path(path).rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if entry.is_socket() and str(entry) not in in_use:
                    entry.unlink()
                elif entry.is_dir() and not any(entry.iterdir()):
                    entry.rmdir()
            if not any(Path(path).iterdir()):
                Path(path).rmdir()
