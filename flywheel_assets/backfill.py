"""`flywheel backfill`: many days' rotations, two days' work at once where that leaves
every table as the days run one after another would.

A day's rotation is three stages (`STAGE_ORDER`; `definitions.stage_selection` says which
assets each materialises):

- **ingest** reads the landing day in: it writes only that day's partitions of the raw
  tables, and the day's deletion requests (the tombstones), erasing on the way the rows
  of users who asked before;
- **erasure** deletes the requested users' rows from every day;
- **rest** curates, labels, trains, evaluates and decides: it reads windows of earlier
  days and the champion the day before left.

Run in that order, day after day, they are `flywheel rotate`. What may overlap without
changing a table: day D+1's **ingest** with day D's **rest**, once day D's erasure is
done. The ingest writes only D+1's partitions, which D's rest never reads (it reads days
up to D), and D+1's tombstones, which only an erasure reads; D+1's erasure waits for D's
rest, so no row that D's rest reads goes away under it. Nothing else may: D+1's rest
reads what D's rest wrote (its windows, profiles and the champion). So two workers are
all this order can keep busy, and the speed-up is at most (ingest + erasure + rest) /
(erasure + rest) of a day; docs/architecture.md says what more would take.

Two writers at once need a warehouse that takes them: a lake (`FLYWHEEL_WAREHOUSE_
CATALOG`), and an instance whose `duckdb` pool lets two steps in (on the embedded file,
the pool of one makes the second wait: still correct, never faster). Each stage is a
`flywheel rotate --stage` process, recorded as a run in the instance the UI reads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

STAGE_ORDER = ("ingest", "erasure", "rest")
STAGES = ("all", *STAGE_ORDER)  # what `flywheel rotate --stage` takes


@dataclasses.dataclass(frozen=True)
class Task:
    day: str
    stage: str

    def __str__(self) -> str:
        return f"{self.day} {self.stage}"


def tasks_and_needs(days: Sequence[str]) -> dict[Task, set[Task]]:
    """Every stage of every day, with the stages it waits for (module doc)."""
    needs: dict[Task, set[Task]] = {}
    for i, day in enumerate(days):
        ingest, erasure, rest = (Task(day, s) for s in STAGE_ORDER)
        needs[ingest] = set()
        needs[erasure] = {ingest}
        needs[rest] = {erasure}
        if i:
            before = days[i - 1]
            needs[ingest] |= {Task(before, "ingest"), Task(before, "erasure")}
            needs[erasure] |= {Task(before, "rest")}
    return needs


def days_between(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    if end < start:
        raise ValueError(f"--to {last} is before --from {first}")
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def run(days: Sequence[str], parallel: int, command: Callable[[Task], list[str]],
        env: dict[str, str] | None = None, log: Callable[[str], None] = print,
        poll_seconds: float = 0.2) -> dict:
    """Run every stage of ``days``, at most ``parallel`` at once, each as the process
    ``command(task)`` names, as soon as what it waits for is done. Stops starting new
    ones at the first failure (those running finish). Returns when each stage started
    and ended (seconds from the start), the wall time, the most stages that ran at once,
    and the failures."""
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    needs = tasks_and_needs(days)
    order = list(needs)  # a day's stages, day after day: ready ones start in this order
    done: set[Task] = set()
    running: dict[Task, tuple[subprocess.Popen, float]] = {}
    spans: dict[str, tuple[float, float]] = {}
    failures: list[str] = []
    most_at_once = 0
    started = time.monotonic()
    while len(done) < len(needs) and not (failures and not running):
        for task in order:
            if (len(running) >= parallel or failures or task in done or task in running
                    or not needs[task] <= done):
                continue
            log(f"backfill: {task} starts")
            process = subprocess.Popen(command(task), env={**os.environ, **(env or {})},
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)
            running[task] = (process, time.monotonic())
        most_at_once = max(most_at_once, len(running))
        time.sleep(poll_seconds)
        for task, (process, began) in list(running.items()):
            if process.poll() is None:
                continue
            output = process.stdout.read()
            del running[task]
            spans[str(task)] = (began - started, time.monotonic() - started)
            if process.returncode:
                failures.append(f"{task} failed ({process.returncode}): {output.strip()[-2000:]}")
                log(f"backfill: {task} FAILED")
            else:
                done.add(task)
                log(f"backfill: {task} done in {time.monotonic() - began:.1f} s")
    return {"days": list(days), "parallel": parallel, "wall_seconds": time.monotonic() - started,
            "spans": spans, "most_at_once": most_at_once, "failures": failures,
            "done": len(done), "stages": len(needs)}


def pool_limit(dagster_home: str | os.PathLike) -> int:
    """How many steps a pool of the instance lets in at once, as its config file says
    (`concurrency.pools.default_limit`; a limit set in the UI is not seen here)."""
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(dagster_home) / "dagster.yaml").read_text()) or {}
    pools = (config.get("concurrency") or {}).get("pools") or {}
    return int(pools.get("default_limit") or 1)


def instance_config(parallel: int) -> str:
    """A Dagster instance config (embedded storage) whose pools let ``parallel`` steps in
    at once: what a backfill of ``parallel`` stages on a lake needs."""
    return ("telemetry:\n  enabled: false\nconcurrency:\n  pools:\n"
            f"    default_limit: {parallel}\n  runs:\n    max_concurrent_runs: {parallel}\n")


def rotate_command(data_dir: str) -> Callable[[Task], list[str]]:
    """A stage as `flywheel rotate --stage` runs it (this Python, this installation)."""
    def command(task: Task) -> list[str]:
        return [sys.executable, "-m", "flywheel_assets.cli", "rotate", "--day", task.day,
                "--stage", task.stage, "--data-dir", data_dir, "--quiet"]
    return command
