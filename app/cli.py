"""The command line: `jupyterhub-canary [run] [flags]`. Exit codes are decided here and only here."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from app import __version__, lease, logs, termination
from app.config import (
    ADMIN_TOKEN_ENV,
    RUN_OPTIONS,
    TOKEN_COMMAND_OPTIONS,
    TOKEN_ENV,
    Config,
    Option,
    TokenCommandConfig,
    build_run_config,
    build_token_config,
    default_termination_log,
    resolve,
)
from app.cycle import PHASES, Canary
from app.deadline import Clock, Deadline, elapsed_ms
from app.errors import CanaryError, ConfigError, Interrupted
from app.exit_codes import MEANING, ExitCode
from app.hub import HubClient
from app.signals import NoSignals, SignalGuard
from app.token_command import TokenCommand
from app.token_source import read_token

COMMANDS = ("run", "token")
log = logs.get_logger()


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as a ConfigError (exit 78), not with exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            raise ConfigError(f"unrecognized arguments: {' '.join(_without_values(unknown))}")
        return parsed


def _without_values(unknown: list[str]) -> list[str]:
    """Unknown arguments, the value of each unknown flag hidden: it may be a secret (`--token abc`)."""
    shown: list[str] = []
    for arg in unknown:
        if arg.startswith("-"):
            flag, given = arg.split("=", 1) if "=" in arg else (arg, None)
            shown.append(flag if given is None else f"{flag}=<hidden>")
        elif shown and shown[-1].startswith("-") and "=" not in shown[-1]:
            shown.append("<hidden>")
        else:
            shown.append(arg)  # e.g. a mistyped command
    return shown


def _add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    for option in options:
        default = "" if option.default in (None, "", ()) else f", default {option.default}"
        help_text = f"{option.help} [{option.env}{default}]"
        if option.switch:
            parser.add_argument(option.flag, dest=option.dest, action="store_const", const="true", help=help_text)
        elif option.repeat:
            parser.add_argument(option.flag, dest=option.dest, action="append", metavar=option.metavar, help=help_text)
        else:
            parser.add_argument(option.flag, dest=option.dest, metavar=option.metavar, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    exit_codes = "\n".join(f"  {int(code):>3}  {meaning}" for code, meaning in MEANING.items())
    parser = _Parser(
        prog="jupyterhub-canary",
        description="A synthetic check of a JupyterHub: spawn a server, verify it answers, stop it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"exit codes:\n{exit_codes}",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="one spawn -> verify -> stop cycle (the default command)",
        description=(
            "One spawn -> verify -> stop cycle through the JupyterHub REST API. Every flag can also be "
            f"given as the variable in brackets; a flag wins over its variable. The token comes from "
            f"--token-secret, else --token-file, else ${TOKEN_ENV}."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"exit codes:\n{exit_codes}",
    )
    _add_options(run, RUN_OPTIONS)
    token = commands.add_parser(
        "token",
        help="mint the service account's token into a Secret, or rotate it",
        description=(
            "mint (the default): create the user if asked, mint a token with the least scopes the canary "
            "needs, store it in a Kubernetes Secret (or print it). rotate: mint a new token, update the "
            "Secret, then revoke the old token. The admin token comes from --admin-token-secret, else "
            f"--admin-token-file, else ${ADMIN_TOKEN_ENV} - never from the command line. Logs go to stderr. "
            "A JupyterHub service's token (a fresh-user probe's) is set by the hub's configuration, not "
            "minted: --user naming a service ends with 78 (chart/README.md, \"Fresh-user probes\")."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"exit codes:\n{exit_codes}",
    )
    token.add_argument("action", nargs="?", choices=("mint", "rotate"), default="mint")
    _add_options(token, TOKEN_COMMAND_OPTIONS)
    return parser


def _with_default_command(argv: list[str]) -> list[str]:
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version")):
        return argv
    return ["run", *argv]


def main(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, *, clock: Clock = time.monotonic
) -> int:
    """Run the command line; return the exit code (never raise). `clock` times the run's budgets."""
    env = os.environ if env is None else env
    args = list(sys.argv[1:] if argv is None else argv)
    started = clock()
    # A fresh run: forget an earlier run's secrets (tests call main() repeatedly), then mask the
    # tokens known before parsing, so that no configuration error can show them.
    logs.forget_secrets()
    for variable in (TOKEN_ENV, ADMIN_TOKEN_ENV):
        logs.add_secret(env.get(variable, "").strip())
    args = _with_default_command(args)
    try:
        parsed = vars(build_parser().parse_args(args))
        if parsed["command"] == "token":
            token_config = build_token_config(parsed["action"], parsed, env)
        else:
            config = build_run_config(parsed, env)
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    except ConfigError as exc:
        if args[0] == "token":
            early = _reporting_settings(args, env, TOKEN_COMMAND_OPTIONS)
            logs.configure(early["log_format"], early["log_level"], stream=sys.stderr)
            return _token_finish(exc.exit_code, "failed", reason=exc.reason, message=str(exc))
        early = _reporting_settings(args, env, RUN_OPTIONS)
        logs.configure(early["log_format"], early["log_level"])
        return _finish(
            exc.exit_code, "failed", started, early["termination_log"], reason=exc.reason, message=str(exc), clock=clock
        )
    if parsed["command"] == "token":
        logs.configure(token_config.log_format, token_config.log_level, stream=sys.stderr)
        return _token(token_config, clock)
    logs.configure(config.log_format, config.log_level)
    return _run(config, started, clock)


