"""Curate: impressions joined with their outcomes, cleaned for training."""

import dagster as dg

from flywheel_assets.curate import feedback
from flywheel_assets.curate import position_bias as pb
from flywheel_assets.curate import profiles
from flywheel_assets.metadata import readable
from flywheel_assets.partitions import daily_partitions
from flywheel_assets.reporting import markdown_table
from flywheel_assets.resources import FlywheelResource


@dg.asset(group_name="curate", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=["raw_impressions", "raw_interactions", "raw_users", "user_erasure"])
def feedback_events(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """One row per impression of the day with the signals logged on it and its grade
    (the strongest signal's, from the `signals.grades` vocabulary) in
    `curated.feedback_events`. Replayed events count once; rows without training consent
    (`curation.consent`) are excluded and listed in `curated.feedback_removals`.
    Anonymous impressions (no user id) are kept: the request is their unit."""
    s = flywheel.settings
    with flywheel.warehouse() as conn:
        stats = feedback.build_feedback_events(conn, context.partition_key, s.signals.grades,
                                               s.curation.consent)
    return dg.MaterializeResult(metadata=readable(**{"dagster/row_count": stats.pop("rows"),
                                                     **stats}))


@dg.asset(group_name="curate", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=[feedback_events])
def curated_feedback(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """Feedback fit to learn from (`curated.curated_feedback`). Removed, each row with
    its reason in `curated.feedback_removals`: double-logged impressions; with filters
    on, users flagged as bots or spam (`curated.flagged_users`: regular intervals,
    reactions faster than a person, save bursts, request rate), contradictory and
    low-information signals, rows over the per-user daily cap, and, when
    `curation.max_label_issue_share` > 0 (off by default), label noise found by
    confident learning (cleanlab) on out-of-fold predictions. Metadata carries the day's
    engagement per request, which `quality_sensor` watches."""
    s = flywheel.settings
    with flywheel.warehouse() as conn:
        stats = feedback.build_curated_feedback(
            conn, context.partition_key, s.curation.filters, rules=s.curation_rules,
            max_label_issue_share=s.curation.max_label_issue_share,
            max_categories=s.training.max_categories)
        engagement = feedback.engagement_per_request(conn, context.partition_key)
    removed = stats.pop("removed")
    return dg.MaterializeResult(metadata=readable(**{
        "dagster/row_count": stats.pop("rows"), **stats,
        "rows_removed": sum(removed.values()),
        "removed_by_reason": dg.MetadataValue.md(markdown_table(["reason", "rows"], removed.items())),
        # Read by quality_sensor at full precision: mean summed grade per request.
        "engagement_per_request": dg.MetadataValue.float(round(engagement, 5))}))


@dg.asset(group_name="curate", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=[curated_feedback])
def position_bias(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """Examination probability per position relative to position 1
    (`curated.position_bias`), from the last `curation.position_bias_window_days` of
    feedback, less flagged bots, as the product's declared exploration allows
    (`curation.exploration`): the declared random slates (the rate of any interaction at
    position k is proportional to the chance position k is looked at), or the positions
    a non-contextual logging policy gave each item at random. With a 95% bootstrap
    interval per position. When the logs cannot identify the curve, the rows say why
    and training runs without IPS. No hard-coded curve, no guess from propensities."""
    c = flywheel.settings.curation
    with flywheel.warehouse() as conn:
        curve = pb.estimate_for_day(conn, context.partition_key, c.position_bias_window_days,
                                    exclude_flagged_users=c.filters, exploration=c.exploration,
                                    random_policies=c.random_policies)
    identified = pb.identified(curve)
    return dg.MaterializeResult(metadata=readable(
        identified=identified, exploration=c.exploration,
        explored_requests=int(curve["explored_requests"].iloc[0]),
        examination_at_last_position=float(curve["examination"].iloc[-1]) if identified else None,
        curve=dg.MetadataValue.md(pb.curve_markdown(curve)), method=curve["method"].iloc[0]))


@dg.asset(group_name="curate", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=[curated_feedback, position_bias, "raw_users", "raw_items"])
def feedback_profiles(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """What users did, as of the end of the day: per user their activity, de-biased
    engagement, category affinities, content taste and collaborative factors
    (`curated.user_profiles`, `curated.user_category_affinity`, with segment rows a new
    user falls back to); per item its exposure, engagement, engagement by country and
    factors (`curated.item_profiles`, `curated.item_segment_rates`; an unseen item's
    factors mapped from its content). Over `profiles.window_days` of curated feedback,
    decayed, de-biased by `position_bias`, consent applied. The rows of the next day
    read them as `p_*` features; a row never reads its own day's profiles. Off with
    `profiles.enabled` = false."""
    p, s = flywheel.settings.profiles, flywheel.settings
    if not p.enabled:
        return dg.MaterializeResult(metadata=readable(enabled=False))
    with flywheel.warehouse() as conn:
        stats = profiles.build_profiles(conn, context.partition_key, p.window_days,
                                        p.half_life_days, p.factors, p.prior_examinations,
                                        s.curation.consent)
    return dg.MaterializeResult(metadata=readable(enabled=True, **stats))
