"""Evaluate: candidate vs champion on the same holdout; promote only the better one."""

import datetime as dt
import json

import dagster as dg

from flywheel_assets.core import evaluation, model_store, promotion, warehouse
from flywheel_assets.core import training_set as ts_lib
from flywheel_assets.defs.ingest.checks import BLOCKING_CHECKS as INGEST_CHECKS
from flywheel_assets.defs.partitions import daily_partitions
from flywheel_assets.defs.resources import FlywheelResource


def _candidate_version(flywheel: FlywheelResource, day: str) -> str:
    with flywheel.warehouse() as conn:
        row = conn.execute("SELECT version FROM ml.model_registry WHERE partition_date = ? "
                           "ORDER BY created_at DESC LIMIT 1", [day]).fetchone()
    if row is None:
        raise dg.Failure(f"no candidate model registered for {day}")
    return row[0]


BLOCKING_CHECKS = [*INGEST_CHECKS, ("training_set", "training_set_is_usable")]


@dg.asset(group_name="evaluate", partitions_def=daily_partitions, pool="duckdb",
          kinds={"sklearn", "duckdb"}, deps=["candidate_model", "training_set"])
def model_evaluation(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """Candidate and champion scored on the same temporal holdout (the training day's
    logged slates): NDCG@10 on graded labels, AUC of complete-or-better, RMSE of the
    grade. Recorded in `ml.model_evaluations`; full report under
    `data/reports/evaluation/`."""
    s = flywheel.settings
    day = context.partition_key
    candidate = _candidate_version(flywheel, day)
    champion = model_store.champion_before(s.models_dir, candidate)
    models = {"candidate": model_store.load_model(s.models_dir, candidate)}
    if champion:
        models["champion"] = model_store.load_model(s.models_dir, champion)
    with flywheel.warehouse() as conn:
        holdout = ts_lib.read_split(conn, day, "holdout")
    results = evaluation.compare(holdout, models)
    record = {"partition_date": day, "candidate_version": candidate,
              "champion_version": champion, "holdout_rows": len(holdout),
              "holdout_requests": int(holdout["request_id"].nunique()), "metrics": results}
    report = evaluation.write_report(s.reports_dir, day, record)
    with flywheel.warehouse() as conn, warehouse.transaction(conn):
        conn.execute("DELETE FROM ml.model_evaluations WHERE partition_date = ?", [day])
        conn.execute("INSERT INTO ml.model_evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [day, candidate, champion, len(holdout), record["holdout_requests"],
                      json.dumps(results), str(report), dt.datetime.now(dt.timezone.utc)])
    return dg.MaterializeResult(metadata={
        "candidate_version": candidate, "champion_version": champion or "none",
        "holdout_rows": len(holdout),
        "candidate_ndcg_at_10": results["candidate"]["ndcg_at_10"],
        **({"champion_ndcg_at_10": results["champion"]["ndcg_at_10"]} if champion else {}),
        "metrics": dg.MetadataValue.md(evaluation.markdown_table(results)),
        "report": dg.MetadataValue.path(str(report))})


@dg.asset(group_name="evaluate", partitions_def=daily_partitions, pool="duckdb",
          kinds={"sklearn"}, deps=[model_evaluation])
def champion_model(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """The model in service: a pointer (`data/models/champion.json`), not a copy. The
    day's candidate replaces it only when every blocking check of the day passed (as
    recorded in `monitor.check_results`, whichever run executed them) and it beats the
    champion on the holdout, or when there is no champion yet; a candidate trained for
    an earlier day than the champion is never promoted by the gate. Every decision and
    its reasons go to `ml.promotions`, in the same transaction as the pointer move."""
    s = flywheel.settings
    day = context.partition_key
    with flywheel.warehouse() as conn:
        candidate, champion, metrics_json = conn.execute(
            "SELECT candidate_version, champion_version, metrics FROM ml.model_evaluations "
            "WHERE partition_date = ?", [day]).fetchone()
    results = json.loads(metrics_json)
    current = model_store.champion_version(s.models_dir)
    with flywheel.warehouse() as conn:
        # Read from the warehouse, not from this run: materialising this asset alone
        # must not skip the checks that guard promotion.
        problems = warehouse.failed_or_missing_checks(conn, day, BLOCKING_CHECKS)
    older = None
    if current and current != candidate:
        trained_on = model_store.load_card(s.models_dir, current).get("partition_date", "")
        if trained_on > day:
            older = (f"the candidate was trained for {day}, before the champion in service "
                     f"({current}, trained for {trained_on})")
    decision = promotion.decide(results["candidate"], results.get("champion"), problems,
                                older_than_champion=older)
    with flywheel.warehouse() as conn, warehouse.transaction(conn):
        # The audit row and the pointer move together: if the move fails, the row rolls back.
        new_champion = candidate if decision.promote else current
        conn.execute("DELETE FROM ml.promotions WHERE partition_date = ? AND actor = 'gate'", [day])
        conn.execute("INSERT INTO ml.promotions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [dt.datetime.now(dt.timezone.utc), day, candidate, champion, new_champion,
                      decision.promote, "gate", json.dumps(decision.reasons)])
        if decision.promote and current != candidate:
            model_store.set_champion(s.models_dir, candidate, "; ".join(decision.reasons),
                                     actor=f"dagster:{context.run_id}")
    return dg.MaterializeResult(metadata={
        "champion_version": new_champion or "none", "candidate_version": candidate,
        "promoted": decision.promote, "previous_champion": champion or "none",
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons))})
