"""Curate: impressions joined with their outcomes, cleaned for training."""

import dagster as dg

import datetime as dt

from flywheel_assets.core import curate, warehouse
from flywheel_assets.core import position_bias as pb
from flywheel_assets.defs.partitions import daily_partitions
from flywheel_assets.defs.resources import FlywheelResource


@dg.asset(group_name="curate", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=["raw_impressions", "raw_interactions", "raw_users", "user_erasure"])
def feedback_events(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """One row per impression of the day with its outcome flags (skip, partial, complete,
    save, thumbs) in `curated.feedback_events`. Replayed events count once; impressions
    of users without training consent are excluded and listed in
    `curated.feedback_removals`."""
    with flywheel.warehouse() as conn:
        stats = curate.build_feedback_events(conn, context.partition_key)
    return dg.MaterializeResult(metadata={"dagster/row_count": stats.pop("rows"), **stats})


@dg.asset(group_name="curate", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=[feedback_events])
def curated_feedback(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """Feedback fit to learn from (`curated.curated_feedback`). Removed, each row with
    its reason in `curated.feedback_removals`: double-logged impressions; with filters
    on, users flagged as bots or spam (`curated.flagged_users`: regular intervals,
    reactions faster than a person, save bursts, request rate), contradictory and
    low-information signals, rows over the per-user daily cap, and label noise found by
    confident learning (cleanlab) on out-of-fold predictions. Metadata carries the day's
    engagement per request, which `quality_sensor` watches."""
    s = flywheel.settings
    with flywheel.warehouse() as conn:
        stats = curate.build_curated_feedback(conn, context.partition_key, s.use_filters,
                                              max_label_issue_share=s.max_label_issue_share)
        engagement = curate.engagement_per_request(conn, context.partition_key)
    removed = stats.pop("removed")
    table = "\n".join(["| reason | rows |", "|---|---|"] + [f"| {k} | {v} |" for k, v in removed.items()])
    return dg.MaterializeResult(metadata={
        "dagster/row_count": stats.pop("rows"), **stats,
        "rows_removed": sum(removed.values()), "removed_by_reason": dg.MetadataValue.md(table),
        # Read by quality_sensor: mean summed grade per request, bots left out.
        "engagement_per_request": round(engagement, 5)})


@dg.asset(group_name="curate", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=[curated_feedback])
def position_bias(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """Examination probability per position relative to position 1
    (`curated.position_bias`), estimated from the explored (randomised) slates of the
    last `position_bias_window_days` of feedback, less flagged bots: on a random slate, the rate
    of any interaction at position k is proportional to the chance position k is
    looked at. With a 95% bootstrap interval per position. No hard-coded curve."""
    s = flywheel.settings
    day = context.partition_key
    with flywheel.warehouse() as conn:
        rows = pb.explored_clicks(conn, day, s.position_bias_window_days,
                                  exclude_flagged_users=s.use_filters)
        slate_size = int(rows["position"].max()) if len(rows) else 10
        curve = pb.estimate(rows, slate_size)
        curve = curve.assign(
            partition_date=dt.date.fromisoformat(day),
            window_start=dt.date.fromisoformat(warehouse.window_start(day, s.position_bias_window_days)),
            method=pb.METHOD)
        with warehouse.transaction(conn):
            conn.register("_curve", curve)
            warehouse.replace_partition(conn, "curated.position_bias", day, "SELECT * FROM _curve")
            conn.unregister("_curve")
    table = "\n".join(["| position | examination | 95% interval | clicks / shown |", "|---|---|---|---|"] + [
        f"| {r.position} | {r.examination:.3f} | {r.ci_low:.3f} – {r.ci_high:.3f} | "
        f"{r.clicks} / {r.impressions} |" for r in curve.itertuples()])
    return dg.MaterializeResult(metadata={
        "explored_requests": int(curve["explored_requests"].iloc[0]),
        "examination_at_last_position": float(curve["examination"].iloc[-1]),
        "curve": dg.MetadataValue.md(table), "method": pb.METHOD})
