"""The checks against the user's server (app/checks/) on a real hub, with the real faults users meet:
a home on a full tmpfs and on a read-only one, a save that hangs, JupyterLab disabled, JupyterLab
without its main bundle, JupyterLab's page loading a script from another origin, a notebook that
raises at its third code cell, a cell that never ends.

The hub is this module's own: its pre_spawn_hook (tests/hub_config.py's, wrapped) gives some users'
servers an environment that makes the fault, by the user-name prefix (SETUPS). Homes are real
mounts (the tests run as root): mounted before the spawn, unmounted in the fixture's teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from app.deadline import CLEANUP_SHARE, LAST_LOOK
from app.exit_codes import ExitCode
from tests.fakehub import OtherOrigin
from tests.localhub import REPO_ROOT, LocalHub, until_stopped
from tests.runner import finish_process, start_process
from tests.test_kernel import account, canary

pytestmark = pytest.mark.hub

LAB_DIR = Path(os.sys.prefix) / "share" / "jupyter" / "lab"


def _server_config(directory: Path, config: dict) -> str:
    directory.mkdir(parents=True)
    (directory / "jupyter_server_config.json").write_text(json.dumps(config))
    return str(directory)


def _lab_without_main_bundle(directory: Path) -> str:
    """JupyterLab's application directory with its main bundle removed (everything else linked)."""
    static = directory / "static"
    static.mkdir(parents=True)
    for entry in LAB_DIR.iterdir():
        if entry.name != "static":
            (directory / entry.name).symlink_to(entry)
    for entry in (LAB_DIR / "static").iterdir():
        if not (entry.name.startswith("main.") and entry.name.endswith(".js")):
            (static / entry.name).symlink_to(entry)
    return str(directory)


def _lab_with_more_in_its_page(directory: Path, more: str) -> str:
    """JupyterLab's application directory whose page template (static/index.html) has `more` at the end
    of its head, as a custom template or an extension adds an analytics snippet. The main bundle is a
    copy (the server does not serve a static file linked from elsewhere), everything else linked."""
    static = directory / "static"
    static.mkdir(parents=True)
    for entry in LAB_DIR.iterdir():
        if entry.name != "static":
            (directory / entry.name).symlink_to(entry)
    for entry in (LAB_DIR / "static").iterdir():
        if entry.name.startswith("main.") and entry.name.endswith(".js"):
            shutil.copyfile(entry, static / entry.name)
        elif entry.name != "index.html":
            (static / entry.name).symlink_to(entry)
    page = (LAB_DIR / "static" / "index.html").read_text()
    assert page.count("</head>") == 1
    (static / "index.html").write_text(page.replace("</head>", more + "</head>"))
    return str(directory)


@pytest.fixture(scope="module")
def other_origin():
    """A host of another origin (127.0.0.2) that records what it is sent: a CDN, an analytics host."""
    with OtherOrigin() as other:
        yield other


@pytest.fixture(scope="module")
def checks_hub(tmp_path_factory, other_origin):
    workdir = tmp_path_factory.mktemp("checks_hub")
    contents = {"PYTHONPATH": str(REPO_ROOT)}
    runtime = {"JUPYTER_RUNTIME_DIR": str(workdir / "runtime")}  # not in a home that cannot be written
    setups = {
        "hangsave-": {**contents, "JUPYTER_CONFIG_DIR": _server_config(
            workdir / "config-hangsave", {"ServerApp": {"contents_manager_class": "tests.hanging_contents.HangingSave"}})},
        "hangread-": {**contents, "JUPYTER_CONFIG_DIR": _server_config(
            workdir / "config-hangread", {"ServerApp": {"contents_manager_class": "tests.hanging_contents.HangingRead"}})},
        "nolab-": {"JUPYTER_CONFIG_DIR": _server_config(
            workdir / "config-nolab", {"ServerApp": {"jpserver_extensions": {"jupyterlab": False}}})},
        "nobundle-": {"JUPYTERLAB_DIR": _lab_without_main_bundle(workdir / "lab-nobundle")},
        "foreignscript-": {"JUPYTERLAB_DIR": _lab_with_more_in_its_page(
            workdir / "lab-foreignscript", f'<script async src="{other_origin.url}analytics.js?site=1"></script>')},
        "proxied-": {**contents, "JUPYTER_CONFIG_DIR": _server_config(
            workdir / "config-proxied", {"ServerApp": {"jpserver_extensions": {"tests.proxy_standin": True}}})},
        "fullhome-": runtime,
        "rohome-": runtime,
    }
    extra = (
        f"_setups = {json.dumps(setups)}\n"
        "_base_hook = c.Spawner.pre_spawn_hook\n"
        "_base_env = dict(c.Spawner.environment)\n"
        "def _checks_hook(spawner):\n"
        "    _base_hook(spawner)\n"
        "    env = dict(_base_env)\n"
        "    for prefix, more in _setups.items():\n"
        "        if spawner.user.name.startswith(prefix):\n"
        "            env.update(more)\n"
        "    spawner.environment = env\n"
        "c.Spawner.pre_spawn_hook = _checks_hook\n"
    )
    yield from until_stopped(LocalHub(workdir, slow_spawn_timeout=0, extra_config=extra).start(), "the checks' hub")


