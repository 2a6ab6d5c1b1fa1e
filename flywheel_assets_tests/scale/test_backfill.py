"""Partitions in parallel, on a lake: the days a serial run of the wheel turned on the
embedded DuckDB file, backfilled again on a lake (DuckLake: its catalog in a real
PostgreSQL server, its tables as Parquet files in an S3-compatible bucket) with two
stages at once (`flywheel backfill`'s order: a day's ingest beside the day before's
rest). Every table equals the serial run's, and the same models are promoted. Runs in
the deploy environment (`make test` runs it there: DuckLake is built for DuckDB 1.5.5
only)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from flywheel_assets import backfill, warehouse
from flywheel_assets.settings import Settings
from flywheel_assets.train import model_store
from flywheel_assets_tests.helpers import turn_the_wheel
from flywheel_assets_tests.test_rotation_small_world import CONFIG

pytestmark = [pytest.mark.lake, pytest.mark.slow]

WORLD = replace(CONFIG, n_users=250, n_items=200, requests_per_day=800)
DAYS = ["2026-01-01", "2026-01-02"]


def test_a_parallel_backfill_on_a_lake_gives_the_serial_runs_tables(tmp_path, postgres_server,
                                                                    s3_server, monkeypatch):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    turn_the_wheel(serial, WORLD, DAYS)  # lands each day, served by the day before's champion
    shutil.copytree(serial / "landing", parallel / "landing")

    lake_env = {**s3_server["env"], "FLYWHEEL_WAREHOUSE_CATALOG": postgres_server.ducklake_catalog(),
                "FLYWHEEL_WAREHOUSE_DATA": "s3://flywheel/lake/",
                "DAGSTER_HOME": str(parallel / "dagster_home")}
    (parallel / "dagster_home").mkdir()
    # the product's instance, with two steps let into the duckdb pool
    (parallel / "dagster_home" / "dagster.yaml").write_text(backfill.instance_config(2))
    outcome = backfill.run(DAYS, 2, backfill.rotate_command(str(parallel)), env=lake_env,
                           log=lambda line: None)
    assert outcome["failures"] == [] and outcome["done"] == 3 * len(DAYS), outcome
    # Two partitions at once: each next day's ingest ran while the day before's rest did.
    spans = outcome["spans"]
    assert outcome["most_at_once"] == 2
    overlapped = [day for before, day in zip(DAYS, DAYS[1:])
                  if spans[f"{day} ingest"][0] < spans[f"{before} rest"][1]]
    assert overlapped == DAYS[1:], spans

    for name, value in lake_env.items():
        monkeypatch.setenv(name, value)
    lake = Settings.from_env(parallel).warehouse
    assert isinstance(lake, warehouse.Lake) and lake.data_path == "s3://flywheel/lake/"
    # Every table, row for row (sums to 1e-9 of their column: warehouse.same_rows says why).
    with warehouse.connect(serial / "warehouse.duckdb", read_only=True) as file, \
            warehouse.connect(lake, read_only=True) as lake_conn:
        assert warehouse.compare(file, lake_conn, {str(serial.resolve()): "$DATA"},
                                 {str(parallel.resolve()): "$DATA"}) == {}
        tables = warehouse.table_names(lake_conn)
        counts = {t: lake_conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("raw.impressions", "curated.user_profiles", "ml.model_registry")}
    assert len(tables) >= 30 and min(counts.values()) > 0, (tables, counts)
    assert counts["ml.model_registry"] == len(DAYS)  # a candidate a day, the same ones
    # The same champion in service after the same decisions (the gate's decisions and
    # the promotions' audit are among the tables compared above).
    assert (model_store.champion_history(Settings.from_env(parallel).models_dir)
            == model_store.champion_history(Settings.from_env(serial).models_dir))
    assert (model_store.champion_version(Settings.from_env(parallel).models_dir)
            == model_store.champion_version(Settings.from_env(serial).models_dir))
    # No DuckDB file was written: the rows are Parquet objects in the bucket, a folder
    # per day of each event table.
    assert not (parallel / "warehouse.duckdb").exists()
    keys = [o["Key"] for page in s3_server["client"].get_paginator("list_objects_v2")
            .paginate(Bucket="flywheel", Prefix="lake/") for o in page.get("Contents", [])]
    for day in DAYS:
        assert any(k.startswith(f"lake/raw/impressions/partition_date={day}/")
                   and k.endswith(".parquet") for k in keys), keys[:20]

