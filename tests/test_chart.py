"""The Helm chart, rendered and checked by real tools: helm, kubernetes-validate and yamllint.

helm comes from `make tools` (.tools/bin/helm) or $HELM. Without it these tests fail: they are part
of `make test`, and a chart that was never rendered is not a tested chart.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

import app
from app import metrics
from app.config import RUN_OPTIONS, TOKEN_ENV, build_run_config
from app.errors import ConfigError
from app.exit_codes import MEANING, NOT_RETRYABLE
from tests.test_config import HUB_URLS_ACCEPTED, HUB_URLS_REFUSED

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "chart"
RELEASE = "hub-canary"
NAMESPACE = "monitoring"
FULLNAME = "hub-canary-jupyterhub-canary"
TOKEN = "tok-3f9a61c0-test-only"

HUB = ("--set", "canary.hubUrl=https://hub.example.org/")
EXISTING = ("--set", "token.existingSecret=canary-token")
# The issue's "done when": the default values plus a hub URL and a token.
DEFAULTS = (*HUB, "--set", f"token.value={TOKEN}")

# Every value set the chart is linted, rendered and validated with.
VALUE_SETS = {
    "defaults+token.value": DEFAULTS,
    "defaults+existingSecret": (*HUB, *EXISTING),
    **{path.stem: ("-f", str(path)) for path in sorted((CHART / "ci").glob("*-values.yaml"))},
}

# The chart's own YAML files, for yamllint.
CHART_YAML = ("values.yaml", "Chart.yaml", "ci")

# CLI variables the chart leaves alone, and why.
NOT_SET_BY_CHART = {
    "CANARY_USER_OPTIONS_FILE": "canary.userOptions is rendered inline, to CANARY_USER_OPTIONS",
    "CANARY_TERMINATION_LOG": "the CLI's default is Kubernetes' /dev/termination-log",
}


# --- fixtures and helpers ---


@pytest.fixture(scope="session")
def helm() -> str:
    path = Path(os.environ.get("HELM") or ROOT / ".tools" / "bin" / "helm")
    if not os.access(path, os.X_OK):
        pytest.fail(f"helm not found at {path}: run `make tools` (or set HELM)", pytrace=False)
    return str(path)


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def render(helm: str, *args: str, namespace: str = NAMESPACE, release: str = RELEASE) -> list[dict]:
    done = _run([helm, "template", release, str(CHART), "--namespace", namespace, *args])
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_error(helm: str, *args: str) -> str:
    done = _run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args])
    assert done.returncode != 0, f"rendered although it should not:\n{done.stdout}"
    return done.stderr


def notes(helm: str, *args: str) -> str:
    done = _run([helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *args])
    assert done.returncode == 0, done.stderr
    return done.stdout.partition("\nNOTES:\n")[2]


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def the(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs).get(kind, [])
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def job_spec(docs: list[dict]) -> dict:
    return the(docs, "CronJob")["spec"]["jobTemplate"]["spec"]


def pod_spec(docs: list[dict]) -> dict:
    return job_spec(docs)["template"]["spec"]


def container(docs: list[dict]) -> dict:
    (only,) = pod_spec(docs)["containers"]
    return only


def env(docs: list[dict]) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in container(docs).get("env", [])}


def canary_env(docs: list[dict], name: str = "") -> dict[str, str]:
    """The variables the chart sets itself in its CronJobs (all probes'), without the user's extraEnv
    of value set `name`."""
    extra = {item["name"] for item in extra_env(name)}
    found: dict[str, str] = {}
    for cronjob in by_kind(docs)["CronJob"]:
        (only,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        found |= {item["name"]: item.get("value") for item in only.get("env", [])}
    return {key: value for key, value in found.items() if key not in extra}


def extra_env(name: str) -> list[dict]:
    """The extraEnv of value set `name`: the top-level list and every probe's."""
    path = CHART / "ci" / f"{name}.yaml"
    if not path.exists():
        return []
    values = yaml.safe_load(path.read_text())
    probes = (values.get("probes") or {}).values()
    return [*(values.get("extraEnv") or []), *(item for p in probes for item in (p or {}).get("extraEnv") or [])]


def values_file(name: str) -> dict:
    return yaml.safe_load((CHART / "ci" / f"{name}.yaml").read_text())


def restricted_violations(spec: dict) -> list[str]:
    """What breaks the "restricted" Pod Security Standard (baseline included) in a pod spec.

    The checks of kubernetes.io/docs/concepts/security/pod-security-standards, field by field.
    """
    problems = []
    pod = spec.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"{field} is set")
    allowed_volumes = {
        "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
    }
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            problems.append(f"volume {volume['name']} has type {kinds - allowed_volumes}")
    if pod.get("sysctls"):
        problems.append("pod sysctls set")
    if (pod.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost", None):
        problems.append("pod seccompProfile not RuntimeDefault/Localhost")
    if pod.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{where} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        capabilities = sc.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities {capabilities['add']}")
        if not sc.get("runAsNonRoot", pod.get("runAsNonRoot")):
            problems.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod.get("runAsUser")) == 0:
            problems.append(f"{where}: runAsUser is 0")
        seccomp = sc.get("seccompProfile") or pod.get("seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile is not RuntimeDefault or Localhost")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{where}: procMount is not Default")
        if any(port.get("hostPort") for port in c.get("ports", [])):
            problems.append(f"{where}: uses a hostPort")
        for option in ("seLinuxOptions", "windowsOptions"):
            if sc.get(option):
                problems.append(f"{where}: sets {option}")
    return problems


# --- the chart's identity ---


def test_chart_metadata_agrees_with_the_package():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "jupyterhub-canary"
    assert chart["appVersion"] == app.__version__


