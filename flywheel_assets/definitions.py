"""The product's code location: the flywheel's assets, checks, jobs and schedule."""

import dagster as dg

from flywheel_assets.defs.curate import assets as curate_assets
from flywheel_assets.defs.evaluate import assets as evaluate_assets
from flywheel_assets.defs.evaluate import checks as evaluate_checks
from flywheel_assets.defs.ingest import assets as ingest_assets
from flywheel_assets.defs.ingest import checks as ingest_checks
from flywheel_assets.defs.jobs import daily_rotation_job, daily_rotation_schedule, retrain_job
from flywheel_assets.defs.monitor import assets as monitor_assets
from flywheel_assets.defs.monitor.alerting import record_alert_job
from flywheel_assets.defs.monitor.sensors import SENSORS
from flywheel_assets.defs.resources import FlywheelResource
from flywheel_assets.defs.train import assets as train_assets


def build_definitions(data_dir: str | None = None, use_filters: bool | None = None,
                      use_ips: bool | None = None,
                      serving_diversity: float | None = None,
                      serving_popularity_balance: float | None = None) -> dg.Definitions:
    """Definitions for the flywheel whose data lives in ``data_dir`` (default:
    ``FLYWHEEL_DATA_DIR``); the switches turn curation filters and IPS off for
    experiments."""
    return dg.Definitions(
        assets=[*ingest_assets.landing_specs,
                *dg.load_assets_from_modules([ingest_assets, curate_assets, train_assets,
                                              evaluate_assets, monitor_assets])],
        asset_checks=dg.load_asset_checks_from_modules([ingest_checks, train_assets,
                                                        evaluate_assets, evaluate_checks]),
        jobs=[daily_rotation_job, retrain_job, record_alert_job],
        schedules=[daily_rotation_schedule],
        sensors=SENSORS,
        resources={"flywheel": FlywheelResource(data_dir=data_dir, use_filters=use_filters,
                                                use_ips=use_ips,
                                                serving_diversity=serving_diversity,
                                                serving_popularity_balance=serving_popularity_balance)},
    )


defs = build_definitions()
