"""Evaluate: candidate vs champion on the same data, and the champion pointer that
applies the gate's decision (the gate itself is in checks.py)."""

import dagster as dg

from flywheel_assets.evaluate import evaluation, promotion
from flywheel_assets.metadata import bullets, readable
from flywheel_assets.partitions import DAILY_FRESHNESS, daily_partitions
from flywheel_assets.resources import FlywheelResource


def recorded_evaluation(flywheel: FlywheelResource, day: str) -> dict:
    with flywheel.warehouse() as conn:
        record = evaluation.read_evaluation(conn, day)
    if record is None:
        raise dg.Failure(f"no evaluation recorded for {day}; materialise model_evaluation first")
    return record


@dg.asset(group_name="evaluate", partitions_def=daily_partitions, pool="duckdb",
          kinds={"sklearn", "duckdb"},
          deps=["candidate_model", "training_set", "position_bias", "raw_candidates"])
def model_evaluation(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """Candidate and champion on the same data. On the temporal holdout (the training
    day's curated rows): NDCG@K on examined impressions (K: the product's slate size, in
    the metadata), AUC, RMSE, per slice (new items, new users, devices, where the data
    has them), and calibration. On the day's logged requests with
    their candidate pools: each model's ranking valued off-policy (IPS, self-normalised
    IPS, doubly robust) with effective sample size and bootstrap intervals, the paired
    candidate − champion difference, and the exposure Gini and catalogue coverage of
    its slates. Recorded in `ml.model_evaluations`; a readable report (markdown,
    chart, JSON) under `data/reports/evaluation/<day>/`."""
    try:
        record = evaluation.evaluate_day(flywheel.warehouse, flywheel.settings,
                                         context.partition_key)
    except evaluation.NothingToEvaluate as exc:
        raise dg.Failure(str(exc)) from exc
    report = record["report"]
    return dg.MaterializeResult(metadata=readable(
        candidate_version=record["candidate_version"],
        champion_version=record["champion_version"] or "none",
        holdout_rows=record["holdout_rows"], **evaluation.headline_figures(record),
        summary=dg.MetadataValue.md(f"{report['markdown']}\n\n![charts]({report['chart_data_uri']})"),
        report=dg.MetadataValue.path(f"{report['dir']}/report.md")))


@dg.asset(group_name="evaluate", partitions_def=daily_partitions, pool="duckdb",
          kinds={"sklearn"}, deps=[model_evaluation], freshness_policy=DAILY_FRESHNESS)
def champion_model(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """The model in service: a pointer (`data/models/champion.json`), not a copy. It
    applies the decision `promotion_gate` recorded for the day's candidate: the
    candidate replaces the champion only when the gate promoted it, every blocking data
    check still passes (as recorded in `monitor.check_results`, whichever run executed
    it) and the champion in service is the one the gate saw. Every application, its
    reasons and its figures are appended to `ml.promotions`, in the same transaction as
    the pointer move."""
    s = flywheel.settings
    record = recorded_evaluation(flywheel, context.partition_key)
    with flywheel.warehouse() as conn:
        decision, champion = promotion.apply_decision(conn, s.models, record,
                                                      actor=f"dagster:{context.run_id}")
    return dg.MaterializeResult(metadata=readable(
        champion_version=champion or "none", candidate_version=record["candidate_version"],
        promoted=decision.promote, previous_champion=record["champion_version"] or "none",
        reasons=bullets(decision.reasons)))
