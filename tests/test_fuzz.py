"""The fuzz tier: every shape the canary reads, generated (Hypothesis), in every JSON shape, with odd
numbers (NaN, infinities, bools where numbers belong, integers of hundreds of digits), odd unicode
(lone surrogates, control characters) and nesting. Whatever comes, the run ends with a documented
exit code and one `canary_result`: never 1, never a traceback.

Two levels:
1. The parsers themselves (app/models.py, the lab page, the notebook file, --user-options, the storage
   check's causes): many examples, fast. A shape parses into values of its declared types, or is a
   WrongShape (or the boundary's own failure); nothing else is raised.
2. End to end: `main([...])` against the fake hub (tests/fakehub.py), one endpoint's answer replaced by
   a generated one: fewer examples, each a whole run.

Fast by default and the same on every run (a fixed seed: `derandomize`), so `make test` and CI stay
reproducible. More, and new, examples on demand: `CANARY_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py`
(parser tests run that many, end-to-end ones a twentieth of it, with a random seed; a failure prints
the input and how to reproduce it).
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from app import models
from app.checks.lab import page_config_of
from app.checks.notebook import read_notebook
from app.checks.storage import cause_of
from app.config import _json_object
from app.errors import LabFailed
from app.exit_codes import ExitCode
from tests.fakehub import FakeHub
from tests.runner import run_token
from tests.test_faults import TOKEN, USER_MODEL, canary

DEEP = os.environ.get("CANARY_FUZZ_EXAMPLES")
PARSER_EXAMPLES = int(DEEP) if DEEP else 150
E2E_EXAMPLES = max(8, PARSER_EXAMPLES // 20) if DEEP else 8
settings.register_profile("canary-ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("canary-deep", derandomize=False, database=None, deadline=None, print_blob=True)
settings.load_profile("canary-deep" if DEEP else "canary-ci")
PARSERS = settings(max_examples=PARSER_EXAMPLES)
RUNS = settings(
    max_examples=E2E_EXAMPLES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Every documented code, 1 (a bug) excepted.
DOCUMENTED = frozenset(ExitCode) - {ExitCode.INTERNAL_ERROR}

# --- JSON of every shape ---

ODD_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)  # lone surrogates included
ODD_NUMBERS = st.one_of(
    st.integers(),
    st.floats(),  # NaN and the infinities included: Python's json writes and reads them
    st.sampled_from([0, -1, 2**53 + 1, 2**64, -(2**63), 10**400, 1e308, 5e-324, -0.0]),
)
SCALARS = st.one_of(st.none(), st.booleans(), ODD_NUMBERS, ODD_TEXT, st.sampled_from(["", "true", "null", "0", "[]", "{}"]))
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(ODD_TEXT, inner, max_size=4)),
    max_leaves=12,
)
# Hand made, for the parsers only: beyond what json.dumps can write (4,300 digits) or nests.
EXTREME = st.sampled_from([10**5000, functools.reduce(lambda inner, _: [inner], range(5000), []), "\ud800" * 100_000])


def shaped(
    required: dict[str, st.SearchStrategy], optional: dict[str, st.SearchStrategy] | None = None, *, extreme: bool = False
) -> st.SearchStrategy:
    """An object of the real shape (`required` fields, some of `optional`), or that shape with one field of
    any other shape or missing (the odd answer that gets furthest), or every field odd, or any JSON at all."""
    optional = optional or {}
    odd = st.one_of(JSON, EXTREME) if extreme else JSON
    valid = st.fixed_dictionaries(required, optional=optional)

    @st.composite
    def one_field_odd(draw: st.DrawFn) -> dict:
        answer = dict(draw(valid))
        key = draw(st.sampled_from(sorted({*required, *optional})))
        if draw(st.integers(0, 3)):
            answer[key] = draw(odd)
        else:
            answer.pop(key, None)
        return answer

    every_field_odd = st.fixed_dictionaries(
        {key: st.one_of(value, odd) for key, value in required.items()},
        optional={key: st.one_of(value, odd) for key, value in optional.items()},
    )
    return st.one_of(valid, one_field_odd(), one_field_odd(), every_field_odd, odd)


TIMES = st.sampled_from(["2026-12-01T07:00:01.004000Z", "2026-12-01T07:00:01+02:00", "2026-12-01", "", "yesterday"])
NAMES = st.one_of(st.sampled_from(["canary", "", "a@b~c"]), ODD_TEXT)
SCOPE_LISTS = st.one_of(
    st.just(["servers", "access:servers", "read:tokens"]),  # enough for the cycle
    st.lists(st.sampled_from(["servers", "access:servers", "read:servers!user=canary", "inherit"]), max_size=5),
)
SERVER = shaped({"ready": st.booleans(), "url": st.sampled_from(["/user/canary/", ""]), "started": TIMES},
                {"pending": st.sampled_from(["spawn", "stop", None]), "name": NAMES})


def shapes(extreme: bool = False) -> dict[str, st.SearchStrategy]:
    """The answers of the hub and the user's server, by the endpoint they come from."""
    server = SERVER if not extreme else shaped({"ready": st.booleans(), "started": TIMES}, extreme=True)
    return {
        "version": shaped({"version": st.sampled_from(["6.1.1", "5.4.0", "4.1.6", ""])}, extreme=extreme),
        "whoami": shaped(
            {"name": st.just("canary"), "kind": st.just("user"), "scopes": SCOPE_LISTS},
            {"token_id": st.sampled_from(["a17", ""]), "roles": st.just([])}, extreme=extreme,
        ),
        "user_model": shaped({"name": NAMES}, {"servers": st.one_of(
            st.dictionaries(st.sampled_from(["", "gpu"]), st.one_of(server, st.none()), max_size=2), JSON)}, extreme=extreme),
        "token": shaped({"id": st.just("a17")}, {"expires_at": st.one_of(TIMES, st.none())}, extreme=extreme),
        "progress": shaped({"progress": st.integers(0, 100), "message": ODD_TEXT},
                           {"ready": st.booleans(), "failed": st.booleans(),
                            "raw_event": shaped({"reason": st.sampled_from(["Pulling", "FailedScheduling"])})},
                           extreme=extreme),
        "api_status": shaped({"connections": st.integers(0, 5), "kernels": st.integers(0, 5), "started": TIMES},
                             extreme=extreme),
        "page_config": shaped(
            {"fullLabextensionsUrl": st.sampled_from(["/user/canary/lab/extensions", "", "/"])},
            {"federated_extensions": st.one_of(st.lists(shaped(
                {"name": st.sampled_from(["fake-ext", "@scope/ext"]), "load": st.just("static/remoteEntry.abc.js")}),
                max_size=3), JSON)},
            extreme=extreme,
        ),
        "minted": shaped({"id": st.sampled_from(["a3", ""]), "token": st.just("m1nt3d" * 5)},
                         {"scopes": SCOPE_LISTS, "expires_at": st.one_of(TIMES, st.none()), "note": ODD_TEXT},
                         extreme=extreme),
        "token_list": st.one_of(shaped({"api_tokens": st.lists(shaped({"id": st.just("a1"), "note": ODD_TEXT}), max_size=3)}),
                                JSON),
        "file_model": shaped({"content": ODD_TEXT, "type": st.just("file")}, extreme=extreme),
        # An error answer (the hub's {"status", "message"}) with its status: what hub_message quotes.
        "error_answer": st.tuples(
            st.sampled_from([400, 403, 404, 409, 500]),
            shaped({"status": st.integers(400, 599),
                    "message": st.one_of(ODD_TEXT, st.sampled_from(["canary is already running", "is pending stop"]))}),
        ),
    }