def home(hub: LocalHub, user: str) -> Path:
    return hub.workdir / "home" / user


@pytest.fixture
def mounted_home(checks_hub):
    """mount(user, options, fill): the user's home on its own tmpfs; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(user: str, options: str, *, fill: bool = False) -> Path:
        directory = home(checks_hub, user)
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=512k,{options}", "tmpfs", str(directory)], check=True)
        mounted.append(directory)
        if fill:
            with open(directory / "filler", "wb") as filler:  # noqa: PTH123
                with pytest.raises(OSError, match="No space left"):
                    while True:
                        filler.write(b"\0" * 65536)
                        filler.flush()
        return directory

    yield mount
    for directory in mounted:
        if subprocess.run(["umount", str(directory)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], check=True)


def canary_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("jupyterhub-canary-*"))


def kernels_left(hub: LocalHub) -> list[int]:
    return [p.pid for p in hub.leftover_processes() if "ipykernel" in " ".join(p.cmdline())]


def assert_clean(hub: LocalHub, user: str, run) -> None:
    assert hub.servers(user) == {}, run.output
    assert canary_files(home(hub, user)) == [], run.output
    assert kernels_left(hub) == []


# --- a healthy server: every check passes, each a phase and a line of the timeline ---


def test_all_checks_pass_on_a_healthy_server(checks_hub, hub_user, tmp_path):
    user, token = account(checks_hub, hub_user())
    notebook = write_notebook(tmp_path / "ok.ipynb", ["x = 6", "print(x * 7)"])
    run = canary(checks_hub, user, token, tmp_path, "--check-kernel", "--check-storage", "--check-lab",
                 "--notebook", str(notebook))
    assert run.exit_code == ExitCode.OK, run.output
    result = run.result
    assert list(result["phases_ms"]) == [
        "spawn_request", "ready_wait", "verify", "kernel", "notebook", "storage", "lab", "stop"]
    assert all(isinstance(ms, int) for ms in result["phases_ms"].values())
    lines = [e["message"] for e in result["timeline"] if e["message"].startswith("check ")]
    assert [line.split()[1:3] for line in lines] == [[n, "passed"] for n in ("kernel", "notebook", "storage", "lab")]
    assert result["notebook"]["name"] == "ok.ipynb"
    assert (result["notebook"]["cells"], result["notebook"]["cells_run"]) == (2, 2)
    assert len(result["notebook"]["cell_ms"]) == 2
    saved, deleted = run.named("storage_saved"), run.named("storage_deleted")
    assert len(saved) == len(deleted) == 1 and saved[0]["path"] == deleted[0]["path"]
    served = run.named("lab_served")[0]
    # The main bundle and jupyterlab_pygments' remoteEntry (a federated extension of the test venv).
    assert served["assets"] >= 2 and served["bytes"] > 0
    assert_clean(checks_hub, user, run)


# --- storage ---


def test_storage_path_is_a_directory_under_the_servers_root(checks_hub, hub_user, tmp_path):
    user, token = account(checks_hub, hub_user())
    (home(checks_hub, user) / "work" / "notebooks").mkdir(parents=True)
    run = canary(checks_hub, user, token, tmp_path, "--check-storage", "--storage-path", "/work/notebooks/")
    assert run.exit_code == ExitCode.OK, run.output
    assert run.named("storage_saved")[0]["path"].startswith("work/notebooks/jupyterhub-canary-")
    assert_clean(checks_hub, user, run)


def test_a_full_home_is_15_no_space_quoting_the_server_and_not_retried(checks_hub, hub_user, tmp_path, mounted_home):
    user, token = account(checks_hub, hub_user("fullhome-"))
    directory = mounted_home(user, "mode=0755", fill=True)
    run = canary(checks_hub, user, token, tmp_path, "--check-storage", "--attempts", "3")
    assert run.exit_code == ExitCode.STORAGE_FAILED == 15, run.output
    result = run.result
    assert (result["reason"], result["cause"]) == ("storage_failed", "no_space")
    assert "[Errno 28] No space left on device" in result["message"]
    assert result["attempts"] == 1, "a full disk does not heal in a minute: no second spawn"
    assert canary_files(directory) == []
    assert_clean(checks_hub, user, run)


def test_a_read_only_home_is_15_read_only(checks_hub, hub_user, tmp_path, mounted_home):
    user, token = account(checks_hub, hub_user("rohome-"))
    mounted_home(user, "ro")
    run = canary(checks_hub, user, token, tmp_path, "--check-storage")
    assert run.exit_code == ExitCode.STORAGE_FAILED, run.output
    assert run.result["cause"] == "read_only"
    assert "Read-only file system" in run.result["message"]
    assert run.result["attempts"] == 1
    assert_clean(checks_hub, user, run)


def test_a_missing_directory_named_quota_is_15_error_read_from_the_errno_not_the_path(checks_hub, hub_user, tmp_path):
    """jupyter_server quotes the path twice: "Unexpected error while saving file: quota-tests/<file> [Errno 2]
    No such file or directory: '<home>/quota-tests/<file>'" (the home: /.../quota-canary-N). The cause is
    the errno's (2: none of ours), not a word of the path (issue 19, item 9: it was `no_space`)."""
    user, token = account(checks_hub, hub_user("quota-"))
    run = canary(checks_hub, user, token, tmp_path, "--check-storage", "--storage-path", "quota-tests", "--attempts", "1")
    assert run.exit_code == ExitCode.STORAGE_FAILED, run.output
    message = run.result["message"]
    assert run.result["cause"] == "error", message
    assert "answered 500: Unexpected error while saving file: quota-tests/jupyterhub-canary-" in message
    assert "[Errno 2] No such file or directory" in message and f"{user}/quota-tests/" in message
    assert_clean(checks_hub, user, run)