def _token(config: TokenCommandConfig, clock: Clock) -> int:
    logs.bind(hub=config.hub_url, user=config.user, action=config.action)
    if config.insecure_skip_tls_verify:
        _warn_insecure()
    in_main_thread = threading.current_thread() is threading.main_thread()
    # As in `run`: a signal interrupts the command, except while a minted token is being stored (or
    # printed, or taken back): then it waits until the token is in one place, and only there.
    with SignalGuard() if in_main_thread else NoSignals() as guard:
        try:
            with guard.armed():
                TokenCommand(config, shield=guard.shield, clock=clock).run()
            guard.raise_if_received()
        except Interrupted as exc:
            log.warning("signal_received", signal=signal.Signals(exc.signum).name, during_cleanup=guard.during_cleanup)
            return _token_finish(exc.exit_code, "interrupted", reason="interrupted", message=str(exc))
        except CanaryError as exc:
            if guard.received is not None:  # it came during a shielded step that then failed: that failure is the news
                log.warning("signal_received", signal=signal.Signals(guard.received).name, during_cleanup=True)
            return _token_finish(exc.exit_code, "failed", reason=exc.reason, message=str(exc))
        except Exception as exc:  # a bug
            log.exception("internal_error")
            return _token_finish(
                ExitCode.INTERNAL_ERROR, "failed", reason="internal_error", message=f"internal error: {exc!r}"
            )
        return _token_finish(ExitCode.OK, "ok", message=f"token {config.action} done")


def _warn_insecure() -> None:
    """Our own warning, once, in the JSON log; urllib3's would be a raw line on stderr with every request."""
    import urllib3.exceptions

    log.warning("tls_verification_disabled", hint="--insecure-skip-tls-verify: the hub's identity is not checked")
    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)


def _token_finish(exit_code: int, outcome: str, *, message: str, reason: str | None = None) -> int:
    level = log.info if exit_code == ExitCode.OK else log.error
    level("token_result", outcome=outcome, exit_code=int(exit_code), message=message, **({"reason": reason} if reason else {}))
    return int(exit_code)


REPORTING = ("log_format", "log_level", "termination_log")


def _reporting_settings(args: list[str], env: Mapping[str, str], command_options: Sequence[Option]) -> dict[str, Any]:
    """How to report a configuration error: each reporting option that is itself valid, else its default.

    The full parser may have failed on any flag, so only these options are picked out of argv.
    """
    options = tuple(o for o in command_options if o.dest in REPORTING)
    lenient = _Parser(add_help=False)
    _add_options(lenient, options)
    try:
        given = vars(lenient.parse_known_args(args)[0])
    except ConfigError:  # e.g. a reporting flag without its value
        given = {}
    settings: dict[str, Any] = {o.dest: o.default for o in options}
    for option in options:
        try:
            settings[option.dest] = resolve((option,), given, env)[option.dest][0] or option.default
        except ConfigError:
            pass
    if "termination_log" in settings:
        settings["termination_log"] = settings["termination_log"] or default_termination_log()
    return settings


