"""Ingest: landing files → typed raw tables, with every rejected row in quarantine."""

import dagster as dg

from flywheel_assets import storage
from flywheel_assets.ingest import erasure, load
from flywheel_assets.ingest.contract import LANDING_STREAMS, RAW_ASSETS, default_contracts
from flywheel_assets.ingest.reader import LandingFileError
from flywheel_assets.metadata import readable
from flywheel_assets.partitions import daily_partitions
from flywheel_assets.resources import FlywheelResource

CONTRACTS = {c.stream: c for c in default_contracts()}

landing_specs = [
    dg.AssetSpec(
        f"landing_{stream}", group_name="ingest", partitions_def=daily_partitions,
        kinds={"file"},
        description=f"Landing files of the `{stream}` stream: "
                    f"`landing/{stream}/date=YYYY-MM-DD/` (Parquet, JSON Lines or CSV, plain "
                    "or gzip), complete when `_SUCCESS` is present. Written by the product "
                    "(or the simulated world), outside this pipeline.")
    for stream in LANDING_STREAMS
]


@dg.multi_asset(
    specs=[
        dg.AssetSpec("raw_impressions", deps=["landing_impressions"], kinds={"duckdb"},
                     description="Accepted impressions of the day (`raw.impressions`), typed, "
                                 "user ids replaced by a keyed hash (`user_key`)."),
        dg.AssetSpec("raw_candidates", deps=["landing_candidates"], kinds={"duckdb"},
                     description="Each request's candidate pool (`raw.candidates`) with the "
                                 "probability the logging policy shows each candidate: what "
                                 "off-policy evaluation needs. Optional; empty when the "
                                 "product does not log pools."),
        dg.AssetSpec("raw_interactions", deps=["landing_interactions"], kinds={"duckdb"},
                     description="Accepted feedback events of the day (`raw.interactions`)."),
        dg.AssetSpec("raw_users", deps=["landing_users"], kinds={"duckdb"},
                     description="The day's users snapshot (`raw.users`), pseudonymised, "
                                 "with the training-consent flag."),
        dg.AssetSpec("raw_items", deps=["landing_items"], kinds={"duckdb"},
                     description="The day's catalogue snapshot (`raw.items`) with content "
                                 "features."),
        dg.AssetSpec("deletion_requests", deps=["landing_deletions"], kinds={"duckdb"},
                     description="Erasure requests (`raw.deletion_requests`): keyed hashes of "
                                 "users whose data must go. They are the tombstones: those "
                                 "users' rows are erased everywhere and never ingested again."),
        dg.AssetSpec("quarantined_events", deps=[f"landing_{s}" for s in LANDING_STREAMS],
                     kinds={"duckdb"},
                     description="Every rejected landing row of the day "
                                 "(`raw.quarantined_events`): file, line or row, column, "
                                 "reason and the record. Nothing is dropped."),
    ],
    group_name="ingest",
    partitions_def=daily_partitions,
    pool="duckdb",
    can_subset=False,
)
def landing_day(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """Read one complete landing day, validate every row against the landing contract,
    and write accepted rows and quarantined rows in a single transaction."""
    s = flywheel.settings
    if s.uses_development_secret:
        context.log.warning(s.DEVELOPMENT_SECRET_WARNING)
    landing_dir = None
    try:
        with storage.landing_day_copy(s.landing, context.partition_key,
                                      s.data_dir / "tmp") as landing_dir, \
                flywheel.warehouse() as conn:
            reports = load.ingest_partition(conn, landing_dir, context.partition_key,
                                            default_contracts(s.signals.vocabulary),
                                            s.pseudonym_secret, s.ingest.required_streams,
                                            s.ingest.keep_extra_columns,
                                            s.ingest.identifier_columns,
                                            s.pseudonym_previous_secrets)
    except (load.LandingIncomplete, LandingFileError) as exc:
        # A remote landing zone is read from a copy: the message names the store's files.
        raise dg.Failure(description=s.landing.named(str(exc), landing_dir)) from exc
    for stream, asset in RAW_ASSETS.items():
        r = reports[stream]
        kept = CONTRACTS[stream].keeps_extras and s.ingest.keep_extra_columns
        for column, name in r.lookalike_columns.items():
            context.log.warning(
                f"{stream}: column {column!r} is not read as {name!r} (the names differ only "
                "by case or punctuation; the contract reads names exactly): its values are "
                + ("kept in extras" if kept else "not stored") + ". Rename it at the source.")
        yield dg.MaterializeResult(asset_key=asset, metadata=readable(**{
            "dagster/row_count": r.accepted, "rows_read": r.rows_read,
            "rows_quarantined": r.quarantined, "rows_erased": r.erased,
            "quarantine_share": r.quarantine_share, "files": r.files,
            "entries_refused": r.refused, "columns_not_read": r.lookalike_columns}))
    yield dg.MaterializeResult(asset_key="quarantined_events", metadata=readable(**{
        "dagster/row_count": sum(r.quarantined for r in reports.values()),
        "by_stream": dg.MetadataValue.md(load.summary_markdown(reports)),
        "reasons": load.quarantine_reasons(reports)}))


@dg.asset(group_name="ingest", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=[RAW_ASSETS["deletions"]])
def user_erasure(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """Every user with a deletion request, erased from every warehouse table and every
    partition: raw, curated and training tables, the quarantine's records, and the
    interactions on their impressions. Only the keyed hash stays, in
    `raw.deletion_requests`, as the tombstone that stops re-ingestion. Models trained
    before the request are not retrained by this asset; every later training set
    excludes the user.

    It follows the deletion requests only (written in the same step as the day's other
    raw tables, which already leave out tombstoned users), and their checks never
    block: a day whose impressions fail a blocking check still has its requests
    applied."""
    with flywheel.warehouse() as conn:
        erased = erasure.erase_deleted_users(conn)
        tombstones = erasure.tombstone_count(conn)
    return dg.MaterializeResult(metadata=readable(
        tombstones=tombstones, rows_erased=sum(erased.values()), rows_erased_by_table=erased))