def test_a_save_that_hangs_is_15_timeout_within_the_request_timeout(checks_hub, hub_user, tmp_path):
    user, token = account(checks_hub, hub_user("hangsave-"))
    run = canary(checks_hub, user, token, tmp_path, "--check-storage", "--request-timeout", "3", "--attempts", "1")
    assert run.exit_code == ExitCode.STORAGE_FAILED, run.output
    assert run.result["cause"] == "timeout"
    assert 3000 <= run.result["phases_ms"]["storage"] < 3000 + 10_000, run.result["phases_ms"]
    assert run.named("storage_nothing_to_delete"), run.output  # the hung save wrote nothing
    assert_clean(checks_hub, user, run)


def test_the_file_is_deleted_after_a_sigterm(checks_hub, hub_user, tmp_path):
    """The save works, reading it back hangs, SIGTERM comes: the file still goes, then the server."""
    user, token = account(checks_hub, hub_user("hangread-"))
    process = start_process(
        ["--hub-url", checks_hub.url, "--user", user, "--check-storage", "--termination-log", str(tmp_path / "t")],
        env={"JUPYTERHUB_API_TOKEN": token},
    )
    saved = home(checks_hub, user)
    deadline = time.monotonic() + 60
    while not canary_files(saved) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert canary_files(saved), "the canary's file never appeared in the home"
    time.sleep(0.5)  # into the hung read
    process.send_signal(signal.SIGTERM)
    run = finish_process(process, timeout=60)
    run.assert_no_secret(token, checks_hub.admin_token)
    assert run.exit_code == ExitCode.SIGTERM, run.output
    assert run.named("storage_deleted"), run.output
    assert_clean(checks_hub, user, run)


