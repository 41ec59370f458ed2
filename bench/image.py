"""`make bench-image` (part of `make bench`): the product image against today's, built in one run.

Builds, in a private dockerd on the stand-in bases of tests/images.py (root and Debian's docker.io
needed; without them this part is skipped and says so):
- `distroless`: this Dockerfile on its default bases (distroless Python, built on Debian 13);
- `slim`: this Dockerfile with python:3.13-slim as both bases (the override for sites' own bases);
- `main`: the Dockerfile and sources of the commit `main` (git archive), on python:*-slim as that
  Dockerfile's default base, with its then unpinned dependencies resolved today.
Then, per image and round (the images take turns, the order alternating by round), run as the chart
runs it (read-only root, /tmp a tmpfs, uid 65532, host network):
- size: the image's uncompressed size (`docker image inspect`);
- `docker run IMAGE --help`: wall time of the whole docker command, and inside the container the
  process start to exit of `jupyterhub-canary --help` (bench/launch.py, mounted into the container);
- process start -> the Secret GET: `jupyterhub-canary run --token-secret` with a kubeconfig for the
  HTTPS stub of the Kubernetes API (tests/k8s_stub.py) on loopback; the stub notes the GET's arrival
  (the container shares the host's clock);
- a full cycle with the token from a Secret against a real local JupyterHub: its peak RSS, CPU and
  wall time (bench/launch.py's rusage of the process inside the container).

    python -m bench.image [--rounds N] [--kinds distroless,slim,main]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import IMAGE_MARKER as MARKER  # noqa: E402
from bench.run import RESULTS, machine, med  # noqa: E402
from tests import images  # noqa: E402
from tests.k8s_stub import SecretStub  # noqa: E402
from tests.localhub import LocalHub  # noqa: E402

LAUNCH = ROOT / "bench" / "launch.py"
USER = "65532:65532"
KINDS = ("distroless", "slim", "main")
TARGETS = {"size_mb": 100, "help_s": 0.35, "secret_get_s": 0.4, "cycle_rss_mb": 70}


def build(dockerd: images.Dockerd, kind: str, workdir: Path) -> str:
    tag = f"jupyterhub-canary-bench:{kind}"
    if kind != "main":
        return images.build_product(dockerd, kind, tag, workdir)
    context = workdir / "main-src"
    context.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "main"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(context)], input=archive, check=True)
    base = images.harness_layer(dockerd, images.import_standin(dockerd, "slim"), workdir / "harness-main")
    images._check(dockerd.docker("build", "--network=host", "--build-arg", f"BASE_IMAGE={base}", "--tag", tag,
                                 str(context), timeout=1200), "docker build of main")
    return tag


class Runner:
    def __init__(self, dockerd: images.Dockerd, workdir: Path) -> None:
        self.dockerd = dockerd
        self.out = workdir / "out"
        self.out.mkdir(mode=0o777)
        self.out.chmod(0o777)

    def launch(self, image: str, argv: list[str], env: dict[str, str] | None = None,
               mounts: tuple[Path, ...] = ()) -> dict:
        """`argv` in `image` under bench/launch.py: its rusage, start time and exit code."""
        usage = self.out / "usage.json"
        usage.unlink(missing_ok=True)
        options = [f"--volume={LAUNCH}:/bench/launch.py:ro", f"--volume={self.out}:/out"]
        options += [f"--volume={m}:{m}:ro" for m in mounts]
        options += [f"--env={k}={v}" for k, v in (env or {}).items()]
        done = self.docker_run(image, ["--entrypoint=/opt/canary/bin/python", *options],
                               ["-I", "-S", "/bench/launch.py", "/out/usage.json", *argv], timeout=300)
        result = json.loads(usage.read_text())
        result["exit_code"] = done.returncode
        result["output"] = done.stdout[-2000:] + done.stderr[-2000:]
        return result

    def docker_run(self, image: str, options: list[str], args: list[str], timeout: float = 120):
        return self.dockerd.docker("run", "--rm", "--read-only", "--tmpfs", "/tmp", "--network=host",
                                   f"--user={USER}", *options, image, *args, timeout=timeout)


def secret_get(runner: Runner, image: str, stub: SecretStub, kubeconfig: Path) -> float:
    seen = len(stub.requests_seen)
    arrived: dict[str, float] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if len(stub.requests_seen) > seen:
                arrived["at"] = time.time()
                return
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    result = runner.launch(image, ["jupyterhub-canary", "run", "--hub-url", "http://127.0.0.1:9/", "--user", "u",
                                   "--token-secret", "canary-token", "--token-secret-namespace", "default",
                                   "--attempts", "1", "--termination-log", "/tmp/message"],
                           env={"KUBECONFIG": str(kubeconfig)}, mounts=(stub.tmpdir,))
    stop.set()
    watcher.join(5)
    if "at" not in arrived:
        raise RuntimeError(f"{image}: no Secret GET arrived:\n{result['output']}")
    return arrived["at"] - result["started"]


def cycle(runner: Runner, image: str, hub: LocalHub, stub: SecretStub, kubeconfig: Path, n: int, kind: str) -> dict:
    user = f"bench-image-{kind}-{n}"
    hub.create_user(user)
    stub.put_secret("default", f"token-{user}", {"token": hub.new_token(user)})
    result = runner.launch(image, ["jupyterhub-canary", "run", "--termination-log", "/tmp/message"], env={
        "KUBECONFIG": str(kubeconfig), "CANARY_HUB_URL": hub.url, "CANARY_USER": user,
        "CANARY_TOKEN_SECRET": f"token-{user}", "CANARY_TOKEN_SECRET_NAMESPACE": "default",
        "CANARY_DEADLINE": "120", "CANARY_STOP_TIMEOUT": "60",
    }, mounts=(stub.tmpdir,))
    hub.stop_all_servers(user)
    if result["exit_code"] != 0:
        raise RuntimeError(f"{image}: the cycle exited {result['exit_code']}:\n{result['output']}\n{hub.log_tail()}")
    return result


def measure(kinds: list[str], rounds: int) -> dict:
    images.ensure_packages()
    data: dict = {"rounds": rounds, "kinds": kinds, "machine": machine(),
                  "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "images": {}}
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        workdir = Path(tmp)
        dockerd = images.Dockerd().start()
        try:
            tags = {}
            for kind in kinds:
                started = time.monotonic()
                tags[kind] = build(dockerd, kind, workdir)
                size = json.loads(dockerd.docker("image", "inspect", tags[kind]).stdout)[0]["Size"]
                data["images"][kind] = {"size_mb": size / 1e6, "build_s": time.monotonic() - started,
                                        "docker_run_help_s": [], "help_s": [], "secret_get_s": [],
                                        "cycle_rss_mb": [], "cycle_cpu_s": [], "cycle_s": []}
                print(f"{kind}: built in {time.monotonic() - started:.0f} s, {size / 1e6:.1f} MB", flush=True)
            runner = Runner(dockerd, workdir)
            with SecretStub(workdir / "k8s-stub") as stub, LocalHub(workdir / "hub") as hub:
                stub.put_secret("default", "canary-token", {"token": "0123456789abcdef0123456789abcdef"})
                kubeconfig = stub.write_kubeconfig(stub.tmpdir / "kubeconfig", "sa-token", "default")
                kubeconfig.chmod(0o644)
                for n in range(rounds):
                    for kind in kinds if n % 2 == 0 else kinds[::-1]:
                        row = data["images"][kind]
                        t = time.time()
                        done = runner.docker_run(tags[kind], [], ["--help"])
                        assert done.returncode == 0, done.stderr
                        row["docker_run_help_s"].append(time.time() - t)
                        row["help_s"].append(runner.launch(tags[kind], ["jupyterhub-canary", "--help"])["wall_s"])
                        row["secret_get_s"].append(secret_get(runner, tags[kind], stub, kubeconfig))
                        full = cycle(runner, tags[kind], hub, stub, kubeconfig, n, kind)
                        row["cycle_rss_mb"].append(full["max_rss_kb"] / 1024)
                        row["cycle_cpu_s"].append(full["cpu_s"])
                        row["cycle_s"].append(full["wall_s"])
                        print(f"{kind:10} round {n}: docker run --help {row['docker_run_help_s'][-1]:.2f}s,"
                              f" --help {row['help_s'][-1]:.3f}s, Secret GET {row['secret_get_s'][-1]:.3f}s,"
                              f" cycle {full['wall_s']:.2f}s rss {row['cycle_rss_mb'][-1]:.1f}MB", flush=True)
                data["hub_version"] = hub.version
        finally:
            dockerd.stop()
    return data


def report(data: dict) -> str:
    kinds = data["kinds"]
    rows = data["images"]
    names = {"distroless": "this Dockerfile (distroless, default)", "slim": "this Dockerfile on python:3.13-slim",
             "main": "today's image (Dockerfile at `main`)"}
    head = "| measure | " + " | ".join(names[k] for k in kinds) + " |"

    def line(label: str, key: str, digits: int = 2) -> str:
        return f"| {label} | " + " | ".join(med(rows[k][key], digits) for k in kinds) + " |"

    lines = [
        MARKER,
        "",
        "## The image",
        "",
        f"Reproduce: `make bench-image` (`.venv/bin/python -m bench.image --rounds {data['rounds']}`; root, Debian's"
        f" docker.io; about 10 minutes, mostly the three builds). This run: {data['when']}; raw numbers in"
        " bench/image-results.json. Machine: " + data["machine"] + f"; JupyterHub {data['hub_version']}.",
        "",
        "All three images are built in one private dockerd on the stand-in bases of tests/images.py (Docker Hub and"
        " gcr.io cannot be reached here) and run as the chart runs them: read-only root, /tmp a tmpfs,"
        " uid 65532, host network. `main` is built from `git archive main` on the python:*-slim stand-in"
        " (pip in /usr/local/bin, no standard-library bytecode, as the real one), its unpinned dependencies"
        " resolved today. Medians, (min–max) over the rounds; the images take turns, the order alternating.",
        "",
        head,
        "|---|" + "---|" * len(kinds),
        "| image size, uncompressed (MB) | " + " | ".join(f"{rows[k]['size_mb']:.1f}" for k in kinds) + " |",
        line("`docker run IMAGE --help`, the whole docker command (s)", "docker_run_help_s"),
        line("`jupyterhub-canary --help` in the container, process start to exit (s)", "help_s", 3),
        line("process start → the Secret GET (s)", "secret_get_s", 3),
        line("full cycle with a Secret: peak RSS (MB)", "cycle_rss_mb", 1),
        line("full cycle with a Secret: CPU (s)", "cycle_cpu_s"),
        line("full cycle with a Secret: wall time (s)", "cycle_s"),
        "",
        "### Targets (this Dockerfile on its default bases)",
        "",
        "| target | result | met |",
        "|---|---|---|",
    ]
    new = rows.get("distroless")
    if new:
        checks = [
            ("image ≤ 100 MB uncompressed", new["size_mb"], TARGETS["size_mb"], "MB"),
            ("`docker run IMAGE --help` ≤ 0.35 s: the whole docker command", statistics.median(new["docker_run_help_s"]),
             TARGETS["help_s"], "s"),
            ("... and `--help` from process start to exit in the container", statistics.median(new["help_s"]),
             TARGETS["help_s"], "s"),
            ("process start → the Secret GET ≤ 0.4 s", statistics.median(new["secret_get_s"]), TARGETS["secret_get_s"], "s"),
            ("peak RSS of a full cycle with a Secret ≤ 70 MB", max(new["cycle_rss_mb"]), TARGETS["cycle_rss_mb"], "MB"),
        ]
        lines += [f"| {name} | {value:.3g} {unit} | {'yes' if value <= limit else '**no**'} |"
                  for name, value, limit, unit in checks]
    lines += ["", IMAGE_NOTES]
    return "\n".join(lines)


IMAGE_NOTES = """- **`docker run IMAGE --help`** is reported twice: the whole docker command includes the private
  dockerd creating and removing a container (the same for every image: the difference between the
  columns is the image's), and inside the container, `jupyterhub-canary --help` from its process
  start to its exit, which is what the image decides. The target is checked on both.
- **Why this image starts fast on a read-only root**: its last build step writes, with the base's
  own interpreter, the bytecode of the standard-library modules the canary uses
  (scripts/finish_image.py). The python:*-slim base ships none and the distroless one has none (its
  packages are unpacked without Debian's maintainer scripts): `main`'s image, on python:*-slim,
  recompiles every imported standard-library module in memory at each start.
- **Why it is small**: the kubernetes client 35.x (pyproject.toml: 37.x brings an async client,
  aiohttp and pydantic), a distroless runtime (no shell, no apt, no pip), bytecode only for the
  standard-library modules it uses, and bytecode for `PYTHONOPTIMIZE=2` (no docstrings: half the
  kubernetes client's bytecode).
- **RSS** is bench/launch.py's rusage of the canary process inside the container (the launcher's
  ~8 MB floor included), a full cycle against a real local JupyterHub with the token read from a
  Secret through the HTTPS stub of the Kubernetes API.
"""


def write(data: dict, output: Path) -> None:
    existing = output.read_text() if output.exists() else ""
    kept = existing.split(MARKER)[0].rstrip("\n")
    output.write_text((kept + "\n\n" if kept else "") + report(data) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.image", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"images to build and compare (default {','.join(KINDS)})")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--report-only", type=Path, metavar="JSON", help="only rewrite the report from saved results")
    args = parser.parse_args(argv)
    if args.report_only:
        write(json.loads(args.report_only.read_text()), args.output)
        return 0
    if os.geteuid() != 0 or not (shutil.which("dockerd") or shutil.which("apt-get")):
        print("bench/image.py: skipped: it needs root and a dockerd (Debian's docker.io) for its private daemon")
        return 0
    data = measure([k.strip() for k in args.kinds.split(",") if k.strip()], args.rounds)
    write(data, args.output)
    args.output.with_name("image-results.json").write_text(json.dumps(data, indent=2) + "\n")
    print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