def test_image_tag_defaults_to_app_version(helm):
    assert container(render(helm, *DEFAULTS))["image"] == f"jupyterhub-canary:{app.__version__}"


# --- lint and schema ---


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_strict(helm, name):
    done = _run([helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *VALUE_SETS[name]])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(
    ("setting", "unknown"),
    [
        ("canary.spawnTimout=60", "spawnTimout"),
        ("tokn.value=x", "tokn"),
        ("job.activeDeadlineSecond=100", "activeDeadlineSecond"),
        ("networkPolicy.hub.port=80", "port"),
        ("podSecurityContext=null,securityContxt.runAsUser=1", "securityContxt"),
    ],
)
def test_schema_rejects_a_misspelt_key(helm, setting, unknown):
    error = render_error(helm, *DEFAULTS, "--set", setting)
    assert "don't meet the specifications of the schema" in error
    # helm 4: "additional properties 'x' not allowed"; helm 3: "Additional property x is not allowed"
    assert re.search(rf"additional propert(y|ies) '?{unknown}'? (is )?not allowed", error, re.IGNORECASE), error


@pytest.mark.parametrize(
    "setting",
    ["canary.attempts=0", "canary.logLevel=verbose", "cronjob.startingDeadlineSeconds=5", "image.pullPolicy=Sometimes"],
)
def test_schema_rejects_a_bad_value(helm, setting):
    assert "don't meet the specifications of the schema" in render_error(helm, *DEFAULTS, "--set", setting)


def _set(*settings: str) -> tuple[str, ...]:
    return tuple(arg for setting in settings for arg in ("--set", setting))


# Each `fail` of templates/_helpers.tpl: the values that trigger it, and (part of) its message.
FAILS = {
    "no hub URL": ((*EXISTING,), "canary.hubUrl is required"),
    "hub URL not http(s)": (
        (*_set("canary.hubUrl=hub.example.org"), *EXISTING),
        "canary.hubUrl must be an http(s) URL",
    ),
    # The canary refuses them too (78): the chart says so before a run does.
    "hub URL with a query": ((*_set("canary.hubUrl=https://hub.example.org/?next"), *EXISTING), "without a query or fragment"),
    "hub URL with a fragment": ((*_set("canary.hubUrl=https://hub.example.org/#top"), *EXISTING), "without a query or fragment"),
    "hub URL with a space inside": ((*_set("canary.hubUrl=https://hub.example.org/a b/"), *EXISTING), "canary.hubUrl must be"),
    "no token source": ((*HUB,), "a token source is required: set token.existingSecret"),
    "two token sources": ((*DEFAULTS, *EXISTING), "token.value and token.existingSecret are mutually exclusive"),
    "token.value in another namespace": (
        (*DEFAULTS, *_set("token.namespace=jhub")),
        "token.namespace applies to token.existingSecret only",
    ),
    "mount from another namespace": (
        (*HUB, *EXISTING, *_set("token.namespace=jhub", "token.mount=true")),
        "token.mount=true needs the Secret in the release namespace",
    ),
    "activeDeadlineSeconds below the canary deadline": (
        (*DEFAULTS, *_set("job.activeDeadlineSeconds=900")),
        "job.activeDeadlineSeconds (900) must be at least canary.deadline + job.deadlineGraceSeconds (1020)",
    ),
    "activeDeadlineSeconds without room for grace": (
        (*DEFAULTS, *_set("canary.deadline=2000", "job.activeDeadlineSeconds=2100")),
        "must be at least canary.deadline + job.deadlineGraceSeconds (2120)",
    ),
    "grace period below the stop timeout": (
        (*DEFAULTS, *_set("job.terminationGracePeriodSeconds=30")),
        "job.terminationGracePeriodSeconds (30) must be at least canary.stopTimeout (120)",
    ),
    "deadline not above the stop timeout": (
        (*DEFAULTS, *_set("canary.deadline=100")),
        "canary.deadline (100) must exceed canary.stopTimeout (120)",
    ),
    "two CA bundles": (
        (*DEFAULTS, *_set("canary.caBundle.configMap=a", "canary.caBundle.secret=b")),
        "canary.caBundle.configMap and canary.caBundle.secret are mutually exclusive",
    ),
    "CA bundle and no TLS verification": (
        (*DEFAULTS, *_set("canary.caBundle.configMap=a", "canary.insecureSkipTlsVerify=true")),
        "canary.insecureSkipTlsVerify and canary.caBundle contradict each other",
    ),
    # The schema sees only the probe's own user: the one it inherits is checked here (issue 20).
    "fresh-user probe with the top-level user": (
        (*DEFAULTS, *_set("probes.fresh.freshUser=true")),
        'probes.fresh: freshUser=true needs a user named jupyterhub-canary-fresh-<something> (the canary deletes '
        'and recreates that user every run, and the hub\'s fresh-user role covers only such names), but user is '
        '"jupyterhub-canary"',
    ),
}


@pytest.mark.parametrize(("args", "message"), FAILS.values(), ids=FAILS.keys())
def test_fail_fires_with_its_message(helm, args, message):
    error = render_error(helm, *args)
    assert message in error
    # The same message from every template, so `helm template --show-only` cannot get past it.
    assert message in render_error(helm, *args, "--show-only", "templates/networkpolicy.yaml")


def test_kubernetes_older_than_1_29_is_refused(helm):
    assert "kubeVersion" in render_error(helm, *DEFAULTS, "--kube-version", "1.28.0")


# --- what is rendered ---


