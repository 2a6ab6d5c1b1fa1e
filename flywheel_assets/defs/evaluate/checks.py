"""Checks on the loop itself, beyond one rotation's gate."""

import dagster as dg

from flywheel_assets.core import loop_health
from flywheel_assets.defs.resources import FlywheelResource

RISING_ROTATIONS = 3


@dg.asset_check(asset="champion_model", blocking=False, pool="duckdb",
                description=f"Warns when the exposure Gini of the model in service rose at "
                            f"each of the last {RISING_ROTATIONS} rotations: a degenerate "
                            "feedback loop creeping past the gate one small step at a time.")
def concentration_not_rising(context: dg.AssetCheckExecutionContext,
                             flywheel: FlywheelResource) -> dg.AssetCheckResult:
    with flywheel.warehouse() as conn:
        series = loop_health.in_service_series(conn, context.partition_key,
                                                      RISING_ROTATIONS)
    rising = loop_health.concentration_rising(series, RISING_ROTATIONS)
    trend = " → ".join(f"{p['exposure_gini']:.3f}" for p in series) or "no evaluations yet"
    return dg.AssetCheckResult(
        passed=not rising, severity=dg.AssetCheckSeverity.WARN,
        description=(f"exposure Gini rose at each of the last {RISING_ROTATIONS} rotations: "
                     f"{trend}" if rising else f"exposure Gini {trend}"),
        metadata={"series": dg.MetadataValue.json(series)})