# --- JupyterLab ---


def test_jupyterlab_disabled_is_17_not_served(checks_hub, hub_user, tmp_path):
    user, token = account(checks_hub, hub_user("nolab-"))
    run = canary(checks_hub, user, token, tmp_path, "--check-lab")
    assert run.exit_code == ExitCode.LAB_FAILED == 17, run.output
    assert (run.result["reason"], run.result["cause"]) == ("lab_failed", "not_served")
    assert "/lab answered 404" in run.result["message"]
    assert run.result["attempts"] == 1
    assert_clean(checks_hub, user, run)


def test_jupyterlab_without_its_main_bundle_is_17_asset_missing_naming_it(checks_hub, hub_user, tmp_path):
    user, token = account(checks_hub, hub_user("nobundle-"))
    run = canary(checks_hub, user, token, tmp_path, "--check-lab")
    assert run.exit_code == ExitCode.LAB_FAILED, run.output
    assert run.result["cause"] == "asset_missing"
    assert f"/user/{user}/static/lab/main." in run.result["message"] and "answered 404" in run.result["message"]
    assert_clean(checks_hub, user, run)


def test_a_jupyterlab_page_loading_a_script_of_another_origin_passes_and_sends_it_nothing(
    checks_hub, hub_user, tmp_path, other_origin
):
    """The token goes to the hub's origin only: the other origin's script is not fetched at all (the
    canary's requests go to the hub only), and the run says so."""
    user, token = account(checks_hub, hub_user("foreignscript-"))
    run = canary(checks_hub, user, token, tmp_path, "--check-lab")
    assert run.exit_code == ExitCode.OK, run.output
    assert other_origin.received == b"", other_origin.request_lines()
    (skipped,) = run.named("lab_assets_not_fetched")
    assert skipped["origins"] == [other_origin.url.rstrip("/")] and skipped["assets"] == 1
    served = run.named("lab_served")[0]
    assert served["not_fetched"] == 1 and served["assets"] >= 2  # the main bundle, jupyterlab_pygments' remoteEntry
    assert_clean(checks_hub, user, run)


# --- --check-url: pages besides JupyterLab (a stand-in for a jupyter-server-proxy app) ---


def test_a_page_served_by_a_server_extension_passes_through_its_redirect_and_one_not_served_is_17(
    checks_hub, hub_user, tmp_path
):
    user, token = account(checks_hub, hub_user("proxied-"))
    run = canary(checks_hub, user, token, tmp_path, "--check-url", "standin-app", "--check-url", "api/status")
    assert run.exit_code == ExitCode.OK, run.output
    served = run.named("url_served")
    assert [(e["path"], e["redirects"]) for e in served] == [(f"/user/{user}/standin-app", 1), (f"/user/{user}/api/status", 0)]
    assert "check urls passed" in run.result["timeline"][-1]["message"]
    assert_clean(checks_hub, user, run)

    run = canary(checks_hub, user, token, tmp_path, "--check-url", "standin-app/", "--check-url", "rstudio/")
    assert run.exit_code == ExitCode.LAB_FAILED == 17, run.output
    assert (run.result["reason"], run.result["cause"]) == ("lab_failed", "not_served")
    # jupyter_server answers an unknown path's trailing slash with a redirect without it: followed, then 404.
    assert f"GET /user/{user}/rstudio/ (redirected to /user/{user}/rstudio) answered 404" in run.result["message"]
    assert run.result["attempts"] == 1
    assert_clean(checks_hub, user, run)


# --- notebooks ---


