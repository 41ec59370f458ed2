"""Transport faults on the requests of the storage and JupyterLab checks (app/checks/), injected by
the fake hub (tests/fakehub.py): a connection cut, a stall, a body that trickles. Each ends within
its budget with the documented code and cause, or passes when a safe retry cures it; the canary's
file never stays behind while the server answers; the token never shows.
"""

from __future__ import annotations

import pytest

from app.exit_codes import ExitCode
from tests.fakehub import FakeHub, OtherOrigin
from tests.test_faults import SLACK, TOKEN, canary

CONTENTS = r"/api/contents/jupyterhub-canary-"
MAIN_BUNDLE = r"/static/lab/main\.js$"
REMOTE_ENTRY = r"/lab/extensions/fake-ext/static/remoteEntry"
STORAGE = ("--check-storage", "--attempts", "1", "--request-timeout", "3")
LAB = ("--check-lab", "--attempts", "1", "--request-timeout", "3")


@pytest.mark.parametrize(
    ("method", "fault"),
    [
        pytest.param("PUT", "stall", id="save-stalls"),
        pytest.param("PUT", "trickle", id="save-answer-trickles"),
        pytest.param("GET", "stall", id="read-stalls"),
        pytest.param("GET", "trickle", id="read-trickles"),
    ],
)
def test_a_storage_request_that_stalls_or_trickles_is_15_timeout_at_the_request_timeout(tmp_path, method, fault):
    with FakeHub(spawn="ready") as fake:
        fake.fault(method, CONTENTS, fault, count=-1)
        run, elapsed = canary(fake, tmp_path, *STORAGE)
        assert run.exit_code == ExitCode.STORAGE_FAILED, run.output
        assert run.result["cause"] == "timeout"
        assert 3 <= run.result["phases_ms"]["storage"] / 1000 < 3 + SLACK
        # Deleted all the same (a trickled save still stored the file).
        assert fake.files == {} and fake.count("DELETE", CONTENTS) == 1
        assert fake.servers == {}
    assert elapsed < 3 + SLACK + 5


