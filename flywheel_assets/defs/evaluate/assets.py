"""Evaluate: candidate vs champion on the same data; a gate; the champion pointer."""

import datetime as dt
import json

import dagster as dg
import numpy as np
import pandas as pd

from flywheel_assets.core import evaluation, evaluation_report, logged_pools, model_store
from flywheel_assets.core import promotion, warehouse
from flywheel_assets.core import training_set as ts_lib
from flywheel_assets.core.curate import latest_snapshot_date
from flywheel_assets.core.serving import Reranking
from flywheel_assets.defs.check_results import recorded_result
from flywheel_assets.defs.ingest.checks import BLOCKING_CHECKS as INGEST_CHECKS
from flywheel_assets.defs.partitions import daily_partitions
from flywheel_assets.defs.resources import FlywheelResource

DATA_CHECKS = [*INGEST_CHECKS, ("training_set", "training_set_is_usable")]
GATE = ("model_evaluation", "promotion_gate")


def _candidate_version(flywheel: FlywheelResource, day: str) -> str:
    with flywheel.warehouse() as conn:
        row = conn.execute("SELECT version FROM ml.model_registry WHERE partition_date = ? "
                           "ORDER BY created_at DESC LIMIT 1", [day]).fetchone()
    if row is None:
        raise dg.Failure(f"no candidate model registered for {day}")
    return row[0]


def _bounded(holdout, max_requests: int):
    """At most ``max_requests`` requests, a deterministic hash sample (memory and time
    stay bounded however big a day gets)."""
    requests = holdout["request_id"].drop_duplicates()
    if len(requests) <= max_requests:
        return holdout
    order = np.argsort(pd.util.hash_array(requests.to_numpy(dtype=object)), kind="stable")
    keep = set(requests.to_numpy()[order[:max_requests]])
    return holdout[holdout["request_id"].isin(keep)].reset_index(drop=True)


def _evaluation_record(flywheel: FlywheelResource, day: str) -> dict:
    with flywheel.warehouse() as conn:
        row = conn.execute("SELECT metrics FROM ml.model_evaluations WHERE partition_date = ?",
                           [day]).fetchone()
    if row is None:
        raise dg.Failure(f"no evaluation recorded for {day}; materialise model_evaluation first")
    return json.loads(row[0])


def gate_decision(flywheel: FlywheelResource, day: str, record: dict) -> promotion.Decision:
    """The gate's decision for the day, from recorded facts only: the evaluation, the
    blocking checks' results in `monitor.check_results` (whichever run executed them)
    and the champion in service."""
    s = flywheel.settings
    with flywheel.warehouse() as conn:
        problems = warehouse.failed_or_missing_checks(conn, day, DATA_CHECKS)
    candidate = record["candidate_version"]
    current = model_store.champion_version(s.models_dir)
    older = None
    if current and current != candidate:
        trained_on = model_store.load_card(s.models_dir, current).get("partition_date", "")
        if trained_on > day:
            older = (f"the candidate was trained for {day}, before the champion in service "
                     f"({current}, trained for {trained_on})")
    return promotion.decide(record, problems, promotion.GatePolicy.from_settings(s), older,
                            has_champion=record.get("champion_version") is not None)


@dg.asset(group_name="evaluate", partitions_def=daily_partitions, pool="duckdb",
          kinds={"sklearn", "duckdb"},
          deps=["candidate_model", "training_set", "position_bias", "raw_candidates"])
def model_evaluation(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """Candidate and champion on the same data. On the temporal holdout (the training
    day's curated rows): NDCG@10 on examined impressions, AUC, RMSE, per slice (new
    items, new users, devices), and calibration. On the day's logged requests with
    their candidate pools: each model's ranking valued off-policy (IPS, self-normalised
    IPS, doubly robust) with effective sample size and bootstrap intervals, the paired
    candidate − champion difference, and the exposure Gini and catalogue coverage of
    its top-10s. Recorded in `ml.model_evaluations`; a readable report (markdown,
    chart, JSON) under `data/reports/evaluation/<day>/`."""
    s = flywheel.settings
    day = context.partition_key
    candidate = _candidate_version(flywheel, day)
    champion = model_store.champion_before(s.models_dir, candidate)
    models = {"candidate": model_store.load_model(s.models_dir, candidate)}
    if champion:
        models["champion"] = model_store.load_model(s.models_dir, champion)
    with flywheel.warehouse() as conn:
        holdout = _bounded(ts_lib.read_split(conn, day, "holdout"), s.max_holdout_requests)
        pools = logged_pools.logged_pools(conn, day, s.max_ope_requests)
        examination = dict(conn.execute(
            "SELECT position, examination FROM curated.position_bias WHERE partition_date = ?",
            [day]).fetchall())
        items_date = latest_snapshot_date(conn, "raw.items", day)
        catalogue = conn.execute("SELECT count(DISTINCT item_id) FROM raw.items WHERE "
                                 "partition_date = ?", [items_date]).fetchone()[0]
    if holdout.empty:
        raise dg.Failure(f"the holdout of {day} is empty: nothing to evaluate on")
    record = {"partition_date": day, "candidate_version": candidate,
              "champion_version": champion, "holdout_rows": len(holdout),
              "holdout_requests": int(holdout["request_id"].nunique()),
              "catalogue_size": int(catalogue), "examination": examination,
              **evaluation.evaluate(holdout, pools, models, examination, int(catalogue),
                                    s.ope_bootstrap_samples, s.promotion_confidence,
                                    Reranking(s.serving_diversity,
                                              s.serving_popularity_balance))}
    report = evaluation_report.write(s.reports_dir, record)
    with flywheel.warehouse() as conn, warehouse.transaction(conn):
        conn.execute("DELETE FROM ml.model_evaluations WHERE partition_date = ?", [day])
        conn.execute("INSERT INTO ml.model_evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [day, candidate, champion, len(holdout), record["holdout_requests"],
                      json.dumps(record, default=str), str(report["dir"]),
                      dt.datetime.now(dt.timezone.utc)])
    ope = record["off_policy"] or {"policies": {}}
    figures = {f"{name}_dr_dcg_at_10": p["dr"]["value"] for name, p in ope["policies"].items()}
    figures |= {f"{name}_catalog_coverage": p["catalog_coverage"]
                for name, p in ope["policies"].items()}
    figures |= {f"{name}_exposure_gini": p["exposure_gini"] for name, p in ope["policies"].items()}
    return dg.MaterializeResult(metadata={
        "candidate_version": candidate, "champion_version": champion or "none",
        "holdout_rows": len(holdout), "logged_requests": ope.get("requests", 0),
        "candidate_holdout_ndcg_at_10": record["holdout"]["candidate"]["ndcg_at_10"],
        **figures,
        "summary": dg.MetadataValue.md(report["markdown"] + f"\n\n![charts]({report['chart_data_uri']})"),
        "report": dg.MetadataValue.path(str(report["dir"] / "report.md"))})