def _run(config: Config, started: float, clock: Clock) -> int:
    logs.bind(hub=config.hub_url, user=config.user, server=config.server_name, probe=config.probe)
    if config.insecure_skip_tls_verify:
        _warn_insecure()
    in_main_thread = threading.current_thread() is threading.main_thread()
    canary: Canary | None = None
    # The whole run's budget, from the process start: reading the token counts too.
    deadline = Deadline(config.deadline - (clock() - started), clock)
    # The guard stays installed until the result is reported: a signal while it is being reported is
    # remembered, logged, and the one result line and the termination message are still written.
    with SignalGuard() if in_main_thread else NoSignals() as guard:
        noted: list[int] = []

        def note_signal(**where: Any) -> None:
            """Log the signal once, wherever it ended up being acted on (or not)."""
            if guard.received is not None and not noted:
                noted.append(guard.received)
                log.warning("signal_received", signal=signal.Signals(guard.received).name, **where)

        stop_failure: list[Exception] = []  # the stop after a signal, when it failed

        def stop_after_signal() -> None:
            """Stop the server after a signal: a no-op unless the signal came before the attempt's own
            cleanup took over, or once the stop was tried; its failure is kept for the report."""
            if canary is None or stop_failure:
                return
            try:
                canary.cleanup()
            except Interrupted:  # the same signal, raised again where the stop's shield ends: the stop is done
                pass
            except Exception as failed:
                if not isinstance(failed, CanaryError):  # a bug in the cleanup: the server may be left running
                    log.exception("internal_error")
                stop_failure.append(failed)

        def report(exit_code: int, outcome: str, **details: Any) -> int:
            note_signal(during_cleanup=guard.during_cleanup)
            code = _finish(
                exit_code, outcome, started, config.termination_log, canary,
                config=config, deadline=deadline, clock=clock, **details,
            )
            note_signal(during_report=True)  # it changes nothing: the result is reported already
            return code

        try:
            with guard.armed():
                token = read_token(config.token_source, deadline, request_timeout=config.request_timeout,
                                   kube_relaxed_x509=config.kube_relaxed_x509)
                logs.add_secret(token)
                log.info("token_loaded", source=config.token_source.describe())
                client = HubClient(
                    config.hub_url, token, request_timeout=config.request_timeout, verify=config.tls_verify
                )
                canary = Canary(
                    config, client, shield=guard.shield, interrupted=guard.raise_if_received, deadline=deadline,
                    clock=clock,
                )
                # One run of the probe at a time (app/lease.py); without --lease only the server's age tells.
                # The Lease is given back only after the server's stop, a signal's too: else another run
                # of the probe could take it while this run's server still runs.
                with lease.holding(config, deadline, shield=guard.shield):
                    try:
                        canary.run()
                    except Interrupted:
                        note_signal(during_cleanup=guard.during_cleanup)
                        stop_after_signal()
                        raise
            guard.raise_if_received()
        except Interrupted as exc:
            note_signal(during_cleanup=guard.during_cleanup)
            stop_after_signal()  # done already when the signal came while the Lease was held
            if stop_failure:
                (failed,) = stop_failure
                if isinstance(failed, CanaryError):  # 13 wins over the interruption
                    return report(failed.exit_code, "failed", reason=failed.reason, message=str(failed))
                return report(
                    ExitCode.STOP_FAILED, "failed", reason="stop_failed",
                    message=f"the server may be left running: the cleanup failed with {failed!r}",
                )
            return report(exc.exit_code, "interrupted", reason="interrupted", message=str(exc))
        except CanaryError as exc:
            return report(
                exc.exit_code, "failed", reason=exc.reason, message=str(exc), cause=exc.cause,
                last_progress_message=exc.progress_message or (canary and canary.last_progress_message),
            )
        except Exception as exc:  # a bug: say so, with the traceback, and exit 1
            log.exception("internal_error")
            return report(ExitCode.INTERNAL_ERROR, "failed", reason="internal_error", message=f"internal error: {exc!r}")
        finally:
            if canary is not None:
                canary.client.close()
        done = "spawned, verified and stopped"
        if config.fresh_user:
            done = "created the fresh user, spawned, verified, stopped and deleted it"
        return report(ExitCode.OK, "ok", message=done)


