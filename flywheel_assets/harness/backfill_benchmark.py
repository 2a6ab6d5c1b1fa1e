"""`flywheel benchmark backfill --days N --parallel P`: the same N landed days rotated
on a lake one after another (`flywheel rotate`, a day at a time, as the schedule does)
and by `flywheel backfill --parallel P`, each on a fresh lake; the wall time of each,
their ratio, whether the two lakes hold the same tables, and what the stages' own
seconds say the order allows.

The days are landed first by the simulated world, served by each day's champion (a
serial run on a scratch DuckDB file, not timed). Each lake's catalog is a database of a
PostgreSQL server the benchmark starts on 127.0.0.1 (Debian's package), its Parquet
files a folder; each arm's Dagster instance lets P steps into the `duckdb` pool. Needs
the deploy environment (DuckLake: `make benchmark-backfill` uses `.venv-deploy`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flywheel_assets.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parallel", type=int, default=2,
                   help="backfill: stages at once in the parallel arm (default 2)")


def _instance(home: Path, parallel: int) -> Path:
    from flywheel_assets.backfill import instance_config

    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(instance_config(parallel))
    return home


def _land(data_dir: Path, config, days: list[str]) -> None:
    """The days, landed by the world and rotated one after another (untimed)."""
    import contextlib
    import io

    from flywheel_assets.harness.demo import run_demo

    with contextlib.redirect_stdout(io.StringIO()):
        run_demo(Settings.from_env(data_dir), config, len(days), progress=False)


def main(args: argparse.Namespace) -> int:
    from flywheel_assets import backfill, warehouse
    from flywheel_assets.harness.services import PostgresServer
    from flywheel_assets.simulation.config import WorldConfig

    base = WorldConfig()
    config = WorldConfig(n_users=args.users or base.n_users, n_items=args.items or base.n_items,
                         requests_per_day=args.requests_per_day or base.requests_per_day,
                         seed=args.seed)
    n_days = args.days or 4
    days = [config.date_of(i + 1).isoformat() for i in range(n_days)]
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="flywheel-backfill-")) / "backfill"
    if root.exists():
        shutil.rmtree(root)
    print(f"backfill benchmark: {n_days} days of {config.requests_per_day} requests, "
          f"{config.n_users} users, {config.n_items} items; in {root}", flush=True)
    landed = root / "landed"
    _land(landed, config, days)
    arms: dict[str, dict] = {}
    with PostgresServer() as pg:
        for arm, parallel in (("serial", 1), ("parallel", args.parallel)):
            data = root / arm
            shutil.copytree(landed / "landing", data / "landing")
            env = {"FLYWHEEL_DATA_DIR": str(data),
                   "FLYWHEEL_WAREHOUSE_CATALOG": pg.ducklake_catalog(pg.create_database(arm)),
                   "FLYWHEEL_WAREHOUSE_DATA": str(data / "lake"),
                   "DAGSTER_HOME": str(_instance(data / "dagster_home", parallel))}
            started = time.monotonic()
            if arm == "serial":  # what the schedule does: a whole rotation a day
                rotate = backfill.rotate_command(str(data))
                for day in days:
                    subprocess.run(rotate(backfill.Task(day, "all")), env={**os.environ, **env},
                                   check=True, stdout=subprocess.DEVNULL)
                arms[arm] = {"wall_seconds": time.monotonic() - started}
            else:
                outcome = backfill.run(days, parallel, backfill.rotate_command(str(data)),
                                       env=env, log=lambda line: None)
                if outcome["failures"]:
                    print("\n".join(outcome["failures"]), file=sys.stderr)
                    return 1
                arms[arm] = outcome
            arms[arm]["env"] = env
            print(f"  {arm}: {arms[arm]['wall_seconds']:.1f} s", flush=True)
        lakes = [Settings.from_env(root / arm, {"warehouse_catalog": arms[arm]["env"][
            "FLYWHEEL_WAREHOUSE_CATALOG"], "warehouse_data": arms[arm]["env"][
            "FLYWHEEL_WAREHOUSE_DATA"]}).warehouse for arm in ("serial", "parallel")]
        with warehouse.connect(lakes[0], read_only=True) as a, \
                warehouse.connect(lakes[1], read_only=True) as b:
            differ = warehouse.compare(a, b, {str(root / "serial"): "$DATA"},
                                       {str(root / "parallel"): "$DATA"})
    serial, parallel = arms["serial"]["wall_seconds"], arms["parallel"]["wall_seconds"]
    spans = arms["parallel"]["spans"]
    stage = {s: sum(b - a for k, (a, b) in spans.items() if k.endswith(s)) / n_days
             for s in ("ingest", "erasure", "rest")}
    bound = sum(stage.values()) / (stage["erasure"] + stage["rest"])
    record = {"days": n_days, "parallel": args.parallel, "serial_seconds": round(serial, 1),
              "parallel_seconds": round(parallel, 1), "ratio": round(serial / parallel, 3),
              "most_at_once": arms["parallel"]["most_at_once"],
              "stage_seconds_per_day": {k: round(v, 1) for k, v in stage.items()},
              "bound_of_the_order": round(bound, 3), "tables_differ": differ,
              "world": {"requests_per_day": config.requests_per_day, "users": config.n_users,
                        "items": config.n_items}}
    (root / "backfill.json").write_text(json.dumps(record, indent=1))
    print(f"serial {serial:.1f} s, parallel ({args.parallel} at once) {parallel:.1f} s: "
          f"ratio {serial / parallel:.2f}")
    print(f"stages of a day (parallel arm, mean): ingest {stage['ingest']:.1f} s, erasure "
          f"{stage['erasure']:.1f} s, rest {stage['rest']:.1f} s; this order lets only a "
          f"day's ingest beside the day before's rest, so it cannot beat "
          f"(ingest + erasure + rest) / (erasure + rest) = {bound:.2f}, at P = 2 or P = 16")
    print("tables: " + ("the same in both lakes" if not differ else f"DIFFER: {differ}"))
    print(f"record: {root / 'backfill.json'}")
    return 0 if not differ else 1

