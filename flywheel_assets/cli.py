"""``flywheel``: the flywheel without the UI.

Built-in commands operate the product (champion, promote, rollback, rotate, backfill,
evaluate);
commands that live outside it (the simulated
world's ``demo``) register through the ``flywheel.commands`` entry-point group, so the
product never imports them.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points

from flywheel_assets import backfill
from flywheel_assets.settings import Settings


def _champion(args: argparse.Namespace) -> int:
    from flywheel_assets.train import model_store

    try:
        pointer = model_store.read_champion(Settings.from_env(args.data_dir).models)
    except model_store.CorruptPointerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(pointer, indent=2) if pointer else "no champion yet (serving: popularity)")
    return 0


def _actor() -> str:
    import getpass

    return f"operator:{getpass.getuser()}"


def _promote(args: argparse.Namespace) -> int:
    import duckdb

    from flywheel_assets.evaluate import promotion

    try:
        pointer = promotion.promote(Settings.from_env(args.data_dir), args.version, args.reason, _actor())
    except (ValueError, OSError, RuntimeError, duckdb.Error) as exc:  # OSError: a full disk
        print(f"flywheel promote: {exc}", file=sys.stderr)
        return 2
    print(f"champion is now {pointer['version']} (was {pointer['previous'] or 'none'})")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    import duckdb

    from flywheel_assets.evaluate import promotion

    try:
        pointer = promotion.rollback(Settings.from_env(args.data_dir), args.reason, _actor())
    except (ValueError, OSError, RuntimeError, duckdb.Error) as exc:
        print(f"flywheel rollback: {exc}", file=sys.stderr)
        return 2
    print(f"champion is now {pointer['version']} (was {pointer['previous']})")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    """One turn of the wheel for a day, in this process, on the instance the UI reads."""
    import os

    from flywheel_assets import warehouse
    from flywheel_assets.definitions import rotate
    from flywheel_assets.evaluate import evaluation, policy_values

    settings = Settings.from_env(args.data_dir)
    os.environ.setdefault("DAGSTER_HOME", str(settings.ensure_dagster_home()))
    success, run_id, failures = rotate(str(settings.data_dir), args.day, args.stage)
    for failure in failures:
        print(failure, file=sys.stderr)
    if args.quiet or args.stage != "all":
        print(f"{args.day} ({args.stage}): run {run_id} {'succeeded' if success else 'FAILED'}")
        return 0 if success else 1
    with warehouse.operator_connect(settings.warehouse) as conn:
        record = evaluation.read_evaluation(conn, args.day)
        decision = conn.execute("SELECT promote, decision FROM ml.gate_decisions WHERE "
                                "partition_date = ?", [args.day]).fetchone()
        rows = conn.execute("SELECT (SELECT count(*) FROM raw.impressions WHERE partition_date = $d), "
                            "(SELECT count(*) FROM raw.interactions WHERE partition_date = $d), "
                            "(SELECT count(*) FROM raw.quarantined_events WHERE partition_date = $d)",
                            {"d": args.day}).fetchone()
    print(f"{args.day}: run {run_id} {'succeeded' if success else 'FAILED'}; "
          f"{rows[0]} impressions and {rows[1]} interactions accepted, {rows[2]} rows quarantined")
    if record and record.get("off_policy"):
        print(policy_values.table_markdown(record["off_policy"]))
    elif record:
        print(f"off-policy evaluation not available: {record.get('off_policy_unavailable')}")
    if decision:
        reasons = json.loads(decision[1])["reasons"]
        print(f"gate: {'PROMOTED' if decision[0] else 'held'} — " + "; ".join(reasons))
    return 0 if success else 1


def _evaluate(args: argparse.Namespace) -> int:
    from flywheel_assets.evaluate import evaluation, logged_pools, policy_values

    settings = Settings.from_env(args.data_dir, {"evaluation.value": args.value} if args.value else None)
    names = args.policy or list(evaluation.NAMED_POLICIES)
    import duckdb

    try:
        record = evaluation.evaluate_policies(settings, args.day, names)
    except (ValueError, FileNotFoundError, logged_pools.NoPools, duckdb.IOException) as exc:
        print(f"flywheel evaluate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(record, indent=2, default=str))
        return 0
    print(f"What would each policy have done on {args.day}?")
    for name, version in record["versions"].items():
        print(f"  {name}: {version}")
    print(policy_values.table_markdown(record))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flywheel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("champion", help="show the champion pointer")
    p.add_argument("--data-dir")
    p.set_defaults(func=_champion)
    p = sub.add_parser("promote", help="put a model version in service (audited override)")
    p.add_argument("--version", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--data-dir")
    p.set_defaults(func=_promote)
    p = sub.add_parser("rotate", help="turn the wheel for one day (daily_rotation_job, here)",
                       description="Ingest, curate, train, evaluate and decide for one day's "
                                   "landing files, as the schedule would, in this process; the "
                                   "run is recorded in the instance the UI reads.")
    p.add_argument("--day", required=True, help="the partition, YYYY-MM-DD")
    p.add_argument("--data-dir")
    p.add_argument("--stage", choices=backfill.STAGES, default="all",
                   help="one part of the rotation (what `flywheel backfill` runs apart)")
    p.add_argument("--quiet", action="store_true", help="one line, no summary of the day")
    p.set_defaults(func=_rotate)
    p = sub.add_parser("backfill", help="rotate many days, two days' work at once",
                       description="Every day from --from to --to: its landing day read in, "
                                   "its erasure, then the rest, day after day; a day's "
                                   "ingest beside the day before's rest (flywheel_assets/"
                                   "backfill.py says why that leaves the tables as the days "
                                   "one after another would). Needs a warehouse that takes "
                                   "two writers (a lake) and a duckdb pool of two.")
    p.add_argument("--from", dest="first", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="last", required=True, help="last day, YYYY-MM-DD")
    p.add_argument("--parallel", type=int, default=2,
                   help="stages at once (default 2; more find nothing to do)")
    p.add_argument("--data-dir")
    p.set_defaults(func=_backfill)
    p = sub.add_parser("evaluate", help="value policies off-policy on a day's logs",
                       description="What would policy P have done on day D? Each estimate "
                                   "(IPS, SNIPS, doubly robust) with its interval, effective "
                                   "sample size and trust verdict, on the day's logged requests.")
    p.add_argument("--day", required=True, help="the partition, YYYY-MM-DD")
    p.add_argument("--policy", action="append", metavar="P",
                   help="logging, uniform, popularity, champion, candidate or a model version "
                        "(repeatable; default: the five named ones)")
    p.add_argument("--value", choices=["dcg", "reward"],
                   help="DCG@K of graded rewards or reward per request (default: setting "
                        "evaluation.value)")
    p.add_argument("--json", action="store_true", help="the full record as JSON")
    p.add_argument("--data-dir")
    p.set_defaults(func=_evaluate)
    p = sub.add_parser("rollback", help="put the previous champion back in service (audited)")
    p.add_argument("--reason", required=True)
    p.add_argument("--data-dir")
    p.set_defaults(func=_rollback)
    for ep in entry_points(group="flywheel.commands"):
        ep.load()(sub)
    return parser


def _backfill(args: argparse.Namespace) -> int:
    import os

    from flywheel_assets import warehouse

    try:
        days = backfill.days_between(args.first, args.last)
    except ValueError as exc:
        print(f"flywheel backfill: {exc}", file=sys.stderr)
        return 2
    settings = Settings.from_env(args.data_dir)
    if args.parallel > 1 and not isinstance(settings.warehouse, warehouse.Lake):
        print(f"flywheel backfill --parallel {args.parallel}: the warehouse is the DuckDB file "
              f"{settings.warehouse_path}, which takes one writer at a time; use --parallel 1, "
              f"or a lake (FLYWHEEL_WAREHOUSE_CATALOG, docs/architecture.md)", file=sys.stderr)
        return 2
    os.environ.setdefault("DAGSTER_HOME", str(settings.ensure_dagster_home()))
    limit = backfill.pool_limit(os.environ["DAGSTER_HOME"])
    if limit < args.parallel:
        print(f"note: the instance's duckdb pool lets {limit} step(s) in at once "
              f"(concurrency.pools.default_limit in $DAGSTER_HOME/dagster.yaml): stages beyond "
              f"that wait for it", file=sys.stderr)
    outcome = backfill.run(days, args.parallel, backfill.rotate_command(str(settings.data_dir)))
    for failure in outcome["failures"]:
        print(failure, file=sys.stderr)
    print(f"backfill of {len(days)} days: {outcome['done']} of {outcome['stages']} stages done, "
          f"at most {outcome['most_at_once']} at once, {outcome['wall_seconds']:.1f} s")
    return 1 if outcome["failures"] else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