def _finish(
    exit_code: int,
    outcome: str,
    started: float,
    termination_log: Path | None,
    canary: Canary | None = None,
    *,
    message: str,
    reason: str | None = None,
    cause: str | None = None,
    last_progress_message: str | None = None,
    config: Config | None = None,
    deadline: Deadline | None = None,
    clock: Clock = time.monotonic,
) -> int:
    """Log the one `canary_result` event, write the termination message, then push the metrics and
    record the run's Event on its Job (each when configured) within what is left of `deadline` (at
    least LAST_LOOK each, app/deadline.py)."""
    result: dict[str, Any] = {
        "outcome": outcome,
        "exit_code": int(exit_code),
        "attempts": canary.attempts if canary else 0,
        "duration_ms": elapsed_ms(started, clock),
        "phases_ms": {phase: canary.phases_ms.get(phase) for phase in canary.phases}
        if canary
        else dict.fromkeys(PHASES),
        "hub_version": canary.hub_version if canary else None,
        "message": message,
        # The last attempt's progress events, and the phases they mark (app/timeline.py).
        "timeline": canary.timeline.as_result() if canary and canary.timeline else [],
        "timeline_phases_ms": canary.timeline.phases_ms() if canary and canary.timeline else {},
    }
    if config is not None:
        result["probe"] = config.probe
    if canary is not None:
        # What the checks against the server reported, each under its name (e.g. `notebook`).
        result.update(canary.check_reports)
        if canary.fresh is not None:
            # --fresh-user: whether the last attempt's user was deleted at its end (null: not reached).
            result.update(fresh_user=True, user_deleted=canary.fresh.deleted)
    if outcome != "ok":
        result["reason"] = reason
        # Why, where the failure can tell (a spawn's: app/spawn_causes.py), else null.
        result["cause"] = cause
        result["last_progress_message"] = last_progress_message
        # Each failed attempt's reason, in order: the run's story when the attempts failed differently.
        result["attempt_reasons"] = [failure.reason for failure in canary.failures] if canary else []
    level = log.info if exit_code == ExitCode.OK else log.error
    level("canary_result", **result)
    termination.write(termination_log, outcome, int(exit_code), message, cause=cause)
    # A run that found another live run of its probe measured nothing: its push would replace that
    # run's metrics group with a failure.
    if config is not None and config.pushgateway_url and exit_code != ExitCode.CONCURRENT_RUN:
        timeout = deadline.for_wait(config.request_timeout) if deadline else config.request_timeout
        _push_metrics(config, result, timeout)
    # Then the run's Event on its Job (app/job_event.py), within what is left: it changes nothing here either.
    if config is not None and config.job_name:
        from app import job_event

        job_event.record(config, result, deadline or Deadline(config.request_timeout, clock))
    return int(exit_code)


def _push_metrics(config: Config, result: dict[str, Any], timeout: float) -> None:
    """A failed push is logged by metrics.push and changes nothing here: not the outcome, not the exit code."""
    from app import metrics

    metrics.push(
        config.pushgateway_url,
        metrics.Group(config.hub_url, config.user, config.probe),
        metrics.RunMetrics(
            success=result["exit_code"] == ExitCode.OK,
            exit_code=result["exit_code"],
            attempts=result["attempts"],
            duration_seconds=result["duration_ms"] / 1000,
            phases_ms=result["phases_ms"],
            reason=result.get("reason") or "none",
            cause=result.get("cause") or "none",
            timeline_phases_ms=result["timeline_phases_ms"],
            message=result["message"],
        ),
        timeout=timeout,
    )