# --- 1. the parsers ---


def conforms(value: typing.Any, hint: typing.Any) -> bool:
    """Whether a parsed value is of its declared type (the dataclasses' annotations)."""
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        (item, _ellipsis) = typing.get_args(hint)
        return isinstance(value, tuple) and all(conforms(v, item) for v in value)
    if origin is Mapping or origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, Mapping) and all(conforms(k, key) and conforms(v, item) for k, v in value.items())
    if hint in (int, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and (isinstance(value, int) or math.isfinite(value))
    if is_dataclass(hint):
        return isinstance(value, hint) and all(
            conforms(getattr(value, f.name), t) for f, t in zip(fields(hint), typing.get_type_hints(hint).values(), strict=True)
        )
    return isinstance(value, hint)


assert conforms(models.ServerModel(), models.ServerModel) and not conforms(models.ServerModel(ready="x"), models.ServerModel)
assert conforms(datetime(2026, 1, 1), datetime | None)

PARSERS_BY_SHAPE: dict[str, Callable[[typing.Any, str], typing.Any]] = {
    "version": models.HubInfo.parse,
    "whoami": models.TokenOwner.parse,
    "user_model": models.UserModel.parse,
    "token": models.TokenModel.parse,
    "progress": models.ProgressEvent.parse,
    "api_status": models.ApiStatus.parse,
    "page_config": models.LabPageConfig.parse,
    "minted": models.MintedToken.parse,
    "token_list": models.ApiToken.parse_list,
    "file_model": models.FileModel.parse,
}


@pytest.mark.parametrize("shape", sorted(PARSERS_BY_SHAPE))
def test_a_parser_gives_its_typed_shape_or_wrong_shape_naming_what_came(shape):
    parse = PARSERS_BY_SHAPE[shape]

    @PARSERS
    @given(raw=shapes(extreme=True)[shape])
    def check(raw):
        try:
            parsed = parse(raw, "the answer")
        except models.WrongShape as exc:
            assert exc.exit_code == ExitCode.HUB_UNAVAILABLE
            assert exc.message.startswith("the answer") and len(exc.message) < 400, exc.message
            return
        if isinstance(parsed, tuple):  # a token list
            assert all(conforms(token, models.ApiToken) for token in parsed)
        else:
            assert conforms(parsed, type(parsed)), parsed

    check()


@PARSERS
@given(raw=st.one_of(st.binary(max_size=64), ODD_TEXT, JSON.map(json.dumps), st.just("[" * 50_000)))
def test_a_body_is_json_or_a_value_error_nothing_else(raw):
    try:
        models.loads(raw)
    except ValueError:
        pass


@PARSERS
@given(config=st.one_of(shapes()["page_config"], JSON), text=st.one_of(st.none(), st.text(max_size=40)))
def test_a_lab_page_gives_its_config_or_17(config, text):
    """The page config as JupyterLab's template writes it (`tojson`), or any text in its place."""
    body = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    page = f'<html><script id="jupyter-config-data" type="application/json">{body if text is None else text}</script></html>'
    try:
        parsed = page_config_of(page, "/user/canary/lab")
    except LabFailed as exc:
        assert exc.exit_code == ExitCode.LAB_FAILED and exc.cause == "not_served"
        return
    assert conforms(parsed, models.LabPageConfig)


SOURCE = st.one_of(ODD_TEXT, st.lists(ODD_TEXT, max_size=3))
NOTEBOOK = shaped(
    {"nbformat": st.just(4), "cells": st.lists(st.fixed_dictionaries({"cell_type": st.just("code"), "source": SOURCE}),
                                               min_size=1, max_size=2).flatmap(
        lambda code: st.lists(shaped({"cell_type": st.sampled_from(["code", "markdown"]), "source": SOURCE}), max_size=2)
        .map(lambda others: code + others))},
    {"metadata": shaped({}, {"kernelspec": shaped({"name": st.sampled_from(["python3", ""])})}),
     "nbformat_minor": st.integers(0, 5)},
)


@PARSERS
@given(notebook=NOTEBOOK, raw=st.one_of(st.none(), st.binary(max_size=40)))
@example(notebook={"nbformat": 4, "metadata": ["x"], "cells": [{"cell_type": "code", "source": "1"}]}, raw=None)
def test_a_notebook_file_gives_a_notebook_or_a_value_error_naming_it(notebook, raw):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.ipynb"
        path.write_bytes(json.dumps(notebook).encode("utf-8", "surrogatepass") if raw is None else raw)
        try:
            parsed = read_notebook(path)
        except ValueError as exc:  # 78, naming the file (app/config.py)
            assert str(exc).startswith(repr(str(path))), exc
            return
    assert conforms(parsed, models.Notebook) and parsed.cells


@PARSERS
@given(options=st.one_of(JSON, EXTREME).map(lambda value: {"options": value}), garbage=st.one_of(st.none(), st.text(max_size=30)))
@example(options={"options": None}, garbage='{"cpu": NaN}')
def test_user_options_that_pass_the_configuration_can_be_sent(options, garbage):
    """What --user-options accepts, requests can encode (allow_nan=False); the rest is a ValueError (78)."""
    try:
        raw = json.dumps(options) if garbage is None else garbage
    except (ValueError, RecursionError):  # beyond what json.dumps writes: as a person could write it
        raw = '{"options": ' + ("9" * 5000 if isinstance(options["options"], int) else "[" * 5000 + "]" * 5000) + "}"
    try:
        parsed = _json_object(raw)
    except ValueError:
        return
    json.dumps(parsed, allow_nan=False)


@PARSERS
@given(
    path=st.text(st.characters(codec="utf-8", exclude_characters="\0/"), min_size=1, max_size=20),
    home=st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=20),
    number=st.sampled_from([2, 17, 21, 28, 30, 122, 13, 1]),
)
def test_the_storage_cause_is_the_errno_whatever_the_path_holds(path, home, number):
    """jupyter_server's own message, with the path quoted twice: the path's words never decide the cause."""
    exc = OSError(number, os.strerror(number), f"/home/{home}/{path}/jupyterhub-canary-0.txt")
    message = f"Unexpected error while saving file: {path}/jupyterhub-canary-0.txt {exc}"
    expected = {errno.ENOSPC: "no_space", 122: "no_space", errno.EROFS: "read_only"}.get(number, "error")
    if number in (errno.EACCES, errno.EPERM):
        expected = "permission"
    assert cause_of(500, message, f"{path}/jupyterhub-canary-0.txt") == expected, message