@pytest.mark.parametrize("name", VALUE_SETS)
def test_pod_meets_the_restricted_pod_security_standard(helm, name):
    """Every probe's CronJob, and the `helm test` Pod."""
    docs = render(helm, *VALUE_SETS[name])
    kinds = by_kind(docs)
    specs = [c["spec"]["jobTemplate"]["spec"]["template"]["spec"] for c in kinds["CronJob"]]
    specs += [pod["spec"] for pod in kinds.get("Pod", [])]
    assert len(specs) == len(kinds["CronJob"]) + 1
    for spec in specs:
        assert restricted_violations(spec) == []
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert isinstance(spec["securityContext"]["runAsUser"], int) and spec["securityContext"]["runAsUser"] > 0
        (only,) = spec["containers"]
        assert only["securityContext"]["readOnlyRootFilesystem"] is True
        tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
        assert "emptyDir" in tmp
        assert {"name": "tmp", "mountPath": "/tmp"} in only["volumeMounts"]


def test_restricted_check_catches_violations():
    """The checker above finds what it looks for (so that an empty list means something)."""
    bad = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"runAsUser": 0, "capabilities": {"add": ["SYS_ADMIN"]}}}],
    }
    assert len(restricted_violations(bad)) >= 7


def test_cronjob_and_job_fields(helm):
    docs = render(helm, *DEFAULTS)
    cronjob = the(docs, "CronJob")["spec"]
    assert cronjob["schedule"] == "*/10 * * * *"
    assert cronjob["concurrencyPolicy"] == "Forbid"
    assert cronjob["startingDeadlineSeconds"] >= 10
    assert cronjob["suspend"] is False
    assert {"timeZone", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"} <= set(cronjob)
    job = job_spec(docs)
    assert {"backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"} <= set(job)
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert container(docs)["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_full_value_set_reaches_the_manifests(helm):
    values = values_file("full-values")
    docs = render(helm, "-f", str(CHART / "ci" / "full-values.yaml"))
    cronjob = the(docs, "CronJob")
    assert cronjob["metadata"]["name"] == values["fullnameOverride"]
    assert cronjob["spec"]["schedule"] == values["cronjob"]["schedule"]
    assert cronjob["spec"]["timeZone"] == values["cronjob"]["timeZone"]
    assert cronjob["spec"]["suspend"] is True
    job = job_spec(docs)
    assert job["backoffLimit"] == values["job"]["backoffLimit"]
    assert job["activeDeadlineSeconds"] == values["job"]["activeDeadlineSeconds"]
    assert job["ttlSecondsAfterFinished"] == values["job"]["ttlSecondsAfterFinished"]
    pod = job["template"]
    assert pod["metadata"]["labels"]["team"] == "ops"
    assert pod["metadata"]["annotations"] == values["podAnnotations"]
    spec = pod["spec"]
    assert spec["terminationGracePeriodSeconds"] == values["job"]["terminationGracePeriodSeconds"]
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        assert spec[key] == values[key]
    c = container(docs)
    assert c["image"] == f"{values['image']['repository']}:{values['image']['tag']}"
    assert c["imagePullPolicy"] == "Always"
    assert c["resources"] == values["resources"]
    assert {"name": "TZ", "value": "Europe/Zurich"} in c["env"]
    variables = env(docs)
    assert json.loads(variables["CANARY_USER_OPTIONS"]) == values["canary"]["userOptions"]
    assert variables["CANARY_SERVER_NAME"] == "probe"
    assert variables["CANARY_STOP_TIMEOUT"] == "90.5"
    # The CA bundle from a Secret, mounted where CANARY_CA_BUNDLE points.
    ca = next(v for v in spec["volumes"] if v["name"] == "ca-bundle")
    assert ca["secret"]["secretName"] == "hub-ca"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "ca-bundle")
    assert variables["CANARY_CA_BUNDLE"] == f"{mount['mountPath']}/bundle.pem"
    assert the(docs, "ServiceAccount")["metadata"]["annotations"] == values["serviceAccount"]["annotations"]


def test_ca_bundle_from_a_configmap(helm):
    docs = render(helm, "-f", str(CHART / "ci" / "mount-values.yaml"))
    ca = next(v for v in pod_spec(docs)["volumes"] if v["name"] == "ca-bundle")
    assert ca["configMap"]["name"] == "hub-ca"
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "ca-bundle")
    assert env(docs)["CANARY_CA_BUNDLE"] == f"{mount['mountPath']}/ca.crt"


def test_pod_failure_policy_uses_the_canary_exit_codes(helm):
    docs = render(helm, *DEFAULTS)
    fail_job, ignore = job_spec(docs)["podFailurePolicy"]["rules"]
    assert fail_job["action"] == "FailJob"
    assert fail_job["onExitCodes"]["operator"] == "In"
    assert fail_job["onExitCodes"]["containerName"] == container(docs)["name"]
    assert sorted(fail_job["onExitCodes"]["values"]) == sorted(int(code) for code in NOT_RETRYABLE)
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


@pytest.mark.parametrize(
    ("args", "active_deadline", "grace_period"),
    [
        ((), 900 + 120, 120 + 30),
        (("--set", "canary.deadline=1500", "--set-json", "canary.stopTimeout=200.5"), 1500 + 120, 201 + 30),
        (("--set", "job.deadlineGraceSeconds=60"), 900 + 60, 150),
        (("--set", "job.activeDeadlineSeconds=3600", "--set", "job.terminationGracePeriodSeconds=600"), 3600, 600),
    ],
)
def test_deadlines_are_consistent(helm, args, active_deadline, grace_period):
    docs = render(helm, *DEFAULTS, *args)
    variables = env(docs)
    spec = job_spec(docs)
    assert spec["activeDeadlineSeconds"] == active_deadline
    assert spec["activeDeadlineSeconds"] > float(variables["CANARY_DEADLINE"])
    assert pod_spec(docs)["terminationGracePeriodSeconds"] == grace_period
    assert pod_spec(docs)["terminationGracePeriodSeconds"] >= float(variables["CANARY_STOP_TIMEOUT"])


