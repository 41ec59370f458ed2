"""The chart's PrometheusRule, rendered by the real helm and checked by the real promtool
(`promtool check rules`, `promtool test rules` with tests/alerts/*.test.yaml); and the chart's wiring of
the kernel check and the Pushgateway (variables, NetworkPolicy egress).

helm and promtool come from `make tools` (.tools/bin), or $HELM / $PROMTOOL.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.exit_codes import MEANING, ExitCode
from tests.fakehub import FakeHub
from tests.promstack import Pushgateway, pushgateway_binary
from tests.runner import run_main

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "chart"
ALERT_TESTS = Path(__file__).resolve().parent / "alerts"
RELEASE, NAMESPACE = "hub-canary", "monitoring"
CRONJOB = "hub-canary-jupyterhub-canary"
BASE = ("--set", "canary.hubUrl=https://hub.example.org/", "--set", "token.existingSecret=canary-token")
RULE = ("--set", "prometheusRule.enabled=true")
PUSH = ("--set", "pushgateway.url=http://prometheus-pushgateway.monitoring:9091")


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, **kwargs)


def render(helm: str, *args: str) -> list[dict]:
    done = _run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args])
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def kinds(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def rules(helm: str, *args: str) -> list[dict]:
    (rule,) = kinds(render(helm, *BASE, *RULE, *args), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def by_alert(rule_list: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for r in rule_list:
        found.setdefault(r["alert"], []).append(r)
    return found


# Two probes for tests/alerts/probes.test.yaml: cpu (the top-level settings), gpu (its own server,
# schedule and slow-spawn threshold).
TWO_PROBES = (
    "--set", "prometheusRule.slowSpawnSeconds=120", "--set", "probes.cpu.serverName=",
    "--set", "probes.gpu.serverName=gpu", "--set-string", "probes.gpu.schedule=*/30 * * * *",
    "--set", "probes.gpu.slowSpawnSeconds=600",
)


# The hub as most people write it, without the trailing slash the canary adds to the `hub` label it
# pushes: tests/alerts/*.test.yaml label their series as the canary pushes them (hub="https://hub.example.org/").
HUB_AS_WRITTEN = ("--set", "canary.hubUrl=https://hub.example.org")


def rule_files(helm: str, directory: Path, summaries_only: bool = False) -> None:
    """rules.yaml (one check) and probes-rules.yaml (TWO_PROBES), which tests/alerts/*.test.yaml read."""
    rule_file(helm, directory / "rules.yaml", *HUB_AS_WRITTEN, summaries_only=summaries_only)
    rule_file(helm, directory / "probes-rules.yaml", *HUB_AS_WRITTEN, *TWO_PROBES, summaries_only=summaries_only)


def rule_file(helm: str, path: Path, *args: str, summaries_only: bool = False) -> Path:
    """The rendered PrometheusRule's groups as a Prometheus rule file."""
    (rule,) = kinds(render(helm, *BASE, *RULE, *PUSH, *args), "PrometheusRule")
    groups = rule["spec"]["groups"]
    if summaries_only:
        # promtool compares an alert's annotations as a whole: the unit tests pin the summaries,
        # the long descriptions are checked below and by `promtool check rules`.
        for group in groups:
            for r in group["rules"]:
                r["annotations"] = {"summary": r["annotations"]["summary"]}
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


# --- rendered only when asked for ---


def test_no_rule_unless_enabled(helm):
    assert not kinds(render(helm, *BASE, *PUSH), "PrometheusRule")


def test_kube_state_metrics_alerts_without_pushgateway(helm):
    assert set(by_alert(rules(helm))) == {"JupyterHubCanaryJobFailed", "JupyterHubCanaryNoRecentSuccess"}


def test_pushgateway_alerts_with_pushgateway(helm):
    alerts = by_alert(rules(helm, *PUSH))
    assert set(alerts) == {
        "JupyterHubCanaryJobFailed", "JupyterHubCanaryNoRecentSuccess",
        "JupyterHubCanaryFailing", "JupyterHubCanaryNoRecentSuccessPushed", "JupyterHubCanaryNoSuccessPushed",
    }


def test_rule_labels_and_alert_labels(helm):
    docs = render(helm, *BASE, *RULE, "--set", "prometheusRule.labels.release=kube-prometheus-stack",
                  "--set", "prometheusRule.alertLabels.team=ops")
    (rule,) = kinds(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    for r in rule["spec"]["groups"][0]["rules"]:
        assert r["labels"] == {"severity": "critical", "team": "ops"}


def test_lint_strict_with_every_alert(helm):
    done = _run([helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *BASE, *RULE, *PUSH])
    assert done.returncode == 0, done.stdout + done.stderr


# --- promtool ---


def test_promtool_check_rules(helm, promtool, tmp_path):
    path = rule_file(helm, tmp_path / "rules.yaml")
    done = _run([promtool, "check", "rules", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout and "FAILED" not in done.stdout + done.stderr, done.stdout + done.stderr


def test_promtool_unit_tests(helm, promtool, tmp_path):
    """Each alert fires on a failing series and stays quiet on a healthy one (tests/alerts/*.test.yaml)."""
    rule_files(helm, tmp_path, summaries_only=True)
    test_files = sorted(ALERT_TESTS.glob("*.test.yaml"))
    assert test_files
    for source in test_files:
        shutil.copy(source, tmp_path / source.name)
    done = _run([promtool, "test", "rules", *(p.name for p in test_files)], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_can_fail(helm, promtool, tmp_path):
    """The same tests against a rule file with a broken threshold fail: they do test the rules."""
    path = rule_file(helm, tmp_path / "rules.yaml", summaries_only=True)
    path.write_text(path.read_text().replace("> 2220", "> 999999"))
    for source in ALERT_TESTS.glob("*.test.yaml"):
        shutil.copy(source, tmp_path / source.name)
    done = _run([promtool, "test", "rules", "canary-alerts.test.yaml"], cwd=tmp_path)
    assert done.returncode != 0
    assert "JupyterHubCanaryNoRecentSuccess" in done.stdout + done.stderr


# --- what the annotations tell the operator ---


def test_annotations_say_what_to_look_at(helm):
    alerts = by_alert(rules(helm, *PUSH))
    for name, found in alerts.items():
        for r in found:
            description = r["annotations"]["description"]
            assert f"kubectl -n {NAMESPACE} " in description, name
            assert r["annotations"]["summary"], name
    job_failed = alerts["JupyterHubCanaryJobFailed"][0]["annotations"]["description"]
    assert "logs job/{{ $labels.job_name }}" in job_failed
    assert "state.terminated.exitCode" in job_failed and "state.terminated.message" in job_failed
    for name in ("JupyterHubCanaryJobFailed", "JupyterHubCanaryFailing"):
        description = alerts[name][0]["annotations"]["description"]
        table = dict(re.findall(r"^(\d+) +(.+)$", description.partition("Exit codes:\n")[2], flags=re.MULTILINE))
        assert table == {str(int(code)): meaning for code, meaning in MEANING.items()}, name


def test_failing_alert_names_the_meaning_of_every_exit_code(helm):
    summary = by_alert(rules(helm, *PUSH))["JupyterHubCanaryFailing"][0]["annotations"]["summary"]
    meanings = dict(re.findall(r'eq \$code "(\d+)" }}\1: (.+?){{', summary))
    assert meanings == {str(int(code)): meaning for code, meaning in MEANING.items()}


# --- the no-success threshold: two schedule periods plus the Job's deadline ---


def _threshold(helm: str, *args: str) -> int:
    expr = by_alert(rules(helm, *args))["JupyterHubCanaryNoRecentSuccess"][0]["expr"]
    (value,) = set(re.findall(r"> (\d+)", expr))
    return int(value)


@pytest.mark.parametrize(
    ("schedule", "period"),
    [("*/10 * * * *", 600), ("*/5 * * * *", 300), ("* * * * *", 60), ("7 * * * *", 3600), ("@hourly", 3600),
     ("15 */2 * * *", 7200), ("30 4 * * *", 86400), ("@daily", 86400)],
)
def test_threshold_from_the_schedule(helm, schedule, period):
    deadline = 900 + 120  # canary.deadline + job.deadlineGraceSeconds
    assert _threshold(helm, "--set-string", f"cronjob.schedule={schedule}") == 2 * period + deadline


