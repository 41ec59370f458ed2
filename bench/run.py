"""`make bench`: the seed document's test script against `jupyterhub-canary run`, side by side on one
real local JupyterHub, several rounds each; writes bench/RESULTS.md (and bench/results.json).

The hub: tests.localhub.LocalHub with slow_spawn_timeout 1 s (the spawn POST answers 202 after 1 s)
and users named `slow1-...`, whose server process starts 1 s after the request (tests/hub_config.py).

Measured per cycle, all on this machine's wall clock (time.time()):
- hub_ready: when the hub marked the server ready, recorded *inside the hub* by a spawner subclass
  (extra_config below) at the moment its spawn-pending flag clears while the server is up: the
  instant `ready` turns true in the REST API's server model.
- known_ready: when the client printed that it knows — the script's "* Server is running at" line,
  the canary's `phase_done` of `ready_wait` — stamped as each line arrives on the pipe (both the same way).
- cycle: process start to exit. CPU seconds and peak RSS: the child's own rusage (os.wait4).
- the checks against the server: in each round the canary also runs with --check-kernel
  --check-storage --check-lab on a fresh user; what they add is their phases (from its
  `canary_result`) and, noisier, its cycle against the plain canary's of the same round.
Cold start: process start to the first HTTP request, received by a stand-in hub on loopback
(a token file; a Secret read through tests/k8s_stub.py's HTTPS stub of the Kubernetes API).

    python -m bench.run [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.k8s_stub import SecretStub  # noqa: E402
from tests.localhub import LocalHub  # noqa: E402

BIN = Path(sys.executable).parent
CANARY = BIN / "jupyterhub-canary"
SEED_SCRIPT = ROOT / "bench" / "seed_script.py"
LAUNCH = ROOT / "bench" / "launch.py"
USER_PREFIX = "slow1-"  # the server starts 1 s after the request, then jupyter-server's own start-up
CHECKS = ("--check-kernel", "--check-storage", "--check-lab")
CHECK_PHASES = ("kernel", "storage", "lab")
KINDS = ("script", "canary", "checks")
RESULTS = ROOT / "bench" / "RESULTS.md"
# RESULTS.md from this line on is the image benchmark's (bench/image.py): kept when this one rewrites the rest.
IMAGE_MARKER = "<!-- make bench-image: everything below is written by bench/image.py -->"

# Recorded by the hub itself: the moment a spawn stops pending with the server up (= model `ready`).
READY_HOOK = '''
import json as _json, time as _time
from jupyterhub.spawner import SimpleLocalProcessSpawner as _Simple

class BenchReadySpawner(_Simple):
    @property
    def _spawn_pending(self):
        return self.__dict__.get("_bench_spawn_pending", False)

    @_spawn_pending.setter
    def _spawn_pending(self, value):
        was = self.__dict__.get("_bench_spawn_pending", False)
        self.__dict__["_bench_spawn_pending"] = value
        if was and not value and self.ready:
            with open(%(path)r, "a") as f:
                f.write(_json.dumps({"user": self.user.name, "ready_at": _time.time()}) + "\\n")

c.JupyterHub.spawner_class = BenchReadySpawner
'''


def run_child(argv: list[str], env: dict[str, str], marker: str, workdir: Path) -> dict:
    """Run a child through bench/launch.py; stamp the arrival of the first stdout line containing `marker`."""
    usage_file = workdir / "usage.json"
    started = time.time()
    process = subprocess.Popen([sys.executable, "-I", "-S", str(LAUNCH), str(usage_file), *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1)
    seen: dict = {"lines": []}

    def read() -> None:
        for line in process.stdout:
            seen["lines"].append(line.rstrip("\n"))
            if "known_ready" not in seen and marker in line:
                seen["known_ready"] = time.time()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    process.wait()
    ended = time.time()
    reader.join(10)
    usage = json.loads(usage_file.read_text())
    return {
        "started": started,
        "ended": ended,
        "cycle_s": ended - started,
        "known_ready": seen.get("known_ready"),
        "exit_code": process.returncode,
        "cpu_s": usage["cpu_s"],
        "max_rss_mb": usage["max_rss_kb"] / 1024,
        "output": seen["lines"],
    }


def hub_ready_at(records: Path, user: str) -> float | None:
    if not records.exists():
        return None
    for line in records.read_text().splitlines():
        record = json.loads(line)
        if record["user"] == user:
            return record["ready_at"]
    return None


def one_cycle(hub: LocalHub, kind: str, n: int, records: Path, workdir: Path) -> dict:
    user = f"{USER_PREFIX}bench-{kind}-{n}"
    hub.create_user(user)
    token = hub.new_token(user)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1"}
    if kind == "script":
        env.update(BENCH_HUB_URL=hub.url, BENCH_TOKEN=token, BENCH_USER=user)
        result = run_child([sys.executable, "-u", str(SEED_SCRIPT)], env, "* Server is running at", workdir)
    else:
        token_file = workdir / f"token-{n}"
        token_file.write_text(token)
        argv = [str(CANARY), "run", "--hub-url", hub.url, "--user", user, "--token-file", str(token_file),
                "--termination-log", str(workdir / "termination-log"), *(CHECKS if kind == "checks" else ())]
        result = run_child(argv, env, '"phase": "ready_wait"', workdir)
        results = [json.loads(line) for line in result["output"] if '"canary_result"' in line]
        phases = results[0]["phases_ms"] if results else {}
        if kind == "checks" and all(phases.get(phase) is not None for phase in CHECK_PHASES):
            result["checks_ms"] = sum(phases[phase] for phase in CHECK_PHASES)
            result["check_phases_ms"] = {phase: phases[phase] for phase in CHECK_PHASES}
    assert token not in "\n".join(result["output"]) or kind == "script", "the canary printed its token"
    result["hub_ready"] = hub_ready_at(records, user)
    if result["hub_ready"]:
        result["spawn_s"] = result["hub_ready"] - result["started"]
    if result["known_ready"] and result["hub_ready"]:
        result["lag_ms"] = (result["known_ready"] - result["hub_ready"]) * 1000
    # The script's DELETE may answer 202 and not wait: let the stop finish outside the measurement.
    hub.stop_all_servers(user)
    return result


# --- cold start: process start to the first HTTP request ---


class FirstRequest:
    """A stand-in hub on loopback that notes when the first request line arrives, then hangs up."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.at: float | None = None

    def wait(self, timeout: float) -> float:
        self.sock.settimeout(timeout)
        connection, _ = self.sock.accept()
        with connection:
            connection.recv(1)  # the first byte of the request
            self.at = time.time()
        return self.at

    def close(self) -> None:
        self.sock.close()