def test_token_appears_only_in_the_secret(helm):
    encoded = base64.b64encode(TOKEN.encode()).decode()
    for args in (DEFAULTS, (*DEFAULTS, "--set", "token.mount=true", "--set", "networkPolicy.enabled=true")):
        docs = render(helm, *args)
        secret = the(docs, "Secret")
        assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
        for doc in docs:
            if doc is not secret:
                text = json.dumps(doc)
                assert TOKEN not in text and encoded not in text, f"token in {doc['kind']}"
        assert TOKEN not in notes(helm, *args)


def test_api_mode_reads_one_secret_with_a_dedicated_service_account(helm):
    docs = render(helm, *HUB, *EXISTING, "--set", "token.namespace=jhub", "--set", "token.key=api-token")
    account = the(docs, "ServiceAccount")
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs)["Role"]}
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(docs)["RoleBinding"]}
    assert "ClusterRole" not in by_kind(docs) and "ClusterRoleBinding" not in by_kind(docs)
    # The Secret's namespace: read that one Secret. The release's: hold the probe's Lease (app/lease.py).
    assert roles["jhub"]["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["canary-token"], "verbs": ["get"]},
    ]
    # The chart makes the Lease (the canary never creates one), so `create` is not granted on leases;
    # the one unnamed verb is `create` on events: each run's Event on its Job (events.enabled).
    assert roles[NAMESPACE]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [FULLNAME],
         "verbs": ["get", "update"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    (lease,) = by_kind(docs)["Lease"]
    assert lease["metadata"]["name"] == FULLNAME and "spec" not in lease, "no holder: the first run takes it"
    assert set(roles) == set(bindings) == {"jhub", NAMESPACE}
    for namespace, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": roles[namespace]["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE},
        ]
    spec = pod_spec(docs)
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is True
    variables = env(docs)
    assert variables["CANARY_TOKEN_SECRET"] == "canary-token"
    assert variables["CANARY_TOKEN_SECRET_KEY"] == "api-token"
    assert variables["CANARY_TOKEN_SECRET_NAMESPACE"] == "jhub"
    assert variables["CANARY_LEASE"] == FULLNAME and variables["CANARY_LEASE_NAMESPACE"] == NAMESPACE
    assert "CANARY_TOKEN_FILE" not in variables
    assert "Secret" not in by_kind(docs)


def test_each_probe_has_its_lease_made_by_the_chart_and_named_in_the_role(helm):
    docs = render(helm, *HUB, *EXISTING, "--set", "probes.a.user=canary-a", "--set", "probes.b.user=canary-b")
    leases = {lease["metadata"]["name"]: lease for lease in by_kind(docs)["Lease"]}
    assert set(leases) == {f"{FULLNAME}-a", f"{FULLNAME}-b"}
    assert {lease["metadata"]["labels"]["jupyterhub-canary/probe"] for lease in leases.values()} == {"a", "b"}
    (role,) = by_kind(docs)["Role"]
    (lease_rule,) = [r for r in role["rules"] if r["apiGroups"] == ["coordination.k8s.io"]]
    assert sorted(lease_rule["resourceNames"]) == sorted(leases) and lease_rule["verbs"] == ["get", "update"]
    lease_variables = {c["metadata"]["name"]: {e["name"]: e.get("value") for e in
                                               c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]}
                       ["CANARY_LEASE"] for c in by_kind(docs)["CronJob"]}
    assert lease_variables == {name: name for name in leases}, "each probe takes its own Lease"


def test_kube_relaxed_x509_reaches_the_canary_when_it_uses_the_api(helm):
    assert "CANARY_KUBE_RELAXED_X509" not in env(render(helm, *DEFAULTS))
    relaxed = env(render(helm, *DEFAULTS, "--set", "token.kubeRelaxedX509=true"))
    assert relaxed["CANARY_KUBE_RELAXED_X509"] == "true"
    mounted = ("--set", "token.mount=true", "--set", "token.kubeRelaxedX509=true")
    # In mount mode the Event on the Job is the one use of the API.
    assert env(render(helm, *HUB, *EXISTING, *mounted))["CANARY_KUBE_RELAXED_X509"] == "true"
    without_events = render(helm, *HUB, *EXISTING, *mounted, "--set", "events.enabled=false")
    assert "CANARY_KUBE_RELAXED_X509" not in env(without_events), "no Kubernetes API in mount mode without Events"


def test_api_mode_with_token_value_reads_the_chart_secret(helm):
    docs = render(helm, *DEFAULTS)
    secret_name = the(docs, "Secret")["metadata"]["name"]
    assert the(docs, "Role")["rules"][0]["resourceNames"] == [secret_name]
    assert the(docs, "Role")["metadata"]["namespace"] == NAMESPACE
    assert env(docs)["CANARY_TOKEN_SECRET"] == secret_name