# --- 2. whole runs against the fake hub ---

WHOAMI = {"name": "canary", "kind": "user", "scopes": ["servers", "access:servers", "read:tokens"], "token_id": "a17"}
ARGS = ("--attempts", "1", "--deadline", "8", "--stop-timeout", "1", "--request-timeout", "2", "--spawn-timeout", "3")

# endpoint -> (the shape, how the fake hub serves it, the codes a run may end with, the run's flags). The
# user model is the hub's word on which servers run: when it is the fuzzed answer, the fake hub's own
# servers may differ from what the canary was told (and could stop).
ENDPOINTS: dict[str, tuple[str, Callable[[FakeHub, typing.Any], None], frozenset[int], tuple[str, ...]]] = {
    "version": ("version", lambda fake, body: fake.fault("GET", r"^/hub/api/$", "body", body=body, status=200, count=-1),
                frozenset({0, 20}), ()),
    "whoami": ("whoami", lambda fake, body: fake.fault("GET", r"^/hub/api/user$", "body", body=body, status=200, count=-1),
               frozenset({0, 20, 77}), ()),
    "user-model": ("user_model", lambda fake, body: fake.fault("GET", USER_MODEL, "body", body=body, status=200, count=-1),
                   frozenset({0, 10, 11, 13, 18, 20, 77}), ()),
    "token-model": ("token", lambda fake, body: (
        fake.fault("GET", r"^/hub/api/user$", "body", body=WHOAMI, status=200, count=-1),
        fake.fault("GET", r"/tokens/a17$", "body", body=body, status=200, count=-1),
    ), frozenset({0, 20}), ()),
    "progress-event": ("progress", lambda fake, body: fake.progress_extra.append(body), frozenset({0, 10, 11}), ()),
    "api-status": ("api_status", lambda fake, body: fake.fault("GET", r"/api/status$", "body", body=body, status=200, count=-1),
                   frozenset({0, 12}), ()),
    "lab-page-config": ("page_config", lambda fake, body: setattr(fake, "page_config", body), frozenset({0, 17}),
                        ("--check-lab",)),
    "storage-file-model": ("file_model", lambda fake, body: fake.fault(
        "GET", r"/api/contents/", "body", body=body, status=200, count=-1), frozenset({15}), ("--check-storage",)),
    "spawn-refused": ("error_answer", lambda fake, answer: fake.fault(
        # 18: a first send answered 400 "already running" is another run's server (issue 19, item 5); 20: a
        # 404 that is not the hub's own JSON is a proxy without the hub's route (a restart), not the hub's word.
        "POST", r"/server$", "body", body=answer[1], status=answer[0], count=-1), frozenset({10, 18, 20, 77}), ()),
}