def cold_start(argv_tail: list[str], env: dict[str, str]) -> float:
    stand_in = FirstRequest()
    try:
        started = time.time()
        process = subprocess.Popen([str(CANARY), "run", "--hub-url", stand_in.url, *argv_tail],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            first = stand_in.wait(30)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        return first - started
    finally:
        stand_in.close()


def cold_starts(workdir: Path, rounds: int) -> dict[str, list[float]]:
    base_env = {"PATH": os.environ.get("PATH", "")}
    token_file = workdir / "cold-token"
    token_file.write_text("0123456789abcdef0123456789abcdef")
    common = ["--user", "u", "--termination-log", str(workdir / "t"), "--attempts", "1"]
    results: dict[str, list[float]] = {"token_file": [], "secret": []}
    with SecretStub(workdir / "k8s-stub") as stub:
        stub.put_secret("default", "canary-token", {"token": "0123456789abcdef0123456789abcdef"})
        kubeconfig = stub.write_kubeconfig(workdir / "kubeconfig", "sa-token", "default")
        for _ in range(rounds):
            results["token_file"].append(cold_start([*common, "--token-file", str(token_file)], base_env))
            results["secret"].append(cold_start(
                [*common, "--token-secret", "canary-token", "--token-secret-namespace", "default"],
                {**base_env, "KUBECONFIG": str(kubeconfig)},
            ))
    return results


# --- report ---


def med(values: list[float], digits: int = 2) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def report(data: dict) -> str:
    script, canary, cold = data["script"], data["canary"], data["cold_start_s"]
    with_checks = data.get("checks", [])

    def values(rows: list[dict], key: str) -> list[float]:
        return [r[key] for r in rows if r.get(key) is not None]

    lag_c, lag_s = values(canary, "lag_ms"), values(script, "lag_ms")
    cyc_c, cyc_s = values(canary, "cycle_s"), values(script, "cycle_s")
    # Script and canary cycles of the same round, side by side (a round missing either is left out).
    ratios = [
        s["cycle_s"] / c["cycle_s"]
        for s, c in zip(script, canary, strict=True)
        if s.get("cycle_s") is not None and c.get("cycle_s") is not None
    ]
    added = values(with_checks, "checks_ms")
    # The cycle with the checks against the plain canary's of the same round.
    pairs = [(c, k) for c, k in zip(canary, with_checks, strict=False)
             if c.get("cycle_s") is not None and k.get("cycle_s") is not None]
    cycle_delta = [k["cycle_s"] - c["cycle_s"] for c, k in pairs]
    cycle_ratio = [k["cycle_s"] / c["cycle_s"] for c, k in pairs]

    def phase(name: str) -> list[float]:
        return [r["check_phases_ms"][name] for r in with_checks if r.get("check_phases_ms")]

    rss = values(canary, "max_rss_mb")
    cpu = values(canary, "cpu_s")
    checks = [
        ("detection lag median ≤ 100 ms", statistics.median(lag_c) <= 100, f"{statistics.median(lag_c):.0f} ms"),
        ("canary cycle ≥ 1.5× faster than the script's", statistics.median(ratios) >= 1.5,
         f"{statistics.median(ratios):.2f}×"),
        ("peak RSS ≤ 80 MB", max(rss) <= 80, f"max {max(rss):.1f} MB"),
        ("kernel + storage + JupyterLab checks add < 2 s (their phases, every round)",
         bool(added) and max(added) < 2000, f"median {statistics.median(added):.0f} ms, max {max(added):.0f} ms"
         if added else "not measured"),
        ("cold start ≤ 0.6 s with a token file", statistics.median(cold["token_file"]) <= 0.6,
         f"median {statistics.median(cold['token_file']):.3f} s"),
    ]
    lines = [
        "# Benchmark: `jupyterhub-canary run` against the seed document's test script",
        "",
        f"Reproduce: `make bench` (`.venv/bin/python -m bench.run --rounds {data['rounds']}`, about 2 minutes)."
        f" This run: {data['when']}; raw numbers in bench/results.json.",
        "",
        f"Machine: {data['machine']}. JupyterHub {data['hub_version']} (tests/localhub.py: SimpleLocalProcessSpawner,"
        " node configurable-http-proxy), `slow_spawn_timeout` 1 s, users `slow1-*` whose server process starts 1 s after the"
        " request (then jupyter-server's own start-up): ready a few seconds after the request."
        " The script and the canary run alternately, one cycle at a time, each on a fresh user;"
        " who goes first alternates by round.",
        "",
        "Medians, (min–max) over the rounds:",
        "",
        "| measure | seed script | jupyterhub-canary run |",
        "|---|---|---|",
        f"| readiness detection lag (ms): known ready − hub marked ready | {med(lag_s, 0)} | {med(lag_c, 0)} |",
        f"| cycle time (s): process start to exit | {med(cyc_s)} | {med(cyc_c)} |",
        f"| cycle ratio script / canary (same round) | — | {med(ratios)} |",
        f"| CPU seconds of the process (user + system) | {med(values(script, 'cpu_s'))} | {med(cpu)} |",
        f"| peak RSS of the process (MB) | {med(values(script, 'max_rss_mb'), 1)} | {med(rss, 1)} |",
        f"| for reference: hub ready − process start (s) | {med(values(script, 'spawn_s'))} | {med(values(canary, 'spawn_s'))} |",
        f"| exit codes | {sorted({r['exit_code'] for r in script})} | {sorted({r['exit_code'] for r in canary})} |",
        "",
        "The checks against the server on a healthy server: the canary again, same rounds, fresh users, with"
        f" `{' '.join(CHECKS)}` (ms unless said):",
        "",
        "| measure | with the checks |",
        "|---|---|",
        *(f"| phase `{name}` | {med(phase(name), 0)} |" for name in CHECK_PHASES),
        f"| the three phases together | {med(added, 0)} |",
        f"| cycle with the checks − plain canary's, same round (s; spawn times vary by seconds) | {med(cycle_delta)} |",
        f"| cycle ratio with the checks / plain, same round | {med(cycle_ratio)} |",
        f"| CPU seconds of the process | {med(values(with_checks, 'cpu_s'))} |",
        f"| peak RSS of the process (MB) | {med(values(with_checks, 'max_rss_mb'), 1)} |",
        f"| exit codes | {sorted({r['exit_code'] for r in with_checks})} |",
        "",
        "Cold start of `jupyterhub-canary run` — process start to the first byte of its first HTTP request,"
        f" received by a stand-in hub on loopback ({len(cold['token_file'])} runs each):",
        "",
        "| token from | cold start (s) |",
        "|---|---|",
        f"| a file (`--token-file`) | {med(cold['token_file'])} |",
        f"| a Kubernetes Secret (`--token-secret`, HTTPS stub of the API, kubeconfig) | {med(cold['secret'])} |",
        "",
        "## Targets",
        "",
        "| target | result | met |",
        "|---|---|---|",
        *(f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, ok, value in checks),
        "",
    ]
    return "\n".join(lines)


NOTES = """## How it is measured, and why the numbers are what they are

- **The checks against the server** (`--check-kernel --check-storage --check-lab`, third client of
  each round): what they add is read from their own phases in the run's `canary_result` — the cycle
  difference against the plain canary's of the same round is reported too, but it carries the
  spawn's round-to-round variation (seconds), not the checks'. Storage (PUT, GET, DELETE of a small
  file) and JupyterLab (the page, its main bundle, one federated extension's remoteEntry: ~240 kB)
  cost well under 0.1 s each. The kernel phase is nearly all the kernel's own start-up, which a user
  waits for too (ipykernel importing; the code itself runs in milliseconds; the DELETE waits for the
  kernel to exit). Load matters: at 09:03 UTC on an idle machine (load average 0.5) the three checks
  together took 0.82 s median (0.77–0.93 s); at 07:00 UTC, with five other builds and test suites on
  these 2 cores (load average 7–8), they took 2.1 s median (1.9–2.6 s), the kernel 1.9 s of it.

- **Hub-side ready moment**: a `SimpleLocalProcessSpawner` subclass in the hub's config (bench/run.py,
  `READY_HOOK`) writes `time.time()` when the spawner's spawn-pending flag clears while its server is
  up — the instant the REST API's server model turns `ready: true` (after the proxy route was added).
  The hub's log line "User … took … seconds to start" comes a few ms *earlier* (before the proxy
  route), so it would flatter both clients; the flag is the honest moment.
- **Known-ready moment**: the arrival, on the benchmark's pipe, of the line in which each client says it
  knows (the script's `* Server is running at`, the canary's `phase_done` of `ready_wait`). Same method
  for both; the pipe adds well under a millisecond.
- The canary follows the hub's progress event stream, which ends the moment the spawn is done, then
  confirms `ready` in the user model: one request, ~10 ms. The script sleeps 5 s between polls; its
  polls fall at ~1 s (right after the POST, which blocks for `slow_spawn_timeout`), ~6 s, ~11 s after
  its start, so its lag is where the ready moment falls in that rhythm: 0–5 s.
- **Cycle**: both cycles are mostly the spawn itself (the "hub ready − process start" row) plus the same
  stop: both wait for the DELETE, which the hub answers with 204 once the server has stopped (~1 s).
  The script ends at ≈ 6 s + stop when the server is ready before its second poll, the canary at
  ≈ S + stop + 0.3 s (start-up, preflight, the stale-server check, `api/status`). With S ≈ 3.5–5 s
  (a jupyter-server takes 2–4 s to start on 2 cores, after the 1 s delay) that is between 7/5.5 and
  7/4.5: **the 1.5× target sits inside the spread**, so whether a run of `make bench` meets it
  depends on its spawn times: the ratio reaches 1.5× when the spawn is done within ~3.3 s, or just
  after one of the script's polls (S ≈ 6.5 s: 12 s against 8 s). It is a property of where the spawn
  time falls on the script's 5 s grid, not of the canary's speed — what the canary saves is exactly
  the detection lag (row 1: seconds against ~10 ms). On a hub whose spawns take minutes
  (KubeSpawner, image pulls) the ratio tends to 1; the canary's gain there is knowing within
  milliseconds, waiting for the stop, and seeing failures (the script exits 0 whatever happens).
- Spawn times vary by seconds from round to round (jupyter-server start-up on a loaded 2-core
  machine: the "hub ready − process start" row), and with them the ratio of each round (its min–max).
  Medians of whole runs of `make bench` seen so far: 1.10×, 1.44×, 1.32× (in those the canary always
  went second, spawning while the script's server was still winding down), and 1.57× with the
  order alternating by round, as now.
- **CPU and RSS** are the child process's own rusage, taken by bench/launch.py, a small stdlib-only
  launcher the child is forked from (forked from the benchmark itself, the child would report the
  benchmark's RSS: Linux carries a peak RSS across exec). The floor is the launcher's ~8 MB. The
  canary is Python with requests, structlog and tenacity. prometheus_client and websocket-client are
  imported only with `--pushgateway-url` / `--check-kernel`; the `kubernetes` client only when the token
  comes from a Secret — which is why the Secret cold start is several times the token-file one.
  The benchmark runs in the test environment, where the Secret figure is inflated: there
  `import kubernetes` also imports the test-only `kubernetes-validate` (through
  `kubernetes.dynamic`), about 1.1 s more. In an environment with only the runtime dependencies, as
  in the image, `import kubernetes` plus `CoreV1Api` took 0.6 s (0.20 + 0.40 s, measured by hand with
  `pip install .` into a fresh venv, when that resolved to kubernetes 37.x, which imports pydantic).
  With the pinned 35.x, the image part below measures process start to the Secret GET in the image.
"""


def write_results(output: Path, text: str) -> None:
    existing = output.read_text() if output.exists() else ""
    image_part = existing[existing.index(IMAGE_MARKER):] if IMAGE_MARKER in existing else ""
    output.write_text(text + ("\n" + image_part if image_part else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="cycles of each client (default 5)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--report-only", type=Path, metavar="JSON", help="only rewrite the report from saved results")
    args = parser.parse_args(argv)
    if args.report_only:
        write_results(args.output, report(json.loads(args.report_only.read_text())) + "\n" + NOTES)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        records = workdir / "hub" / "ready.jsonl"
        hub = LocalHub(workdir / "hub", slow_spawn_timeout=1, extra_config=READY_HOOK % {"path": str(records)})
        data: dict = {"rounds": args.rounds, **{kind: [] for kind in KINDS}, "machine": machine(),
                      "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        with hub:
            data["hub_version"] = hub.version
            for n in range(args.rounds):
                # Rotate who goes first: the next one spawns while the one before's server is still
                # winding down, which would always handicap the same side.
                for kind in KINDS[n % len(KINDS):] + KINDS[:n % len(KINDS)]:
                    row = one_cycle(hub, kind, n, records, workdir)
                    print(f"{kind:6} round {n}: cycle {row['cycle_s']:.2f}s lag {row.get('lag_ms', float('nan')):.0f}ms"
                          f" cpu {row['cpu_s']:.2f}s rss {row['max_rss_mb']:.1f}MB exit {row['exit_code']}", flush=True)
                    data[kind].append({k: v for k, v in row.items() if k != "output"})
        data["cold_start_s"] = cold_starts(workdir, args.rounds)
        print("cold start:", {k: [round(v, 3) for v in vs] for k, vs in data["cold_start_s"].items()}, flush=True)
    text = report(data) + "\n" + NOTES
    write_results(args.output, text)
    args.output.with_name("results.json").write_text(json.dumps(data, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