def test_each_run_records_its_event_on_the_job_named_by_the_downward_api(helm):
    """The Job's name, uid and namespace come from the labels the Job controller gives its Pods: no guess.
    The helm test Pod has none of them: its variables are empty, and it records no Event."""
    for mode in ((), ("--set", "token.mount=true")):
        docs = render(helm, *HUB, *EXISTING, *mode)
        sources = {item["name"]: item.get("valueFrom") for item in container(docs)["env"]}
        assert sources["CANARY_JOB_NAME"] == {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}
        assert sources["CANARY_JOB_UID"] == {
            "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/controller-uid']"}}
        assert sources["CANARY_JOB_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        roles = {r["metadata"]["namespace"]: r for r in by_kind(docs)["Role"]}
        assert {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]} in roles[NAMESPACE]["rules"], mode
        assert pod_spec(docs)["automountServiceAccountToken"] is True
    # NOTES.txt shows the Job's Events and the runs' history.
    text = notes(helm, *HUB, *EXISTING)
    assert 'get events --field-selector involvedObject.name="$JOB"' in text and 'describe job "$JOB"' in text
    assert "--field-selector reason=CanaryFailed" in text

    off = render(helm, *HUB, *EXISTING, "--set", "events.enabled=false")
    assert not {"CANARY_JOB_NAME", "CANARY_JOB_UID", "CANARY_JOB_NAMESPACE"} & set(env(off))
    assert all(r["resources"] != ["events"] for r in by_kind(off)["Role"][0]["rules"])
    assert "get events" not in notes(helm, *HUB, *EXISTING, "--set", "events.enabled=false")


def test_mount_mode_has_no_rbac_and_no_api_token(helm):
    """Without Events: with them the pod needs an API token for its Event (the test above)."""
    docs = render(helm, *HUB, *EXISTING, "--set", "token.mount=true", "--set", "token.key=api-token",
                  "--set", "events.enabled=false")
    kinds = set(by_kind(docs))
    assert kinds.isdisjoint({"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"})
    spec = pod_spec(docs)
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec
    volume = next(v for v in spec["volumes"] if v["name"] == "token")
    assert volume["secret"]["secretName"] == "canary-token"
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "token")
    assert mount["readOnly"] is True
    variables = env(docs)
    assert variables["CANARY_TOKEN_FILE"] == f"{mount['mountPath']}/api-token"
    assert not any(name.startswith("CANARY_TOKEN_SECRET") for name in variables)
    # No Kubernetes API, no Lease: the server's age alone tells a live run's server (README).
    assert not any(name.startswith("CANARY_LEASE") for name in variables)
    assert "Lease" not in kinds


