import dagster as dg

from flywheel_assets.ingest.assets import LANDING_STREAMS
from flywheel_assets.partitions import daily_partitions

ROTATION_GROUPS = ("ingest", "curate", "label", "train", "evaluate", "monitor")

# One turn of the wheel for one day: landing files → champion decision.
daily_rotation_job = dg.define_asset_job(
    "daily_rotation_job",
    selection=dg.AssetSelection.groups(*ROTATION_GROUPS) - dg.AssetSelection.assets(
        *[f"landing_{s}" for s in LANDING_STREAMS]),
    partitions_def=daily_partitions,
    description="One rotation of the flywheel for one day's partition.",
    # Steps share one DuckDB writer and run one at a time anyway: one process per run
    # saves a Python start-up per step when the daemon launches it.
    executor_def=dg.in_process_executor,
)

# What a sensor runs on drift or a quality drop: a new candidate for the partition,
# through the same gate (its checks come with the assets).
retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.assets("training_set", "candidate_model", "model_evaluation",
                                       "champion_model", "flywheel_health"),
    partitions_def=daily_partitions,
    description="Retrain, evaluate and gate a candidate for one partition (sensor-triggered).",
    executor_def=dg.in_process_executor,
)

# 02:00 UTC, for yesterday's partition. Stopped by default: turn it on in the UI once
# the product's landing files arrive every day.
daily_rotation_schedule = dg.build_schedule_from_partitioned_job(
    daily_rotation_job, hour_of_day=2, minute_of_hour=0, name="daily_rotation_schedule",
    default_status=dg.DefaultScheduleStatus.STOPPED)
