"""The product's code location: each stage's assets, checks and sensors, the jobs and
the schedule, and the one resource they share."""

import fcntl
import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from flywheel_assets.curate import assets as curate_assets
from flywheel_assets.evaluate import assets as evaluate_assets
from flywheel_assets.evaluate import checks as evaluate_checks
from flywheel_assets.ingest import assets as ingest_assets
from flywheel_assets.ingest import checks as ingest_checks
from flywheel_assets.label import assets as label_assets
from flywheel_assets.jobs import daily_rotation_job, daily_rotation_schedule, retrain_job
from flywheel_assets.monitor import assets as monitor_assets
from flywheel_assets.monitor import checks as monitor_checks
from flywheel_assets.monitor.jobs import deliver_alerts_job, record_alert_job
from flywheel_assets.monitor.sensors import SENSORS, host_tag
from flywheel_assets.resources import FlywheelResource
from flywheel_assets.settings import encode
from flywheel_assets.train import assets as train_assets
from flywheel_assets.train import checks as train_checks

STAGES_IN_FLOW_ORDER = (ingest_assets, curate_assets, label_assets, train_assets, evaluate_assets,
                        monitor_assets)
CHECKS = (ingest_checks, train_checks, evaluate_checks, monitor_checks)


def build_definitions(data_dir: str | None = None,
                      overrides: Mapping[str, object] | None = None) -> dg.Definitions:
    """Definitions for the flywheel whose data lives in ``data_dir`` (default:
    ``FLYWHEEL_DATA_DIR``); ``overrides`` changes knobs by their dotted names for an
    experiment (``{"curation.filters": False}``; `flywheel_assets.settings`)."""
    return dg.Definitions(
        assets=[*ingest_assets.landing_specs,
                *dg.load_assets_from_modules(list(STAGES_IN_FLOW_ORDER))],
        asset_checks=dg.load_asset_checks_from_modules(list(CHECKS)),
        jobs=[daily_rotation_job, retrain_job, record_alert_job, deliver_alerts_job],
        schedules=[daily_rotation_schedule],
        sensors=SENSORS,
        resources={"flywheel": FlywheelResource(data_dir=data_dir,
                                                overrides=encode(overrides or {}))},
    )


def instance_at_home() -> dg.DagsterInstance:
    """The instance at DAGSTER_HOME, its storage created under a file lock: two commands
    started at once on a new home would both create the SQLite tables, and one fail
    ("table ... already exists")."""
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".flywheel-storage.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # the run storage, created if it is not there
    return instance


def _root_message(error) -> str:
    """What went wrong at the bottom of an error's chain ("No space left on device"),
    not Dagster's "Error occurred while executing op" around it."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


# A day's rotation in the three parts a backfill runs apart (`flywheel backfill`): the
# landing day read in (it writes only the day's own partitions, and the day's deletion
# requests), the erasure they ask for (it deletes from every day), and the rest.
INGEST_ASSETS = ("raw_impressions", "raw_candidates", "raw_interactions", "raw_users",
                 "raw_items", "deletion_requests", "quarantined_events")


def stage_selection(job: dg.JobDefinition, stage: str) -> list[dg.AssetKey] | None:
    """The assets of ``job`` that a stage of a day's rotation materialises (None: all)."""
    from flywheel_assets.backfill import STAGES

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    if stage == "all":
        return None
    ingest = {dg.AssetKey(k) for k in INGEST_ASSETS}
    erasure = {dg.AssetKey("user_erasure")}
    everything = set(job.asset_layer.executable_asset_keys)
    chosen = {"ingest": ingest, "erasure": erasure, "rest": everything - ingest - erasure}[stage]
    return sorted(chosen & everything, key=lambda k: k.to_user_string())


def rotate(data_dir: str, day: str, stage: str = "all") -> tuple[bool, str, list[str]]:
    """`daily_rotation_job` for one day (or one ``stage`` of it), in this process, on
    the instance at DAGSTER_HOME (``flywheel rotate``): whether it succeeded, its run
    id, and each failed step's error."""
    job = build_definitions(data_dir).resolve_job_def("daily_rotation_job")
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with instance_at_home() as instance:
        result = job.execute_in_process(partition_key=day, instance=instance, run_config=quiet,
                                        raise_on_error=False,
                                        asset_selection=stage_selection(job, stage),
                                        tags={"flywheel/cli": "rotate", "flywheel/stage": stage,
                                              **host_tag()})
    failures = [f"step {e.step_key} failed: {_root_message(e.event_specific_data.error)}"
                for e in result.all_events if e.is_step_failure]
    return result.success, result.run_id, failures


defs = build_definitions()