def test_threshold_from_an_explicit_period_and_deadline(helm):
    assert _threshold(helm, "--set-string", "cronjob.schedule=0 9 * * 1-5",
                      "--set", "prometheusRule.schedulePeriodSeconds=86400",
                      "--set", "job.activeDeadlineSeconds=2000") == 2 * 86400 + 2000


def test_an_unknown_schedule_form_asks_for_the_period(helm):
    done = _run([helm, "template", RELEASE, str(CHART), *BASE, *RULE, "--set-string", "cronjob.schedule=0 9 * * 1-5"])
    assert done.returncode != 0
    assert "prometheusRule.schedulePeriodSeconds is required" in done.stderr


# --- the kernel check and the Pushgateway in the CronJob and the NetworkPolicy ---


def _env(docs: list[dict]) -> dict[str, str]:
    (cronjob,) = kinds(docs, "CronJob")
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_kernel_check_and_pushgateway_variables(helm):
    default = _env(render(helm, *BASE))
    assert default["CANARY_CHECK_KERNEL"] == "false" and default["CANARY_KERNEL_TIMEOUT"] == "60"
    assert "CANARY_KERNEL_NAME" not in default and "CANARY_PUSHGATEWAY_URL" not in default
    env = _env(render(helm, *BASE, *PUSH, "--set", "canary.checkKernel=true", "--set", "canary.kernelName=python3",
                      "--set", "canary.kernelTimeout=90"))
    assert env["CANARY_CHECK_KERNEL"] == "true" and env["CANARY_KERNEL_NAME"] == "python3"
    assert env["CANARY_KERNEL_TIMEOUT"] == "90"
    assert env["CANARY_PUSHGATEWAY_URL"] == "http://prometheus-pushgateway.monitoring:9091"