def test_network_policy(helm):
    assert "NetworkPolicy" not in by_kind(render(helm, *DEFAULTS))

    api = the(render(helm, *DEFAULTS, "--set", "networkPolicy.enabled=true"), "NetworkPolicy")["spec"]
    assert api["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in api
    dns, hub, api_server = api["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert hub == {"ports": [{"port": 443, "protocol": "TCP"}]}
    assert {p["port"] for p in api_server["ports"]} == {443, 6443}

    mounted = render(
        helm, "--set", "canary.hubUrl=http://hub.example.org:8081/base/", *EXISTING,
        "--set", "token.mount=true", "--set", "networkPolicy.enabled=true", "--set", "events.enabled=false",
    )
    policy = the(mounted, "NetworkPolicy")["spec"]
    assert len(policy["egress"]) == 2, "no API server rule when the Secret is mounted and no Event is recorded"
    assert policy["egress"][1]["ports"] == [{"port": 8081, "protocol": "TCP"}]
    labels = job_spec(mounted)["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()


def test_standard_labels_on_every_resource(helm):
    chart_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    for doc in render(helm, *DEFAULTS, "--set", "networkPolicy.enabled=true"):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "jupyterhub-canary"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == app.__version__
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == f"jupyterhub-canary-{chart_version}"


def test_names_fit_the_cronjob_limit(helm):
    docs = render(helm, *DEFAULTS, release="a-release-name-as-long-as-helm-allows-for-the-hub-canary"[:53])
    assert len(the(docs, "CronJob")["metadata"]["name"]) <= 52


LONGEST_RELEASE = "a-release-name-as-long-as-helm-allows-for-the-hub-canary"[:53]  # helm refuses longer ones
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@pytest.mark.parametrize(
    ("release", "args"),
    [
        (LONGEST_RELEASE, ()),
        ("hub-canary", _set("fullnameOverride=" + "f" * 52)),
        ("hub-canary", _set("nameOverride=" + "n" * 60)),
        ("c", ()),
        # The longest probe name (40) in a CronJob name of 52 characters, the first in NOTES.txt.
        ("hub-canary", _set("fullnameOverride=canary-abcd", "probes." + "p" * 40 + ".serverName=", "probes.q.serverName=q")),
    ],
    ids=["longest-release", "long-fullnameOverride", "long-nameOverride", "short", "longest-probe"],
)
def test_every_name_fits_its_limit_with_long_names(helm, release, args):
    """A Job's name becomes its pods' `job-name` label, at most 63 characters: the manual Job of NOTES.txt
    (its name ends in the time in seconds) fits with any valid release, override or probe name, and
    still names the CronJob in full. CronJobs fit 52 (the controller appends 11), the rest 63."""
    values = (*DEFAULTS, *args, *_set("prometheusRule.enabled=true", "grafanaDashboard.enabled=true",
                                      "networkPolicy.enabled=true", "canary.notebook=x"))
    done = _run([helm, "template", release, str(CHART), "--namespace", NAMESPACE, *values])
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    for doc in docs:
        name = doc["metadata"]["name"]
        assert len(name) <= (52 if doc["kind"] == "CronJob" else 63) and DNS_LABEL.fullmatch(name), (doc["kind"], name)
    cronjob = sorted(doc["metadata"]["name"] for doc in by_kind(docs)["CronJob"])[0]

    done = _run([helm, "install", release, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *values])
    assert done.returncode == 0, done.stderr
    text = done.stdout.partition("\nNOTES:\n")[2]
    (assignment,) = re.findall(r"^ *(JOB=.*)$", text, flags=re.MULTILINE)
    assert f"create job --from=cronjob/{cronjob} \"$JOB\"" in text
    shell = subprocess.run(["bash", "-c", f'{assignment}\nprintf %s "$JOB"'], capture_output=True, text=True, check=True)
    job = shell.stdout
    assert len(job) <= 63 and DNS_LABEL.fullmatch(job), job
    # Its prefix is the CronJob's (cut where it must be), so that the operator still sees whose Job it is.
    assert job.startswith(cronjob[:40]), job


# --- the chart against the CLI ---


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_variable_is_one_the_cli_accepts(helm, name):
    variables = canary_env(render(helm, *VALUE_SETS[name]), name)
    accepted = {option.env for option in RUN_OPTIONS} | {TOKEN_ENV}
    assert set(variables) <= accepted
    # Each value is one the CLI parses (paths to mounted files are checked by the tests above).
    options = {option.env: option for option in RUN_OPTIONS}
    for variable, value in variables.items():
        # value None: from the downward API (the Job's name, uid, namespace), whatever the Pod's are.
        if variable not in ("CANARY_TOKEN_FILE", "CANARY_CA_BUNDLE", "CANARY_NOTEBOOK") and value is not None:
            for one in value.split() if options[variable].repeat else [value]:
                options[variable].parse(one)


def test_the_chart_covers_every_cli_option(helm):
    """A new flag of `run` must be wired into the chart, or listed in NOT_SET_BY_CHART with a reason."""
    seen: set[str] = set()
    for name, args in VALUE_SETS.items():
        seen |= set(canary_env(render(helm, *args), name))
    seen |= set(canary_env(render(helm, *DEFAULTS, "--set", "token.mount=true")))
    seen |= set(canary_env(render(helm, *DEFAULTS, "--set", "token.kubeRelaxedX509=true")))  # only when on
    seen |= set(canary_env(render(helm, *HUB, *EXISTING, *FRESH_PROBES)))  # probes.<name>.freshUser, only when on
    assert seen | set(NOT_SET_BY_CHART) == {option.env for option in RUN_OPTIONS}


def test_default_values_equal_the_cli_defaults(helm):
    """The chart's defaults restate the CLI's, so that `kubectl describe` shows what runs."""
    options = {option.env: option for option in RUN_OPTIONS}
    for variable, value in canary_env(render(helm, *DEFAULTS)).items():
        option = options[variable]
        if option.default is not None:
            assert option.parse(value) == option.default, variable


# --- one spelling of the hub: what the canary pushes is what the chart selects ---

HUB_SPELLINGS = ("https://hub.example.org", "https://hub.example.org/", "https://hub.example.org/jupyter",
                 "https://hub.example.org/jupyter/", " https://hub.example.org ")
HUB_MENTION = re.compile(r"https://hub\.example\.org[\w./-]*")


def pushed_hubs(docs: list[dict]) -> set[str]:
    """The `hub` label the canary of each CronJob pushes its metrics under: its variables, parsed by
    the canary's own configuration code, into the grouping key of app/metrics.py (as app/cli.py does)."""
    hubs = set()
    for cronjob in by_kind(docs)["CronJob"]:
        (only,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        config = build_run_config({}, {item["name"]: item["value"] for item in only["env"] if "value" in item})
        hubs.add(metrics.Group(config.hub_url, config.user, config.probe).grouping_key()["hub"])
    return hubs


@pytest.mark.parametrize("probes", [(), _set("probes.cpu.serverName=", "probes.gpu.serverName=gpu")],
                         ids=["single-check", "probes"])
@pytest.mark.parametrize("spelling", HUB_SPELLINGS)
def test_the_rules_select_the_hub_label_the_canary_pushes(helm, spelling, probes):
    """However canary.hubUrl is written, the canary's pushed `hub` label, every selector of the rules
    and every mention of the hub (CronJob, alerts, NOTES.txt) are one spelling: with a trailing slash,
    as the canary normalises it (without it JupyterHubCanaryFailing never fired, issue 19)."""
    values = ("--set", f"canary.hubUrl={spelling}", *EXISTING, *probes,
              *_set("prometheusRule.enabled=true", "pushgateway.url=http://pushgateway.monitoring:9091",
                    "prometheusRule.slowSpawnSeconds=120", "grafanaDashboard.enabled=true", "networkPolicy.enabled=true"))
    done = _run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values])
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    (hub,) = pushed_hubs(docs)
    assert hub == spelling.strip().rstrip("/") + "/"
    rules = [r for group in the(docs, "PrometheusRule")["spec"]["groups"] for r in group["rules"]]
    selected = {found for r in rules for found in re.findall(r'\bhub="([^"]*)"', r["expr"] + json.dumps(r["annotations"]))}
    assert selected == {hub}
    assert set(HUB_MENTION.findall(done.stdout + notes(helm, *values))) == {hub}
    # The NetworkPolicy lets the canary reach the hub's port (443), whichever spelling.
    egress = the(docs, "NetworkPolicy")["spec"]["egress"]
    assert any({"port": 443, "protocol": "TCP"} in rule.get("ports", []) for rule in egress), egress


HUB_URLS = [*HUB_URLS_ACCEPTED, *HUB_URLS_REFUSED.values()]


def canary_spelling(raw: str) -> str | None:
    """The hub URL as the canary's own configuration code spells it, None when it refuses it."""
    try:
        return build_run_config({"hub_url": raw, "user": "u"}, {TOKEN_ENV: "t"}).hub_url
    except ConfigError:
        return None


@pytest.mark.parametrize("raw", HUB_URLS, ids=[repr(raw) for raw in HUB_URLS])
def test_the_chart_spells_and_refuses_the_hub_url_as_the_canary_does(helm, tmp_path, raw):
    """canary.hubUrl as any hand may write it (the case of the scheme, a port, a path, white space around or
    inside, an empty query, `//` at the end, a Unicode host): what the canary refuses, the chart refuses
    at install; what it accepts, the chart writes in the canary's spelling, in the CronJob and in every
    selector of the rules. (An uppercase scheme was refused by the chart only; a space or a `?` too.)"""
    spelled = canary_spelling(raw)
    values = tmp_path / "values.json"  # JSON is YAML: the value reaches the chart byte for byte
    values.write_text(json.dumps({"canary": {"hubUrl": raw}, "token": {"existingSecret": "canary-token"},
                                  "prometheusRule": {"enabled": True}, "pushgateway": {"url": "http://pushgateway.monitoring:9091"}}))
    done = _run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(values)])
    if spelled is None:
        assert done.returncode != 0 and "canary.hubUrl must be" in done.stderr, done.stderr or done.stdout[:400]
        return
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert pushed_hubs(docs) == {spelled}
    rules = [r for group in the(docs, "PrometheusRule")["spec"]["groups"] for r in group["rules"]]
    assert {found for r in rules for found in re.findall(r'\bhub="([^"]*)"', r["expr"])} == {spelled}


