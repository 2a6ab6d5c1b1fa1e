"""Curate: impressions joined with their outcomes, cleaned for training."""

import dagster as dg

from flywheel_assets.core import curate
from flywheel_assets.defs.partitions import daily_partitions
from flywheel_assets.defs.resources import FlywheelResource


@dg.asset(group_name="curate", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=["raw_impressions", "raw_interactions", "raw_users"])
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
    """Feedback fit to learn from (`curated.curated_feedback`): double-logged
    impressions removed, each removal kept with its reason in
    `curated.feedback_removals`."""
    with flywheel.warehouse() as conn:
        stats = curate.build_curated_feedback(conn, context.partition_key)
    return dg.MaterializeResult(metadata={"dagster/row_count": stats.pop("rows"), **stats})