def test_network_policy_lets_the_canary_reach_the_pushgateway(helm):
    policy = "--set", "networkPolicy.enabled=true"
    without = kinds(render(helm, *BASE, *policy), "NetworkPolicy")[0]["spec"]["egress"]
    assert not any(rule.get("ports") == [{"port": 9091, "protocol": "TCP"}] for rule in without)
    egress = kinds(render(helm, *BASE, *policy, *PUSH), "NetworkPolicy")[0]["spec"]["egress"]
    assert len(egress) == len(without) + 1
    assert {"ports": [{"port": 9091, "protocol": "TCP"}]} in egress
    peers = kinds(render(helm, *BASE, *policy, *PUSH, "--set", "networkPolicy.pushgateway.to[0].ipBlock.cidr=10.1.2.3/32",
                         "--set", "networkPolicy.pushgateway.ports[0].port=8080"), "NetworkPolicy")[0]["spec"]["egress"]
    assert {"ports": [{"port": 8080}], "to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}]} in peers


def test_schema_rejects_a_misspelt_prometheus_rule_key(helm):
    done = _run([helm, "template", RELEASE, str(CHART), *BASE, "--set", "prometheusRule.enable=true"])
    assert done.returncode != 0 and "enable" in done.stderr


# --- per probe ---


def test_promtool_checks_one_group_per_probe(helm, promtool, tmp_path):
    rule_files(helm, tmp_path)
    done = _run([promtool, "check", "rules", str(tmp_path / "probes-rules.yaml")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 12 rules found" in done.stdout, done.stdout  # two probes, six alerts each
    groups = yaml.safe_load((tmp_path / "probes-rules.yaml").read_text())["groups"]
    assert [g["name"] for g in groups] == ["jupyterhub-canary.cpu.rules", "jupyterhub-canary.gpu.rules"]
    for group, probe in zip(groups, ("cpu", "gpu"), strict=True):
        for r in group["rules"]:
            assert r["labels"]["probe"] == probe, r["alert"]
        pushed = [r["expr"] for r in group["rules"] if "jupyterhub_canary_" in r["expr"]]
        assert pushed and all(f'probe="{probe}"' in expr for expr in pushed)
        (job_failed,) = [r for r in group["rules"] if r["alert"] == "JupyterHubCanaryJobFailed"]
        assert f'owner_name="{CRONJOB}-{probe}"' in job_failed["expr"]


def test_probe_unit_tests_can_fail(helm, promtool, tmp_path):
    """The two-probe tests against rules with cpu's slow-spawn threshold raised fail: they test the rules."""
    rule_files(helm, tmp_path, summaries_only=True)
    path = tmp_path / "probes-rules.yaml"
    path.write_text(path.read_text().replace("> 120", "> 999999"))
    shutil.copy(ALERT_TESTS / "probes.test.yaml", tmp_path / "probes.test.yaml")
    done = _run([promtool, "test", "rules", "probes.test.yaml"], cwd=tmp_path)
    assert done.returncode != 0
    assert "JupyterHubCanarySlowSpawn" in done.stdout + done.stderr


# PromQL quotes a string in backticks too: a selector written so must not end the description's query early.
BACKTICKED = ("--set-string", "prometheusRule.pushgatewaySelector=job=`jupyterhub_canary`")


@pytest.mark.parametrize("selector", [(), BACKTICKED], ids=["selector", "backticked-selector"])
def test_the_single_checks_failing_alert_names_the_reason_and_cause(helm, promtool, tmp_path, selector):
    """The single check's alert keeps its labels (hub, user), so its description looks the reason and
    cause up with a query: promtool evaluates it against a failing series."""
    path = rule_file(helm, tmp_path / "rules.yaml", *selector)
    checked = _run([promtool, "check", "rules", str(path)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    groups = yaml.safe_load(path.read_text())["groups"]
    (failing,) = [r for group in groups for r in group["rules"] if r.get("alert") == "JupyterHubCanaryFailing"]
    description = failing["annotations"]["description"]
    (message_lookup, lookup) = re.findall(r"\{\{ with query .*?\{\{ end \}\}\{\{ end \}\}", description)
    assert "last_result_info" in message_lookup and "exit_code" in lookup, description
    failing["annotations"] = {"description": description}
    path.write_text(yaml.safe_dump({"groups": [{"name": "failing", "rules": [failing]}]}, sort_keys=False))
    series = ('jupyterhub_canary_exit_code{job="jupyterhub_canary", instance="", hub="https://hub.example.org/", '
              'user="jupyterhub-canary", reason="spawn_failed", cause="image_pull"}')
    unit = {
        "rule_files": [path.name],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": series, "values": "10x10"},
                             {"series": series.replace("exit_code{", "last_result_info{").replace(
                                 'reason="spawn_failed", cause="image_pull"', 'message="the spawn failed: ErrImagePull"'),
                              "values": "1x10"}],
            "alert_rule_test": [{
                "eval_time": "5m",
                "alertname": "JupyterHubCanaryFailing",
                "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "hub": "https://hub.example.org/", "user": "jupyterhub-canary"},
                    "exp_annotations": {"description": description.replace(lookup, "spawn_failed, image_pull").replace(
                        message_lookup, "the spawn failed: ErrImagePull")},
                }],
            }],
        }],
    }
    (tmp_path / "legacy.test.yaml").write_text(yaml.safe_dump(unit, sort_keys=False))
    done = _run([promtool, "test", "rules", "legacy.test.yaml"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the rules select what the canary pushes, however canary.hubUrl is written (issue 19, 2) ---


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory):
    gateway = Pushgateway(pushgateway_binary(), tmp_path_factory.mktemp("pushgateway"))
    try:
        yield gateway
    finally:
        gateway.stop()


# The chart's variables that need a Kubernetes API: the test gives the token in JUPYTERHUB_API_TOKEN
# and holds no Lease. Every other variable reaches the canary as the CronJob sets it.
KUBERNETES_VARIABLES = ("CANARY_TOKEN_SECRET", "CANARY_LEASE", "CANARY_KUBE_")
PUSHED_SERIES = ("jupyterhub_canary_exit_code", "jupyterhub_canary_success", "jupyterhub_canary_last_success_timestamp_seconds")


def run_as_the_cronjob(cronjob: dict, pushgateway_url: str, tmp_path: Path):
    """The real canary with the variables of the rendered CronJob (the hub URL as the chart writes it)."""
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e and not e["name"].startswith(KUBERNETES_VARIABLES)}
    env |= {"JUPYTERHUB_API_TOKEN": "t" * 32, "CANARY_PUSHGATEWAY_URL": pushgateway_url, "CANARY_ATTEMPTS": "1",
            "CANARY_TERMINATION_LOG": str(tmp_path / "termination-log")}
    return run_main([], env=env)


