"""A real JupyterHub on 127.0.0.1 for the tests and `make demo`.

`LocalHub` runs `jupyterhub -f tests/hub_config.py` as a subprocess, with everything it
writes (sqlite, cookie secret, pid files, user homes, its log, the spawn records) inside
one work directory, and the node configurable-http-proxy from this repository's
node_modules in front of it. The hub's behaviours per spawn (normal, slow, failexit,
failmissing) are described in tests/hub_config.py.

No process may outlive a test run. Every process of one hub carries the variable
LOCALHUB_ID=<random id> in its environment: the hub gets it from us, the proxy inherits it
from the hub, the single-user servers get it through `Spawner.environment`. `stop()` asks the
hub to shut down (it stops its servers and the proxy), then kills whatever still carries the
id, and `leftover_processes()` proves nothing does. The hub also gets SIGTERM if the Python
process that started it dies (PR_SET_PDEATHSIG), so a killed test run cleans up too.

    python -m tests.localhub serve      # a hub for humans: prints its URL and admin token
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote

import psutil
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
HUB_CONFIG = Path(__file__).resolve().parent / "hub_config.py"
PROXY_COMMAND = REPO_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
# Also spelled out in hub_config.py, which traitlets executes rather than imports.
PARAMS_ENV = "LOCALHUB_PARAMS"
MARKER_ENV = "LOCALHUB_ID"
# The caller's JupyterHub/proxy settings must not leak into the test hub.
_ISOLATED_ENV_PREFIXES = ("JUPYTERHUB_", "CONFIGPROXY_", "JPY_")
_POLL = 0.1
# The hub's command starts with this: ask the kernel for SIGTERM when the parent (the test
# process) dies, then exec jupyterhub. The hub then stops its servers and proxy itself. (A
# preexec_fn could do the same, but is unsafe when the test process runs threads.)
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM); "  # 1 = PR_SET_PDEATHSIG (Linux)
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all bound at once, so no duplicates)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def until_stopped(started, name: str):
    """For a fixture: yield a started LocalHub or ControlPlane, stop it after, check that none of its
    processes is left."""
    try:
        yield started
    finally:
        started.stop()
    leftovers = started.leftover_processes()
    assert not leftovers, f"{name} left processes behind: {[p.pid for p in leftovers]}"


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = _POLL):
    """Poll `condition` until it returns a truthy value (returned) or `timeout` s pass (TimeoutError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class LocalHub:
    """One throw-away JupyterHub on loopback; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        *,
        base_url: str = "/",
        slow_spawn_timeout: float | None = None,
        extra_config: str = "",
        ip: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        settings: dict | None = None,
    ):
        """`env`: more variables for the hub process. `settings`: JSON-able values for `extra_config`,
        which reads them from the parameters file as params["settings"] (tests/kubespawner_hub.py)."""
        self.workdir = Path(workdir).resolve()
        self.base_url = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
        self.slow_spawn_timeout = slow_spawn_timeout
        self.extra_config = extra_config
        # Where the proxy (the hub's public URL) listens: a test node's Pods reach the host at its bridge address.
        self.ip = ip
        self.env = dict(env or {})
        self.settings = settings
        self.admin_token = secrets.token_hex(16)
        self.marker = secrets.token_hex(8)
        self.log_file = self.workdir / "jupyterhub.log"
        self.spawn_log = self.workdir / "spawns.jsonl"
        self.proxy_pid_file = self.workdir / "jupyterhub-proxy.pid"
        self.url = ""
        self.api_url = ""
        self.version = ""
        self._proc: subprocess.Popen | None = None
        self._proxy_port = 0
        self._ports: list[int] = []

    # --- lifecycle ---

    def start(self, timeout: float = 60, *, hub_route_delay: float | None = None) -> LocalHub:
        """Start the hub and wait until GET <url>hub/api/ answers 200 through the proxy.

        After `stop_hub_process()` this starts it again on the same ports, with the same database (and,
        as JupyterHub does when the old proxy's token is not its own, a new proxy). `hub_route_delay`: the
        hub adds its own route to the proxy only that many seconds after it listens, so that the proxy
        answers its plain 404 "Not Found" meanwhile (a restart's window, made wide; tests/hub_config.py).
        """
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError("this LocalHub was already started")
        bin_dir = Path(sys.executable).parent
        for needed in (bin_dir / "jupyterhub", bin_dir / "jupyterhub-singleuser", PROXY_COMMAND):
            if not needed.exists():
                raise FileNotFoundError(f"{needed} is missing: run `make install`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._ports = self._ports or _free_ports(3)
        proxy_port, proxy_api_port, hub_port = self._ports
        self._proxy_port = proxy_port
        self.url = f"http://{self.ip}:{proxy_port}{self.base_url}"
        self.api_url = self.url + "hub/api/"
        params = {
            "workdir": str(self.workdir),
            "bin_dir": str(bin_dir),
            "proxy_command": str(PROXY_COMMAND),
            "ip": self.ip,
            "proxy_port": proxy_port,
            "proxy_api_port": proxy_api_port,
            "hub_port": hub_port,
            "base_url": self.base_url,
            "admin_token": self.admin_token,
            "marker": self.marker,
            "slow_spawn_timeout": self.slow_spawn_timeout,
            "extra_config": self.extra_config,
            "settings": self.settings,
            "hub_route_delay": hub_route_delay,
        }
        params_file = self.workdir / "localhub.json"
        params_file.write_text(json.dumps(params, indent=2), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(_ISOLATED_ENV_PREFIXES)}
        env.update({**self.env, PARAMS_ENV: str(params_file), MARKER_ENV: self.marker})

        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _DIE_WITH_PARENT, str(bin_dir / "jupyterhub"), "-f", str(HUB_CONFIG)],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(self.stop)
        try:
            self.version = wait_for(self._answering, timeout, f"the hub at {self.api_url}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop_hub_process(self, timeout: float = 20) -> None:
        """Stop the hub process alone (SIGTERM), as a restart of zero-to-jupyterhub's hub pod does.

        With `cleanup_servers = False` and `cleanup_proxy = False` (extra_config), its single-user
        servers and the proxy keep running; `start()` brings the hub back to them.
        """
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        self._proc.wait(timeout=timeout)

    def _answering(self) -> str | None:
        if self._proc.poll() is not None:
            raise RuntimeError(
                f"jupyterhub exited with status {self._proc.returncode} while starting; log:\n{self.log_tail()}"
            )
        try:
            r = requests.get(self.api_url, timeout=2)
        except (requests.ConnectionError, requests.Timeout):  # a (re)starting hub on a loaded machine may be slow
            return None
        return r.json()["version"] if r.status_code == 200 else None

    def stop(self) -> None:
        """Stop the hub and everything it started; idempotent, and safe after a failed start."""
        if self._proc is None:
            return
        atexit.unregister(self.stop)
        try:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    # The hub stops its servers (up to the spawners' kill timeouts) and the proxy.
                    self._proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        with suppress(ProcessLookupError, psutil.Error):  # gone already
            os.killpg(self._proc.pid, signal.SIGKILL)  # the hub's own session/process group
        if self._proc.poll() is None:
            self._proc.wait(timeout=10)
        # Whatever the hub did not clean up (it was killed, or timed out) is a throw-away
        # test process: no graceful shutdown is owed to it.
        procs = self.leftover_processes()
        for p in procs:
            with suppress(ProcessLookupError, psutil.Error):
                p.kill()
        # Not psutil.wait_procs: orphans are reaped by pid 1, maybe late; a zombie is dead enough.
        wait_for(lambda: not any(_alive(p) for p in procs), 5, "killed processes to exit", interval=0.02)

    def leftover_processes(self) -> list[psutil.Process]:
        """This hub's processes still alive: the hub, the proxy, single-user servers and their children."""
        found: dict[int, psutil.Process] = {}
        if self._proc is not None and self._proc.poll() is None:
            found[self._proc.pid] = psutil.Process(self._proc.pid)
        proxy = self._proxy_process()
        if proxy is not None:
            found[proxy.pid] = proxy
        for p in psutil.process_iter():
            with suppress(ProcessLookupError, psutil.Error):
                if p.pid not in found and p.environ().get(MARKER_ENV) == self.marker:
                    found[p.pid] = p
        return [p for p in found.values() if _alive(p)]

    def _proxy_process(self) -> psutil.Process | None:
        """The proxy named in the hub's pid file, if that pid is still our proxy (pids get reused)."""
        try:
            p = psutil.Process(int(self.proxy_pid_file.read_text().strip()))
            return p if f"--port {self._proxy_port} " in " ".join(p.cmdline()) + " " else None
        except (OSError, ValueError, psutil.Error):
            return None

    def __enter__(self) -> LocalHub:
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log_tail(self, n: int = 50) -> str:
        """The last `n` lines of the hub's log (it also holds the proxy's and the servers' output)."""
        try:
            lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    # --- REST API helpers, all as the admin service ---

    def api(self, method: str, path: str, **kw) -> requests.Response:
        """`method` api_url + path with the admin token; keyword arguments go to requests."""
        headers = {"Authorization": f"token {self.admin_token}", **kw.pop("headers", {})}
        kw.setdefault("timeout", 30)
        return requests.request(method, self.api_url + path.lstrip("/"), headers=headers, **kw)

    def create_user(self, name: str) -> None:
        r = self.api("POST", f"users/{quote(name)}")
        if r.status_code not in (201, 409):  # 409: exists already
            _raise(r, f"create user {name}")

    def new_token(
        self,
        name: str,
        scopes: list[str] | None = None,
        expires_in: int | None = None,
        note: str = "test",
    ) -> str:
        """A new API token of user `name`; scopes None = the hub's default ("inherit")."""
        body: dict = {"note": note}
        if scopes is not None:
            body["scopes"] = scopes
        if expires_in is not None:
            body["expires_in"] = expires_in
        r = self.api("POST", f"users/{quote(name)}/tokens", json=body)
        if r.status_code != 201:
            _raise(r, f"create a token for {name}")
        return r.json()["token"]

    def user_model(self, name: str) -> dict:
        r = self.api("GET", f"users/{quote(name)}")
        if r.status_code != 200:
            _raise(r, f"read user {name}")
        return r.json()

    def servers(self, name: str) -> dict:
        return self.user_model(name)["servers"]

    @property
    def cancels_pending_spawns(self) -> bool:
        """Whether a DELETE cancels a pending spawn (JupyterHub 5.1+); before, it answers 400 until
        the spawn ends by itself."""
        major, minor = (int(part) for part in self.version.split(".")[:2])
        return (major, minor) >= (5, 1)

    def server_path(self, name: str, server_name: str = "") -> str:
        """API path of a user's default or named server, relative to api_url."""
        if server_name:
            return f"users/{quote(name)}/servers/{quote(server_name)}"
        return f"users/{quote(name)}/server"

    def start_server(
        self,
        name: str,
        server_name: str = "",
        options: dict | None = None,
        wait: bool = True,
        timeout: float = 60,
    ) -> requests.Response:
        """Start a server as admin (201/202 else HTTPError); wait=True waits until it is ready."""
        r = self.api("POST", self.server_path(name, server_name), json=options or {})
        if r.status_code not in (201, 202):
            _raise(r, f"start server {name}/{server_name}")
        if wait and r.status_code == 202:
            wait_for(lambda: self._ready(name, server_name), timeout, f"server {name}/{server_name} ready")
        return r

    def _ready(self, name: str, server_name: str) -> bool:
        server = self.servers(name).get(server_name)
        if server is None:
            raise RuntimeError(f"spawn of {name}/{server_name} failed; hub log:\n{self.log_tail(20)}")
        return bool(server["ready"])

    def stop_all_servers(self, name: str, timeout: float = 60) -> None:
        """DELETE each of the user's servers (also pending ones) and wait until `servers` is empty."""
        r = self.api("GET", f"users/{quote(name)}")
        if r.status_code == 404:
            return

        def stop_each() -> bool:
            for server_name, server in self.servers(name).items():
                if server.get("pending") == "stop":
                    continue
                d = self.api("DELETE", self.server_path(name, server_name))
                if d.status_code == 400 and "pending spawn" in d.text:
                    continue  # JupyterHub before 5.1: wait for the spawn to end, then stop it
                if d.status_code not in (202, 204, 404):
                    _raise(d, f"stop server {name}/{server_name}")
            return not self.servers(name)

        wait_for(stop_each, timeout, f"the servers of {name} to stop", interval=0.5)

    def spawn_records(self, name: str) -> list[dict]:
        """The spawns of user `name` that the pre_spawn_hook recorded, oldest first."""
        try:
            lines = self.spawn_log.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        records = (json.loads(line) for line in lines if line.strip())
        return [r for r in records if r["user"] == name]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _raise(r: requests.Response, doing: str) -> None:
    raise requests.HTTPError(f"{doing}: {r.request.method} {r.url} -> {r.status_code} {r.text[:500]}", response=r)


# --- command line: python -m tests.localhub <subcommand> ---


def _serve(args: argparse.Namespace) -> int:
    """Run a hub until Ctrl-C or SIGTERM, for poking at it by hand."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="localhub-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        with LocalHub(workdir, base_url=args.base_url, slow_spawn_timeout=args.slow_spawn_timeout) as hub:
            print(f"JupyterHub {hub.version} at {hub.url}", flush=True)
            print(f"admin token: {hub.admin_token}", flush=True)
            print(f"work dir:    {workdir} (log: {hub.log_file})", flush=True)
            print("Ctrl-C stops it.", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("stopping", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.localhub", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a local hub until Ctrl-C; print its URL and admin token")
    serve.add_argument("--workdir", help="keep the hub's files here (default: a temporary directory)")
    serve.add_argument("--base-url", default="/", help="the hub's base URL (default: /)")
    serve.add_argument(
        "--slow-spawn-timeout", type=float, default=None, help="seconds a spawn POST blocks; 0 = always 202"
    )
    serve.set_defaults(func=_serve)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
