"""The warehouse as a lake (DuckLake: a catalog in a real PostgreSQL server, the tables
as Parquet files in an S3-compatible bucket) holds what the embedded DuckDB file holds:
the same two simulated days turned on each, table by table. Runs in the deploy environment
(`make test` runs it there: DuckLake is built for DuckDB 1.5.5 only)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flywheel_assets import warehouse
from flywheel_assets.settings import Settings
from flywheel_assets.train import model_store
from flywheel_assets_tests.helpers import turn_the_wheel
from flywheel_assets_tests.scale.conftest import lake_catalog
from flywheel_assets_tests.test_rotation_small_world import CONFIG

pytestmark = [pytest.mark.lake, pytest.mark.slow]

WORLD = replace(CONFIG, n_users=250, n_items=200, requests_per_day=800)
DAYS = ["2026-01-01", "2026-01-02"]


def test_a_lake_on_object_storage_holds_what_the_file_holds(tmp_path, postgres_server,
                                                            s3_server, monkeypatch):
    on_file, on_lake = tmp_path / "file", tmp_path / "lake"
    turn_the_wheel(on_file, WORLD, DAYS)

    for name, value in {**s3_server["env"],
                        "FLYWHEEL_WAREHOUSE_CATALOG": lake_catalog(postgres_server),
                        "FLYWHEEL_WAREHOUSE_DATA": "s3://flywheel/lake/"}.items():
        monkeypatch.setenv(name, value)
    lake = Settings.from_env(on_lake).warehouse
    assert isinstance(lake, warehouse.Lake) and lake.data_path == "s3://flywheel/lake/"
    turn_the_wheel(on_lake, WORLD, DAYS)

    # Every table, row for row (sums to 1e-9 of their column: warehouse.same_rows says why).
    with warehouse.connect(on_file / "warehouse.duckdb", read_only=True) as file, \
            warehouse.connect(lake, read_only=True) as lake_conn:
        assert warehouse.compare(file, lake_conn, {str(on_file.resolve()): "$DATA"},
                                 {str(on_lake.resolve()): "$DATA"}) == {}
        tables = warehouse.table_names(lake_conn)
        counts = {t: lake_conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("raw.impressions", "curated.user_profiles", "ml.model_registry")}
    assert len(tables) >= 30 and min(counts.values()) > 0, (tables, counts)
    # The same models, promoted the same way (their versions hash their training rows).
    assert (model_store.champion_history(Settings.from_env(on_lake).models_dir)
            == model_store.champion_history(Settings.from_env(on_file).models_dir))
    # No DuckDB file was written: the rows are Parquet objects in the bucket, a folder
    # per day of each event table.
    assert not (on_lake / "warehouse.duckdb").exists()
    keys = [o["Key"] for page in s3_server["client"].get_paginator("list_objects_v2")
            .paginate(Bucket="flywheel", Prefix="lake/") for o in page.get("Contents", [])]
    for day in DAYS:
        assert any(k.startswith(f"lake/raw/impressions/partition_date={day}/")
                   and k.endswith(".parquet") for k in keys), keys[:20]