# Always among the examples: the odd answers issue 19 found by hand (each gave 1), and their kin.
KNOWN: dict[str, list[typing.Any]] = {
    "whoami": [{**WHOAMI, "token_id": 17}, {**WHOAMI, "scopes": "servers"}, {**WHOAMI, "name": ["canary"]}],
    "token-model": [{"id": "a17", "expires_at": 1767225600}, {"id": "a17", "expires_at": "next week"}],
    "lab-page-config": [{"federated_extensions": 1}, {"federated_extensions": True}, {"federated_extensions": [None]}],
    "api-status": [[], {"connections": 0, "kernels": "none"}],
    "user-model": [{"name": "canary", "servers": {"": "running"}}, {"name": "canary", "servers": {"": {"started": 5}}}],
    "progress-event": [{"progress": float("nan"), "message": "x"}, {"failed": True, "message": "Spawn failed: no"}],
    "version": [[], {"version": 6}],
    "storage-file-model": [{"type": "file", "content": 5}, []],
    "spawn-refused": [(500, {"status": 500, "message": {"nested": [1]}}), (400, {"message": "canary is already running"})],
}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_a_run_given_any_answer_ends_with_a_documented_code_and_one_result(tmp_path, endpoint):
    shape, serve, codes, extra = ENDPOINTS[endpoint]

    def run_once(body):
        # A pending spawn where the progress stream is the story; elsewhere the hub's quick 201.
        with FakeHub(spawn="pending" if endpoint == "progress-event" else "ready", ready_after=0.0) as fake:
            serve(fake, body)
            run, _ = canary(fake, tmp_path, *ARGS, *extra)  # one canary_result, no traceback, no token
            event(f"exit {run.exit_code}")  # pytest --hypothesis-show-statistics: which codes the examples reached
            assert run.exit_code in codes and run.exit_code in DOCUMENTED, (run.exit_code, run.output[-3000:])
            if endpoint != "user-model":
                assert fake.servers == {}, "the canary stopped what it started"

    test = RUNS(given(body=shapes()[shape])(run_once))
    for body in KNOWN.get(endpoint, []):
        test = example(body=body)(test)
    test()


@RUNS
@given(body=shapes()["minted"], listed=shapes()["token_list"], lost=st.booleans())
def test_the_token_command_given_any_mint_or_token_list_ends_with_a_documented_code(body, listed, lost):
    """A mint answered with any body; or a mint whose answer was lost (the token list is read to find its
    orphan), then any body."""
    with FakeHub() as fake:
        if lost:
            fake.fault("POST", r"/tokens$", "reset", after=True)
        fake.fault("POST", r"/tokens$", "body", body=body, status=201, count=1)
        fake.fault("GET", r"/tokens$", "body", body=listed, status=200, count=-1)
        run = run_token(["--hub-url", fake.url, "--user", "canary", "--print", "--deadline", "8"],
                        env={"JUPYTERHUB_ADMIN_TOKEN": TOKEN})
        assert run.exit_code in {0, 20}, (run.exit_code, run.log[-3000:])
        run.result  # noqa: B018 - exactly one token_result
        assert "Traceback" not in run.log and TOKEN not in run.log + run.stdout