@pytest.mark.parametrize("probes", [(), ("--set", "probes.cpu.serverName=")], ids=["single-check", "probes"])
@pytest.mark.parametrize("slash", ["", "/"], ids=["no-slash", "slash"])
def test_the_alerts_fire_on_what_the_canary_pushes(helm, promtool, pushgateway, tmp_path, slash, probes):
    """The chain of the issue without a cluster: the chart rendered with canary.hubUrl written with or
    without its trailing slash; the real canary run with the CronJob's variables, once healthy and once
    failing, pushing to a real Pushgateway; promtool evaluates the chart's rules on the series as the
    Pushgateway exposes them. JupyterHubCanaryFailing fires; JupyterHubCanaryNoSuccessPushed does not,
    since a success was pushed. (Without the slash, the rules selected hub="http://...:port", the canary
    pushed hub="http://...:port/": Failing never fired and NoSuccessPushed fired for healthy probes.)"""
    with FakeHub(spawn=["ready", "fail"]) as fake:
        hub_url = fake.url.rstrip("/") + slash
        values = ("--set", f"canary.hubUrl={hub_url}", "--set", "token.existingSecret=canary-token", *RULE, *PUSH, *probes)
        docs = render(helm, *values)
        (cronjob,) = kinds(docs, "CronJob")
        healthy = run_as_the_cronjob(cronjob, pushgateway.url, tmp_path)
        assert healthy.exit_code == ExitCode.OK, healthy.output
        failing = run_as_the_cronjob(cronjob, pushgateway.url, tmp_path)
        assert failing.exit_code not in (ExitCode.OK, ExitCode.CONCURRENT_RUN), failing.output
    assert healthy.named("metrics_pushed") and failing.named("metrics_pushed"), failing.output

    # The series exactly as the Pushgateway exposes them (Prometheus scrapes it with honor_labels).
    samples = [sample for family in text_string_to_metric_families(pushgateway.scrape()) for sample in family.samples
               # This run's group only: the module's Pushgateway keeps earlier runs', whose hub may be this
               # one's port reused, or a port this one's is a prefix of.
               if sample.name in PUSHED_SERIES and sample.labels["hub"] == fake.url.rstrip("/") + "/"
               and sample.labels["probe"] == ("cpu" if probes else "default")]
    (exit_code,) = [sample for sample in samples if sample.name == "jupyterhub_canary_exit_code"]
    assert exit_code.value == failing.exit_code
    series = [{"series": f"{sample.name}{{{', '.join(f'{k}={json.dumps(v)}' for k, v in sorted(sample.labels.items()))}}}",
               "values": f"{sample.value:.3f}x60"} for sample in samples]

    (rule,) = kinds(docs, "PrometheusRule")
    groups = rule["spec"]["groups"]
    for group in groups:
        for r in group["rules"]:
            r["annotations"] = {}  # the texts are checked in tests/test_chart.py; here the expressions
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    labels = {"severity": "critical", "hub": exit_code.labels["hub"], "user": exit_code.labels["user"]}
    if probes:
        labels |= {"probe": "cpu", "reason": exit_code.labels["reason"], "cause": exit_code.labels["cause"]}
    unit = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "JupyterHubCanaryFailing", "exp_alerts": [{"exp_labels": labels}]},
                # Past its `for` (two periods plus the Job's deadline, 2220 s): a success was pushed.
                {"eval_time": "45m", "alertname": "JupyterHubCanaryNoSuccessPushed", "exp_alerts": []},
            ],
        }],
    }
    (tmp_path / "pushed.test.yaml").write_text(yaml.safe_dump(unit, sort_keys=False))
    done = _run([promtool, "test", "rules", "pushed.test.yaml"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