def test_a_hung_save_is_cut_by_the_deadline_too(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("PUT", CONTENTS, "stall", count=-1)
        run, elapsed = canary(fake, tmp_path, "--check-storage", "--deadline", "8", "--stop-timeout", "3")
        assert run.exit_code == ExitCode.STORAGE_FAILED, run.output
        assert run.result["cause"] == "timeout"
        assert fake.servers == {}
    assert elapsed < 8 + SLACK


def test_a_save_whose_connection_is_cut_is_sent_again_a_put_is_safe_to_resend(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("PUT", CONTENTS, "reset", after=True)
        run, _ = canary(fake, tmp_path, *STORAGE)
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("PUT", CONTENTS) == 2
        assert fake.files == {}


def test_a_delete_that_never_gets_through_fails_the_check_and_says_the_file_is_left(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("DELETE", CONTENTS, "reset", count=-1)
        run, _ = canary(fake, tmp_path, *STORAGE)
        assert run.exit_code == ExitCode.STORAGE_FAILED, run.output
        assert run.result["cause"] == "error"
        left = run.named("storage_file_left")
        assert left and list(fake.files) == [left[0]["path"]]


@pytest.mark.parametrize(("status", "cause"), [(507, "no_space"), (403, "permission"), (500, "error")])
def test_a_save_answered_with_an_error_status_is_15_with_its_cause(tmp_path, status, cause):
    with FakeHub(spawn="ready") as fake:
        fake.fault("PUT", CONTENTS, "status", status=status, count=-1)
        run, _ = canary(fake, tmp_path, *STORAGE)
        assert run.exit_code == ExitCode.STORAGE_FAILED, run.output
        assert run.result["cause"] == cause
        assert f"answered {status}: fakehub: injected fault" in run.result["message"]


@pytest.mark.parametrize("path", [r"/lab$", MAIN_BUNDLE, REMOTE_ENTRY], ids=["page", "main-bundle", "remote-entry"])
@pytest.mark.parametrize("fault", ["stall", "trickle"])
def test_a_lab_request_that_stalls_or_trickles_is_17_error_within_the_request_timeout(tmp_path, path, fault):
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", path, fault, count=-1)
        run, elapsed = canary(fake, tmp_path, *LAB)
        assert run.exit_code == ExitCode.LAB_FAILED, run.output
        assert run.result["cause"] == "error"
        assert run.result["phases_ms"]["lab"] / 1000 < 3 + SLACK
        assert fake.servers == {}
    assert elapsed < 3 + SLACK + 5


@pytest.mark.parametrize("fault", ["reset", "cut_body"])
def test_a_lab_request_cut_once_is_retried_and_passes(tmp_path, fault):
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", REMOTE_ENTRY, fault)
        run, _ = canary(fake, tmp_path, *LAB)
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("GET", REMOTE_ENTRY) == 2
        assert run.named("lab_served")[0]["assets"] == 2


def test_a_missing_remote_entry_is_17_asset_missing_naming_it(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", REMOTE_ENTRY, "status", status=404, count=-1)
        run, _ = canary(fake, tmp_path, *LAB)
        assert run.exit_code == ExitCode.LAB_FAILED, run.output
        assert run.result["cause"] == "asset_missing"
        assert "/user/canary/lab/extensions/fake-ext/static/remoteEntry.abc.js" in run.result["message"]


def test_each_check_is_a_phase_of_the_result_the_timeline_and_the_duration_metric(tmp_path):
    from app.metrics import RunMetrics, registry_for

    with FakeHub(spawn="ready") as fake:
        run, _ = canary(fake, tmp_path, "--check-storage", "--check-lab")
    assert run.exit_code == ExitCode.OK, run.output
    phases = run.result["phases_ms"]
    assert list(phases) == ["spawn_request", "ready_wait", "verify", "storage", "lab", "stop"]
    # The spawn's own progress events (followed from the spawn request on) come first, then one line a check.
    lines = [e["message"] for e in run.result["timeline"]]
    assert [line.split()[:3] for line in lines[-2:]] == [["check", "storage", "passed"], ["check", "lab", "passed"]]
    assert not any(line.startswith("check") for line in lines[:-2])
    registry = registry_for(RunMetrics(success=True, exit_code=0, attempts=1, duration_seconds=1.0, phases_ms=phases))
    for phase in ("storage", "lab"):
        value = registry.get_sample_value("jupyterhub_canary_duration_seconds", {"phase": phase})
        assert value == phases[phase] / 1000


# --- --check-url: a page of the server besides JupyterLab (app/checks/url.py) ---

APP = r"^/user/canary/rstudio/$"


def test_a_page_that_answers_2xx_with_a_body_passes_and_is_a_phase(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", APP, "text", status=200, body="<html>RStudio</html>", count=-1)
        run, _ = canary(fake, tmp_path, "--check-url", "rstudio/", "--check-url", "lab")
        assert run.exit_code == ExitCode.OK, run.output
        assert [e["path"] for e in run.named("url_served")] == ["/user/canary/rstudio/", "/user/canary/lab"]
        assert list(run.result["phases_ms"])[-2:] == ["urls", "stop"]
        assert run.result["timeline"][-1]["message"].startswith("check urls passed")


@pytest.mark.parametrize(
    ("fault", "cause", "said"),
    [
        ({"action": "status", "status": 404}, "not_served", " answered 404"),
        ({"action": "text", "status": 200, "body": ""}, "not_served", " answered 200 with an empty body"),
        ({"action": "status", "status": 403}, "error", " answered 403"),
        ({"action": "status", "status": 502}, "error", ": no answer from the server"),
    ],
    ids=["404", "empty-body", "403", "502"],
)
def test_a_page_not_served_is_17_naming_the_path(tmp_path, fault, cause, said):
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", APP, count=-1, **fault)
        run, _ = canary(fake, tmp_path, "--check-url", "rstudio/", "--attempts", "1")
        assert run.exit_code == ExitCode.LAB_FAILED, run.output
        assert run.result["cause"] == cause
        assert f"GET /user/canary/rstudio/{said}" in run.result["message"]
        assert fake.servers == {}


def test_a_redirect_within_the_server_is_followed(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", r"^/user/canary/rstudio$", "redirect", location="rstudio/", count=-1)
        fake.fault("GET", APP, "text", status=200, body="<html>RStudio</html>", count=-1)
        run, _ = canary(fake, tmp_path, "--check-url", "rstudio")
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("GET", APP) == 1
        assert run.named("url_served")[0]["redirects"] == 1


def test_a_redirect_loop_within_the_server_is_17_not_served(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", r"^/user/canary/loop$", "redirect", location="/user/canary/loop", count=-1)
        run, _ = canary(fake, tmp_path, "--check-url", "loop", "--attempts", "1")
        assert run.exit_code == ExitCode.LAB_FAILED, run.output
        assert run.result["cause"] == "not_served"
        assert "redirected more than 5 times" in run.result["message"]


@pytest.mark.parametrize("where", ["other-origin", "hub-login"])
def test_a_redirect_out_of_the_server_is_17_naming_it_and_the_token_never_goes_there(tmp_path, where):
    with OtherOrigin() as other, FakeHub(spawn="ready") as fake:
        location = other.url + "desktop/" if where == "other-origin" else "/hub/login?next=%2Fuser%2Fcanary%2Fdesktop%2F"
        fake.fault("GET", r"^/user/canary/desktop/$", "redirect", location=location, count=-1)
        run, _ = canary(fake, tmp_path, "--check-url", "desktop/", "--attempts", "1")
        assert run.exit_code == ExitCode.LAB_FAILED, run.output
        assert run.result["cause"] == "not_served"
        assert f"GET /user/canary/desktop/ answered 302 (redirect to {location})" in run.result["message"]
        assert other.request_lines() == []
        assert TOKEN.encode() not in bytes(other.received)
        assert fake.count("GET", r"^/hub/login") == 0
