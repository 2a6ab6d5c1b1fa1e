"""``flywheel benchmark rotation --impressions N``: one full rotation at production volume,
through Dagster and without it.

1. A world sized from N (N / slate size requests a day, a user per 5 requests, an item
   per 50, the world's fast path) lands ``--window-days`` days; every day before the
   last is rotated (the floor's way) so the measured day has a training window, profiles
   and, usually, a champion to compare with. Every day is served by the popularity
   policy: what is measured is the rotation, not serving.
2. The warehouse after that set-up is copied twice. One copy gets the product's
   ``daily_rotation_job`` for the last day on a fresh Dagster instance (SQLite, its own
   ``DAGSTER_HOME``), in-process as the daemon's runs are; the other gets the floor: the
   same asset and check bodies called in the same (topological) order from a plain loop,
   with no instance, run, event log or step orchestration.
3. Each arm runs in its own process; the parent samples the resident memory of the arm's
   whole process tree every 50 ms (and reads the arm's own peak from the kernel).

Printed and written to ``<data dir>/reports/bench/rotation-<N>.json``: wall seconds per
stage and in total for both arms, the ratio Dagster / floor, rows per second through
ingestion and curation, the peak resident memory of each arm, and the seconds the world
took to generate the measured day.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from flywheel_assets.jobs import ROTATION_GROUPS

ARMS = ("floor", "dagster")
# Not copied into the arms' directories: the landing zone is only read (linked), the
# world and instance are the set-up's.
SHARED = ("landing",)
SKIPPED = ("world", "dagster_home", "benchmarks", "tmp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impressions", type=int, default=1_000_000,
                   help="rotation: impressions in the measured day (default 1,000,000)")
    p.add_argument("--window-days", type=int, default=3,
                   help="rotation: days landed, the measured one last; the training window "
                        "(default 3)")


def world_for(impressions: int):
    """A world that lands about ``impressions`` a day (duplicates add 0.2%)."""
    from flywheel_assets.simulation.config import WorldConfig

    base = WorldConfig()
    requests = max(1000, round(impressions / base.slate_size))
    return WorldConfig(requests_per_day=requests, n_users=max(base.n_users, requests // 5),
                       n_items=max(base.n_items, requests // 50), fast=True, responsive=False,
                       deletion_requests_per_day=base.deletion_requests_per_day)


def overrides_for(days: int) -> dict:
    """The product's defaults, with the training window the landed days allow."""
    return {"training.window_days": days}


# --- the two ways of running a rotation ------------------------------------------------

class _Context:
    """What asset and check bodies read from their context, without Dagster's."""

    def __init__(self, day: str):
        self.partition_key = day
        self.run_id = "floor"
        self.log = logging.getLogger("flywheel.floor")


def rotation_steps(defs) -> list[tuple[str, str, object]]:
    """``daily_rotation_job``'s steps in its topological order: (step name, stage,
    the body the step runs)."""
    job = defs.resolve_job_def("daily_rotation_job")
    graph = defs.resolve_asset_graph()
    by_op = {ad.op.name: ad for ad in graph.assets_defs if ad.is_executable}
    steps = []
    for node in job.graph.nodes_in_topological_order:
        ad = by_op[node.name]
        key = next(iter(ad.keys), None) or next(iter(ad.check_keys)).asset_key
        steps.append((node.name, graph.get(key).group_name, ad.op.compute_fn.decorated_fn))
    return steps


