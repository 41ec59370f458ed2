"""The chart's wiring of the checks of a user's server (issue 15): `checkStorage`, `storagePath`,
`checkLab`, `labPath`, `notebook` / `notebookConfigMap`, `notebookTimeout`, top-level and per probe,
rendered by the real helm.

chart/ci/checks-values.yaml also goes through every check of tests/test_chart.py (helm lint --strict,
kubernetes-validate, yamllint, the restricted Pod Security Standard, the CLI's variables).
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from app.config import RUN_OPTIONS, build_run_config
from tests.test_chart import (
    CHART,
    DEFAULTS,
    EXISTING,
    HUB,
    by_kind,
    canary_env,
    render,
    render_error,
)

CHECKS = ("-f", str(CHART / "ci" / "checks-values.yaml"))
VALUES = yaml.safe_load((CHART / "ci" / "checks-values.yaml").read_text())
LABEL = "jupyterhub-canary/probe"
MOUNT = "/etc/jupyterhub-canary/notebook"

# The variables of issue 15's checks of a user's server (storage, JupyterLab, a notebook).
CHECK_VARIABLES = frozenset({
    "CANARY_CHECK_STORAGE", "CANARY_STORAGE_PATH", "CANARY_CHECK_LAB", "CANARY_LAB_PATH",
    "CANARY_NOTEBOOK", "CANARY_NOTEBOOK_TIMEOUT", "CANARY_CHECK_URL",
})


def probes(docs: list[dict]) -> dict[str, dict]:
    """Each probe's pod spec, by probe name ("" for the single check)."""
    return {
        c["metadata"]["labels"].get(LABEL, ""): c["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for c in by_kind(docs)["CronJob"]
    }


def env(spec: dict) -> dict[str, str]:
    (only,) = spec["containers"]
    return {item["name"]: item.get("value") for item in only["env"]}


def notebook_volume(spec: dict) -> dict | None:
    return next((v for v in spec["volumes"] if v["name"] == "notebook"), None)


def test_the_checks_are_off_by_default_and_render_nothing(helm):
    docs = render(helm, *DEFAULTS)
    (spec,) = probes(docs).values()
    assert not set(env(spec)) & CHECK_VARIABLES
    assert notebook_volume(spec) is None
    assert "ConfigMap" not in by_kind(docs)


def test_each_probe_gets_its_checks_as_the_cli_variables(helm):
    found = probes(render(helm, *CHECKS))
    default, gpu = env(found["default"]), env(found["gpu"])
    assert default["CANARY_CHECK_STORAGE"] == gpu["CANARY_CHECK_STORAGE"] == "true"
    assert default["CANARY_STORAGE_PATH"] == gpu["CANARY_STORAGE_PATH"] == "canary-checks"
    assert default["CANARY_CHECK_LAB"] == "true" and default["CANARY_LAB_PATH"] == "tree"
    assert "CANARY_CHECK_LAB" not in gpu and "CANARY_LAB_PATH" not in gpu, "gpu turns the JupyterLab check off"
    assert default["CANARY_NOTEBOOK_TIMEOUT"] == "120" and gpu["CANARY_NOTEBOOK_TIMEOUT"] == "600"
    assert default["CANARY_CHECK_URL"] == "rstudio/ vscode/?folder=/home/jovyan"
    assert "CANARY_CHECK_URL" not in gpu, "gpu checks no page"
    variables = {"CANARY_HUB_URL": "https://h/", "CANARY_USER": "u", "JUPYTERHUB_API_TOKEN": "t"}
    config = build_run_config({}, {**variables, "CANARY_CHECK_URL": default["CANARY_CHECK_URL"]})
    assert config.check_urls == ("rstudio/", "vscode/?folder=/home/jovyan")


def test_an_inline_notebook_is_a_configmap_mounted_read_only(helm):
    docs = render(helm, *CHECKS)
    (configmap,) = by_kind(docs)["ConfigMap"]
    assert configmap["metadata"]["name"] == "hub-canary-jupyterhub-canary-default-notebook"
    assert configmap["metadata"]["labels"][LABEL] == "default"
    notebook = json.loads(configmap["data"]["notebook.ipynb"])
    assert notebook == json.loads(VALUES["canary"]["notebook"])
    spec = probes(docs)["default"]
    volume = notebook_volume(spec)
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert volume["configMap"]["items"] == [{"key": "notebook.ipynb", "path": "notebook.ipynb"}]
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "notebook"]
    assert mount == {"name": "notebook", "mountPath": MOUNT, "readOnly": True}
    assert env(spec)["CANARY_NOTEBOOK"] == f"{MOUNT}/notebook.ipynb"


