"""`reconcile demo`: the whole story on the embedded emulator, with the real commands.

A temp git repo with a bare remote, the in-process emulator, and the CLI exactly as a user
types it: validate, plan, apply 5%, healthy traffic, an automatic advance, a bad revision,
an automatic rollback; then the git log and the observed state. No cloud account.

The emulator is as slow as Google where it matters (metrics sampled every minute and readable
three minutes later, windows of at least a minute), so the story keeps realistic windows and
moves the emulator's clock instead of waiting: the reconciler reads that same clock.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from reconciler.sandbox import Sandbox, example_rollout, sandbox

STABLE = "ion-api-00041-abc"
GOOD = "ion-api-00042-xyz"
BAD = "ion-api-00043-bad"
WINDOW = "1m"
WINDOW_S = 60.0
BAKE = "2m"
MAX_TICKS = 10


class _Voice:
    """The narrator: styled lines when colour is on (a terminal, no NO_COLOR or --no-color),
    and the commands it runs told the same (`--no-color` when off)."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def style(
        self, text: str, fg: str | None = None, bold: bool | None = None, dim: bool | None = None
    ) -> str:
        return click.style(text, fg=fg, bold=bold, dim=dim) if self.color else text

    def say(self, text: str) -> None:
        click.echo(self.style(f"\n# {text}", fg="cyan", bold=True))

    def run(self, sb: Sandbox, argv: Sequence[str]) -> int:
        from reconciler.cli import main

        click.echo(self.style(f"$ reconcile {shlex.join(argv)}", bold=True))
        plain = [] if self.color else ["--no-color"]
        code = main(["--repo", str(sb.repo), *plain, *argv])
        click.echo(self.style(f"(exit {code})", dim=True))
        return code


def _traffic(sb: Sandbox, canary_requests: int = 120) -> None:
    """Real requests through the data plane: users on the service URL, a canary probe load."""
    users = sb.emu.load("ion-api", 300)
    canary = sb.emu.load("ion-api", canary_requests, tag="canary")
    click.echo(
        f"  traffic: {users.sent} requests to the service URL, {canary.sent} to the canary tag URL"
    )


def _minute(sb: Sandbox) -> None:
    """One gate window of emulator time passes (`reconcile emulator clock +1m`)."""
    sb.emu.advance_clock(WINDOW_S)
    click.echo(click.style(f"  emulator clock +{WINDOW}: {sb.now():%H:%M:%S}", dim=True))


def story(sb: Sandbox, out: Callable[[str], None] = click.echo, *, color: bool = False) -> int:
    """Run the demo in a ready sandbox; returns the number of failed expectations."""
    problems = 0
    voice = _Voice(color)
    _say, _run = voice.say, voice.run

    def expect(code: int, wanted: int, what: str) -> None:
        nonlocal problems
        if code != wanted:
            problems += 1
            out(voice.style(f"!! expected exit {wanted} from {what}, got {code}", fg="red"))

    text = example_rollout(sb.emu, window=WINDOW, bake=BAKE, min_requests=50, auto_advance="true")
    sb.commit_rollout(text, "rollout: ion-api canary 5% with auto_advance")
    sb.emu.behave(GOOD, error_rate=0.0)

    _say("1. The desired state lives in git. Check it.")
    expect(_run(sb, ["validate"]), 0, "validate")

    _say("2. What would change? 100% stable today; git wants 95/5.")
    expect(_run(sb, ["plan", "--detailed-exitcode"]), 2, "plan")

    _say("3. Apply: dependencies checked, traffic moved with the etag, read back, committed.")
    expect(_run(sb, ["apply"]), 0, "apply")

    _say(
        f"4. Healthy traffic, a minute at a time (the emulator clock moves, nobody waits). Each "
        f"apply judges a {WINDOW} window once Cloud Monitoring shows it (3 minutes late); "
        f"PASS for `bake` ({BAKE}) -> auto-advance."
    )
    for _ in range(MAX_TICKS):
        _traffic(sb)
        _minute(sb)
        expect(_run(sb, ["apply"]), 0, "apply (healthy)")
        if "canary_percent: 10" in sb.rollout().read_text(encoding="utf-8"):
            break
    _run(sb, ["status"])

    _say(f"5. CI deploys a new build with no traffic ({BAD}); a PR names it the canary.")
    sb.emu.deploy("ion-api", BAD, {"error_rate": 0.25})
    sb.git("pull", "--quiet", "--rebase")
    text = sb.rollout().read_text(encoding="utf-8")
    text = text.replace(f"canary: {GOOD}", f"canary: {BAD}")
    text = text.replace("canary_percent: 10", "canary_percent: 5")
    sb.commit_rollout(text, f"rollout: canary {BAD} at 5%")
    expect(_run(sb, ["plan"]), 0, "plan (new canary)")
    expect(_run(sb, ["apply"]), 0, "apply (new canary)")

    _say("6. The new build fails 25% of requests. Two failing windows -> automatic rollback.")
    code = 0
    for _ in range(MAX_TICKS):
        _traffic(sb)
        _minute(sb)
        code = _run(sb, ["apply"])
        if code == 4:
            break
    expect(code, 4, "apply (bad canary)")

    _say("7. Git tells the truth: every change, every rollback, with the measured values.")
    click.echo(sb.remote_log("--format=%h %s", "-n", "12"))
    _say("The sticky rollback in the rollout file:")
    click.echo(sb.remote_file("rollout/ion-api.yaml").split("rolled_back:", 1)[-1].rstrip())
    _say("Observed state (state/naeda-genesis/us-central1/ion-api/status.yaml, first lines):")
    status = sb.remote_file("state/naeda-genesis/us-central1/ion-api/status.yaml").splitlines()
    click.echo("\n".join(status[:16]))
    return problems


def run_demo(keep: Path | None = None, *, color: bool = False) -> int:
    """The demo's entry point: 0 when the story went as told; styled only when `color`."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if any(keep.iterdir()):
            from reconciler.errors import ReconcileError

            raise ReconcileError(f"{keep}: --keep needs an empty or new directory")
    started = time.monotonic()
    with sandbox(keep, latency_mode="simulated", seed=11, keep=keep is not None) as sb:
        click.echo(f"emulator: gRPC {sb.emu.grpc_target}, HTTP {sb.emu.http_url}")
        click.echo(f"git: remote {sb.remote}, working tree {sb.repo}")
        problems = story(sb, color=color)
    elapsed = time.monotonic() - started
    where = f"kept in {keep}" if keep else "temp files removed"
    click.echo(f"\ndemo finished in {elapsed:.0f}s ({where})")
    return 1 if problems else 0
