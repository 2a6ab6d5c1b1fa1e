import dagster as dg

from flywheel_assets.settings import Settings

# One rotation of the wheel per UTC day; the first day comes from the settings.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=Settings.from_env().start_date.isoformat(), timezone="UTC")
