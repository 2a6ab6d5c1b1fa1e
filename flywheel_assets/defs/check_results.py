"""Blocking check results, recorded where the promotion gate can read them."""

import dagster as dg
import duckdb

from flywheel_assets.core import warehouse


def recorded_result(conn: duckdb.DuckDBPyConnection, day: str, asset: str, check_name: str,
                    passed: bool, description: str | None = None,
                    metadata: dict | None = None) -> dg.AssetCheckResult:
    """Keep the result in `monitor.check_results` (the gate reads it from there, whichever
    run executed the check) and return it for Dagster."""
    warehouse.record_check(conn, day, asset, check_name, passed, description)
    return dg.AssetCheckResult(asset_key=asset, check_name=check_name, passed=passed,
                               description=description, metadata=metadata or {})
