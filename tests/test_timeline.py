"""The spawn timeline (app/timeline.py): unit tests of the phases, and a real hub whose spawner
reports KubeSpawner-like progress events at known times."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.exit_codes import ExitCode
from app.models import ProgressEvent
from app.timeline import PHASES, Event, Timeline, derive_phases
from tests.localhub import LocalHub, until_stopped
from tests.runner import run_main

# --- unit tests: the phases a list of events marks ---

K8S = "2026-11-27T21:00:00Z [Normal] "  # KubeSpawner relays a pod's events as "<time> [<type>] <message>"


def events(*spec: tuple[int, str] | tuple[int, str, bool]) -> list[Event]:
    return [Event(t, None, message, *ready) for t, message, *ready in spec]


def test_a_local_spawner_marks_only_the_spawn():
    found = derive_phases(events((5, "Server requested"), (40, "Spawning server..."), (2300, "Server ready at /user/a/", True)))
    assert found == {"spawn": 2300}


def test_kubespawner_events_become_phases_of_their_own():
    found = derive_phases(events(
        (3, "Server requested"),
        (10, "Spawning server..."),
        (900, K8S + "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
        (4000, K8S + "Successfully assigned jhub/jupyter-canary to gpu-node-1"),
        (4100, K8S + 'Pulling image "jupyter/base-notebook:latest"'),
        (9100, K8S + 'Successfully pulled image "jupyter/base-notebook:latest" in 5s'),
        (9300, K8S + "Created container notebook"),
        (9400, K8S + "Started container notebook"),
        (12000, "Server ready at /user/jupyter-canary/", True),
    ))
    assert found == {
        "spawn": 12000, "scheduling": 4000, "image_pull": 5000, "container_start": 300, "server_start": 2600,
    }


def test_an_image_already_present_has_no_pull_but_a_container_start():
    found = derive_phases(events(
        (1000, K8S + "Successfully assigned jhub/p to n"),
        (1200, K8S + 'Container image "jupyter/base-notebook:latest" already present on machine'),
        (1700, K8S + "Started container notebook"),
        (2500, "ready", True),
    ))
    assert found == {"spawn": 2500, "scheduling": 1000, "container_start": 500, "server_start": 800}


def test_the_newer_kubelets_wording_marks_the_same_phases():
    # What a real 1.37 kubelet said to KubeSpawner on the test node (tests/test_kubespawner.py).
    found = derive_phases(events(
        (1000, K8S + "Successfully assigned jhub/p to n"),
        (1200, K8S + 'Container image "u:1" already present on machine and can be accessed by the pod'),
        (1300, K8S + "Container created"),
        (1700, K8S + "Container started"),
        (2500, "ready", True),
    ))
    assert found == {"spawn": 2500, "scheduling": 1000, "container_start": 500, "server_start": 800}


def test_a_spawn_that_never_got_ready_has_only_the_phases_it_finished():
    found = derive_phases(events(
        (800, K8S + "Successfully assigned jhub/p to n"),
        (900, K8S + 'Pulling image "x/y:z"'),
        (300000, "Spawn failed: pod did not start in 300 seconds!"),
    ))
    assert found == {"scheduling": 800}


def test_the_timeline_times_events_from_its_creation():
    now = [100.0]
    timeline = Timeline(clock=lambda: now[0])
    now[0] = 100.25
    timeline.record(ProgressEvent("Server requested", progress=0))
    now[0] = 103.5
    timeline.record(ProgressEvent("Server ready at /user/a/", progress=100, ready=True))
    assert timeline.as_result() == [
        {"t_ms": 250, "progress": 0, "message": "Server requested"},
        {"t_ms": 3500, "progress": 100, "message": "Server ready at /user/a/"},
    ]
    assert timeline.phases_ms() == {"spawn": 3500}
    assert set(timeline.phases_ms()) <= set(PHASES)


def test_a_relayed_kubernetes_event_keeps_its_reason_and_field_path():
    timeline = Timeline(clock=lambda: 0.0)
    timeline.record(ProgressEvent(K8S + "Back-off restarting failed container seed-home in pod p_ns(u)", progress=82,
                                  reason="BackOff", field_path="spec.initContainers{seed-home}"))
    (event,) = timeline.as_result()
    assert (event["reason"], event["field_path"]) == ("BackOff", "spec.initContainers{seed-home}")


# --- a real hub: a spawner whose progress() reports scripted events at known times ---

# The spawner subclass goes into the test hub's config (LocalHub's extra_config). Its progress()
# reports user_options["progress_script"] ([[seconds after start(), progress, message], ...]) and
# appends the moment it reported each event (the hub's wall clock) to PROGRESS_LOG.
SCRIPTED_SPAWNER = '''
import asyncio, json, time
from jupyterhub.spawner import SimpleLocalProcessSpawner

class ScriptedProgressSpawner(SimpleLocalProcessSpawner):
    async def start(self):
        self._scripted_start = time.time()
        return await super().start()

    async def progress(self):
        for offset, progress, message in (self.user_options or {{}}).get("progress_script") or []:
            await asyncio.sleep(max(0.0, self._scripted_start + offset - time.time()))
            with open({log!r}, "a", encoding="utf-8") as f:
                f.write(json.dumps({{"time": time.time(), "message": message}}) + "\\n")
            yield {{"progress": progress, "message": message}}

c.JupyterHub.spawner_class = ScriptedProgressSpawner
'''

# The first event comes 1.5 s in: the canary opens the stream once the spawn request is answered (a
# stream opened before it may replay an older spawn's failure), and on a loaded machine that answer
# was seen to take 0.9 s; an event before the stream opens arrives when it opens, not when reported.
SCRIPT = [
    [1.5, 10, K8S + "Successfully assigned jhub/jupyter-canary to node-1"],
    [2.0, 20, K8S + 'Pulling image "jupyter/base-notebook:latest"'],
    [2.8, 30, K8S + 'Successfully pulled image "jupyter/base-notebook:latest" in 0.8s'],
    [3.1, 40, K8S + "Created container notebook"],
    [3.4, 45, K8S + "Started container notebook"],
]
# The single-user server starts 3 s after start() (the test hub's slow behaviour): after the script.
DELAY = 4
TOLERANCE_MS = 300  # the stream's transit and the two clocks' reading, on a loaded 2-core machine


@pytest.fixture(scope="module")
def scripted_hub(tmp_path_factory) -> Iterator[LocalHub]:
    workdir = tmp_path_factory.mktemp("scripted_hub")
    log = workdir / "progress.jsonl"
    hub = LocalHub(workdir, slow_spawn_timeout=0, extra_config=SCRIPTED_SPAWNER.format(log=str(log))).start()
    hub.progress_log = log
    yield from until_stopped(hub, "the scripted hub")


def _reported(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.hub
def test_the_timeline_is_what_the_spawner_reported_and_when(scripted_hub, hub_user, tmp_path):
    user = hub_user()
    scripted_hub.create_user(user)
    token = scripted_hub.new_token(user)
    options = json.dumps({"delay": DELAY, "progress_script": SCRIPT})
    run = run_main(
        ["--hub-url", scripted_hub.url, "--user", user, "--user-options", options, "--probe", "gpu",
         "--termination-log", str(tmp_path / "termination-log")],
        env={"JUPYTERHUB_API_TOKEN": token},
    )
    run.assert_no_secret(token, scripted_hub.admin_token)
    assert run.exit_code == ExitCode.OK, run.output
    result = run.result
    assert result["probe"] == "gpu"
    timeline = result["timeline"]
    messages = [e["message"] for e in timeline]

    # Every scripted event, in order, between the hub's own first and last events.
    scripted = [message for _, _, message in SCRIPT]
    assert [m for m in messages if m in scripted] == scripted, messages
    assert timeline[0]["progress"] == 0 and timeline[0]["message"] == "Server requested"
    assert timeline[-1]["message"].startswith("Server ready at ") and timeline[-1]["progress"] == 100
    assert [e["t_ms"] for e in timeline] == sorted(e["t_ms"] for e in timeline)
    at = {e["message"]: e for e in timeline}
    for _, progress, message in SCRIPT:
        assert at[message]["progress"] == progress

    # When: the canary's t_ms against the moments the spawner reported, on the hub's clock, taken
    # from the hub's start of the spawn (its pre_spawn_hook's record, just after the request).
    reported = {r["message"]: r["time"] for r in _reported(scripted_hub.progress_log)}
    (spawn,) = scripted_hub.spawn_records(user)
    for _, _, message in SCRIPT:
        since_spawn_ms = (reported[message] - spawn["time"]) * 1000
        assert since_spawn_ms <= at[message]["t_ms"] <= since_spawn_ms + TOLERANCE_MS, (message, at[message])
    for (_, _, earlier), (_, _, later) in itertools.pairwise(SCRIPT):
        between_ms = (reported[later] - reported[earlier]) * 1000
        assert abs(at[later]["t_ms"] - at[earlier]["t_ms"] - between_ms) <= TOLERANCE_MS, (earlier, later)

    # The phases the events mark, from the same events.
    t = {message: at[message]["t_ms"] for _, _, message in SCRIPT}
    ready = timeline[-1]["t_ms"]
    assigned, pulling, pulled, _, started = scripted
    assert result["timeline_phases_ms"] == {
        "spawn": ready,
        "scheduling": t[assigned],
        "image_pull": t[pulled] - t[pulling],
        "container_start": t[started] - t[pulled],
        "server_start": ready - t[started],
    }
    # The scripted gaps, as the canary measured them (0.8 s pull, 0.6 s from pulled to started).
    assert abs(result["timeline_phases_ms"]["image_pull"] - 800) <= TOLERANCE_MS
    assert abs(result["timeline_phases_ms"]["container_start"] - 600) <= TOLERANCE_MS
    # The server answered only after the delay; the stream's ready event is within the spawn phases.
    assert ready >= DELAY * 1000
    assert ready <= result["phases_ms"]["spawn_request"] + result["phases_ms"]["ready_wait"]
    # The log's spawn_progress events carry the same times.
    logged = [(e["message"], e["t_ms"]) for e in run.named("spawn_progress")]
    assert logged == [(e["message"], e["t_ms"]) for e in timeline]


# --- a fast spawn: the hub answers the spawn request with 201, and the timeline is still there ---

# A slow_spawn_timeout (the hub's default is 10 s) holds the spawn request open until the server is
# ready (~2 s + the server's own start). The events come only while the spawn is pending, that is
# while the request is in flight: a KubeSpawner pod ready in ~2 s does exactly this. 60 s here, not
# 10: on a loaded 2-core machine a local server alone was seen to take 12 s to start.
FAST_DELAY = 2
FAST_SCRIPT = [
    [0.3, 10, K8S + "Successfully assigned jhub/jupyter-canary to node-1"],
    [0.6, 30, K8S + 'Container image "jupyter/base-notebook:latest" already present on machine'],
    [0.9, 40, K8S + "Created container notebook"],
    [1.2, 45, K8S + "Started container notebook"],
]


@pytest.fixture(scope="module")
def fast_hub(tmp_path_factory) -> Iterator[LocalHub]:
    workdir = tmp_path_factory.mktemp("fast_hub")
    log = workdir / "progress.jsonl"
    hub = LocalHub(workdir, slow_spawn_timeout=60, extra_config=SCRIPTED_SPAWNER.format(log=str(log))).start()
    yield from until_stopped(hub, "the fast hub")


@pytest.mark.hub
def test_a_spawn_answered_201_still_has_its_timeline(fast_hub, hub_user):
    user = hub_user()
    fast_hub.create_user(user)
    token = fast_hub.new_token(user)
    options = json.dumps({"delay": FAST_DELAY, "progress_script": FAST_SCRIPT})
    run = run_main(
        ["--hub-url", fast_hub.url, "--user", user, "--user-options", options, "--attempts", "1"],
        env={"JUPYTERHUB_API_TOKEN": token},
    )
    run.assert_no_secret(token, fast_hub.admin_token)
    assert run.exit_code == ExitCode.OK, run.output
    # The hub answered the spawn request only once the server was ready.
    assert [e["status"] for e in run.named("spawn_requested")] == [201]
    timeline = run.result["timeline"]
    messages = [e["message"] for e in timeline]
    scripted = [message for _, _, message in FAST_SCRIPT]
    assert [m for m in messages if m in scripted] == scripted, messages
    assert messages[-1].startswith("Server ready at ")
    # Each event was timed when it came, not when the spawn request returned.
    at = {e["message"]: e["t_ms"] for e in timeline}
    assert at[scripted[0]] < at[scripted[-1]] < run.result["phases_ms"]["spawn_request"]
    assert {"spawn", "scheduling", "container_start", "server_start"} <= set(run.result["timeline_phases_ms"])
    # Nothing of the stream outlives the run: the result comes after the follower thread ended.
    assert not run.named("progress_follower_still_running")
    assert fast_hub.servers(user) == {}