def test_an_existing_configmap_is_mounted_and_not_rendered(helm):
    docs = render(helm, *CHECKS)
    spec = probes(docs)["gpu"]
    assert notebook_volume(spec)["configMap"]["name"] == "site-notebooks"
    assert notebook_volume(spec)["configMap"]["items"] == [{"key": "gpu-smoke.ipynb", "path": "gpu-smoke.ipynb"}]
    assert env(spec)["CANARY_NOTEBOOK"] == f"{MOUNT}/gpu-smoke.ipynb"
    assert [c["metadata"]["name"] for c in by_kind(docs)["ConfigMap"]] == ["hub-canary-jupyterhub-canary-default-notebook"]


def test_the_single_check_takes_them_too(helm):
    docs = render(helm, *HUB, *EXISTING, "--set", "canary.checkStorage=true", "--set", "canary.checkLab=true",
                  "--set", "canary.notebookConfigMap.name=notebooks")
    (spec,) = probes(docs).values()
    variables = env(spec)
    assert variables["CANARY_CHECK_STORAGE"] == "true" and "CANARY_STORAGE_PATH" not in variables, "empty: the CLI's default"
    assert variables["CANARY_CHECK_LAB"] == "true" and variables["CANARY_LAB_PATH"] == "lab"
    assert variables["CANARY_NOTEBOOK"] == f"{MOUNT}/notebook.ipynb"
    assert variables["CANARY_NOTEBOOK_TIMEOUT"] == "300"


def test_both_an_inline_notebook_and_a_configmap_are_refused(helm):
    both = ("--set-string", "canary.notebook=nbformat", "--set", "canary.notebookConfigMap.name=nb")
    error = render_error(helm, *HUB, *EXISTING, *both)
    assert "canary.notebook and canary.notebookConfigMap.name are both set" in error
    error = render_error(helm, *CHECKS, "--set-string", "probes.gpu.notebook=nbformat")
    assert "probes.gpu" in error and "both set" in error


@pytest.mark.parametrize(
    ("setting", "pattern"),
    [
        ("canary.checkStorag=true", r"checkStorag"),
        ("probes.gpu.labpath=tree", r"labpath"),
        ("canary.notebookConfigMap.nam=nb", r"nam"),
    ],
)
def test_the_schema_rejects_typos_in_the_new_values(helm, setting, pattern):
    error = render_error(helm, *HUB, *EXISTING, "--set", "probes.gpu.serverName=gpu", "--set", setting)
    assert "don't meet the specifications of the schema" in error
    assert re.search(rf"additional propert(y|ies) '?{pattern}'? (is )?not allowed", error, re.IGNORECASE), error


@pytest.mark.parametrize("path", ["/hub/admin", "rstudio/ x", "rstudio/#x", ""])
@pytest.mark.parametrize("where", ["canary", "probes.gpu"])
def test_the_schema_refuses_a_check_url_that_is_not_a_relative_path(helm, where, path):
    urls = f"{where}.checkUrls={json.dumps([path])}"
    error = render_error(helm, *HUB, *EXISTING, "--set", "probes.gpu.serverName=gpu", "--set-json", urls)
    assert "don't meet the specifications of the schema" in error and "checkUrls" in error, error


def test_the_chart_sets_exactly_the_checks_variables(helm):
    """Every variable of the checks is set when the checks are on, and each is one the CLI knows."""
    seen = set(canary_env(render(helm, *CHECKS), "checks-values"))
    assert seen >= CHECK_VARIABLES
    assert CHECK_VARIABLES <= {option.env for option in RUN_OPTIONS}