def run_floor(data_dir: Path, day: str, overrides: dict) -> dict:
    """One rotation of ``day`` from a plain loop: every step's body, in order."""
    from flywheel_assets.definitions import build_definitions
    from flywheel_assets.resources import FlywheelResource
    from flywheel_assets.settings import encode
    from flywheel_assets.train.assets import TrainingWindowConfig

    defs = build_definitions(str(data_dir), overrides)
    steps = rotation_steps(defs)
    flywheel = FlywheelResource(data_dir=str(data_dir), overrides=encode(overrides))
    check_names = {ad.op.name: next(iter(ad.check_keys)).name
                   for ad in defs.resolve_asset_graph().assets_defs
                   if ad.is_executable and len(ad.check_keys) == 1 and not ad.keys}
    seconds, peaks, failed = {}, {}, []
    started = time.perf_counter()
    for name, _, body in steps:
        _reset_peak()
        t = time.perf_counter()
        kwargs = {"flywheel": flywheel}
        if "config" in body.__code__.co_varnames[:body.__code__.co_argcount]:
            kwargs["config"] = TrainingWindowConfig()
        out = body(_Context(day), **kwargs)
        results = list(out) if hasattr(out, "__next__") else [out]
        # Named as Dagster names them: the check, not the step that ran it.
        failed += [getattr(r, "check_name", None) or check_names.get(name, name)
                   for r in results if getattr(r, "passed", True) is False]
        seconds[name] = time.perf_counter() - t
        peaks[name] = _own_peak_mb()
    return {"total_s": time.perf_counter() - started, "steps": seconds, "failed_checks": failed,
            "step_peak_rss_mb": peaks,
            "groups": {name: group for name, group, _ in steps}}


