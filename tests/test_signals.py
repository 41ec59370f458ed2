"""When a signal interrupts and when it is only remembered (real signals sent to this process)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from app.errors import Interrupted
from app.exit_codes import ExitCode
from app.signals import SignalGuard


def send(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # the handler runs at the next bytecode boundary of the main thread


def test_an_armed_guard_interrupts_with_the_signals_exit_code():
    with SignalGuard() as guard, pytest.raises(Interrupted) as caught:
        with guard.armed():
            send(signal.SIGTERM)
    assert caught.value.exit_code == ExitCode.SIGTERM == 143
    with SignalGuard() as guard, pytest.raises(Interrupted) as caught:
        with guard.armed():
            send(signal.SIGINT)
    assert caught.value.exit_code == ExitCode.SIGINT == 130


def test_a_signal_during_a_shield_waits_for_its_end_then_interrupts():
    stopped = False
    with SignalGuard() as guard, guard.armed():
        with pytest.raises(Interrupted) as caught:
            with guard.shield():
                send(signal.SIGTERM)  # the stop goes on
                stopped = True
        assert stopped and guard.received == signal.SIGTERM and guard.during_cleanup
        assert caught.value.exit_code == ExitCode.SIGTERM


def test_a_failing_shielded_block_keeps_its_failure_and_the_signal_stays_remembered():
    with SignalGuard() as guard, guard.armed():
        with pytest.raises(RuntimeError, match="server left running"):
            with guard.shield():
                send(signal.SIGTERM)
                raise RuntimeError("server left running")
        assert guard.received == signal.SIGTERM
        with pytest.raises(Interrupted):
            guard.raise_if_received()


def test_nested_shields_interrupt_only_when_the_outermost_ends():
    with SignalGuard() as guard, guard.armed():
        with pytest.raises(Interrupted):
            with guard.shield():
                with guard.shield():
                    send(signal.SIGTERM)
                inner_done = True
        assert inner_done


def test_an_unarmed_shield_only_remembers():
    with SignalGuard() as guard:
        with guard.shield():
            send(signal.SIGTERM)
        assert guard.received == signal.SIGTERM


def test_unarmed_signals_wait_for_a_safe_point_and_only_the_first_counts():
    with SignalGuard() as guard:
        send(signal.SIGTERM)  # e.g. while the result is being reported
        send(signal.SIGINT)
        assert guard.received == signal.SIGTERM
        with pytest.raises(Interrupted) as caught:
            guard.raise_if_received()
        assert caught.value.signum == signal.SIGTERM


def test_previous_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with SignalGuard():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
