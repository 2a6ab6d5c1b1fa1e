"""A column named like a contract field but for case (`Device` for `device`): not read
as the field (the contract reads names exactly), its values kept in `extras`, and the
product says so: a warning in the run's log and the asset's metadata. On a real DuckDB
file through Dagster."""

import json
import logging

import dagster as dg

from flywheel_assets.ingest import assets as ingest_assets
from flywheel_assets.resources import FlywheelResource
from flywheel_assets_tests.ingest.test_ingest import (DAY, GOOD_PARQUET, INTERACTIONS, _imp,
                                                      _query, _write_day)


def test_a_column_named_like_a_field_but_for_case_is_reported_and_kept(tmp_path):
    _write_day(tmp_path / "landing", GOOD_PARQUET, [], INTERACTIONS)
    rows = [{**{k: v for k, v in _imp(i).items() if k != "device"}, "Device": "tv"}
            for i in (700, 701)]
    # And a row whose other field is JSON DuckDB refuses (a lone surrogate escape): its
    # names are not looked at, and the day goes on.
    odd = json.dumps({**_imp(702), "note": "\ud800"})
    (tmp_path / "landing" / "impressions" / f"date={DAY}" / "part-7.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + odd + "\n")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([ingest_assets.landing_day], partition_key=DAY, instance=instance,
                            resources={"flywheel": FlywheelResource(data_dir=str(tmp_path))})
    stored = _query(tmp_path, "SELECT device, extras FROM raw.impressions WHERE impression_id "
                              "IN ('i700', 'i701')")
    assert [(d, json.loads(e)) for d, e in stored] == [(None, {"Device": "tv"})] * 2
    metadata = next(m.metadata for m in result.asset_materializations_for_node("landing_day")
                    if m.asset_key.to_user_string() == "raw_impressions")
    assert metadata["columns_not_read"].value == {"Device": "device"}
    warnings = [e.user_message for e in instance.all_logs(result.run_id)
                if e.level == logging.WARNING]
    assert any("impressions: column 'Device' is not read as 'device' (the names differ only "
               "by case or punctuation; the contract reads names exactly): its values are "
               "kept in extras" in w for w in warnings)
    assert _query(tmp_path, "SELECT count(*) FROM raw.impressions WHERE impression_id = 'i702'") \
        == [(1,)]
    # Streams whose names match report nothing.
    other = next(m.metadata for m in result.asset_materializations_for_node("landing_day")
                 if m.asset_key.to_user_string() == "raw_interactions")
    assert other["columns_not_read"].value == {}
