"""Today's single-check values render exactly as they did before the chart learnt `probes`.

tests/golden/*.yaml were rendered by helm from main's chart (commit 524de0c) before `probes` existed;
each value set below must still render byte for byte the same. `--skip-tests` leaves out the
`helm test` hook Pod, which is new and deliberately rendered for every install.

Changed on purpose since (regenerated with render_text): issue 15 — the exit-code contract gained
15-17 (the alerts' and NOTES' exit-code table), the single check's failing alert looks up its reason
and cause in its description; the new values of issue 15 (checkStorage, checkLab, notebook, ...) are
off by default and render nothing. Issue 14 — the probe's Lease (its variables and the Role's rules
for leases) and exit code 18 (podFailurePolicy fails the Job at once on it, the exit-code tables).
Issue 19 — the chart makes each probe's Lease (lease.yaml), and the Role no longer grants `create`.
Issue 19 — the exit-code meanings of 18, 21, 77 and 78 name the Lease and a lost rotation.
Issue 21 — JupyterHubCanaryJobFailed leaves out the manual Jobs NOTES.txt names (<cronjob>-manual-<seconds>).
Issue 21 — each run's Event on its Job (events.enabled, default on): the downward-API variables of the
Job's name, uid and namespace, the Role's `create` on events, and in mount mode the ServiceAccount, its
Role and mounted API token (and CANARY_KUBE_RELAXED_X509 wherever the API is used). The failing alert's
description reads the run's message from jupyterhub_canary_last_result_info; its queries are Go string
literals (a selector may quote in backticks).
Issue 20 — the exit-code meaning of 17 names the --check-url pages too, that of 13 a fresh user not deleted.
Issue 20 — the failing alert's list of causes names init_container.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "chart"
GOLDEN = Path(__file__).resolve().parent / "golden"
RELEASE, NAMESPACE = "hub-canary", "monitoring"

_HUB = ("--set", "canary.hubUrl=https://hub.example.org/")
_RULES = ("--set", "prometheusRule.enabled=true", "--set", "pushgateway.url=http://pushgateway.monitoring:9091")
GOLDEN_SETS: dict[str, tuple[str, ...]] = {
    "defaults-token-value": (*_HUB, "--set", "token.value=golden-test-token"),
    "defaults-existing-secret": (*_HUB, "--set", "token.existingSecret=canary-token"),
    "defaults-rules": (*_HUB, "--set", "token.existingSecret=canary-token", *_RULES),
    **{
        f"ci-{name}": ("-f", str(CHART / "ci" / f"{name}-values.yaml"))
        for name in ("api-mode", "full", "mount")
    },
    "ci-full-rules": ("-f", str(CHART / "ci" / "full-values.yaml"), "--set", "prometheusRule.enabled=true",
                      "--set", "cronjob.schedule=*/5 * * * *"),
}


def render_text(helm: str | Path, name: str) -> str:
    done = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--skip-tests", *GOLDEN_SETS[name]],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("name", GOLDEN_SETS)
def test_single_check_values_render_exactly_as_before(helm, name):
    golden = (GOLDEN / f"{name}.yaml").read_text()
    assert render_text(helm, name) == golden, f"{name}: the rendering differs from tests/golden/{name}.yaml"


def test_every_golden_file_is_compared():
    assert {p.stem for p in GOLDEN.glob("*.yaml")} == set(GOLDEN_SETS)
