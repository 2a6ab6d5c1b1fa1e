"""The README's demo, for real: `flywheel demo --days 3` in a temporary data directory,
through the installed console script, a real Dagster instance and a DuckDB file."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from flywheel_assets.definitions import build_definitions

DAY_KEYS = {"date", "impressions", "interactions", "accepted", "quarantined",
            "candidate_version", "promoted", "champion_version", "oracle_ndcg_at_10"}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    cli = Path(sys.executable).with_name("flywheel")
    env = {**os.environ, "FLYWHEEL_DATA_DIR": str(data_dir)}
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.run([str(cli), "demo", "--days", "3", "--quiet"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (data_dir / "demo_stdout.txt").write_text(proc.stdout)
    return data_dir


def test_demo_writes_its_record_and_chart(demo_dir):
    summary = json.loads((demo_dir / "reports" / "demo_summary.json").read_text())
    assert len(summary["days"]) == 3
    for day in summary["days"]:
        assert DAY_KEYS <= set(day)
        assert day["impressions"] > 0 and day["accepted"] > 0
        assert day["accepted"] + day["quarantined"] == day["impressions"] + day["interactions"]
    assert summary["days"][0]["promoted"], "the first candidate is promoted"
    png = demo_dir / "reports" / "demo_quality.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stdout = (demo_dir / "demo_stdout.txt").read_text()
    assert "wall time:" in stdout.splitlines()[-1]


def test_the_wheel_improves_on_the_popularity_policy(demo_dir):
    days = json.loads((demo_dir / "reports" / "demo_summary.json").read_text())["days"]
    assert days[2]["oracle_ndcg_at_10"] > days[0]["popularity_oracle_ndcg_at_10"]
    # Day 2's traffic was served by the model promoted on day 1 (the loop is closed).
    import pandas as pd
    served = pd.read_parquet(demo_dir / "landing/impressions/date=2026-01-02/part-0000.parquet",
                             columns=["policy_version"])
    assert set(served["policy_version"]) == {days[0]["champion_version"]}


def test_runs_are_in_the_instance_the_ui_reads(demo_dir):
    with dg.DagsterInstance.from_config(str(demo_dir / "dagster_home")) as instance:
        jobs = [r.job_name for r in instance.get_runs()]
        assert jobs.count("daily_rotation_job") == 3
        assert jobs.count("simulated_traffic_job") == 3
        assert jobs.count("oracle_evaluation_job") == 3
        event = instance.get_latest_materialization_event(dg.AssetKey("champion_model"))
        assert event.asset_materialization.metadata["champion_version"].value.startswith("m2026")


def test_the_product_runs_without_the_world(demo_dir, tmp_path):
    """Move the world's hidden truth away: the product's rotation still succeeds."""
    hidden = tmp_path / "world-elsewhere"
    shutil.move(str(demo_dir / "world"), hidden)
    try:
        defs = build_definitions(str(demo_dir))
        result = defs.resolve_job_def("daily_rotation_job").execute_in_process(
            partition_key="2026-01-03", instance=dg.DagsterInstance.ephemeral())
        assert result.success
    finally:
        shutil.move(str(hidden), demo_dir / "world")
