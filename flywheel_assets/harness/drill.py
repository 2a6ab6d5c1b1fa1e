"""`flywheel drill drift`: a fire drill for on-call, on a temporary instance.

Turns the wheel for a few normal days (in process), starts the real services (Dagster
webserver and daemon, sensors on), lands one day of the world with `taste_drift`
switched on, and waits for the loop to react by itself: `landing_sensor` starts the
rotation, `drift_report` finds the drift, `drift_sensor` launches `retrain_job`
(tagged `trigger=drift`), and the gate decides. Prints what happened and, last,
`drift_to_decision_seconds=<N>`: from the drifted day's `_SUCCESS` markers to the
retrained candidate's recorded decision. Stops everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from flywheel_assets.settings import Settings
from flywheel_assets.simulation.config import Scenario, WorldConfig

RUNS_QUERY = """
query Runs($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) {
    __typename
    ... on Runs { results { runId jobName status startTime endTime
                            tags { key value } } }
    ... on PythonError { message }
  }
}"""
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("drill", help="fire drills for on-call (temporary instance)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["drift"], help="what to rehearse")
    p.add_argument("--warm-up-days", type=int, default=2,
                   help="normal days before the drifted one (default 2)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait for the decision before giving up")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    world = WorldConfig()
    p.add_argument("--users", type=int, default=world.n_users,
                   help=f"people in the rehearsal world (default {world.n_users})")
    p.add_argument("--items", type=int, default=world.n_items,
                   help=f"items in its catalogue (default {world.n_items})")
    p.add_argument("--requests-per-day", type=int, default=world.requests_per_day,
                   help=f"its requests per day (default {world.requests_per_day})")
    p.set_defaults(func=_main)


def runs_with_tag(services, key: str, value: str) -> list[dict]:
    result = services.graphql(RUNS_QUERY, {"key": key, "value": value})["runsOrError"]
    if result["__typename"] != "Runs":
        raise RuntimeError(f"GraphQL runs query failed: {result}")
    return result["results"]


def _partition(run: dict) -> str | None:
    return next((t["value"] for t in run["tags"] if t["key"] == "dagster/partition"), None)


def wait_for(predicate, timeout: float, interval: float = 2.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def warm_up(data_dir: Path, config: WorldConfig, days: int) -> Settings:
    """Turn the wheel for ``days`` normal days in process, on ``data_dir``'s instance."""
    from flywheel_assets.harness.demo import run_demo

    settings = Settings.from_env(data_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        run_demo(settings, config, days, progress=False)
    return settings


def _read_outcome(settings: Settings, date: str) -> dict:
    """The day's gate decision, evaluation and drift report, from the warehouse (read
    only; retried while a run still holds the writer's lock)."""
    import duckdb

    from flywheel_assets import warehouse

    def read():
        try:
            with warehouse.connect(settings.warehouse, read_only=True) as conn:
                return {
                    "decision": conn.execute("""
                        SELECT decided_at, candidate_version, promoted, new_champion, reasons
                        FROM ml.promotions WHERE partition_date = ? AND actor = 'gate'
                        ORDER BY decided_at DESC LIMIT 1""", [date]).fetchone(),
                    "evaluation": conn.execute(
                        "SELECT candidate_version, evaluated_at FROM ml.model_evaluations "
                        "WHERE partition_date = ?", [date]).fetchone(),
                    "drift": conn.execute("SELECT drift_share, columns FROM monitor.drift_reports "
                                          "WHERE partition_date = ?", [date]).fetchone()}
        except duckdb.IOException:
            return None
    return wait_for(read, 60, interval=1.0, what="the warehouse to be readable")


def land_drift_and_wait(services, settings: Settings, config: WorldConfig, drift_day: int,
                        timeout: float) -> dict:
    """Land day ``drift_day`` with taste_drift on, through running services, and wait
    for the retrain the drift sensor starts to finish."""
    from flywheel_assets import storage
    from flywheel_assets.serve import serving
    from flywheel_assets.simulation import world

    date = config.date_of(drift_day).isoformat()
    drifted = config.replace(scenarios=(*config.scenarios, Scenario("taste_drift", drift_day)))
    world.run_day(settings.data_dir, settings.landing_dir, drifted, date,
                  serving.current_policy(settings))
    storage.publish_landing_day(settings.landing, date)
    landed_at = max(settings.landing.mtime(f"{s}/date={date}/_SUCCESS")
                    for s in settings.ingest.required_streams)

    def finished_retrain():
        runs = [r for r in runs_with_tag(services, "trigger", "drift")
                if r["jobName"] == "retrain_job" and _partition(r) == date]
        return next((r for r in runs if r["status"] in FINISHED), None)

    try:
        retrain = wait_for(finished_retrain, timeout,
                           what="a finished retrain_job run tagged trigger=drift")
    except TimeoutError:
        rotations = runs_with_tag(services, "trigger", "landing")
        raise TimeoutError(f"no finished drift retrain within {timeout:.0f} s; rotation runs: "
                           f"{[(r['runId'][:8], r['status']) for r in rotations]}; "
                           f"service log: {services.log_path}") from None
    rotation = [r for r in runs_with_tag(services, "trigger", "landing") if _partition(r) == date]
    found = _read_outcome(settings, date)
    decision, evaluation, report = found["decision"], found["evaluation"], found["drift"]
    reason = next((t["value"] for t in retrain["tags"] if t["key"] == "flywheel/reason"), "")
    return {
        "date": date, "retrain_run": retrain["runId"], "retrain_status": retrain["status"],
        "retrain_reason": reason, "retrain_tags": {t["key"]: t["value"] for t in retrain["tags"]},
        "rotation_runs": [(r["runId"], r["status"]) for r in rotation],
        "drift_share": report[0] if report else None,
        "drifted_columns": json.loads(report[1]).get("drifted_columns", []) if report else [],
        "evaluated_candidate": evaluation[0] if evaluation else None,
        "decision": {"candidate": decision[1], "promoted": decision[2],
                     "champion": decision[3], "reasons": json.loads(decision[4])["reasons"]}
        if decision else None,
        "drift_to_decision_seconds": (decision[0].timestamp() - landed_at) if decision else None,
    }


def run_drift_drill(data_dir: Path, config: WorldConfig, warm_up_days: int, timeout: float,
                    log=print) -> dict:
    """The whole drill: warm up, start the services, land the drifted day, wait, stop."""
    from flywheel_assets.harness.services import DagsterServices

    log(f"drill: {warm_up_days} normal days in process (in {data_dir})")
    settings = warm_up(data_dir, config, warm_up_days)
    log(f"drill: starting the webserver and daemon on {settings.dagster_home}")
    with DagsterServices(settings.dagster_home,
                         env={"FLYWHEEL_DATA_DIR": str(data_dir)}) as services:
        log(f"drill: UI at {services.url}; landing day {warm_up_days + 1} with taste_drift on")
        return land_drift_and_wait(services, settings, config, warm_up_days + 1, timeout)


def _main(args: argparse.Namespace) -> int:
    keep = Path(tempfile.mkdtemp(prefix="flywheel-drill-"))
    outcome = None
    try:
        world = WorldConfig(n_users=args.users, n_items=args.items,
                            requests_per_day=args.requests_per_day)
        outcome = run_drift_drill(keep / "data", world, args.warm_up_days, args.timeout)
    except (TimeoutError, RuntimeError) as exc:
        print(f"drill failed: {exc}", file=sys.stderr)
        args.keep = True  # the service log and the instance are what on-call reads next
    finally:
        if not args.keep:
            import shutil
            shutil.rmtree(keep, ignore_errors=True)
        else:
            print(f"kept: {keep}", file=sys.stderr)
    if not outcome or outcome["decision"] is None or outcome["retrain_status"] != "SUCCESS":
        if outcome:
            print(f"drill failed: retrain_job ended {outcome['retrain_status']} "
                  f"({outcome['retrain_run']})", file=sys.stderr)
        print("drift_to_decision_seconds=none")
        return 1
    d = outcome["decision"]
    print(f"drifted day {outcome['date']}: drift share {outcome['drift_share']:.2f}, drifted "
          f"{', '.join(outcome['drifted_columns']) or 'none'}")
    print(f"retrain_job {outcome['retrain_run'][:8]} ({outcome['retrain_status']}): "
          f"{outcome['retrain_reason']}")
    print(f"decision: {'promoted' if d['promoted'] else 'not promoted'} {d['candidate']}; "
          f"champion {d['champion']}")
    for reason in d["reasons"]:
        print(f"  - {reason}")
    print(f"drift_to_decision_seconds={outcome['drift_to_decision_seconds']:.1f}")
    return 0