# --- offline validation of every manifest ---


def test_manifests_validate_strictly_for_every_kubernetes_version(helm, tmp_path):
    """kubernetes-validate --strict, for Kubernetes 1.29 up to the newest schemas it bundles."""
    try:
        from kubernetes_validate import utils
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: run `make tools`", pytrace=False)
    from packaging.version import Version

    versions = [v for v in utils.all_versions() if Version(v) >= Version("1.29")]
    assert versions, "kubernetes-validate bundles no schema for 1.29 or newer"
    resources = 0
    for name, args in VALUE_SETS.items():
        out = tmp_path / re.sub(r"[^a-z0-9]+", "-", name)
        done = _run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--output-dir", str(out), *args])
        assert done.returncode == 0, done.stderr
        for path in out.rglob("*.yaml"):
            resources += sum(1 for doc in yaml.safe_load_all(path.read_text()) if doc)
    files = sorted(str(path) for path in tmp_path.rglob("*.yaml"))
    validator = Path(sys.executable).parent / "kubernetes-validate"

    def validate(version: str) -> subprocess.CompletedProcess:
        return _run([str(validator), "--strict", "--kubernetes-version", version, *files])

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = dict(zip(versions, pool.map(validate, versions), strict=True))
    for version, done in results.items():
        problems = [line for line in done.stdout.splitlines() if not line.startswith("INFO ")]
        assert done.returncode == 0 and not problems, f"Kubernetes {version}:\n" + "\n".join(problems) + done.stderr
        # Every resource was validated (a kind without a schema is only a warning).
        assert done.stdout.count(" passed for resource ") == resources, done.stdout


def test_rendered_yaml_and_values_pass_yamllint(helm, tmp_path):
    for name, args in VALUE_SETS.items():
        out = tmp_path / re.sub(r"[^a-z0-9]+", "-", name)
        assert _run([helm, "template", RELEASE, str(CHART), "--output-dir", str(out), *args]).returncode == 0
    yamllint = Path(sys.executable).parent / "yamllint"
    if not yamllint.exists():
        pytest.fail("yamllint is not installed: run `make tools`", pytrace=False)
    config = ROOT / ".yamllint.yaml"
    done = _run([str(yamllint), "--strict", "-c", str(config), str(tmp_path), *(str(CHART / p) for p in CHART_YAML)])
    assert done.returncode == 0, done.stdout + done.stderr


# --- documentation ---


def test_notes_show_the_operator_commands_and_every_exit_code(helm):
    text = notes(helm, *DEFAULTS)
    # A new Job name each time (the time in seconds): the same command a second time works too.
    assert f"JOB={FULLNAME}-manual-$(date +%s)\n  kubectl -n {NAMESPACE} create job --from=cronjob/{FULLNAME} \"$JOB\"" in text
    assert 'logs "job/$JOB"' in text and 'delete job "$JOB"' in text
    assert "--watch" in text
    assert "{.items[0].status.containerStatuses[0].state.terminated.message}" in text
    table = dict(re.findall(r"^  (\d+) +(.+)$", text.partition("Exit codes")[2], flags=re.MULTILINE))
    assert table == {str(int(code)): meaning for code, meaning in MEANING.items()}
    fails_at_once = re.search(r"Exit codes \(([\d and,]+) fail the Job at once", text)
    assert fails_at_once, text
    assert sorted(map(int, re.findall(r"\d+", fails_at_once.group(1)))) == sorted(int(c) for c in NOT_RETRYABLE)