def run_dagster(data_dir: Path, day: str, overrides: dict) -> dict:
    """One rotation of ``day`` as the product runs it: ``daily_rotation_job`` on a fresh
    instance (its own DAGSTER_HOME)."""
    import dagster as dg

    from flywheel_assets.definitions import build_definitions
    from flywheel_assets.settings import Settings

    os.environ["DAGSTER_HOME"] = str(Settings.from_env(str(data_dir)).ensure_dagster_home())
    defs = build_definitions(str(data_dir), overrides)
    job = defs.resolve_job_def("daily_rotation_job")
    groups = {name: group for name, group, _ in rotation_steps(defs)}
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        result = job.execute_in_process(partition_key=day, instance=instance, run_config=quiet,
                                        raise_on_error=False)
        total = time.perf_counter() - started
        stats = instance.get_run_step_stats(result.run_id)
    failed = [e.step_key for e in result.all_events if e.is_step_failure]
    checks = [e.event_specific_data for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return {"total_s": total, "success": result.success, "failed_steps": failed,
            "failed_checks": sorted({c.check_name for c in checks if not c.passed}),
            "steps": {s.step_key: s.end_time - s.start_time for s in stats
                      if s.end_time and s.start_time},
            "groups": groups}


def _own_peak_mb() -> float:
    """This process's peak resident memory since its exec (VmHWM; ``ru_maxrss`` would
    carry over the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> None:
    """Start VmHWM again from the current resident memory (Linux: clear_refs 5), so
    each step's peak can be read after it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _arm_main(argv: list[str]) -> int:
    arm, data_dir, day, out = argv[0], Path(argv[1]), argv[2], Path(argv[3])
    overrides = json.loads(argv[4])
    logging.basicConfig(level=logging.ERROR)
    t = time.perf_counter()
    importlib.import_module("flywheel_assets.definitions")  # imports counted apart
    imports = time.perf_counter() - t
    result = (run_dagster if arm == "dagster" else run_floor)(data_dir, day, overrides)
    result["imports_s"] = imports
    # The floor resets the peak per step: its own peak is the largest of them.
    result["self_peak_rss_mb"] = max([_own_peak_mb(), *result.get("step_peak_rss_mb", {}).values()])
    out.write_text(json.dumps(result, indent=2))
    return 0


# --- measuring an arm ------------------------------------------------------------------

def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure_arm(arm: str, data_dir: Path, day: str, overrides: dict, out: Path) -> dict:
    """Run one arm in its own process; its figures and the peak resident memory of its
    process tree."""
    env = {**os.environ, "FLYWHEEL_DATA_DIR": str(data_dir)}
    cmd = [sys.executable, "-m", "flywheel_assets.harness.rotation_benchmark", arm, str(data_dir),
           day, str(out), json.dumps(overrides)]
    proc = subprocess.Popen(cmd, env=env)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    if code != 0:
        raise RuntimeError(f"the {arm} arm failed (exit {code}); see its output above")
    result = json.loads(out.read_text())
    result["peak_rss_mb"] = max(peak / 2**20, result["self_peak_rss_mb"])
    return result


# --- set-up ----------------------------------------------------------------------------

def set_up(base: Path, config, days: int, overrides: dict) -> tuple[str, float, dict]:
    """Land ``days`` days, rotate all but the last; the measured day, the seconds its
    generation took and its landed rows."""
    from flywheel_assets.serve.serving import popularity_policy
    from flywheel_assets.simulation import world

    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    world.save_config(world.world_dir(base), config)
    generated = 0.0
    counts = {}
    for d in range(1, days + 1):
        date = config.date_of(d).isoformat()
        t = time.perf_counter()
        counts = world.run_day(base, base / "landing", config, date, popularity_policy())
        generated = time.perf_counter() - t
        print(f"  {date}: landed {counts['impressions']:,} impressions, "
              f"{counts['interactions']:,} interactions, {counts.get('candidates', 0):,} "
              f"candidates in {generated:.1f} s", flush=True)
        if d < days:
            t = time.perf_counter()
            floor = run_floor(base, date, overrides)
            print(f"  {date}: rotated (set-up) in {time.perf_counter() - t:.1f} s"
                  + (f"; failed checks {floor['failed_checks']}" if floor["failed_checks"] else ""),
                  flush=True)
    return config.date_of(days).isoformat(), generated, counts


def copy_for(base: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for entry in base.iterdir():
        if entry.name in SKIPPED:
            continue
        if entry.name in SHARED:
            (target / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
        elif entry.is_dir():
            shutil.copytree(entry, target / entry.name)
        else:
            shutil.copy2(entry, target / entry.name)


# --- figures ---------------------------------------------------------------------------

def by_stage(result: dict) -> dict[str, float]:
    stages = {g: 0.0 for g in ROTATION_GROUPS}
    for step, seconds in result["steps"].items():
        stages[result["groups"].get(step) or "other"] = stages.get(
            result["groups"].get(step) or "other", 0.0) + seconds
    return {k: round(v, 3) for k, v in stages.items()}


def day_rows(data_dir: Path, day: str) -> dict[str, int]:
    """Rows read from the day's landing files, and the accepted impressions and
    interactions curation starts from."""
    from flywheel_assets import warehouse

    with warehouse.connect(data_dir / "warehouse.duckdb", read_only=True) as conn:
        landing = conn.execute("SELECT coalesce(sum(rows_read), 0) FROM raw.landing_files "
                               "WHERE partition_date = ?", [day]).fetchone()[0]
        raw = sum(conn.execute(f"SELECT count(*) FROM raw.{t} WHERE partition_date = ?",
                               [day]).fetchone()[0] for t in ("impressions", "interactions"))
    return {"landing_rows": int(landing), "raw_feedback_rows": int(raw)}


def figures(impressions: int, days: int, generated: float, counts: dict, rows: dict,
            arms: dict[str, dict]) -> dict:
    floor, dag = arms["floor"], arms["dagster"]
    stages = {arm: by_stage(arms[arm]) for arm in ARMS}
    ingest_s, curate_s = stages["dagster"]["ingest"], stages["dagster"]["curate"]
    return {
        "impressions": impressions, "window_days": days,
        "landed": counts, "generate_s": round(generated, 2), **rows,
        "dagster_total_s": round(dag["total_s"], 2), "floor_total_s": round(floor["total_s"], 2),
        "ratio": round(dag["total_s"] / floor["total_s"], 3),
        "peak_rss_mb": round(max(a["peak_rss_mb"] for a in arms.values()), 1),
        "peak_rss_mb_by_arm": {arm: round(arms[arm]["peak_rss_mb"], 1) for arm in ARMS},
        "ingest_rows_per_s": round(rows["landing_rows"] / ingest_s) if ingest_s else None,
        "curate_rows_per_s": round(rows["raw_feedback_rows"] / curate_s) if curate_s else None,
        "ingest_rows_per_s_floor": round(rows["landing_rows"] / stages["floor"]["ingest"])
        if stages["floor"]["ingest"] else None,
        "curate_rows_per_s_floor": round(rows["raw_feedback_rows"] / stages["floor"]["curate"])
        if stages["floor"]["curate"] else None,
        "stages": stages,
        "steps": {arm: {k: round(v, 3) for k, v in arms[arm]["steps"].items()} for arm in ARMS},
        "imports_s": {arm: round(arms[arm]["imports_s"], 2) for arm in ARMS},
        "failed_checks": {arm: arms[arm]["failed_checks"] for arm in ARMS},
        "step_peak_rss_mb_floor": {k: round(v) for k, v in
                                   arms["floor"].get("step_peak_rss_mb", {}).items()},
        "dagster_success": dag["success"],
    }


def print_figures(f: dict) -> None:
    print(f"\nrotation of {f['landing_rows']:,} landing rows ({f['impressions']:,} impressions "
          f"asked, window {f['window_days']} days); generating the day took {f['generate_s']} s")
    print(f"{'stage':<10} {'dagster s':>10} {'floor s':>10}")
    for stage in f["stages"]["dagster"]:
        print(f"{stage:<10} {f['stages']['dagster'][stage]:>10.2f} {f['stages']['floor'][stage]:>10.2f}")
    print(f"{'total':<10} {f['dagster_total_s']:>10.2f} {f['floor_total_s']:>10.2f}")
    slowest = sorted(f["steps"]["dagster"].items(), key=lambda kv: -kv[1])[:6]
    print("slowest steps (dagster): " + ", ".join(f"{k} {v:.2f} s" for k, v in slowest))
    if any(f["failed_checks"].values()):
        print(f"failed checks: {f['failed_checks']}")
    print(f"ingest {f['ingest_rows_per_s']:,} rows/s, curate {f['curate_rows_per_s']:,} rows/s "
          f"(floor: {f['ingest_rows_per_s_floor']:,}, {f['curate_rows_per_s_floor']:,})")
    heavy = sorted(f["step_peak_rss_mb_floor"].items(), key=lambda kv: -kv[1])[:5]
    print("largest step peaks (floor): " + ", ".join(f"{k} {v} MiB" for k, v in heavy))
    print(f"peak RSS (process tree): dagster {f['peak_rss_mb_by_arm']['dagster']:.0f} MiB, "
          f"floor {f['peak_rss_mb_by_arm']['floor']:.0f} MiB")
    print(f"dagster_total_s={f['dagster_total_s']} floor_total_s={f['floor_total_s']} "
          f"ratio={f['ratio']} peak_rss_mb={f['peak_rss_mb']}")


def main(args: argparse.Namespace) -> int:
    from flywheel_assets.settings import Settings

    n, days = args.impressions, args.window_days
    if n < 1000 or days < 2:
        print("flywheel benchmark rotation: needs --impressions >= 1000 and --window-days >= 2",
              file=sys.stderr)
        return 2
    settings = Settings.from_env(args.data_dir)
    work = settings.data_dir / "benchmarks" / f"rotation-{n}"
    config = world_for(n)
    overrides = overrides_for(days)
    print(f"Rotation benchmark: {n:,} impressions a day ({config.requests_per_day:,} requests, "
          f"{config.n_users:,} users, {config.n_items:,} items), {days} days, in {work}",
          flush=True)
    day, generated, counts = set_up(work / "setup", config, days, overrides)
    arms = {}
    for arm in ARMS:
        target = work / arm
        copy_for(work / "setup", target)
        arms[arm] = measure_arm(arm, target, day, overrides, work / f"{arm}.json")
        print(f"  {arm}: {arms[arm]['total_s']:.1f} s, peak {arms[arm]['peak_rss_mb']:.0f} MiB",
              flush=True)
    result = figures(n, days, generated, counts, day_rows(work / "dagster", day), arms)
    out = settings.reports_dir / "bench" / f"rotation-{n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print_figures(result)
    print(f"record: {out}")
    return 0 if result["dagster_success"] else 1


if __name__ == "__main__":
    sys.exit(_arm_main(sys.argv[1:]))
