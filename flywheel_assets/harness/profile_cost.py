"""``flywheel benchmark profiles``: what a day's profiles cost (seconds, peak memory).

Two sources: ``--from-run DIR``, the warehouse of a finished demo (its last day's
profiles are rebuilt), or a synthetic warehouse of ``--impressions-per-day`` curated
rows a day over the profile window (users, items and grades drawn at random, item
popularity skewed, every row consented), for volumes no demo reaches on this machine.
Each build runs in a fresh process; its peak resident memory (DuckDB's included) is the
process's maximum RSS, its time the wall time of ``build_profiles`` alone.
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from flywheel_assets import warehouse
from flywheel_assets.settings import Settings


def add_arguments(p) -> None:
    p.add_argument("--from-run", help="profiles: a finished demo's data dir (its last day)")
    p.add_argument("--impressions-per-day", type=int,
                   help="profiles: a synthetic warehouse with this many curated rows a day")


def synthesize(path: Path, day: dt.date, days: int, per_day: int, users: int, items: int,
               memory_limit: str) -> None:
    """Curated feedback, a position-bias curve, user and item snapshots for ``days``
    days up to ``day``."""
    with warehouse.connect(path, memory_limit=memory_limit) as conn:
        conn.execute(f"""
            INSERT INTO raw.items (partition_date, item_id, category, c0, c1, c2, c3, c4, c5)
            SELECT DATE '{day}', 'item_' || i, 'cat_' || (i % 12), random() - 0.5,
                   random() - 0.5, random() - 0.5, random() - 0.5, random() - 0.5, random() - 0.5
            FROM range({items}) t(i)""")
        conn.execute(f"""
            INSERT INTO raw.users (partition_date, user_key, country, age_band, consent_training)
            SELECT DATE '{day}', 'u_' || i, 'C' || (i % 8), 'A' || (i % 5), TRUE
            FROM range({users}) t(i)""")
        conn.execute(f"""
            INSERT INTO curated.position_bias (partition_date, position, examination)
            SELECT DATE '{day}', p, 1.0 / p FROM range(1, 11) t(p)""")
        for back in range(days):
            d = day - dt.timedelta(days=back)
            conn.execute(f"""
                INSERT INTO curated.curated_feedback (partition_date, impression_id, request_id,
                    ts, user_key, item_id, position, n_interactions, grade)
                SELECT DATE '{d}', '{d}-' || i, '{d}-' || (i // 10), TIMESTAMPTZ '{d} 12:00:00+00',
                       'u_' || (hash(i // 10, '{d}') % {users}),
                       'item_' || floor(pow(random(), 3) * {items})::BIGINT,
                       (i % 10) + 1, 0,
                       CASE WHEN random() < 0.9 / ((i % 10) + 1) THEN 1 + floor(random() * 3)
                            ELSE 0 END
                FROM range({per_day}) t(i)""")


def _build(warehouse_path: str, day: str, settings_dir: str) -> dict:
    from flywheel_assets.curate import profiles

    s = Settings.from_env(settings_dir)
    p = s.profiles
    with warehouse.connect(Path(warehouse_path), temp_dir=s.data_dir / "tmp",
                           memory_limit=s.duckdb_memory_limit) as conn:
        rows = conn.execute("SELECT count(*) FROM curated.curated_feedback WHERE partition_date "
                            "BETWEEN ? AND ?", [warehouse.window_start(day, p.window_days),
                                                day]).fetchone()[0]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        stats = profiles.build_profiles(conn, day, p.window_days, p.half_life_days, p.factors,
                                        p.prior_examinations, s.curation.consent)
        seconds = time.perf_counter() - started
    return {**stats, "window_rows": int(rows), "seconds": round(seconds, 2),
            "rss_before_build_mib": round(before, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _in_fresh_process(*args) -> dict:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_build, *args).result()


def main(args) -> int:
    settings = Settings.from_env(args.data_dir)
    base = settings.data_dir / "benchmarks" / "profiles"
    if args.from_run:
        run = Settings.from_env(args.from_run)
        with warehouse.connect(run.warehouse_path, read_only=True) as conn:
            day = conn.execute("SELECT max(partition_date) FROM curated.curated_feedback"
                               ).fetchone()[0]
        if day is None:
            raise SystemExit(f"flywheel benchmark profiles: {run.warehouse_path} has no curated "
                             "feedback")
        base.mkdir(parents=True, exist_ok=True)
        copy = base / "warehouse.duckdb"
        shutil.copyfile(run.warehouse_path, copy)  # never write into the run's warehouse
        source = f"the warehouse of {args.from_run}, day {day}"
    else:
        per_day = args.impressions_per_day or 1_000_000
        day = settings.start_date + dt.timedelta(days=settings.profiles.window_days - 1)
        users, items = max(per_day // 20, 100), max(per_day // 50, 50)
        if base.exists():
            shutil.rmtree(base)
        base.mkdir(parents=True)
        copy = base / "warehouse.duckdb"
        started = time.perf_counter()
        synthesize(copy, day, settings.profiles.window_days, per_day, users, items,
                   settings.duckdb_memory_limit)
        source = (f"a synthetic warehouse: {per_day} curated rows a day for "
                  f"{settings.profiles.window_days} days, {users} users, {items} items "
                  f"(made in {time.perf_counter() - started:.0f} s)")
    result = _in_fresh_process(str(copy), str(day), str(base))
    result["source"] = source
    (base / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"benchmark profiles: {source}")
    print(f"  window rows {result['window_rows']}, users {result['users']}, items "
          f"{result['items']}, user-item pairs {result['pairs']}, factors {result['factors']}")
    print(f"  build_profiles: {result['seconds']} s, peak RSS of the process "
          f"{result['peak_rss_mib']} MiB ({result['rss_before_build_mib']} MiB before the build: "
          f"imports and connection)")
    print(f"  result: {base / 'result.json'}")
    return 0
