"""Bad input: exit 78 with a message naming the flag or variable; good input: a typed Config."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from app import kube, logs
from app.cli import main
from app.config import RUN_OPTIONS, EnvToken, FileToken, SecretToken, build_run_config
from app.errors import ConfigError
from app.exit_codes import ExitCode
from tests.runner import run_main, run_token

BASE = ["--hub-url", "http://127.0.0.1:9/", "--user", "canary"]
TOKEN_ENV = {"JUPYTERHUB_API_TOKEN": "t0ken-for-config-tests"}


@pytest.fixture(autouse=True)
def no_serviceaccount(tmp_path, monkeypatch):
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", tmp_path / "no-serviceaccount")


@pytest.mark.parametrize(
    ("args", "env", "culprit"),
    [
        (["--hub-url", "ftp://hub", "--user", "u"], TOKEN_ENV, "--hub-url"),
        (["--hub-url", "hub.example.org", "--user", "u"], TOKEN_ENV, "--hub-url"),
        (["--hub-url", "http://h:99999/", "--user", "u"], TOKEN_ENV, "--hub-url"),
        (["--hub-url", "http://h/?x=1", "--user", "u"], TOKEN_ENV, "--hub-url"),
        (["--user", "u"], TOKEN_ENV, "--hub-url"),
        (["--hub-url", "http://h/"], TOKEN_ENV, "--user"),
        (["--hub-url", "http://h/", "--user", " "], TOKEN_ENV, "--user"),
        ([*BASE, "--spawn-timeout", "soon"], TOKEN_ENV, "--spawn-timeout"),
        ([*BASE, "--spawn-timeout", "-5"], TOKEN_ENV, "--spawn-timeout"),
        ([*BASE, "--stop-timeout", "0"], TOKEN_ENV, "--stop-timeout"),
        ([*BASE, "--request-timeout", "nan"], TOKEN_ENV, "--request-timeout"),
        ([*BASE, "--attempts", "0"], TOKEN_ENV, "--attempts"),
        ([*BASE, "--attempts", "2.5"], TOKEN_ENV, "--attempts"),
        ([*BASE, "--deadline", "inf"], TOKEN_ENV, "--deadline"),
        ([*BASE, "--deadline", "60", "--stop-timeout", "120"], TOKEN_ENV, "--deadline"),
        ([*BASE, "--user-options", "{not json"], TOKEN_ENV, "--user-options"),
        ([*BASE, "--user-options", "[1, 2]"], TOKEN_ENV, "--user-options"),
        ([*BASE, "--user-options-file", "/nonexistent/options.json"], TOKEN_ENV, "--user-options-file"),
        ([*BASE, "--token-file", "/nonexistent/token"], {}, "--token-file"),
        ([*BASE, "--ca-bundle", "/nonexistent/ca.pem"], TOKEN_ENV, "--ca-bundle"),
        ([*BASE, "--log-format", "xml"], TOKEN_ENV, "--log-format"),
        ([*BASE, "--log-level", "loud"], TOKEN_ENV, "--log-level"),
        ([*BASE, "--no-such-flag"], TOKEN_ENV, "--no-such-flag"),
        ([*BASE, "--attempts"], TOKEN_ENV, "--attempts"),
        (["bogus-command"], TOKEN_ENV, "bogus-command"),
        (BASE, {}, "JUPYTERHUB_API_TOKEN"),
        (BASE, {"JUPYTERHUB_API_TOKEN": "   \n"}, "JUPYTERHUB_API_TOKEN"),
        (BASE, {**TOKEN_ENV, "CANARY_SPAWN_TIMEOUT": "abc"}, "CANARY_SPAWN_TIMEOUT"),
        (BASE, {**TOKEN_ENV, "CANARY_ATTEMPTS": "-1"}, "CANARY_ATTEMPTS"),
        (BASE, {**TOKEN_ENV, "CANARY_INSECURE_SKIP_TLS_VERIFY": "maybe"}, "CANARY_INSECURE_SKIP_TLS_VERIFY"),
        (BASE, {**TOKEN_ENV, "CANARY_USER_OPTIONS": "{"}, "CANARY_USER_OPTIONS"),
        (["--user", "u"], {**TOKEN_ENV, "CANARY_HUB_URL": "nope"}, "CANARY_HUB_URL"),
    ],
)
def test_invalid_input_exits_78_naming_the_culprit(args, env, culprit, tmp_path):
    run = run_main([*args, "--termination-log", str(tmp_path / "term")], env=env)
    assert run.exit_code == ExitCode.CONFIGURATION == 78, run.output
    result = run.result
    assert result["reason"] == "configuration"
    assert culprit in result["message"], result["message"]
    assert json.loads((tmp_path / "term").read_text())["exit_code"] == 78


def test_contradicting_tls_flags(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    run = run_main([*BASE, "--ca-bundle", str(ca), "--insecure-skip-tls-verify"], env=TOKEN_ENV)
    assert run.exit_code == 78 and "--insecure-skip-tls-verify" in run.result["message"]


def test_both_option_sources_are_refused(tmp_path):
    options = tmp_path / "o.json"
    options.write_text("{}")
    run = run_main([*BASE, "--user-options", "{}", "--user-options-file", str(options)], env=TOKEN_ENV)
    assert run.exit_code == 78 and "--user-options-file" in run.result["message"]


def test_empty_token_file_is_a_configuration_error(tmp_path):
    token = tmp_path / "token"
    token.write_text("\n")
    run = run_main([*BASE, "--token-file", str(token)], env={})
    assert run.exit_code == 78 and "empty" in run.result["message"] and str(token) in run.result["message"]


def test_help_and_version_exit_0(capsys):
    assert main(["--help"], env={}) == 0
    assert "exit codes" in capsys.readouterr().out
    assert main(["run", "--help"], env={}) == 0
    help_text = capsys.readouterr().out
    for option in RUN_OPTIONS:
        assert option.flag in help_text and option.env in help_text
    assert main(["--version"], env={}) == 0


def test_flag_wins_over_variable_and_variables_are_parsed():
    env = {
        **TOKEN_ENV,
        "CANARY_HUB_URL": "https://hub.example.org/jhub",
        "CANARY_USER": "from-env",
        "CANARY_SPAWN_TIMEOUT": "42.5",
        "CANARY_ATTEMPTS": "5",
        "CANARY_INSECURE_SKIP_TLS_VERIFY": "true",
        "CANARY_USER_OPTIONS": '{"account": ["x"]}',
    }
    config = build_run_config({"user": "from-flag"}, env)
    assert config.user == "from-flag"
    assert config.hub_url == "https://hub.example.org/jhub/"
    assert config.spawn_timeout == 42.5 and config.attempts == 5
    assert config.insecure_skip_tls_verify and config.tls_verify is False
    assert config.user_options == {"account": ["x"]}
    assert isinstance(config.token_source, EnvToken) and "t0ken" not in repr(config)


def test_token_sources_first_configured_wins(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("abc\n")
    given = {"hub_url": "http://h/", "user": "u", "token_file": str(token_file)}
    assert isinstance(build_run_config(given, TOKEN_ENV).token_source, FileToken)
    source = build_run_config({**given, "token_secret": "canary-token"}, TOKEN_ENV).token_source
    assert source == SecretToken("canary-token", "token", "default")

    serviceaccount = tmp_path / "sa"
    serviceaccount.mkdir()
    (serviceaccount / "namespace").write_text("jhub\n")
    monkeypatch.setattr(kube, "SERVICEACCOUNT_DIR", serviceaccount)
    source = build_run_config({**given, "token_secret": "canary-token"}, TOKEN_ENV).token_source
    assert source.namespace == "jhub", "the pod's own namespace is the default"


def test_env_names_follow_the_flags():
    for option in RUN_OPTIONS:
        assert option.env == "CANARY_" + option.flag.removeprefix("--").replace("-", "_").upper()


# --hub-url as the canary spells it (the pushed `hub` label) or refuses it; the chart's canary.hubUrl
# must agree on every one (tests/test_chart.py renders the same list).
HUB_URLS_ACCEPTED = {
    "https://hub.example.org": "https://hub.example.org/",
    "HTTPS://Hub.Example.ORG": "HTTPS://Hub.Example.ORG/",  # the case stays as written
    "https://hub.example.org:8443/jupyter": "https://hub.example.org:8443/jupyter/",
    " \thttps://hub.example.org/\r\n": "https://hub.example.org/",
    "https://hub.example.org\u00a0\u3000": "https://hub.example.org/",  # Unicode white space, trimmed as Helm's `trim`
    "https://hub.example.org//": "https://hub.example.org//",
    "https://hüb.example.org": "https://hüb.example.org/",
    "http://[::1]:8081/hub": "http://[::1]:8081/hub/",
}
HUB_URLS_REFUSED = {
    "an empty query": "https://hub.example.org/?",
    "an empty fragment": "https://hub.example.org#",
    "a space inside": "https://hub.example.org/a b/",
    "a newline inside": "https://hub.exa\nmple.org/",
    "a tab before the path": "https://hub.example.org\t/jupyter",
    "a no-break space inside": "https://hub.example.org/a\u00a0b",
    "a control character at the end": "https://hub.example.org/\x1f",
    "a port out of range": "https://hub.example.org:65536/",
    "no host": "https://:443/",
}


@pytest.mark.parametrize(("raw", "spelled"), list(HUB_URLS_ACCEPTED.items()), ids=list(HUB_URLS_ACCEPTED))
def test_the_hub_url_is_trimmed_and_given_its_slash_and_nothing_else(raw, spelled):
    assert build_run_config({"hub_url": raw, "user": "u"}, TOKEN_ENV).hub_url == spelled


@pytest.mark.parametrize("raw", list(HUB_URLS_REFUSED.values()), ids=list(HUB_URLS_REFUSED))
def test_a_hub_url_that_would_not_reach_the_hub_as_written_is_78(raw):
    """A `?` or `#` (empty or not) turns the API paths into a query or fragment; white space or a control
    character inside is no URL (urlsplit drops tabs and newlines while parsing, so the label kept them)."""
    with pytest.raises(ConfigError) as caught:
        build_run_config({"hub_url": raw, "user": "u"}, TOKEN_ENV)
    assert "--hub-url" in str(caught.value)


def test_config_error_carries_the_exit_code():
    with pytest.raises(ConfigError) as caught:
        build_run_config({"hub_url": "http://h/", "user": "u"}, {})
    assert caught.value.exit_code == 78


def test_default_termination_log_only_when_writable(monkeypatch, tmp_path):
    from app import config as config_module

    monkeypatch.setattr(config_module, "DEFAULT_TERMINATION_LOG", str(tmp_path / "dev" / "termination-log"))
    assert config_module.default_termination_log() is None  # its folder does not exist
    (tmp_path / "dev").mkdir()
    assert config_module.default_termination_log() == Path(tmp_path / "dev" / "termination-log")


# --- issue 14: absurd budgets, tokens in configuration errors, secrets that survive configure() ---


@pytest.mark.parametrize("flag", ["--deadline", "--stop-timeout", "--request-timeout"])
def test_a_budget_beyond_a_year_is_78_naming_the_flag(flag, tmp_path):
    run = run_main(["--hub-url", "http://127.0.0.1:9/", "--user", "u", flag, "1e10",
                    "--termination-log", str(tmp_path / "term")], env={"JUPYTERHUB_API_TOKEN": "t" * 32})
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert flag in run.result["message"] and "a year" in run.result["message"], run.result["message"]


SECRET = "s3cr3t-t0k3n-0123456789abcdef"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--hub-url", SECRET], id="env-token-in-a-bad-value"),
        pytest.param(["--hub-url", "http://127.0.0.1:9/", "--token", SECRET], id="ambiguous-flag"),
        pytest.param(["--hub-url", "http://127.0.0.1:9/", "--api-token", SECRET], id="unknown-flag"),
        pytest.param(["--hub-url", "http://127.0.0.1:9/", f"--api-token={SECRET}"], id="unknown-flag-equals"),
    ],
)
def test_a_token_never_appears_in_a_configuration_error(args, tmp_path):
    term = tmp_path / "term"
    run = run_main([*args, "--user", "u", "--termination-log", str(term)], env={"JUPYTERHUB_API_TOKEN": SECRET})
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    run.assert_no_secret(SECRET)
    assert SECRET not in term.read_text()
    culprit = "--hub-url" if args[1] == SECRET else args[-1].split("=")[0] if "=" in args[-1] else args[-2]
    assert culprit in run.result["message"], run.result["message"]


def test_the_admin_token_in_the_environment_is_masked_in_token_command_errors():
    run = run_token(["--hub-url", SECRET, "--user", "u", "--print"], env={"JUPYTERHUB_ADMIN_TOKEN": SECRET})
    assert run.exit_code == ExitCode.CONFIGURATION, run.log
    assert SECRET not in run.log and "--hub-url" in run.result["message"]


def test_configure_keeps_the_secrets_registered_before_it():
    stream = io.StringIO()
    logs.forget_secrets()
    logs.add_secret(SECRET)
    logs.configure("json", "info", stream=stream)
    logs.get_logger().info("probe", value=SECRET)
    assert SECRET not in stream.getvalue() and logs.REDACTED in stream.getvalue()


# --- issue 19, item 10: options that parse as JSON in Python but cannot be sent ---


@pytest.mark.parametrize(
    ("options", "where", "spelled"),
    [
        ('{"cpu": NaN}', "cpu", "NaN"),
        ('{"limits": {"memory": Infinity}}', "limits.memory", "Infinity"),
        ('{"runtime": ["00:05:00", -Infinity]}', "runtime[1]", "-Infinity"),
        ('{"cpu": 1e999}', "cpu", "Infinity"),  # a number beyond a float: Python reads it as infinity
    ],
    ids=["nan", "infinity", "minus-infinity-in-a-list", "overflow"],
)
@pytest.mark.parametrize("source", ["--user-options", "CANARY_USER_OPTIONS", "--user-options-file"])
def test_user_options_with_nan_or_infinity_are_78_naming_the_option_and_the_key(tmp_path, options, where, spelled, source):
    """requests refuses to send them (allow_nan=False): found here, not as a retried 20 "hub unavailable"."""
    args, env = [*BASE, "--termination-log", str(tmp_path / "term")], dict(TOKEN_ENV)
    if source == "--user-options-file":
        path = tmp_path / "options.json"
        path.write_text(options)
        args += [source, str(path)]
    elif source == "--user-options":
        args += [source, options]
    else:
        env[source] = options
    run = run_main(args, env=env)
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    message = run.result["message"]
    assert message.startswith(source) and f"`{where}` is {spelled}, which JSON does not have" in message, message


def test_user_options_nested_too_deeply_are_78_not_a_crash(tmp_path):
    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    run = run_main([*BASE, "--user-options", deep, "--termination-log", str(tmp_path / "term")], env=TOKEN_ENV)
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert "--user-options: is not valid JSON: nested too deeply" in run.result["message"]


# --- --check-url: pages of the server, parsed at the border (issue 20) ---


@pytest.mark.parametrize(
    "raw",
    ["https://other.example.org/x", "//other.example.org/x", "/hub/admin", "../other-user/lab", "rstudio/../../x",
     "rstudio/%2e%2e/%2E%2E/x", "a\\..\\..\\b", "rstudio/#frag", "r studio", ""],
)
def test_a_check_url_that_is_not_a_path_inside_the_server_is_78_naming_it(raw, tmp_path):
    run = run_main([*BASE, "--check-url", "lab", "--check-url", raw, "--termination-log", str(tmp_path / "term")], env=TOKEN_ENV)
    assert run.exit_code == ExitCode.CONFIGURATION, run.output
    assert "--check-url" in run.result["message"], run.result["message"]
    if raw:
        assert repr(raw) in run.result["message"], run.result["message"]


def test_check_urls_repeat_keep_their_spelling_and_come_from_the_variable_split_on_white_space():
    given = {"hub_url": "http://h/", "user": "u"}
    assert build_run_config(given, TOKEN_ENV).check_urls == ()
    config = build_run_config({**given, "check_url": ["rstudio/", "vscode?folder=/home"]}, TOKEN_ENV)
    assert config.check_urls == ("rstudio/", "vscode?folder=/home")
    env = {**TOKEN_ENV, "CANARY_CHECK_URL": " rstudio/\n desktop/ "}
    assert build_run_config(given, env).check_urls == ("rstudio/", "desktop/")
    assert build_run_config({**given, "check_url": ["lab"]}, env).check_urls == ("lab",), "the flag wins"
    with pytest.raises(ConfigError, match="CANARY_CHECK_URL"):
        build_run_config(given, {**TOKEN_ENV, "CANARY_CHECK_URL": "rstudio/ /hub/admin"})


@pytest.mark.parametrize(
    "name", ["alice", "jupyterhub-canary-fresh-", "jupyterhub-canary", "canary-fresh-x", "x-jupyterhub-canary-fresh-1"]
)
def test_fresh_user_refuses_a_name_outside_the_rule_naming_it(name):
    with pytest.raises(ConfigError, match=f"--user {name!r} is refused .*jupyterhub-canary-fresh-"):
        build_run_config({"hub_url": "http://hub/", "user": name, "fresh_user": "true"}, TOKEN_ENV)


def test_fresh_user_takes_a_name_of_the_rule_from_its_variable_too():
    env = {**TOKEN_ENV, "CANARY_FRESH_USER": "true", "CANARY_USER": "jupyterhub-canary-fresh-gpu"}
    config = build_run_config({"hub_url": "http://hub/"}, env)
    assert config.fresh_user is True and config.user == "jupyterhub-canary-fresh-gpu"
    with pytest.raises(ConfigError, match="CANARY_USER 'bob'"):
        build_run_config({"hub_url": "http://hub/"}, {**env, "CANARY_USER": "bob"})