@dg.asset_check(asset=model_evaluation, blocking=True, pool="duckdb",
                description="DESIGN §7: the candidate's primary metric (off-policy DCG@10, "
                            "doubly robust) beats the champion's with a confidence bound "
                            "that clears the minimum effect; coverage, concentration and "
                            "slice guards within tolerance; every blocking data check "
                            "upstream passed. Fails with severity WARN when the candidate "
                            "is not promoted, so `champion_model` still records the decision.")
def promotion_gate(context: dg.AssetCheckExecutionContext, flywheel: FlywheelResource):
    day = context.partition_key
    record = _evaluation_record(flywheel, day)
    decision = gate_decision(flywheel, day, record)
    with flywheel.warehouse() as conn:
        result = recorded_result(
            conn, day, *GATE, decision.promote,
            "; ".join(decision.reasons),
            metadata={"reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
                      "figures": dg.MetadataValue.json(decision.figures)})
    return dg.AssetCheckResult(passed=result.passed, description=result.description,
                               metadata=result.metadata, check_name="promotion_gate",
                               asset_key=result.asset_key,
                               severity=dg.AssetCheckSeverity.WARN)


@dg.asset(group_name="evaluate", partitions_def=daily_partitions, pool="duckdb",
          kinds={"sklearn"}, deps=[model_evaluation],
          # A decision a day: on-call sees a stale champion in the UI after 30 hours.
          freshness_policy=dg.FreshnessPolicy.time_window(
              fail_window=dt.timedelta(hours=30), warn_window=dt.timedelta(hours=26)))
def champion_model(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """The model in service: a pointer (`data/models/champion.json`), not a copy. The
    day's candidate replaces it only when `promotion_gate` passed for the day (as
    recorded in `monitor.check_results`, whichever run executed it) and every blocking
    data check passed; a candidate trained for an earlier day than the champion is
    never promoted by the gate, nor one compared with another champion than the one in
    service. Every decision, its reasons and its figures are appended to
    `ml.promotions`, in the same transaction as the pointer move."""
    s = flywheel.settings
    day = context.partition_key
    record = _evaluation_record(flywheel, day)
    candidate, champion = record["candidate_version"], record.get("champion_version")
    current = model_store.champion_version(s.models_dir)
    # Recomputed from the same recorded facts, and the gate's own recorded result must
    # agree: materialising this asset alone cannot promote past a failed gate.
    decision = gate_decision(flywheel, day, record)
    with flywheel.warehouse() as conn:
        gate_problems = warehouse.failed_or_missing_checks(conn, day, [GATE])
    if decision.promote and gate_problems:
        decision = promotion.Decision(False, gate_problems, decision.figures)
    if current == candidate:
        # A re-run: the gate never demotes (rolling back is the operator's call).
        decision = promotion.Decision(True, ["the candidate is already the champion in "
                                             "service (a re-run); the gate does not demote",
                                             *decision.reasons], decision.figures)
    elif decision.promote and current != champion:
        # Compared with one champion, about to replace another: evaluate again first.
        decision = promotion.Decision(False, [
            f"the champion in service changed since the evaluation ({champion or 'none'} → "
            f"{current}); materialise model_evaluation again"], decision.figures)
    with flywheel.warehouse() as conn, warehouse.transaction(conn):
        # The audit row and the pointer move together: if the move fails, the row rolls back.
        new_champion = candidate if decision.promote else current
        # Append-only: a re-run adds its decision, the earlier ones stay in the audit.
        conn.execute("INSERT INTO ml.promotions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [dt.datetime.now(dt.timezone.utc), day, candidate, champion, new_champion,
                      decision.promote, "gate",
                      json.dumps({"reasons": decision.reasons, "figures": decision.figures},
                                 default=str)])
        if decision.promote and current != candidate:
            model_store.set_champion(s.models_dir, candidate, "; ".join(decision.reasons),
                                     actor=f"dagster:{context.run_id}")
    return dg.MaterializeResult(metadata={
        "champion_version": new_champion or "none", "candidate_version": candidate,
        "promoted": decision.promote, "previous_champion": champion or "none",
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons))})
