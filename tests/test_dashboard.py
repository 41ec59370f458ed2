"""The chart's Grafana dashboard (chart/dashboards/jupyterhub-canary.json in a ConfigMap for the Grafana
sidecar): built by scripts/dashboard.py with Grafana's typed builders, rendered by the real helm, every
PromQL expression parsed by the real promtool, and every metric it names one that app/metrics.py
really pushes (read from the code's own registry)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from app import metrics, timeline
from tests.test_chart import EXISTING, HUB, by_kind, render

ENABLED = ("--set", "grafanaDashboard.enabled=true")
# Grafana's template variables, replaced by values they can take before promtool parses a query.
VARIABLES = {"$hub": ".*", "$probe": "cpu|gpu"}
METRIC = re.compile(r"\bjupyterhub_canary_[a-z_]+\b")


def configmap(helm: str, *args: str) -> dict:
    (found,) = by_kind(render(helm, *HUB, *EXISTING, *ENABLED, *args))["ConfigMap"]
    return found


def dashboard(helm: str, *args: str) -> dict:
    (text,) = configmap(helm, *args)["data"].values()
    return json.loads(text)


def queries(board: dict) -> list[str]:
    """Every PromQL expression: the panels' targets, and the selectors of the variables' label_values()."""
    found = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            text = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            (selector,) = re.fullmatch(r"label_values\((.+), *\w+\)", text).groups()
            found.append(selector)
    return found


def defined_metrics() -> set[str]:
    """The metric names app/metrics.py pushes: its registry for a run that reports everything."""
    run = metrics.RunMetrics(
        True, 0, 1, 1.0, {"verify": 1}, reason="none", timeline_phases_ms=dict.fromkeys(timeline.PHASES, 1)
    )
    return {family.name for family in metrics.registry_for(run).collect()}


def unknown_metrics(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC.findall(expr)} - defined_metrics()


def promtool_check(promtool: str, exprs: list[str], directory: Path) -> subprocess.CompletedProcess:
    """promtool parses each expression, as a recording rule."""
    rules = []
    for number, expr in enumerate(exprs):
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    path = directory / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False)


# --- the builder script: the chart ships its output ---

# The hand-written dashboard's panels and queries (before scripts/dashboard.py): each is kept.
EARLIER_PANELS = {
    "Success per probe": 'max by (probe) (jupyterhub_canary_success{__SELECTOR__, hub=~"$hub", probe=~"$probe"})',
    "Time since the last success": "time() - max by (probe) (jupyterhub_canary_last_success_timestamp_seconds"
    '{__SELECTOR__, hub=~"$hub", probe=~"$probe"})',
    "Spawn duration per phase": "max by (probe, phase) (jupyterhub_canary_phase_duration_seconds"
    '{__SELECTOR__, hub=~"$hub", probe=~"$probe"})',
    "Run duration per phase": "max by (probe, phase) (jupyterhub_canary_duration_seconds"
    '{__SELECTOR__, hub=~"$hub", probe=~"$probe", phase!="total"})',
    "Exit codes over time": 'max by (probe, reason) (jupyterhub_canary_exit_code{__SELECTOR__, hub=~"$hub", probe=~"$probe"})',
    "Attempts per run": 'max by (probe) (jupyterhub_canary_attempts{__SELECTOR__, hub=~"$hub", probe=~"$probe"})',
}
COMMITTED = Path(__file__).resolve().parent.parent / "chart" / "dashboards" / "jupyterhub-canary.json"


def _script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("dashboard_script", COMMITTED.parents[2] / "scripts" / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_dashboard_is_the_builders_output():
    assert COMMITTED.read_text(encoding="utf-8") == _script().render(), "run `make dashboard`"
    assert _script().main(["--check"]) == 0


def test_every_earlier_panel_and_query_is_kept():
    board = json.loads(COMMITTED.read_text(encoding="utf-8"))
    exprs = {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in board["panels"]}
    for title, expr in EARLIER_PANELS.items():
        assert exprs.get(title) == [expr], title


def test_a_panel_shows_why_spawns_failed(helm):
    board = dashboard(helm)
    by_cause = [t for panel in board["panels"] for t in panel["targets"] if re.search(r"by \([^)]*\bcause\b", t["expr"])]
    assert by_cause and all("{{cause}}" in t["legendFormat"] for t in by_cause)
    assert "cause" in defined_labels("jupyterhub_canary_exit_code")


def defined_labels(name: str) -> set[str]:
    """The labels app/metrics.py gives a metric (of a failed run, which carries every label)."""
    run = metrics.RunMetrics(False, 10, 1, 1.0, reason="spawn_failed", cause="image_pull")
    (family,) = [f for f in metrics.registry_for(run).collect() if f.name == name]
    return {label for sample in family.samples for label in sample.labels}


# --- the ConfigMap ---


def test_no_dashboard_unless_enabled(helm):
    assert "ConfigMap" not in by_kind(render(helm, *HUB, *EXISTING))


def test_configmap_is_labelled_for_the_grafana_sidecar(helm):
    found = configmap(helm)
    assert found["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "annotations" not in found["metadata"]
    custom = configmap(helm, "--set", "grafanaDashboard.label=dashboards", "--set-string", "grafanaDashboard.labelValue=canary",
                       "--set", "grafanaDashboard.folder=JupyterHub", "--set", "grafanaDashboard.labels.team=ops")
    labels = custom["metadata"]["labels"]
    assert labels["dashboards"] == "canary" and labels["team"] == "ops" and "grafana_dashboard" not in labels
    assert custom["metadata"]["annotations"] == {"grafana_folder": "JupyterHub"}


def test_configmap_validates_for_kubernetes_1_29_and_the_newest(helm, tmp_path):
    from kubernetes_validate import utils
    from packaging.version import Version

    path = tmp_path / "configmap.yaml"
    path.write_text(yaml.safe_dump(configmap(helm)))
    versions = sorted((v for v in utils.all_versions() if Version(v) >= Version("1.29")), key=Version)
    validator = Path(sys.executable).parent / "kubernetes-validate"
    for version in (versions[0], versions[-1]):
        done = subprocess.run([str(validator), "--strict", "--kubernetes-version", version, str(path)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and "passed for resource" in done.stdout, done.stdout + done.stderr


# --- the queries ---


def test_panels_show_what_operators_ask(helm):
    board = dashboard(helm)
    shown = {name for panel in board["panels"] for t in panel["targets"] for name in METRIC.findall(t["expr"])}
    # success over time, time since the last success, spawn phases, exit codes: each per probe.
    for metric in ("success", "last_success_timestamp_seconds", "phase_duration_seconds", "exit_code"):
        assert f"jupyterhub_canary_{metric}" in shown, metric
    for panel in board["panels"]:
        for target in panel["targets"]:
            assert re.search(r"by \([^)]*\bprobe\b", target["expr"]), (panel["title"], target["expr"])
            assert 'probe=~"$probe"' in target["expr"]


def test_every_query_names_only_metrics_the_code_pushes(helm):
    exprs = queries(dashboard(helm))
    assert exprs and all(METRIC.search(expr) for expr in exprs)
    assert unknown_metrics(exprs) == set()


def test_the_metric_check_catches_a_name_the_code_does_not_push():
    assert unknown_metrics(["max by (probe) (jupyterhub_canary_succes{})"]) == {"jupyterhub_canary_succes"}


def test_promtool_parses_every_query(helm, promtool, tmp_path):
    exprs = queries(dashboard(helm))
    done = promtool_check(promtool, exprs, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout, done.stdout


def test_promtool_check_fails_on_a_broken_query(promtool, tmp_path):
    done = promtool_check(promtool, ['max by (probe (jupyterhub_canary_success{probe=~"$probe"})'], tmp_path)
    assert done.returncode != 0


def test_the_selector_follows_the_alerts_selector(helm):
    exprs = queries(dashboard(helm, "--set", 'prometheusRule.pushgatewaySelector=exported_job="jupyterhub_canary"'))
    assert all('{exported_job="jupyterhub_canary"' in expr for expr in exprs)