def _values_table_module():
    spec = importlib.util.spec_from_file_location("chart_values_table", ROOT / "scripts" / "chart_values_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_value_is_documented_and_the_readme_table_is_current():
    table = _values_table_module()
    values_yaml = (CHART / "values.yaml").read_text()
    rows, undocumented = table.parse(values_yaml)
    assert undocumented == []
    assert all(row.description for row in rows)
    readme = (CHART / "README.md").read_text()
    assert table.render_readme(readme, values_yaml) == readme, "run `make chart-docs`"


def test_readme_has_install_example_and_hub_side_setup():
    readme = (CHART / "README.md").read_text()
    assert "helm install" in readme
    assert "## Hub-side setup" in readme
    assert "access:servers!user=jupyterhub-canary" in readme


# --- JupyterHub 6's server names (issue 20): the schema states the rule the canary checks ---


@pytest.mark.parametrize("name", ["GPU", "my_server", "gpu-", "9gpu", "g--pu", "a" * 31, "probe~1"])
@pytest.mark.parametrize("where", ["canary", "probes.gpu"])
def test_the_schema_refuses_a_server_name_jupyterhub_6_refuses(helm, where, name):
    error = render_error(helm, *HUB, *EXISTING, "--set-string", f"{where}.serverName={name}")
    assert "don't meet the specifications of the schema" in error and "serverName" in error, error


@pytest.mark.parametrize("name", ["", "gpu", "gpu-a100", "a", "a" * 30, "x9-y8"])
def test_the_schema_takes_every_server_name_jupyterhub_6_takes_and_the_default_servers(helm, name):
    from app.hub import server_name_allowed

    assert server_name_allowed(name, "6.1.1")
    render(helm, *HUB, *EXISTING, "--set-string", f"canary.serverName={name}")
    render(helm, *HUB, *EXISTING, "--set-string", f"probes.gpu.serverName={name}", "--set-string", "probes.cpu.serverName=cpu-x")


# --- fresh-user probes (issue 20): probes.<name>.freshUser ---

FRESH_USER_ENV = "CANARY_FRESH_USER"
FRESH_PROBES = _set(
    "probes.fresh.freshUser=true", "probes.fresh.user=jupyterhub-canary-fresh-default",
    "probes.fresh.token.existingSecret=jupyterhub-canary-service-token", "probes.fresh.token.namespace=jhub",
    "probes.plain.user=jupyterhub-canary",
)


def probe_env(docs: list[dict], probe: str) -> dict[str, str]:
    [cronjob] = [c for c in by_kind(docs)["CronJob"] if c["metadata"]["name"] == f"{FULLNAME}-{probe}"]
    (only,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value") for item in only["env"]}


def test_a_fresh_user_probe_runs_with_fresh_user_and_the_others_do_not(helm):
    docs = render(helm, *HUB, *EXISTING, *FRESH_PROBES)
    fresh, plain = probe_env(docs, "fresh"), probe_env(docs, "plain")
    assert fresh[FRESH_USER_ENV] == "true" and fresh["CANARY_USER"] == "jupyterhub-canary-fresh-default"
    assert fresh["CANARY_TOKEN_SECRET"] == "jupyterhub-canary-service-token"
    assert fresh["CANARY_TOKEN_SECRET_NAMESPACE"] == "jhub"
    assert FRESH_USER_ENV not in plain
    # The canary reads the service's Secret in the hub's namespace, by name, and no other there.
    [hub_role] = [r for r in by_kind(docs)["Role"] if r["metadata"]["namespace"] == "jhub"]
    assert hub_role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["jupyterhub-canary-service-token"], "verbs": ["get"]}
    ]
    # The helm test Pod runs the first probe by name, `fresh`: as a fresh-user probe too.
    test_pod = next(d for d in docs if d["kind"] == "Pod")
    assert {e["name"]: e.get("value") for e in test_pod["spec"]["containers"][0]["env"]}[FRESH_USER_ENV] == "true"
    options = {option.env: option for option in RUN_OPTIONS}  # the canary's --fresh-user (app/config.py)
    assert options[FRESH_USER_ENV].parse(fresh[FRESH_USER_ENV]) is True


@pytest.mark.parametrize("args", [(), _set("probes.fresh.freshUser=false", "probes.fresh.user=alice")],
                         ids=["defaults", "freshUser-false"])
def test_without_fresh_user_no_probe_has_the_variable(helm, args):
    docs = render(helm, *HUB, *EXISTING, *args)
    assert FRESH_USER_ENV not in canary_env(docs)


@pytest.mark.parametrize("name", ["alice", "jupyterhub-canary", "jupyterhub-canary-fresh-", "x-jupyterhub-canary-fresh-a"])
def test_the_schema_refuses_a_fresh_user_probe_whose_user_breaks_the_name_rule(helm, name):
    """A fresh-user probe deletes its user every run: the schema refuses, naming the value and the rule."""
    error = render_error(helm, *HUB, *EXISTING, *_set("probes.fresh.freshUser=true"), "--set-string", f"probes.fresh.user={name}")
    assert "don't meet the specifications of the schema" in error, error
    assert f"at '/probes/fresh/user': '{name}' does not match pattern '^jupyterhub-canary-fresh-.+'" in error, error


@pytest.mark.parametrize("name", ["jupyterhub-canary-fresh-default", "jupyterhub-canary-fresh-gpu", "jupyterhub-canary-fresh-x"])
def test_the_schema_takes_every_fresh_user_name_of_the_rule(helm, name):
    render(helm, *HUB, *EXISTING, *_set("probes.fresh.freshUser=true"), "--set-string", f"probes.fresh.user={name}")


def test_the_schema_refuses_a_fresh_user_that_is_not_a_boolean(helm):
    error = render_error(helm, *HUB, *EXISTING, "--set-string", "probes.fresh.freshUser=yes",
                         *_set("probes.fresh.user=jupyterhub-canary-fresh-a"))
    assert "don't meet the specifications of the schema" in error and "freshUser" in error, error


def test_the_readme_explains_fresh_user_probes():
    readme = (CHART / "README.md").read_text()
    section = readme.partition("## Fresh-user probes")[2].partition("\n## ")[0]
    assert section, "chart/README.md has a Fresh-user probes section"
    for needed in ("jupyterhub-canary-service", "JUPYTERHUB_CANARY_SERVICE_TOKEN", "JUPYTERHUB_CANARY_FRESH_USERS",
                   "admin:users!user=", "tokens!user=", "access:servers!user=", "blocked_users",
                   "kubectl", "consecutive_failure_limit", "delete_pvc", "freshUser"):
        assert needed in section, needed
