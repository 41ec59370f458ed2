"""The chart's `probes` and its `helm test` Pod, rendered by the real helm.

chart/ci/probes-values.yaml (three probes: the default server, a GPU profile, a named server with
batch options) also goes through every check of tests/test_chart.py: helm lint --strict,
kubernetes-validate for 1.29 up to the newest schema, yamllint and the restricted Pod Security Standard.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.test_chart import CHART, EXISTING, HUB, NAMESPACE, RELEASE, by_kind, notes, render, render_error

FULLNAME = "hub-canary-jupyterhub-canary"
PROBES = ("-f", str(CHART / "ci" / "probes-values.yaml"))
VALUES = yaml.safe_load((CHART / "ci" / "probes-values.yaml").read_text())
LABEL = "jupyterhub-canary/probe"


def _set(*settings: str) -> tuple[str, ...]:
    return tuple(arg for setting in settings for arg in ("--set", setting))


def cronjobs(docs: list[dict]) -> dict[str, dict]:
    return {c["metadata"]["labels"].get(LABEL, ""): c for c in by_kind(docs)["CronJob"]}


def pod(cronjob: dict) -> dict:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]


def env(spec: dict) -> dict[str, str]:
    (only,) = spec["containers"]
    return {item["name"]: item.get("value") for item in only["env"]}


# --- three probes, three CronJobs ---


def test_one_cronjob_per_probe_named_and_labelled_after_it(helm):
    found = cronjobs(render(helm, *PROBES))
    assert set(found) == {"cpu", "gpu", "batch"}
    for probe, cronjob in found.items():
        assert cronjob["metadata"]["name"] == f"{FULLNAME}-{probe}"
        assert cronjob["spec"]["jobTemplate"]["metadata"]["labels"][LABEL] == probe
        assert pod(cronjob)["metadata"]["labels"][LABEL] == probe
        assert env(pod(cronjob)["spec"])["CANARY_PROBE"] == probe


def test_a_probe_inherits_the_top_level_settings_and_overrides_what_it_names(helm):
    found = cronjobs(render(helm, *PROBES))
    cpu, gpu, batch = (env(pod(found[p])["spec"]) for p in ("cpu", "gpu", "batch"))
    for variables in (cpu, gpu, batch):
        assert variables["CANARY_HUB_URL"] == VALUES["canary"]["hubUrl"]
        assert variables["CANARY_USER"] == "jupyterhub-canary"
        assert variables["CANARY_PUSHGATEWAY_URL"] == VALUES["pushgateway"]["url"]
    # cpu: nothing overridden, the default server, no options, the top-level schedule.
    assert "CANARY_SERVER_NAME" not in cpu and "CANARY_USER_OPTIONS" not in cpu
    assert found["cpu"]["spec"]["schedule"] == "*/10 * * * *"
    assert cpu["CANARY_SPAWN_TIMEOUT"] == "300" and cpu["CANARY_CHECK_KERNEL"] == "false"
    # gpu: the profile, its own schedule and timeouts, and the Job's deadline derived from them.
    assert json.loads(gpu["CANARY_USER_OPTIONS"]) == {"profile": "gpu"}
    assert gpu["CANARY_SERVER_NAME"] == "gpu"
    assert found["gpu"]["spec"]["schedule"] == "*/30 * * * *"
    assert (gpu["CANARY_SPAWN_TIMEOUT"], gpu["CANARY_DEADLINE"]) == ("900", "1500")
    assert found["gpu"]["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 1500 + 120
    assert found["cpu"]["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 900 + 120
    # batch: options, the kernel check, its resources, its extra variable added, its own token Secret.
    assert json.loads(batch["CANARY_USER_OPTIONS"]) == VALUES["probes"]["batch"]["userOptions"]
    assert batch["CANARY_CHECK_KERNEL"] == "true"
    (container,) = pod(found["batch"])["spec"]["containers"]
    assert container["resources"] == VALUES["probes"]["batch"]["resources"]
    assert batch["TZ"] == "Etc/UTC" and "TZ" not in cpu
    assert batch["CANARY_TOKEN_SECRET"] == "canary-batch-token"
    assert cpu["CANARY_TOKEN_SECRET"] == gpu["CANARY_TOKEN_SECRET"] == "canary-token"


def test_the_role_names_exactly_the_secrets_in_use(helm):
    (role,) = by_kind(render(helm, *PROBES))["Role"]
    assert role["rules"][0]["resourceNames"] == ["canary-batch-token", "canary-token"]
    # Every probe with its own Secret: the shared one is neither needed nor named nor rendered.
    own = _set("probes.a.token.existingSecret=a-token", "probes.b.serverName=b", "probes.b.token.existingSecret=b-token",
               "probes.b.token.namespace=jhub")
    docs = render(helm, *HUB, "--set", "token.value=tok-never-used", *own)
    roles = {r["metadata"]["namespace"]: r["rules"][0]["resourceNames"] for r in by_kind(docs)["Role"]}
    assert roles == {NAMESPACE: ["a-token"], "jhub": ["b-token"]}
    bindings = {b["metadata"]["namespace"] for b in by_kind(docs)["RoleBinding"]}
    assert bindings == {NAMESPACE, "jhub"}
    assert "Secret" not in by_kind(docs)
    # One probe without its own Secret: the shared token is required.
    assert "or token.existingSecret in every probe" in render_error(
        helm, *HUB, *_set("probes.a.token.existingSecret=a-token", "probes.c.serverName=c")
    )


def test_the_same_user_and_server_in_two_probes_is_refused(helm):
    error = render_error(helm, *HUB, *EXISTING, *_set("probes.one.userOptions.profile=cpu", "probes.two.userOptions.profile=gpu"))
    assert "probes one and two both use user \"jupyterhub-canary\" and server name \"\"" in error
    assert "each would stop the other's server as stale" in error
    # The same user with different server names is fine.
    render(helm, *HUB, *EXISTING, *_set("probes.one.serverName=", "probes.two.serverName=two"))


def test_a_cronjob_name_over_52_characters_is_refused(helm):
    name = "a-probe-name-that-is-long"
    error = render_error(helm, *HUB, *EXISTING, "--set", f"probes.{name}.serverName=x")
    assert f"probes.{name}: the CronJob name \"{FULLNAME}-{name}\" has {len(FULLNAME) + 1 + len(name)} characters" in error
    assert "Kubernetes allows 52" in error


def test_a_probes_own_settings_are_checked_and_named(helm):
    error = render_error(helm, *HUB, *EXISTING, *_set("probes.gpu.deadline=100"))
    assert "probes.gpu: canary.deadline (100) must exceed canary.stopTimeout (120)" in error
    error = render_error(helm, *HUB, *EXISTING, *_set("token.mount=true", "probes.a.token.existingSecret=t",
                                                      "probes.a.token.namespace=jhub"))
    assert "probes.a: token.mount=true needs the Secret in the release namespace" in error


@pytest.mark.parametrize(
    ("setting", "pattern"),
    [
        ("probes.gpu.spawnTimout=60", r"additional propert(y|ies) '?spawnTimout'? (is )?not allowed"),
        ("probes.gpu.token.value=x", r"additional propert(y|ies) '?value'? (is )?not allowed"),
        ("probes.GPU.user=x", r"GPU"),
    ],
)
def test_the_schema_rejects_unknown_keys_and_bad_names_in_probes(helm, setting, pattern):
    error = render_error(helm, *HUB, *EXISTING, "--set", setting)
    assert "don't meet the specifications of the schema" in error
    assert re.search(pattern, error, re.IGNORECASE), error


# --- helm test ---


def test_helm_test_pod_runs_the_first_probe_with_the_cronjobs_pod_spec(helm):
    docs = render(helm, *PROBES)
    (test_pod,) = by_kind(docs)["Pod"]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "hook-succeeded" in test_pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"].split(",")
    first = cronjobs(docs)["batch"]  # the first probe by name
    assert test_pod["metadata"]["name"] == f"{FULLNAME}-batch-test"
    assert test_pod["metadata"]["labels"][LABEL] == "batch"
    spec = dict(test_pod["spec"])
    assert spec.pop("activeDeadlineSeconds") == first["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    assert spec == pod(first)["spec"], "the same pod spec: security context, variables, volumes"


def test_helm_test_pod_runs_the_chosen_probe_or_names_the_probes(helm):
    (test_pod,) = by_kind(render(helm, *PROBES, "--set", "helmTest.probe=gpu"))["Pod"]
    assert env(test_pod["spec"])["CANARY_PROBE"] == "gpu"
    error = render_error(helm, *PROBES, "--set", "helmTest.probe=gpx")
    assert 'helmTest.probe "gpx" is not a probe of this release; the probes: batch, cpu, gpu' in error
    assert "Pod" not in by_kind(render(helm, *PROBES, "--set", "helmTest.enabled=false"))


def test_helm_test_pod_of_the_single_check(helm):
    docs = render(helm, *HUB, *EXISTING)
    (test_pod,) = by_kind(docs)["Pod"]
    (cronjob,) = by_kind(docs)["CronJob"]
    assert test_pod["metadata"]["name"] == f"{FULLNAME}-test"
    assert {k: v for k, v in test_pod["spec"].items() if k != "activeDeadlineSeconds"} == pod(cronjob)["spec"]
    assert "CANARY_PROBE" not in env(test_pod["spec"])


def test_notes_list_the_probes_and_tell_to_run_helm_test(helm):
    text = notes(helm, *PROBES)
    assert f"helm test {RELEASE} -n {NAMESPACE}" in text
    for probe in ("cpu", "gpu", "batch"):
        assert f"  {probe}: CronJob {FULLNAME}-{probe}, " in text
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes(helm, *HUB, *EXISTING)


# --- the chart README's examples render as they say ---


def readme_yaml(section: str) -> list[dict]:
    text = (CHART / "README.md").read_text().partition(f"\n## {section}\n")[2].partition("\n## ")[0]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)]


def test_readme_three_probes_render_three_cronjobs(helm, tmp_path):
    (values,) = readme_yaml("Several probes")
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    docs = render(helm, "-f", str(path))
    found = cronjobs(docs)
    assert set(found) == {"default", "gpu", "batch"}
    variables = {probe: env(pod(c)["spec"]) for probe, c in found.items()}
    assert "CANARY_SERVER_NAME" not in variables["default"]
    assert json.loads(variables["gpu"]["CANARY_USER_OPTIONS"]) == {"profile": "gpu"}
    assert variables["batch"]["CANARY_SERVER_NAME"] == "batch" and variables["batch"]["CANARY_CHECK_KERNEL"] == "true"
    (rule,) = by_kind(docs)["PrometheusRule"]
    assert [g["name"] for g in rule["spec"]["groups"]] == [f"jupyterhub-canary.{p}.rules" for p in ("batch", "default", "gpu")]


def test_readme_argo_cd_annotations_reach_the_test_pod(helm, tmp_path):
    (values,) = readme_yaml("helm test")
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    (test_pod,) = by_kind(render(helm, *HUB, *EXISTING, "-f", str(path)))["Pod"]
    annotations = test_pod["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "PostSync"
    assert annotations["helm.sh/hook"] == "test"
