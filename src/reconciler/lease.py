"""A lease with expiry on a git ref, so one streaming controller at a time writes.

The lease is a branch (`reconcile/stream-lease`) on the rollout repository's remote whose
single commit says who holds it and until when. Taking or renewing it is one push with
`--force-with-lease` on the sha last seen: git's compare-and-swap, so two controllers cannot
both win. Nothing lands on the main branch (no history grows by renewing).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.gitops import BotIdentity
from reconciler.state import format_time, parse_time

LEASE_BRANCH = "reconcile/stream-lease"
LEASE_REF = f"refs/heads/{LEASE_BRANCH}"
_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_EXPIRED = datetime(1970, 1, 1, tzinfo=UTC)


def holder_id() -> str:
    """A name for this controller: host, process and a random part (unique per start)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Held:
    """Who holds the lease (as read from the remote) and until when."""

    holder: str
    expires: datetime
    sha: str


class LeaseError(Exception):
    """The remote could not be read or written (an outage, not a refusal)."""


class Lease:
    """The stream controller's lease on `remote` of the git working tree at `repo`."""

    def __init__(
        self,
        repo: Path,
        holder: str,
        ttl: timedelta = timedelta(minutes=2),
        *,
        remote: str = "origin",
    ) -> None:
        self.repo = repo
        self.holder = holder
        self.ttl = ttl
        self.remote = remote
        self._mine: str | None = None

    def _git(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, **(env or {}), "GIT_TERMINAL_PROMPT": "0"}
        return subprocess.run(
            ["git", *args],
            cwd=self.repo,
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def read(self) -> Held | None:
        """The lease as the remote has it now (None: nobody ever took it, or released)."""
        got = self._git("ls-remote", self.remote, LEASE_REF)
        if got.returncode != 0:
            raise LeaseError(f"cannot read the lease from {self.remote}: {got.stderr.strip()}")
        if not got.stdout.strip():
            return None
        sha = got.stdout.split()[0]
        if self._git("cat-file", "-e", sha).returncode != 0:
            fetched = self._git("fetch", "--quiet", self.remote, LEASE_REF)
            if fetched.returncode != 0:
                raise LeaseError(f"cannot fetch the lease: {fetched.stderr.strip()}")
        message = self._git("log", "-1", "--format=%B", sha).stdout
        try:
            data = json.loads(message)
            return Held(str(data["holder"]), parse_time(str(data["expires"])), sha)
        except (ValueError, KeyError, TypeError):
            # Not a lease we wrote: treat as expired, so a stray branch cannot block forever.
            return Held("unknown", _EXPIRED, sha)

    def acquire(self, now: datetime) -> str | None:
        """Take or renew the lease until `now + ttl`. None when held by us now; otherwise why
        not (held by another controller until a time, or taken by one just now)."""
        current = self.read()
        if current is not None and current.holder != self.holder and current.expires > now:
            self._mine = None
            return f"held by {current.holder} until {format_time(current.expires)}"
        message = json.dumps({"holder": self.holder, "expires": format_time(now + self.ttl)})
        made = self._git(
            "commit-tree", _EMPTY_TREE, "-m", message, env=BotIdentity.from_env().env()
        )
        if made.returncode != 0:
            raise LeaseError(f"cannot write the lease commit: {made.stderr.strip()}")
        sha = made.stdout.strip()
        expected = current.sha if current is not None else ""
        pushed = self._git(
            "push",
            "--porcelain",
            f"--force-with-lease={LEASE_REF}:{expected}",
            self.remote,
            f"{sha}:{LEASE_REF}",
        )
        if pushed.returncode != 0:
            if "stale info" in pushed.stdout + pushed.stderr or "[rejected]" in pushed.stdout:
                self._mine = None
                return "taken by another controller just now"
            raise LeaseError(f"cannot push the lease: {pushed.stderr.strip()}")
        self._mine = sha
        return None

    def release(self) -> None:
        """Give the lease up (delete the branch) if we still hold it; errors are ignored:
        an unreleased lease simply expires."""
        if self._mine is None:
            return
        self._git(
            "push",
            "--porcelain",
            f"--force-with-lease={LEASE_REF}:{self._mine}",
            self.remote,
            f":{LEASE_REF}",
        )
        self._mine = None
