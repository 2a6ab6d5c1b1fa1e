"""Monitor: drift against what the serving model learnt from, and the loop's own health."""

import dagster as dg

from flywheel_assets.metadata import readable
from flywheel_assets.monitor import drift_report as drift_lib
from flywheel_assets.monitor import loop_health
from flywheel_assets.partitions import DAILY_FRESHNESS, daily_partitions
from flywheel_assets.resources import FlywheelResource


@dg.asset(group_name="monitor", partitions_def=daily_partitions, pool="duckdb",
          kinds={"duckdb", "evidently"},
          # curated_feedback: the day's bot flags must exist before requests are compared.
          deps=["feedback_events", "curated_feedback", "raw_candidates"],
          freshness_policy=DAILY_FRESHNESS)
def drift_report(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """The day against the normal days just before it (`drift.reference_days`, from
    the last day whose drift started a retrain), on what the serving policy does not
    choose (so the loop's own choices never read as drift). Triggers: who asks and when
    (device, country, age band, hour, tenure; every request), what the catalogue holds
    (the items snapshot), how people react on the random slates of the exploration
    (graded signal, examined). Reported, never a trigger (they move with the product's
    own plays): what retrieval offered (item attributes of the candidate pools; a
    sample) and the model's own view (its scores on pool candidates, its residual on
    explored impressions; samples). The verdict is computed in DuckDB: Jensen–Shannon distance for
    categorical columns, Wasserstein distance over the reference std for numeric ones.
    Each column's threshold is calibrated on the reference's own normal days
    (`drift.noise_multiplier` × the largest statistic of one reference day against the
    others). `dataset_drift` (what `drift_sensor` acts on) asks for a retrain when a
    data column drifts and the drift is large (`drift.large_factor` × its threshold)
    or persists (`drift.persist_days` in a row). An Evidently `DataDriftPreset` report
    on a bounded sample is saved as HTML under `data/reports/drift/`."""
    s = flywheel.settings
    report = drift_lib.report_day(flywheel.warehouse, s, context.partition_key)
    if report.verdict is None:
        return dg.MaterializeResult(metadata={
            "drift_share": 0.0, "dataset_drift": False, "served_by": report.served_by or "none",
            "reference": "none: " + "; ".join(report.not_compared)})
    v = report.verdict
    return dg.MaterializeResult(metadata=readable(
        # Copied into the drift alert (`monitor.alerts`) at the precision it always had.
        drift_share=dg.MetadataValue.float(round(v.drift_share, 4)), dataset_drift=v.dataset_drift,
        drifted=report.drifted, large=report.large, persistent=report.persistent,
        calibrated=report.calibrated,
        # Data columns: the model's own view is reported in the table, never a trigger.
        drifted_columns=", ".join(report.drifted_columns) or "none",
        columns_compared=len(v.drifts), top_drifted_columns=dg.MetadataValue.md(report.top_markdown()),
        served_by=report.served_by, reference_window=report.reference_window,
        champion_age_days=report.champion_age_days,
        not_compared=report.not_compared,
        evidently_drift_share=(None if report.evidently.get("evidently_drift_share") is None
                               else dg.MetadataValue.float(report.evidently["evidently_drift_share"])),
        evidently_sample_rows=s.drift.sample_rows,
        **({"report": dg.MetadataValue.path(report.html)} if report.html else {})))


@dg.asset(group_name="monitor", partitions_def=daily_partitions, pool="duckdb",
          kinds={"duckdb"}, deps=["champion_model", "model_evaluation", drift_report],
          freshness_policy=DAILY_FRESHNESS)
def flywheel_health(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """The three preconditions of a working flywheel, measured every rotation. Signal
    valid: the model trained on the day's signal beats the no-learning (popularity)
    baseline on held-out data. Loop closed: the champion in service traces back to the
    partitions it learnt from (each landed, its training set present). Fast: hours from
    the newest day it learnt from landing to that champion being in service. Plus the
    quality trend of the model in service over the last rotations (its off-policy value
    on each day's logs): improving, saturating or degrading. And what each signal type
    says about people's judgement on the gold set's random slice (agreement, mutual
    information). Chart and verdict in the
    metadata; a row per day in `monitor.flywheel_health`."""
    health = loop_health.assess_day(flywheel.warehouse, flywheel.settings, context.partition_key)
    return dg.MaterializeResult(metadata=readable(
        verdict=health["verdict"], signal_valid=health["signal_valid"]["ok"],
        loop_closed=health["loop_closed"]["ok"],
        event_to_champion_hours=health["event_to_champion_hours"],
        quality_trend=health["quality_trend"]["trend"],
        signals_against_human_labels=health["signals_against_human_labels"],
        summary=dg.MetadataValue.md(health["summary"]), details=health["details"]))
