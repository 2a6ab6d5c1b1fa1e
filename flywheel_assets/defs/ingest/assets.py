"""Ingest: landing files → typed raw tables, with every rejected row in quarantine."""

import dagster as dg

from flywheel_assets.core import erasure, ingest
from flywheel_assets.core.landing_contract import default_contracts
from flywheel_assets.core.landing_reader import LandingFileError
from flywheel_assets.defs.partitions import daily_partitions
from flywheel_assets.defs.resources import FlywheelResource

LANDING_STREAMS = ("impressions", "candidates", "interactions", "users", "items", "deletions")

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

RAW_TABLES = {"impressions": "raw_impressions", "candidates": "raw_candidates",
              "interactions": "raw_interactions",
              "users": "raw_users", "items": "raw_items",
              "deletions": "deletion_requests"}


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
    day = context.partition_key
    try:
        with flywheel.warehouse() as conn:
            reports = ingest.ingest_partition(conn, s.landing_dir, day, default_contracts(),
                                              s.pseudonym_secret, s.required_streams)
    except (ingest.LandingIncomplete, LandingFileError) as exc:
        raise dg.Failure(description=str(exc)) from exc
    for stream, asset in RAW_TABLES.items():
        r = reports[stream]
        yield dg.MaterializeResult(asset_key=asset, metadata={
            "dagster/row_count": r.accepted,
            "rows_read": r.rows_read,
            "rows_quarantined": r.quarantined,
            "rows_erased": r.erased,
            "quarantine_share": round(r.quarantine_share, 5),
            "files": dg.MetadataValue.json(r.files),
        })
    total_q = sum(r.quarantined for r in reports.values())
    lines = ["| stream | read | accepted | quarantined | erased |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {r.rows_read} | {r.accepted} | {r.quarantined} | {r.erased} |"
              for k, r in reports.items()]
    reasons = {f"{k}.{reason}": n for k, r in reports.items() for reason, n in r.reasons.items()}
    yield dg.MaterializeResult(asset_key="quarantined_events", metadata={
        "dagster/row_count": total_q,
        "by_stream": dg.MetadataValue.md("\n".join(lines)),
        "reasons": dg.MetadataValue.json(reasons),
    })


@dg.asset(group_name="ingest", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=list(RAW_TABLES.values()))
def user_erasure(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """Every user with a deletion request, erased from every warehouse table and every
    partition: raw, curated and training tables, the quarantine's records, and the
    interactions on their impressions. Only the keyed hash stays, in
    `raw.deletion_requests`, as the tombstone that stops re-ingestion. Models trained
    before the request are not retrained by this asset; every later training set
    excludes the user."""
    with flywheel.warehouse() as conn:
        erased = erasure.erase_deleted_users(conn)
        tombstones = erasure.tombstone_count(conn)
    return dg.MaterializeResult(metadata={
        "tombstones": tombstones, "rows_erased": sum(erased.values()),
        "rows_erased_by_table": dg.MetadataValue.json(erased)})
