"""The promotion gate: the blocking check that decides whether the candidate goes in
service (the rules: evaluate/promotion.py)."""

import dagster as dg

from flywheel_assets.evaluate import promotion
from flywheel_assets.evaluate.assets import model_evaluation, recorded_evaluation
from flywheel_assets.metadata import bullets, readable
from flywheel_assets.resources import FlywheelResource


@dg.asset_check(asset=model_evaluation, blocking=True, pool="duckdb",
                description="The promotion rule (docs/architecture.md): the candidate's "
                            "primary metric (off-policy DCG@K, doubly robust) beats the "
                            "champion's with a confidence bound that clears the minimum "
                            "effect; coverage, concentration and slice guards within "
                            "tolerance; every blocking data check upstream passed; never a "
                            "stale candidate, never a demotion on a re-run. The decision is "
                            "recorded in `ml.gate_decisions` for `champion_model` to apply. "
                            "Fails with severity WARN when the candidate is not promoted, "
                            "so `champion_model` still records the decision.")
def promotion_gate(context: dg.AssetCheckExecutionContext, flywheel: FlywheelResource):
    s = flywheel.settings
    record = recorded_evaluation(flywheel, context.partition_key)
    with flywheel.warehouse() as conn:
        facts = promotion.day_facts(conn, s.models, record)
        decision = promotion.decide_for_day(facts, s.gate)
        promotion.record_decision(conn, facts, decision)
    return dg.AssetCheckResult(
        passed=decision.promote, severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(decision.reasons),
        metadata=readable(reasons=bullets(decision.reasons), figures=decision.figures))
