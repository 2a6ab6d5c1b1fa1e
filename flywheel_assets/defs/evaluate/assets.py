"""Evaluate: candidate vs champion on the same holdout; promote only the better one."""

import datetime as dt
import json

import dagster as dg

from flywheel_assets.core import evaluation, model_store, promotion
from flywheel_assets.core import training_set as ts_lib
from flywheel_assets.defs.partitions import daily_partitions
from flywheel_assets.defs.resources import FlywheelResource


def _candidate_version(flywheel: FlywheelResource, day: str) -> str:
    with flywheel.warehouse() as conn:
        row = conn.execute("SELECT version FROM ml.model_registry WHERE partition_date = ? "
                           "ORDER BY created_at DESC LIMIT 1", [day]).fetchone()
    if row is None:
        raise dg.Failure(f"no candidate model registered for {day}")
    return row[0]


def _baseline_champion(models_dir, candidate: str) -> str | None:
    """The champion to compare with: the one in service before this candidate (so a
    re-run after promotion compares with the same model as the first run did)."""
    pointer = model_store.read_champion(models_dir)
    if pointer is None:
        return None
    return pointer["previous"] if pointer["version"] == candidate else pointer["version"]


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
    champion = _baseline_champion(s.models_dir, candidate)
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
    with flywheel.warehouse() as conn:
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
    day's candidate replaces it only when it beats it on the holdout (or when there is
    no champion yet); this asset runs only when every blocking check upstream passed.
    Every decision and its reasons go to `ml.promotions`."""
    s = flywheel.settings
    day = context.partition_key
    with flywheel.warehouse() as conn:
        candidate, champion, metrics_json = conn.execute(
            "SELECT candidate_version, champion_version, metrics FROM ml.model_evaluations "
            "WHERE partition_date = ?", [day]).fetchone()
    results = json.loads(metrics_json)
    # Blocking checks stop the run before this asset, so reaching here means they passed.
    decision = promotion.decide(results["candidate"], results.get("champion"),
                                upstream_checks_passed=True)
    current = model_store.champion_version(s.models_dir)
    if decision.promote and current != candidate:
        model_store.set_champion(s.models_dir, candidate, "; ".join(decision.reasons),
                                 actor=f"dagster:{context.run_id}")
    new_champion = model_store.champion_version(s.models_dir)
    with flywheel.warehouse() as conn:
        conn.execute("DELETE FROM ml.promotions WHERE partition_date = ? AND actor = 'gate'", [day])
        conn.execute("INSERT INTO ml.promotions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [dt.datetime.now(dt.timezone.utc), day, candidate, champion, new_champion,
                      decision.promote, "gate", json.dumps(decision.reasons)])
    return dg.MaterializeResult(metadata={
        "champion_version": new_champion or "none", "candidate_version": candidate,
        "promoted": decision.promote, "previous_champion": champion or "none",
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons))})
