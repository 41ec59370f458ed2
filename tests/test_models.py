"""The shapes the canary reads (app/models.py): each parsed where it enters, and what does not fit ends
with that boundary's documented code, naming the field and what came: 20 for the hub's answers, 12
for api/status, 17 for JupyterLab's page config, 78 for the notebook file. Never 1.

The answers quoted are the real JupyterHub 6.1.1's and jupyter_server 2's (as seen by
tests/test_cycle.py's real hub); the odd ones are served by the fake hub (tests/fakehub.py) in
place of the real answer. tests/test_fuzz.py generates the odd shapes; these are the named cases.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from app.exit_codes import ExitCode
from app.models import (
    ApiStatus,
    ApiToken,
    HubInfo,
    LabPageConfig,
    MintedToken,
    Notebook,
    ProgressEvent,
    ServerModel,
    TokenModel,
    TokenOwner,
    UserModel,
    WrongShape,
    loads,
)
from tests.fakehub import FakeHub
from tests.test_faults import PROGRESS, USER_MODEL, canary

WHAT = "GET /hub/api/user"
WHOAMI = {  # JupyterHub 6.1.1, a user's token
    "kind": "user", "name": "canary", "admin": False, "roles": [], "groups": [], "server": None, "pending": None,
    "created": "2026-12-01T07:00:00.000000Z", "last_activity": None, "token_id": "a17", "session_id": None,
    "scopes": ["access:servers!user=canary", "delete:servers!user=canary", "read:servers!user=canary",
               "start:servers!user=canary", "read:tokens!user=canary"],
}
SERVER = {
    "name": "", "full_name": "canary/", "last_activity": "2026-12-01T07:00:03.120000Z",
    "started": "2026-12-01T07:00:01.004000Z", "pending": None, "ready": True, "stopped": False,
    "url": "/user/canary/", "user_options": {}, "progress_url": "/hub/api/users/canary/server/progress",
    "full_url": None, "full_progress_url": None,
}


# --- the parsers, on real answers ---


def test_real_answers_parse_into_typed_values():
    assert HubInfo.parse({"version": "6.1.1"}, "v").version == "6.1.1"
    owner = TokenOwner.parse(WHOAMI, WHAT)
    assert (owner.name, owner.kind, owner.token_id, owner.is_user) == ("canary", "user", "a17", True)
    assert owner.scopes == tuple(WHOAMI["scopes"])
    user = UserModel.parse({"name": "canary", "servers": {"": SERVER}}, "u")
    assert user.servers == {"": ServerModel(
        True, None, "/user/canary/", datetime(2026, 12, 1, 7, 0, 1, 4000, tzinfo=UTC),
        last_activity=datetime(2026, 12, 1, 7, 0, 3, 120000, tzinfo=UTC),
    )}
    assert (user.admin, user.roles, user.groups) == (None, None, None), "left out: unknown, never taken for proof"
    assert UserModel.parse({"name": "canary"}, "u").servers is None, "no read:servers: not the same as no server"
    assert TokenModel.parse({"id": "a17", "expires_at": None}, "t").expires_at is None
    assert TokenModel.parse({"expires_at": "2027-03-01T00:00:00Z"}, "t").expires_at == datetime(2027, 3, 1, tzinfo=UTC)
    event = ProgressEvent.parse(
        {"progress": 42, "message": "2026-12-01T07:00:00Z [Normal] Pulling image", "raw_event": {"reason": "Pulling"}}, "e"
    )
    assert (event.progress, event.reason, event.ready, event.failed) == (42, "Pulling", False, False)
    assert event.field_path is None
    event = ProgressEvent.parse({"message": "m", "raw_event": {"reason": "BackOff", "involvedObject": {
        "kind": "Pod", "name": "jupyter-x", "fieldPath": "spec.initContainers{seed-home}"}}}, "e")
    assert (event.reason, event.field_path) == ("BackOff", "spec.initContainers{seed-home}")
    status = ApiStatus.parse({"started": "2026-12-01T07:00:02.5Z", "last_activity": "x", "connections": 0, "kernels": 1}, "s")
    assert (status.connections, status.kernels) == (0, 1)
    tokens = ApiToken.parse_list({"api_tokens": [{"id": "a1", "note": "n"}, {"id": "a2", "note": None}]}, "l")
    assert [(t.id, t.note) for t in tokens] == [("a1", "n"), ("a2", None)]
    minted = MintedToken.parse({"id": "a3", "token": "s3cr3t", "scopes": ["read:tokens"], "expires_at": None, "note": "x"}, "m")
    assert minted.as_dict()["id"] == "a3" and "s3cr3t" not in repr(minted)


@pytest.mark.parametrize(
    ("parse", "raw", "words"),
    [
        (TokenOwner.parse, {**WHOAMI, "token_id": 17}, "`token_id` of type int, not a string (got 17)"),
        (TokenOwner.parse, {**WHOAMI, "scopes": "servers"}, "`scopes` of type str, not a list of strings"),
        (TokenOwner.parse, {**WHOAMI, "scopes": ["servers", 1]}, "`scopes[1]` of type int"),
        (TokenOwner.parse, {**WHOAMI, "name": None}, "no `name` (null)"),
        (TokenOwner.parse, [], "a JSON list, not an object"),
        (HubInfo.parse, {"version": 6}, "`version` of type int"),
        (UserModel.parse, {"servers": []}, "`servers` of type list, not an object"),
        (UserModel.parse, {"servers": {"": "running"}}, "`servers['']` of type str, not an object"),
        (UserModel.parse, {"servers": {"": {**SERVER, "ready": "yes"}}}, "`servers[''].ready` of type str, not true or false"),
        (UserModel.parse, {"servers": {"gpu": {**SERVER, "started": "yesterday"}}},
         "`servers['gpu'].started` is 'yesterday', not an ISO 8601 time"),
        (UserModel.parse, {"servers": {"": {**SERVER, "url": ["/user/canary/"]}}}, "`servers[''].url` of type list"),
        (TokenModel.parse, {"expires_at": 1767225600}, "`expires_at` of type int"),
        (ProgressEvent.parse, {"progress": float("nan")}, "`progress` is nan, not a finite number"),
        (ProgressEvent.parse, {"progress": True}, "`progress` of type bool, not a number"),
        (ProgressEvent.parse, {"message": {"text": "x"}}, "`message` of type dict"),
        (ProgressEvent.parse, {"raw_event": "Pulling"}, "`raw_event` of type str, not an object"),
        (ProgressEvent.parse, {"raw_event": {"involvedObject": {"fieldPath": 3}}},
         "`raw_event.involvedObject.fieldPath` of type int"),
        (ApiStatus.parse, {"kernels": "1"}, "`kernels` of type str, not a whole number"),
        (ApiStatus.parse, {"connections": -1}, "`connections` is -1, not a count"),
        (LabPageConfig.parse, {"federated_extensions": 1}, "`federated_extensions` of type int, not a list"),
        (LabPageConfig.parse, {"federated_extensions": True}, "`federated_extensions` of type bool, not a list"),
        (LabPageConfig.parse, {"federated_extensions": ["ext"]}, "`federated_extensions[0]` of type str, not an object"),
        (LabPageConfig.parse, {"federated_extensions": [{"name": "x", "load": 5}]}, "`federated_extensions[0].load` of type int"),
        (MintedToken.parse, {"id": 3, "token": "t"}, "`id` of type int"),
        (ApiToken.parse_list, {"api_tokens": [{"id": 5, "note": "n"}]}, "`api_tokens[0].id` of type int"),
    ],
)
def test_an_odd_shape_is_wrong_shape_naming_the_field_and_what_came(parse, raw, words):
    with pytest.raises(WrongShape) as caught:
        parse(raw, "the answer")
    assert caught.value.exit_code == ExitCode.HUB_UNAVAILABLE
    assert str(caught.value).startswith("the answer")
    assert words in str(caught.value), str(caught.value)


def test_absent_or_null_optional_fields_take_their_defaults():
    assert HubInfo.parse({}, "v").version == "unknown"
    owner = TokenOwner.parse({"name": "svc", "kind": "service"}, WHAT)
    assert (owner.scopes, owner.token_id, owner.is_user) == (None, None, False)
    assert UserModel.parse({"servers": {"": {}, "gone": None}}, "u").servers == {"": ServerModel()}
    assert ProgressEvent.parse({}, "e") == ProgressEvent()
    assert LabPageConfig.parse({}, "p") == LabPageConfig("", ())


def test_json_nested_too_deeply_is_not_json_not_a_crash():
    with pytest.raises(ValueError, match="nested too deeply"):
        loads("[" * 100_000 + "]" * 100_000)


def test_a_notebook_shape():
    cells = [{"cell_type": "markdown", "source": "# t"}, {"cell_type": "code", "source": ["a = 1\n", "print(a)"]}]
    notebook = Notebook.parse({"nbformat": 4, "metadata": {"kernelspec": {"name": "python3"}}, "cells": cells}, "n.ipynb", "'n'")
    assert notebook == Notebook("n.ipynb", "python3", ("a = 1\nprint(a)",))
    for raw, words in [
        ({"nbformat": 4, "metadata": [], "cells": cells}, "`metadata` of type list, not an object"),
        ({"nbformat": 4, "metadata": {"kernelspec": "python3"}, "cells": cells}, "`metadata.kernelspec` of type str"),
        ({"nbformat": 4, "metadata": {"kernelspec": {"name": 3}}, "cells": cells}, "`metadata.kernelspec.name` of type int"),
        ({"nbformat": 4, "cells": [*cells, "print(1)"]}, "`cells[2]` of type str, not an object"),
        ({"nbformat": 4, "cells": [{"cell_type": "code", "source": 7}]}, "`cells[0].source` of type int"),
        ({"nbformat": 4, "cells": [{"source": "x"}]}, "no `cells[0].cell_type`"),
        ({"nbformat": "4", "cells": cells}, "is nbformat '4'"),
        ({"nbformat": True, "cells": cells}, "is nbformat True"),
    ]:
        with pytest.raises(WrongShape, match="^'n'") as caught:
            Notebook.parse(raw, "n.ipynb", "'n'")
        assert words in str(caught.value), str(caught.value)


# --- through the run: each boundary's code (issue 19, item 10: these gave 1) ---

ARGS = ("--attempts", "1", "--deadline", "20", "--stop-timeout", "3")


def test_a_token_id_that_is_not_a_string_is_20_naming_it(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", r"^/hub/api/user$", "body", body={**WHOAMI, "token_id": 17}, status=200, count=-1)
        run, _ = canary(fake, tmp_path, *ARGS)
        assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
        assert "GET /hub/api/user: `token_id` of type int, not a string (got 17)" in run.result["message"]
        assert fake.spawns == 0, "nothing is started on an answer the canary does not understand"


def test_a_token_model_of_the_wrong_shape_is_20(tmp_path):
    with FakeHub(spawn="ready") as fake:
        fake.fault("GET", r"^/hub/api/user$", "body", body=WHOAMI, status=200, count=-1)
        fake.fault("GET", r"/tokens/a17$", "body", body={"id": "a17", "expires_at": 1767225600}, status=200, count=-1)
        run, _ = canary(fake, tmp_path, *ARGS)
        assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
        assert "`expires_at` of type int" in run.result["message"]


@pytest.mark.parametrize("extensions", [1, True, "fake-ext", [None]], ids=["one", "true", "string", "null-entry"])
def test_a_lab_page_config_of_the_wrong_shape_is_17_not_served_naming_the_field(tmp_path, extensions):
    with FakeHub(spawn="ready") as fake:
        fake.page_config = {"fullLabextensionsUrl": "/user/canary/lab/extensions", "federated_extensions": extensions}
        run, _ = canary(fake, tmp_path, "--check-lab", *ARGS)
        assert run.exit_code == ExitCode.LAB_FAILED, run.output
        assert run.result["cause"] == "not_served"
        assert "with a page config that is not JupyterLab's: `federated_extensions" in run.result["message"]
        assert fake.servers == {}


def test_an_api_status_of_the_wrong_shape_is_12_naming_the_field(tmp_path):
    with FakeHub(spawn="ready") as fake:
        body = {"connections": 0, "kernels": "none", "started": "2026-12-01T07:00:02Z"}
        fake.fault("GET", r"/api/status$", "body", body=body, status=200, count=-1)
        run, _ = canary(fake, tmp_path, *ARGS)
        assert run.exit_code == ExitCode.SERVER_UNREACHABLE, run.output
        assert "api/status answered 200: `kernels` of type str, not a whole number" in run.result["message"]
        assert fake.servers == {}


def test_a_server_model_of_the_wrong_shape_is_20_before_anything_starts(tmp_path):
    with FakeHub(spawn="ready") as fake:
        model = {"name": "canary", "servers": {"": {**SERVER, "started": "yesterday"}}}
        fake.fault("GET", USER_MODEL, "body", body=model, status=200, count=-1)
        run, _ = canary(fake, tmp_path, *ARGS)
        assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
        assert "`servers[''].started` is 'yesterday', not an ISO 8601 time" in run.result["message"]
        assert fake.spawns == 0


def test_a_progress_event_of_the_wrong_shape_is_not_read_the_model_is_polled(tmp_path):
    with FakeHub(spawn="pending", ready_after=1.0) as fake:
        fake.progress_extra = [{"progress": 50, "message": ["Pulling", "image"]}]
        run, _ = canary(fake, tmp_path, *ARGS)
        assert run.exit_code == ExitCode.OK, run.output
        (unavailable,) = run.named("progress_stream_unavailable")
        assert "a progress event: `message` of type list, not a string" in unavailable["reason"]
        assert [e["message"] for e in run.result["timeline"]] == ["Server requested"]


def test_what_the_stream_asked_again_tells_anew_is_recorded_though_an_earlier_event_said_the_same(tmp_path):
    """The stream asked for again tells the spawn from its start, then what happened since: a repeated
    event (KubeSpawner's back-offs, BatchSpawner's "Pending in queue..." once a second) is the spawn's
    own, and is recorded; only what the earlier stream told, in the same place, is not recorded twice."""
    backoff = {"progress": 50, "message": "Back-off restarting failed container"}
    with FakeHub(spawn="pending", ready_after=2.0, answer_delay=1.0) as fake:
        fake.progress_extra = [backoff]
        key = ("canary", "")

        def once_pending() -> None:  # the stream to cut is this spawn's, not a 404 before it is taken in
            deadline = time.monotonic() + 5
            while key not in fake.servers and time.monotonic() < deadline:
                time.sleep(0.01)

        fake.fault("GET", PROGRESS, "cut_chunk", call=once_pending)
        fake.fault("GET", PROGRESS, "signal", call=lambda: fake.progress_extra.append(backoff))  # told once more
        run, _ = canary(fake, tmp_path, *ARGS)
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("GET", PROGRESS) >= 2, "the stream was asked for once"
        told = [e["message"] for e in run.result["timeline"]]
        assert told[:4] == ["Server requested", backoff["message"], backoff["message"], "Server ready"], told
        assert [e["message"] for e in run.named("spawn_progress")][:4] == told[:4]
        assert fake.servers == {}


def test_a_stream_cut_before_the_spawns_answer_is_asked_again_and_nothing_is_in_the_timeline_twice(tmp_path):
    """The hub holds the spawn request while the spawn is pending: a stream read then and cut (here by an
    event of the wrong shape) is asked for again, and tells the spawn from its start once more."""
    with FakeHub(spawn="pending", ready_after=2.0, answer_delay=1.0) as fake:
        fake.progress_extra = [{"progress": 50, "message": ["Pulling", "image"]}]
        run, _ = canary(fake, tmp_path, *ARGS)
        assert run.exit_code == ExitCode.OK, run.output
        assert fake.count("GET", "/hub/api/users/canary/server/progress") >= 2, "the stream was asked for once"
        assert [e["message"] for e in run.result["timeline"]] == ["Server requested"]


@pytest.mark.parametrize(
    ("metadata", "words"),
    [([], "`metadata` of type list, not an object"), ({"kernelspec": ["python3"]}, "`metadata.kernelspec` of type list")],
    ids=["metadata-list", "kernelspec-list"],
)
def test_a_notebook_of_the_wrong_shape_is_78_naming_the_field(tmp_path, metadata, words):
    from tests.runner import run_main

    path = tmp_path / "odd.ipynb"
    path.write_text(json.dumps({"nbformat": 4, "metadata": metadata, "cells": [{"cell_type": "code", "source": "1"}]}))
    run = run_main(["--hub-url", "http://127.0.0.1:9/", "--user", "u", "--notebook", str(path),
                    "--termination-log", str(tmp_path / "t")], env={"JUPYTERHUB_API_TOKEN": "x" * 32})
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert f"--notebook: {str(path)!r} is not a notebook: {words}" in run.result["message"], run.result["message"]
    assert json.loads((tmp_path / "t").read_text())["exit_code"] == 78
