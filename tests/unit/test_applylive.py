"""`apply`'s live output: service lines the moment they finish, and a progress line on stderr
only once the run is older than 2 s (redrawn on a terminal, plain lines in a log)."""

from __future__ import annotations

import io
import itertools
import time

from reconciler.applylive import LiveApply
from reconciler.reconcile import ServiceOutcome


def wait_for(stream: io.StringIO, text: str) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if text in stream.getvalue():
            return True
        time.sleep(0.01)
    return False


def live_apply(elapsed: float, *, live: bool) -> tuple[LiveApply, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    calls = itertools.count()

    def clock() -> float:
        """The run's start, then `elapsed` later, a millisecond more at every look."""
        n = next(calls)
        return start if n == 0 else start + elapsed + n / 1000

    printer = LiveApply(out=out, err=err, live=live, every=0.01, clock=clock)
    return printer, out, err


def test_a_service_line_is_printed_when_it_finishes_and_errors_go_to_stderr() -> None:
    printer, out, err = live_apply(0.0, live=False)
    printer.started(2)
    printer.finished(ServiceOutcome("ion-api", error="permission denied"), False)
    assert err.getvalue() == "error: ion-api: permission denied\n"
    assert out.getvalue() == ""
    printer.close()


def test_no_progress_before_two_seconds() -> None:
    printer, out, err = live_apply(1.5, live=True)
    printer.started(3)
    time.sleep(0.3)  # many ticks of the printer's 0.01 s interval
    printer.close()
    assert err.getvalue() == "" and out.getvalue() == ""


def test_a_log_gets_plain_progress_lines_after_two_seconds() -> None:
    printer, _out, err = live_apply(12.0, live=False)
    printer.started(1000)
    assert wait_for(err, "apply: 0/1000 services, 0 changed, 0 rolled back, 12 s\n")
    printer.close()
    assert "\r" not in err.getvalue()


def test_a_terminal_gets_one_redrawn_line_cleared_before_a_service_line() -> None:
    printer, out, err = live_apply(3.0, live=True)
    printer.started(2)
    assert wait_for(err, "\r\x1b[Kapply: 0/2 services")
    printer.finished(ServiceOutcome("ion-api", error="permission denied"), False)
    # The progress line is cleared, the service line stays, progress is drawn below it.
    assert "\r\x1b[Kerror: ion-api: permission denied\n" in err.getvalue()
    assert wait_for(err, "permission denied\n\r\x1b[Kapply: 1/2 services")
    printer.close()
    assert err.getvalue().endswith("\r\x1b[K")  # cleared before the closing lines
    assert out.getvalue() == ""
