"""Checks on the loop itself, beyond one rotation's gate."""

import dagster as dg

from flywheel_assets.metadata import readable
from flywheel_assets.monitor import loop_health
from flywheel_assets.resources import FlywheelResource


@dg.asset_check(asset="champion_model", blocking=False, pool="duckdb",
                description="Warns when the exposure Gini of the model in service rose at "
                            "each of the last `monitor.rising_rotations` rotations (3): a "
                            "degenerate feedback loop "
                            "creeping past the gate one small step at a time.")
def concentration_not_rising(context: dg.AssetCheckExecutionContext,
                             flywheel: FlywheelResource) -> dg.AssetCheckResult:
    rotations = flywheel.settings.monitor.rising_rotations
    with flywheel.warehouse() as conn:
        series = loop_health.in_service_series(conn, context.partition_key, rotations)
    rising = loop_health.concentration_rising(series, rotations)
    trend = " → ".join(f"{p['exposure_gini']:.3f}" for p in series) or "no evaluations yet"
    return dg.AssetCheckResult(
        passed=not rising, severity=dg.AssetCheckSeverity.WARN,
        description=(f"exposure Gini rose at each of the last {rotations} rotations: "
                     f"{trend}" if rising else f"exposure Gini {trend}"),
        metadata=readable(series=series))
