"""The daily cadence of the wheel: its partitions, and how stale a daily asset may get."""

import datetime as dt

import dagster as dg

from flywheel_assets.settings import Settings

_settings = Settings.from_env()

# One rotation of the wheel per UTC day; the first day comes from the settings.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=_settings.start_date.isoformat(), timezone="UTC")

# A decision and a drift report a day: the UI marks them stale after a day and a bit.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(hours=_settings.monitor.freshness_fail_hours),
    warn_window=dt.timedelta(hours=_settings.monitor.freshness_warn_hours))
