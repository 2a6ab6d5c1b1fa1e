"""Blocking checks on ingestion: nothing lost, not too much rejected, stored rows valid."""

from collections.abc import Iterator

import dagster as dg

from flywheel_assets.core import expectations
from flywheel_assets.core.ingest import quarantine_examples
from flywheel_assets.core.landing_contract import default_contracts
from flywheel_assets.defs.check_results import recorded_result
from flywheel_assets.defs.ingest.assets import RAW_TABLES
from flywheel_assets.defs.resources import FlywheelResource

CONTRACTS = {c.stream: c for c in default_contracts()}
GX_MAX_ROWS = 50_000


def _read_and_quarantined(conn, day: str, stream: str) -> tuple[int, int]:
    """Rows read from a stream's landing files (less rows erased on a deletion request,
    which are not kept anywhere), and rows of it in quarantine."""
    return conn.execute("""
        SELECT (SELECT coalesce(sum(rows_read - rows_erased), 0) FROM raw.landing_files
                WHERE partition_date = $d AND stream = $s),
               (SELECT count(*) FROM raw.quarantined_events
                WHERE partition_date = $d AND stream = $s)""", {"d": day, "s": stream}).fetchone()


BLOCKING_CHECKS = [(asset, check) for asset in RAW_TABLES.values()
                   for check in ("rows_reconcile", "quarantine_share_below_threshold",
                                 "accepted_rows_expectations")]


def _specs(name: str, description: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, blocking=True, description=description)
            for asset in RAW_TABLES.values()]


@dg.multi_asset_check(pool="duckdb", specs=_specs(
    "rows_reconcile",
    "Rows read from the landing files = rows accepted + rows quarantined + rows erased "
    "on a deletion request, per stream."))
def rows_reconcile(context: dg.AssetCheckExecutionContext,
                   flywheel: FlywheelResource) -> Iterator[dg.AssetCheckResult]:
    day = context.partition_key
    with flywheel.warehouse() as conn:
        for stream, asset in RAW_TABLES.items():
            read, quarantined = _read_and_quarantined(conn, day, stream)
            accepted = conn.execute(f"SELECT count(*) FROM {CONTRACTS[stream].table} "
                                    "WHERE partition_date = ?", [day]).fetchone()[0]
            yield recorded_result(
                conn, day, asset, "rows_reconcile", read == accepted + quarantined,
                metadata={"rows_read_less_erased": read, "accepted": accepted,
                          "quarantined": quarantined,
                          "unaccounted": read - accepted - quarantined})


@dg.multi_asset_check(pool="duckdb", specs=_specs(
    "quarantine_share_below_threshold",
    "The share of quarantined rows stays below the threshold (FLYWHEEL settings "
    "`max_quarantine_share`); the failure names the file, the column and an example."))
def quarantine_share_below_threshold(context: dg.AssetCheckExecutionContext,
                                     flywheel: FlywheelResource) -> Iterator[dg.AssetCheckResult]:
    day = context.partition_key
    limit = flywheel.settings.max_quarantine_share
    with flywheel.warehouse() as conn:
        for stream, asset in RAW_TABLES.items():
            read, quarantined = _read_and_quarantined(conn, day, stream)
            share = quarantined / read if read else 0.0
            examples = quarantine_examples(conn, day, stream)
            description = None
            if share > limit and examples:
                e = examples[0]
                description = (f"{stream}: {share:.1%} of rows quarantined (limit {limit:.0%}); "
                               f"most common: column {e['column'] or '(whole row)'}: {e['reason']} "
                               f"— e.g. {e['file']} row {e['row']} ({e['count']} rows like it)")
            yield recorded_result(
                conn, day, asset, "quarantine_share_below_threshold", share <= limit, description,
                metadata={"quarantine_share": round(share, 5), "limit": limit,
                          "top_reasons": dg.MetadataValue.json(examples)})


@dg.multi_asset_check(pool="duckdb", specs=_specs(
    "accepted_rows_expectations",
    "Great Expectations suite generated from the landing contract, run on the stored "
    "rows: types, ranges, allowed values, unique ids, hashed user ids, ts in the day."))
def accepted_rows_expectations(context: dg.AssetCheckExecutionContext,
                               flywheel: FlywheelResource) -> Iterator[dg.AssetCheckResult]:
    day = context.partition_key
    for stream, asset in RAW_TABLES.items():
        contract = CONTRACTS[stream]
        with flywheel.warehouse() as conn:
            rows = conn.execute(f"SELECT count(*) FROM {contract.table} WHERE partition_date = ?",
                                [day]).fetchone()[0]
            # Every row already passed the contract's SQL at ingestion; GX re-validates
            # the stored rows, all of them up to a bound, a reproducible sample beyond
            # (pandas-backed GX on a million-row candidate log takes seconds per day).
            sample = (f" USING SAMPLE reservoir({GX_MAX_ROWS} ROWS) REPEATABLE (0)"
                      if rows > GX_MAX_ROWS else "")
            frame = conn.execute(f"SELECT * EXCLUDE (partition_date, source_file, source_row) "
                                 f"FROM (SELECT * FROM {contract.table} WHERE partition_date = ?)"
                                 f"{sample}", [day]).df()
        result = expectations.validate(frame, contract, day)
        with flywheel.warehouse() as conn:
            yield recorded_result(
                conn, day, asset, "accepted_rows_expectations", result.success,
                f"{len(result.failed)} expectations failed" if result.failed else None,
                metadata={"expectations_evaluated": result.evaluated,
                          "rows_validated": len(frame), "rows_stored": rows,
                          "expectations_failed": len(result.failed),
                          "failures": dg.MetadataValue.json(result.failed)})