def write_notebook(path: Path, cells: list[str], kernel: str = "python3") -> Path:
    notebook = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": kernel, "display_name": kernel, "language": "python"}},
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# a title"]}] + [
            {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": source.splitlines(True)}
            for source in cells
        ],
    }
    path.write_text(json.dumps(notebook))
    return path


def test_a_notebook_failing_at_its_third_code_cell_is_16_naming_it(checks_hub, hub_user, tmp_path):
    user, token = account(checks_hub, hub_user())
    # The failing line carries the canary's token: its traceback quotes the line, and must not the token.
    failing = f"import no_such_package_in_this_image  # {token}\nprint('never')"
    cells = ["import json", "data = json.dumps({'a': 1})", failing, "x = 1"]
    notebook = write_notebook(tmp_path / "broken-image.ipynb", cells)
    run = canary(checks_hub, user, token, tmp_path, "--notebook", str(notebook), "--attempts", "3")
    assert run.exit_code == ExitCode.NOTEBOOK_FAILED == 16, run.output
    result = run.result
    assert (result["reason"], result["cause"]) == ("notebook_failed", "raised")
    report = result["notebook"]
    assert (report["name"], report["cells"], report["cells_run"], report["cell"]) == ("broken-image.ipynb", 4, 3, 3)
    assert report["ename"] == "ModuleNotFoundError"
    assert "no_such_package_in_this_image" in report["evalue"]
    assert len(report["cell_ms"]) == 3
    assert report["traceback"] and not any("\x1b" in line for line in report["traceback"])
    assert any("ModuleNotFoundError" in line for line in report["traceback"])
    assert any("# [REDACTED]" in line for line in report["traceback"]), report["traceback"]
    assert "cell 3 of broken-image.ipynb raised ModuleNotFoundError" in result["message"]
    assert result["attempts"] == 1, "a broken image raises again: no second spawn"
    assert len(run.named("kernel_deleted")) == 1
    assert_clean(checks_hub, user, run)


def test_a_cell_that_never_ends_is_interrupted_16_timeout_and_the_kernel_deleted(checks_hub, hub_user, tmp_path):
    user, token = account(checks_hub, hub_user())
    notebook = write_notebook(tmp_path / "hangs.ipynb", ["x = 1", "import time\nwhile True:\n    time.sleep(1)"])
    started = time.monotonic()
    run = canary(checks_hub, user, token, tmp_path, "--notebook", str(notebook), "--notebook-timeout", "8")
    assert run.exit_code == ExitCode.NOTEBOOK_FAILED, run.output
    result = run.result
    assert result["cause"] == "timeout"
    assert (result["notebook"]["cell"], result["notebook"]["cells_run"]) == (2, 1)
    assert run.named("kernel_interrupted") and len(run.named("kernel_deleted")) == 1, run.output
    # The cell runs until the check's budget less the share kept for the interrupt and the DELETE
    # (app/deadline.py); those end within --notebook-timeout too (one LAST_LOOK for a request begun at
    # its end, and a second of slack for a loaded machine).
    phase_ms = result["phases_ms"]["notebook"]
    assert 8000 * (1 - CLEANUP_SHARE) <= phase_ms < (8 + LAST_LOOK + 1) * 1000, result["phases_ms"]
    assert time.monotonic() - started < 60
    assert_clean(checks_hub, user, run)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("{not json", "is not a notebook: not JSON"),
        (json.dumps({"nbformat": 3, "worksheets": [], "cells": []}), "is nbformat 3"),
        (json.dumps({"nbformat": 4, "cells": [{"cell_type": "markdown", "source": "x"}]}), "has no code cell"),
    ],
)
def test_a_file_that_is_not_an_nbformat_4_notebook_is_78_naming_it(tmp_path, content, complaint):
    from tests.runner import run_main

    path = tmp_path / "bad.ipynb"
    path.write_text(content)
    run = run_main(["--hub-url", "http://127.0.0.1:1/", "--user", "u", "--notebook", str(path),
                    "--termination-log", str(tmp_path / "t")], env={"JUPYTERHUB_API_TOKEN": "x" * 32})
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert f"--notebook: {str(path)!r}" in run.result["message"] and complaint in run.result["message"]
