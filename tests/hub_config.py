"""jupyterhub_config.py of the test hub that `tests.localhub.LocalHub` starts with `-f`.

LocalHub writes the hub's parameters (ports, paths, admin token, ...) to a JSON file in its
work directory and names it in $LOCALHUB_PARAMS; this file only turns them into traitlets
config, so one config serves every test hub.

One hub covers success and failure: a `pre_spawn_hook` picks a *behaviour* per spawn, from
the `user_options` keys "behaviour" / "delay" when present, else from the user-name prefix:

=============  ===============================  ==================================================
behaviour      chosen by                        what the single-user server does
=============  ===============================  ==================================================
normal         default, or prefix `normal-`     a normal jupyter-server single-user server
slow           `slow<N>-...` (`slow3-alice`),   starts N seconds later (default 3); its
               or {"behaviour": "slow",         http_timeout/start_timeout are raised by N so the
               "delay": N}, or {"delay": N}     hub does not fail it
failexit       prefix `failexit-`               exits at once (status 1) with a message on stderr;
                                                http_timeout lowered to 3 s so the hub notices soon
failmissing    prefix `failmissing-`            the command does not exist (Popen raises)
=============  ===============================  ==================================================

Every spawn the hook sees is appended as one JSON line to `<workdir>/spawns.jsonl`:
{"user", "server_name", "user_options", "behaviour", "delay", "time"} (read it with
`LocalHub.spawn_records`).

How each behaviour surfaces on the REST API, measured on JupyterHub 6.1.1 and 5.5.4
(SimpleLocalProcessSpawner, node configurable-http-proxy 5.3.0, 2 cores). The same on both
lines unless a version is named. "sst" = the hub's slow_spawn_timeout (default 10 s).

- normal: POST 201 after 2-4 s (sst 10); with sst 0, 202 at once, then the stream sends
  "Server requested" (0), "Spawning server..." (50), "Server ready at /user/<name>/" (100,
  ready: true) 2-4 s later.
- slow N: the same, N s later (POST 201 only while N + ~3 s < sst).
- failmissing: sst 10: POST **500** after ~0.05 s; the body's message is generic:
  6.1.1 "Internal Server Error", 5.5.4 "error". A progress GET afterwards answers 200 with
  one event {"progress": 100, "failed": true, "message": "Spawn failed: [Errno 2] No such
  file or directory: '/nonexistent/jupyterhub-singleuser'"}.
  sst 0: POST **202**, and the stream's first and only event is that `failed` event (~0.1 s).
- failexit: the process is gone at once, but the hub only notices at http_timeout (3 s).
  sst 10: POST **500** after ~3 s; message 6.1.1 "Internal Server Error", 5.5.4 "timeout".
  sst 0: POST **202**; the stream sends "Server requested", "Spawning server...", then ~3 s
  later {"progress": 100, "failed": true, "message": "Spawn failed: Server at
  http://127.0.0.1:<port>/user/<name>/api didn't respond in 3 seconds"} (also the one event
  of a progress GET after the POST failed). The stderr line is in the hub's log.
- After any failure the entry has left `servers`: `servers == {}` when read right after the
  failing POST or the `failed` event.
- DELETE during a pending slow spawn (sst 0), 6.1.1 and 5.5.4 alike: **204** after ~1 s, the
  spawn is cancelled, `servers == {}` at once, the delayed process is stopped. A progress
  stream open at that moment ends with {"progress": 100, "ready": true, "message": "Server
  ready at /user/<name>/"} - not a failure: confirm readiness from the server model.
  With sst 10, a DELETE while the spawn POST still blocks: DELETE 204, and the blocked POST
  answers 500 "Internal Server Error" at the same moment.

- A restart (LocalHub.stop_hub_process, then start) with cleanup_servers and cleanup_proxy off
  (6.1.1): the new hub finds the old proxy with another auth token, stops it and starts its own,
  which answers a plain-text 404 "Not Found" (configurable-http-proxy's, no JSON) for every path
  until the hub has added its route (~0.4 s; `hub_route_delay` N widens it to N s). A spawn that was
  pending shows as `"pending": "check"` with its old `started` as soon as the hub answers, and as
  ready once the hub has found it up.
- The spawn request's body is the spawn's user_options; a request without any reuses the last
  spawn's (a "fixed" spawn after a failing one must say {"behaviour": "normal"}).
- A progress stream asked for when no spawn is pending and the last one failed answers 200 with one
  event, that failure: {"progress": 100, "failed": true, "message": "Spawn failed: ..."}. A spawn
  request taken in after it replaces the failed spawner (the stream then tells the new spawn).

Also: named servers are on, `consecutive_failure_limit` is 0 (the failure behaviours must
not make the hub exit), and users keep the default `user` role, so a user's own token with
the default scopes ("inherit") can start, reach and stop that user's servers.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

# Names shared with tests/localhub.py (kept literal: this file is exec'd by traitlets, not imported).
PARAMS_ENV = "LOCALHUB_PARAMS"
MARKER_ENV = "LOCALHUB_ID"

DEFAULT_SLOW_DELAY = 3.0
FAILEXIT_HTTP_TIMEOUT = 3
MISSING_COMMAND = "/nonexistent/jupyterhub-singleuser"
# The slow behaviour's command: sleep argv[1] seconds, then exec argv[2:] (the real server).
SLOW_START = (
    "import os, signal, sys, time; "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); "  # a cancelled spawn ends quietly
    "time.sleep(float(sys.argv[1])); os.execv(sys.argv[2], sys.argv[2:])"
)
BEHAVIOURS = ("normal", "slow", "failexit", "failmissing")

params = json.loads(Path(os.environ[PARAMS_ENV]).read_text(encoding="utf-8"))
workdir = Path(params["workdir"])
singleuser = str(Path(params["bin_dir"]) / "jupyterhub-singleuser")
spawn_log = workdir / "spawns.jsonl"

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

# --- network: everything on loopback, on the free ports LocalHub picked ---
c.JupyterHub.ip = params.get("ip", "127.0.0.1")
c.JupyterHub.port = params["proxy_port"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = params["hub_port"]
c.JupyterHub.base_url = params["base_url"]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{params['proxy_api_port']}"
c.ConfigurableHTTPProxy.command = [params["proxy_command"]]

# --- state: all inside the work directory ---
c.JupyterHub.db_url = f"sqlite:///{workdir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(workdir / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(workdir / "jupyterhub.pid")
c.ConfigurableHTTPProxy.pid_file = str(workdir / "jupyterhub-proxy.pid")
# Stop single-user servers and the proxy when the hub stops (the defaults, relied on by LocalHub.stop).
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True

# --- auth: anyone may log in; the admin token is a service's ---
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{"name": "localhub-admin", "api_token": params["admin_token"]}]
c.JupyterHub.load_roles = [
    {
        "name": "localhub-admin",
        "services": ["localhub-admin"],
        # What LocalHub's helpers need: users, their servers and tokens, groups, and reaching servers.
        "scopes": ["admin:users", "admin:servers", "tokens", "access:servers", "read:users", "list:users", "admin:groups"],
    }
]

# --- spawning ---
c.JupyterHub.spawner_class = "simple"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.consecutive_failure_limit = 0
c.Spawner.ip = "127.0.0.1"
c.SimpleLocalProcessSpawner.home_dir_template = str(workdir / "home" / "{username}")
c.Spawner.cmd = [singleuser]
if os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]
# Lets LocalHub find this hub's single-user servers (and their children) to kill leftovers.
c.Spawner.environment = {MARKER_ENV: params["marker"]}
if params.get("slow_spawn_timeout") is not None:
    c.JupyterHub.tornado_settings = {"slow_spawn_timeout": params["slow_spawn_timeout"]}
if params.get("hub_route_delay"):
    # The proxy answers 404 for everything until the hub's route is added: a restart's window, made wide.
    import asyncio

    from jupyterhub.proxy import ConfigurableHTTPProxy

    class SlowHubRouteProxy(ConfigurableHTTPProxy):
        async def add_hub_route(self, hub):
            await asyncio.sleep(float(params["hub_route_delay"]))
            await super().add_hub_route(hub)

    c.JupyterHub.proxy_class = SlowHubRouteProxy


def choose_behaviour(user_name: str, user_options: dict) -> tuple[str, float | None]:
    """(behaviour, delay) for one spawn: user_options win over the user-name prefix."""
    if "behaviour" in user_options or "delay" in user_options:
        behaviour = str(user_options.get("behaviour", "slow"))
        delay = user_options.get("delay")
    else:
        match = re.match(r"(normal|slow|failexit|failmissing)(\d*)-", user_name)
        behaviour = match.group(1) if match else "normal"
        delay = match.group(2) if match else None
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown test-hub behaviour {behaviour!r}; known: {', '.join(BEHAVIOURS)}")
    if behaviour != "slow":
        return behaviour, None
    return behaviour, float(delay) if delay not in (None, "") else DEFAULT_SLOW_DELAY


def pre_spawn_hook(spawner) -> None:
    """Record the spawn, then set the command and timeouts of the chosen behaviour.

    A spawner object is reused for the next spawn of the same server, so every behaviour
    sets all three of cmd, http_timeout and start_timeout, from the configured values.
    """
    options = dict(spawner.user_options or {})
    error = None
    try:
        behaviour, delay = choose_behaviour(spawner.user.name, options)
    except ValueError as exc:
        behaviour, delay, error = "invalid", None, exc
    record = {
        "user": spawner.user.name,
        "server_name": spawner.name,
        "user_options": options,
        "behaviour": behaviour,
        "delay": delay,
        "time": time.time(),
        # When the hub created the user: two spawns of one name with different ones were two users
        # (tests/test_fresh_user.py: each --fresh-user run is a first-time user).
        "user_created": str(spawner.user.created),
    }
    with spawn_log.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    if error is not None:
        raise error

    if not hasattr(spawner, "_localhub_timeouts"):
        spawner._localhub_timeouts = (spawner.http_timeout, spawner.start_timeout)
    http_timeout, start_timeout = spawner._localhub_timeouts
    cmd = [singleuser]
    if behaviour == "slow":
        # Sleep, then exec the real server with the args the spawner appends. Python rather than
        # `sh -c 'sleep N; exec ...'`: sh defers SIGINT/SIGTERM until its `sleep` child ends, so
        # a DELETE during the delay would take the spawner's full interrupt+term+kill timeouts.
        cmd = [sys.executable, "-c", SLOW_START, f"{delay:g}", singleuser]
        http_timeout += int(delay) + 1
        start_timeout += int(delay) + 1
    elif behaviour == "failexit":
        message = "localhub failexit behaviour: this single-user server exits at once with status 1"
        cmd = ["/bin/sh", "-c", f"echo '{message}' >&2; exit 1", "localhub-failexit"]
        http_timeout = FAILEXIT_HTTP_TIMEOUT
    elif behaviour == "failmissing":
        cmd = [MISSING_COMMAND]
    spawner.cmd = cmd
    spawner.http_timeout = http_timeout
    spawner.start_timeout = start_timeout


c.Spawner.pre_spawn_hook = pre_spawn_hook

# --- the caller's additions (LocalHub(extra_config=...)) come last, so they win ---
if params.get("extra_config"):
    exec(compile(params["extra_config"], "<LocalHub extra_config>", "exec"), {"c": c})
