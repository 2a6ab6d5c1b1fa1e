"""Blocking checks on ingestion: nothing lost, not too much rejected, stored rows valid."""

from collections.abc import Iterator

import dagster as dg

from flywheel_assets.ingest import expectations, load
from flywheel_assets.ingest.contract import RAW_ASSETS, default_contracts
from flywheel_assets.metadata import recorded_result
from flywheel_assets.resources import FlywheelResource

CONTRACTS = {c.stream: c for c in default_contracts()}


def _specs(name: str, description: str, blocking: bool = True) -> list[dg.AssetCheckSpec]:
    # The deletion requests' checks never block: a failure holds the day's promotion (the
    # gate reads every check) but the requests read are still applied (user_erasure).
    return [dg.AssetCheckSpec(name, asset=asset, description=description,
                              blocking=blocking and asset != RAW_ASSETS["deletions"])
            for asset in RAW_ASSETS.values()]


@dg.multi_asset_check(pool="duckdb", specs=_specs(
    "rows_reconcile",
    "Rows read from the landing files = rows accepted + rows quarantined + rows erased "
    "on a deletion request, per stream."))
def rows_reconcile(context: dg.AssetCheckExecutionContext,
                   flywheel: FlywheelResource) -> Iterator[dg.AssetCheckResult]:
    day = context.partition_key
    with flywheel.warehouse() as conn:
        for stream, asset in RAW_ASSETS.items():
            read, accepted, quarantined = load.reconcile_counts(conn, day, CONTRACTS[stream])
            yield recorded_result(
                conn, day, asset, "rows_reconcile", read == accepted + quarantined,
                metadata={"rows_read_less_erased": read, "accepted": accepted,
                          "quarantined": quarantined,
                          "unaccounted": read - accepted - quarantined})


@dg.multi_asset_check(pool="duckdb", specs=_specs(
    "landing_files_read",
    "Every entry of the stream's landing day was read: none refused (a name starting "
    "with '.' or '_', a symbolic link, a folder, an unknown format, a file that cannot be "
    "read; each in `raw.refused_files` with its reason), and a required stream "
    "(`ingest.required_streams`) has rows. The failure names each entry and why. It "
    "holds the day's promotion (the gate reads it) but does not stop the run: the rest of "
    "the day was read, and the day's deletion requests must still be applied.",
    blocking=False))
def landing_files_read(context: dg.AssetCheckExecutionContext,
                       flywheel: FlywheelResource) -> Iterator[dg.AssetCheckResult]:
    day = context.partition_key
    required = set(flywheel.settings.ingest.required_streams)
    with flywheel.warehouse() as conn:
        for stream, asset in RAW_ASSETS.items():
            problem = load.unread_landing(conn, day, stream, stream in required)
            yield recorded_result(conn, day, asset, "landing_files_read", problem is None,
                                  problem, metadata={"required": stream in required})


@dg.multi_asset_check(pool="duckdb", specs=_specs(
    "quarantine_share_below_threshold",
    "The share of quarantined rows stays below the threshold (setting "
    "`ingest.max_quarantine_share`); the failure names the file, the column and an example."))
def quarantine_share_below_threshold(context: dg.AssetCheckExecutionContext,
                                     flywheel: FlywheelResource) -> Iterator[dg.AssetCheckResult]:
    day = context.partition_key
    limit = flywheel.settings.ingest.max_quarantine_share
    with flywheel.warehouse() as conn:
        for stream, asset in RAW_ASSETS.items():
            read, _, quarantined = load.reconcile_counts(conn, day, CONTRACTS[stream])
            share = quarantined / read if read else 0.0
            examples = load.quarantine_examples(conn, day, stream)
            yield recorded_result(
                conn, day, asset, "quarantine_share_below_threshold", share <= limit,
                load.quarantine_failure(stream, share, limit, examples),
                metadata={"quarantine_share": share, "limit": limit, "top_reasons": examples})


@dg.multi_asset_check(pool="duckdb", specs=_specs(
    "accepted_rows_expectations",
    "Great Expectations suite generated from the landing contract, run on the stored "
    "rows: types, ranges, allowed values, unique ids, hashed user ids, ts in the day."))
def accepted_rows_expectations(context: dg.AssetCheckExecutionContext,
                               flywheel: FlywheelResource) -> Iterator[dg.AssetCheckResult]:
    day = context.partition_key
    max_rows = flywheel.settings.ingest.gx_max_rows
    # The product's signal vocabulary decides what an accepted signal is.
    contracts = {c.stream: c for c in default_contracts(flywheel.settings.signals.vocabulary)}
    for stream, asset in RAW_ASSETS.items():
        contract = contracts[stream]
        with flywheel.warehouse() as conn:
            frame, stored = expectations.stored_rows(conn, contract, day, max_rows)
        result = expectations.validate(frame, contract, day)
        with flywheel.warehouse() as conn:
            yield recorded_result(
                conn, day, asset, "accepted_rows_expectations", result.success,
                f"{len(result.failed)} expectations failed" if result.failed else None,
                metadata={"expectations_evaluated": result.evaluated,
                          "rows_validated": len(frame), "rows_stored": stored,
                          "expectations_failed": len(result.failed),
                          "failures": result.failed})
