"""A real alerting stack on 127.0.0.1 for tests/test_alert_chain.py: the Pushgateway (also
tests/test_metrics.py's and tests/test_alerts.py's), Prometheus, Alertmanager and a webhook receiver
that records what Alertmanager sends.

- Prometheus is Debian's (`make tools` unpacks it into .tools/prometheus, or $PROMETHEUS): it scrapes the
  Pushgateway with honor_labels, evaluates the rule files written with `load_rules` (a reload through its
  lifecycle API, which answers 500 when a file does not load) and sends its alerts to the Alertmanager.
- Alertmanager is the upstream release built by `make alertmanager` (.tools/bin, or $ALERTMANAGER), with
  clustering off and one route to the receiver.
- Every process is stopped by the object that started it; its log is in its work directory.

Intervals are seconds, not minutes: scrape and evaluation every second, Alertmanager's group_wait and
group_interval a second, so that an alert reaches the receiver a few seconds after its condition holds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.localhub import _free_ports, wait_for

ROOT = Path(__file__).resolve().parent.parent
# Seconds, for the stack's scrape and evaluation interval and Alertmanager's grouping.
INTERVAL = 1


def _binary(variable: str, *candidates: Path, hint: str) -> str:
    for candidate in (os.environ.get(variable), *candidates):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"{hint} (or set {variable})", pytrace=False)


def prometheus_binary() -> str:
    return _binary("PROMETHEUS", ROOT / ".tools" / "prometheus" / "root" / "usr" / "bin" / "prometheus",
                   hint="no prometheus binary: run `make tools`")


def alertmanager_binary() -> str:
    return _binary("ALERTMANAGER", ROOT / ".tools" / "bin" / "alertmanager",
                   hint="no alertmanager binary: run `make alertmanager`")


class _Server:
    """A child process listening on 127.0.0.1:<port>, ready when GET /-/ready answers 200."""

    name = ""

    def __init__(self, command: list[str], workdir: Path, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / f"{self.name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
        try:
            wait_for(self._ready, 30, f"{self.name} at {self.url}")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}): {self.log.read_text()}")
        try:
            return requests.get(self.url + "/-/ready", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def get(self, path: str, **params) -> dict:
        response = requests.get(self.url + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()


def pushgateway_binary() -> str:
    for candidate in (os.environ.get("PUSHGATEWAY"), ROOT / ".tools" / "bin" / "pushgateway", "/usr/bin/prometheus-pushgateway"):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("no Pushgateway binary: run `make tools` (or set PUSHGATEWAY)", pytrace=False)


class Pushgateway(_Server):
    """The real Pushgateway (Debian's prometheus-pushgateway, from `make tools`), without persistence."""

    name = "pushgateway"

    def __init__(self, binary: str, workdir: Path):
        (port,) = _free_ports(1)
        super().__init__(
            [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=", "--log.level=warn"], workdir, port
        )

    def scrape(self) -> str:
        response = requests.get(self.url + "/metrics", timeout=5)
        response.raise_for_status()
        return response.text

    def samples(
        self, hub: str, user: str, probe: str = "default"
    ) -> dict[tuple[str, str | None], tuple[float, dict[str, str]]]:
        """The canary's samples of one group: {(metric name, phase label): (value, labels)}."""
        found = {}
        group = {"hub": hub, "user": user, "probe": probe}
        for family in text_string_to_metric_families(self.scrape()):
            if not family.name.startswith("jupyterhub_canary_"):
                continue
            for sample in family.samples:
                if all(sample.labels.get(k) == v for k, v in group.items()):
                    found[(sample.name, sample.labels.get("phase"))] = (sample.value, sample.labels)
        return found


class Prometheus(_Server):
    name = "prometheus"

    def __init__(self, binary: str, workdir: Path, *, scrape: str, alertmanager: str):
        (port,) = _free_ports(1)
        self.rules_dir = workdir / "rules"
        self.rules_dir.mkdir()
        config = {
            "global": {"scrape_interval": f"{INTERVAL}s", "evaluation_interval": f"{INTERVAL}s"},
            "rule_files": [str(self.rules_dir / "*.yaml")],
            "alerting": {"alertmanagers": [{"api_version": "v2", "static_configs": [{"targets": [alertmanager]}]}]},
            # As the README asks: the Pushgateway's own job and instance labels stay on what it exposes.
            "scrape_configs": [{"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [scrape]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        super().__init__(
            [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", f"--web.external-url=http://127.0.0.1:{port}/",
             "--web.enable-lifecycle", "--log.level=warn",
             # A firing alert is sent again every second (not every minute), a resolved one at once.
             f"--rules.alert.resend-delay={INTERVAL}s"],
            workdir, port,
        )

    def load_rules(self, name: str, groups: list[dict]) -> None:
        """Write <rules>/<name>.yaml and reload: an AssertionError names the error when it does not load."""
        (self.rules_dir / f"{name}.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        self.load_rules_dir()

    def load_rules_dir(self) -> None:
        """Reload the rule files (after one was written or removed)."""
        response = requests.post(self.url + "/-/reload", timeout=30)
        assert response.status_code == 200, f"Prometheus did not load its rule files: {response.text}"

    def rule_groups(self) -> list[dict]:
        return self.get("/api/v1/rules")["data"]["groups"]

    def query(self, expr: str) -> list[dict]:
        return self.get("/api/v1/query", query=expr)["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = INTERVAL) -> list[dict]:
        return self.get("/api/v1/query_range", query=expr, start=start, end=end, step=step)["data"]["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        return self.get(f"/api/v1/label/{label}/values", **{"match[]": match})["data"]

    def active_alerts(self, **labels: str) -> list[dict]:
        """Pending and firing alerts whose labels include `labels`."""
        return [a for a in self.get("/api/v1/alerts")["data"]["alerts"] if labels.items() <= a["labels"].items()]

    def wait_evaluated_after(self, moment: float, timeout: float) -> None:
        """Until a scrape that began after `moment` (Unix time) has been evaluated by every rule group."""

        def scraped() -> float:
            (target,) = self.get("/api/v1/targets")["data"]["activeTargets"]
            began = _unix(target["lastScrape"])
            return began + target["lastScrapeDuration"] if began > moment and target["health"] == "up" else 0.0

        done = wait_for(scraped, timeout, f"a scrape of the Pushgateway after {moment}")
        wait_for(lambda: all(_unix(group["lastEvaluation"]) > done for group in self.rule_groups()), timeout,
                 "an evaluation of every rule group after that scrape")


def _unix(rfc3339: str) -> float:
    """Prometheus's times (RFC 3339, nanoseconds) as Unix time; fromisoformat takes at most microseconds."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", rfc3339)).timestamp()


class Alertmanager(_Server):
    name = "alertmanager"

    def __init__(self, binary: str, workdir: Path, *, webhook: str):
        (port,) = _free_ports(1)
        config = {
            # Alerts from Prometheus carry their own end; an alert sent without one resolves after this.
            "global": {"resolve_timeout": "10s"},
            "route": {
                "receiver": "webhook",
                # Alerts of one name share a notification: two alerts in it are two alerts, not one.
                "group_by": ["alertname"],
                "group_wait": f"{INTERVAL}s",
                "group_interval": f"{INTERVAL}s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook, "send_resolved": True}]}],
        }
        (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        super().__init__(
            [binary, f"--config.file={workdir / 'alertmanager.yml'}", f"--storage.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", f"--web.external-url=http://127.0.0.1:{port}/",
             "--cluster.listen-address=", "--log.level=warn"],
            workdir, port,
        )
        self.address = f"127.0.0.1:{port}"

    def alerts(self, **labels: str) -> list[dict]:
        """The alerts it holds whose labels include `labels` (firing, and resolved until it forgets them)."""
        return [a for a in self.get("/api/v2/alerts") if labels.items() <= a["labels"].items()]


@dataclass(frozen=True)
class Received:
    """One alert of one webhook notification, as Alertmanager sent it."""

    number: int  # the order of arrival, over every notification
    received_at: float
    status: str  # "firing" or "resolved"
    labels: dict[str, str]
    annotations: dict[str, str]
    notification: dict


class WebhookReceiver:
    """Alertmanager's webhook receiver on 127.0.0.1: records every alert of every notification."""

    def __init__(self):
        self.received: list[Received] = []
        self.notifications: list[dict] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver._record(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self.thread.start()

    def _record(self, notification: dict) -> None:
        now = time.time()
        with self._changed:
            self.notifications.append(notification)
            for alert in notification["alerts"]:
                self.received.append(Received(len(self.received), now, alert["status"], alert["labels"],
                                              alert["annotations"], notification))
            self._changed.notify_all()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def mark(self) -> int:
        """A position in the record: `matching(..., after=mark)` sees only what came later."""
        with self._changed:
            return len(self.received)

    def matching(self, status: str, after: int = 0, **labels: str) -> list[Received]:
        with self._changed:
            return [r for r in self.received[after:] if r.status == status and labels.items() <= r.labels.items()]

    def wait_for(self, status: str, timeout: float, after: int = 0, **labels: str) -> list[Received]:
        """The alerts with `status` whose labels include `labels`, once at least one came (AssertionError after `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (found := [r for r in self.received[after:] if r.status == status and labels.items() <= r.labels.items()]):
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({(r.status, r.labels.get("alertname"), r.labels.get("probe")) for r in self.received[after:]})
                    raise AssertionError(f"no {status} alert with {labels} within {timeout:g} s; received: {seen}")
                self._changed.wait(left)
            return found


@dataclass
class Stack:
    pushgateway: Pushgateway
    prometheus: Prometheus
    alertmanager: Alertmanager
    receiver: WebhookReceiver


@contextmanager
def running_stack(workdir: Path) -> Iterator[Stack]:
    """The Pushgateway, the receiver, Alertmanager and Prometheus, stopped in the reverse order."""
    started: list = []
    try:
        gateway = Pushgateway(pushgateway_binary(), _mkdir(workdir / "pushgateway"))
        started.append(gateway)
        receiver = WebhookReceiver()
        started.append(receiver)
        alertmanager = Alertmanager(alertmanager_binary(), _mkdir(workdir / "alertmanager"), webhook=receiver.url)
        started.append(alertmanager)
        prometheus = Prometheus(prometheus_binary(), _mkdir(workdir / "prometheus"),
                                scrape=gateway.url.removeprefix("http://"), alertmanager=alertmanager.address)
        started.append(prometheus)
        yield Stack(gateway, prometheus, alertmanager, receiver)
    finally:
        for part in reversed(started):
            part.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
