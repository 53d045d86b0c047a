"""How git packs a month of metrics day files under three names, in the same run.

git's delta search (`git gc`, `git repack`, at its defaults) sorts the objects it may store
as deltas by a hash of about the last 16 characters of their paths, then by size, and tries
each only against its 10 neighbours. The day files' names decide whether a file's versions
are neighbours:

- `date`: `windows-YYYY-MM-DD.jsonl`, the date alone as older versions named them
  (`metrics/YYYY-MM-DD.jsonl`): every rollout's file of a day has the same hash;
- `rollout-hash`: `windows-YYYY-MM-DD.<6 hex digits of the rollout>.jsonl`: rollouts differ,
  but the date's digits fall out of the 16 characters, so a rollout's files of many days
  share one;
- `product`: what `state.metrics_path` writes (a hash of the rollout and the day).

All three sit where the product writes day files (beside status.yaml), so the trees each
record rewrites are the same for all three and only the names differ.

For each name, N rollouts x D days, R records a day (each appends two rolled-up lines of
random counts to the day's file, as `state.append_metrics` does), one commit per record,
`git gc` at the end of each day (a long-lived clone's packing), then the same repository
repacked from scratch at git's defaults (`git repack -adf`: what a host or an operator's
repack does). Prints packed sizes and their ratio to the `date` name's.

Run: `python benchmarks/day_file_names.py [--services 20] [--days 30] [--records 12]`.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler import state as st
from reconciler.model import ServiceRef
from reconciler.testing.git import isolate_git

START = datetime(2026, 5, 1, tzinfo=UTC)


def git(repo: Path, *args: str) -> str:
    """Run git in `repo`; its stdout."""
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


def packed_kib(repo: Path) -> int:
    """`size-pack` of `git count-objects -v`, KiB."""
    counts = dict(line.split(": ", 1) for line in git(repo, "count-objects", "-v").splitlines())
    return int(counts["size-pack"])


def _date_only(root: Path, ref: ServiceRef, when: datetime) -> Path:
    return st.state_dir(root, ref) / f"windows-{when:%Y-%m-%d}.jsonl"


def _rollout_hash(root: Path, ref: ServiceRef, when: datetime) -> Path:
    digits = hashlib.sha256(ref.key.encode()).hexdigest()[:6]
    return st.state_dir(root, ref) / f"windows-{when:%Y-%m-%d}.{digits}.jsonl"


NAMES: dict[str, Callable[[Path, ServiceRef, datetime], Path]] = {
    "date": _date_only,
    "rollout-hash": _rollout_hash,
    "product": st.metrics_path,
}


def line(rng: random.Random, revision: str, end: datetime) -> str:
    """A rolled-up metrics line of random counts, in the product's compact format."""
    counts = ",".join(str(rng.randrange(0, 5000)) for _ in range(15))
    n, x = rng.randrange(1000, 40000), rng.randrange(0, 99)
    return (
        f'{{"r":"{revision}","e":{int(end.timestamp())},"w":3000,"n":{n},"x":{x},'
        f'"k":{n - x},"g":[0.00537824,1.4,0,[{counts}],null,null],"c":10}}'
    )


def run(name: str, base: Path, services: int, days: int, records: int) -> tuple[int, int]:
    """Packed KiB after the daily `git gc`, and after `git repack -adf`, for one name."""
    repo = base / name
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "config", "gc.auto", "0")  # only the daily gc below packs
    refs = [ServiceRef("bench-project", "us-central1", f"svc-{i:04d}") for i in range(services)]
    rng = random.Random(7)
    path_of = NAMES[name]
    step = timedelta(days=1) / records
    for day in range(days):
        for k in range(records):
            end = START + day * timedelta(days=1) + k * step
            for ref in refs:
                lines = [line(rng, rev, end) for rev in ("00041-abc", "00042-xyz")]
                st.append_lines(path_of(repo, ref, end), lines)
            git(repo, "add", "-A")
            git(repo, "-c", "user.name=b", "-c", "user.email=b@example.com",
                "commit", "--quiet", "-m", "record")  # fmt: skip
        git(repo, "gc", "--quiet")
    daily = packed_kib(repo)
    git(repo, "repack", "-adfq")
    return daily, packed_kib(repo)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--records", type=int, default=12, help="records a day")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="day-file-names-") as tmp:
        base = Path(tmp)
        # Isolated git: no user config, hooks or leaked GIT_* variables change the figures.
        isolate_git(base / "home")
        sizes = {name: run(name, base, args.services, args.days, args.records) for name in NAMES}
    print(
        f"day files of {args.services} rollouts, {args.days} days, {args.records} records a "
        "day, one commit per record"
    )
    print()
    print("| name | packed after daily `git gc`, KiB | / `date` | after `git repack -adf`, KiB "
          "| / `date` |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    daily0, scratch0 = sizes["date"]
    for name, (daily, scratch) in sizes.items():
        print(
            f"| `{name}` | {daily:,} | {daily / daily0:.2f} | {scratch:,} "
            f"| {scratch / scratch0:.2f} |"
        )
    print()
    print(f"elapsed {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
