"""Dagster-side helpers every stage uses: metadata a person can read, and blocking check
results recorded where the promotion gate can read them."""

import dagster as dg
import duckdb

from flywheel_assets import warehouse
from flywheel_assets.reporting import inert, rounded


def readable(**values) -> dict:
    """Materialization metadata with floats rounded for the UI (4 significant digits;
    `reporting.rounded`) and dicts and lists shown as JSON. A value a sensor reads at
    full precision is passed already wrapped (``dg.MetadataValue.float``) and kept."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dg.MetadataValue):
            out[key] = value
        elif isinstance(value, (dict, list, tuple)):
            out[key] = dg.MetadataValue.json(rounded(value))
        else:
            out[key] = rounded(value)
    return out


def bullets(lines: list[str]) -> dg.MetadataValue:
    """Reasons as a markdown list; each line `inert` (they may quote a file's name)."""
    return dg.MetadataValue.md("\n".join(f"- {inert(line)}" for line in lines))


def recorded_result(conn: duckdb.DuckDBPyConnection, day: str, asset: str, check_name: str,
                    passed: bool, description: str | None = None,
                    metadata: dict | None = None,
                    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
                    ) -> dg.AssetCheckResult:
    """Keep the result in `monitor.check_results` (the gate reads it from there, whichever
    run executed the check) and return it for Dagster."""
    warehouse.record_check(conn, day, asset, check_name, passed, description)
    return dg.AssetCheckResult(asset_key=asset, check_name=check_name, passed=passed,
                               description=description, metadata=readable(**(metadata or {})),
                               severity=severity)
