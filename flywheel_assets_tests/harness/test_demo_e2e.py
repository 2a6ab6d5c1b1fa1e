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
from flywheel_assets.evaluate import promotion

pytestmark = pytest.mark.slow

DAY_KEYS = {"date", "impressions", "interactions", "accepted", "quarantined",
            "candidate_version", "promoted", "champion_version", "oracle_ndcg_at_10",
            "bot_filter_precision", "bot_filter_recall", "position_bias_max_rel_error",
            "effective_sample_size", "exposure_gini", "catalog_coverage",
            "ope_rel_error_snips", "ope_rel_error_dr"}


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
        assert 0 < day["catalog_coverage"] <= 1 and 0 <= day["exposure_gini"] < 1
        # The oracle judged the product's off-policy estimate of the day's candidate.
        assert 0 <= day["ope_rel_error_dr"] < 1 and 0 <= day["ope_rel_error_snips"] < 1
        # Rows of users who asked for erasure are neither accepted nor quarantined.
        assert day["accepted"] + day["quarantined"] <= day["impressions"] + day["interactions"]
        assert day["accepted"] + day["quarantined"] + day["erased"] == \
            day["impressions"] + day["interactions"]
    # The first candidate had to beat the incumbent (the popularity policy that served
    # day 1), off-policy and with confidence, on day 1's logs and again on day 2's
    # (gate.rule = confirmed).
    first, second = summary["days"][:2]
    assert not first["promoted"] and "incumbent" in " ".join(first["decision"]["reasons"])
    assert first["decision"]["reasons"][0].startswith(promotion.AWAITS)
    assert second["promoted"] and second["champion_version"] == first["candidate_version"]
    assert second["gate_decision"]["promoted_version"] == first["candidate_version"]
    # The oracle's view of each decision: the estimate beside the true difference.
    tests = summary["decisions"]
    assert {(t["date"], t["contender"]) for t in tests} >= {
        (first["date"], "candidate"), (second["date"], "pending")}
    confirmed = next(t for t in tests if t["date"] == second["date"] and t["contender"] == "pending")
    assert confirmed["version"] == first["candidate_version"]
    assert confirmed["ci_low"] > 0 and confirmed["true_difference"] > 0
    png = demo_dir / "reports" / "demo_quality.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stdout = (demo_dir / "demo_stdout.txt").read_text()
    assert "wall time:" in stdout.splitlines()[-1]


def test_the_wheel_improves_on_the_popularity_policy(demo_dir):
    days = json.loads((demo_dir / "reports" / "demo_summary.json").read_text())["days"]
    assert days[2]["oracle_ndcg_at_10"] > days[0]["popularity_oracle_ndcg_at_10"]
    # Day 3's traffic was served by the model promoted on day 2 (the loop is closed).
    import pandas as pd
    served = pd.read_parquet(demo_dir / "landing/impressions/date=2026-01-03/part-0000.parquet",
                             columns=["policy_version"])
    assert set(served["policy_version"]) == {days[1]["champion_version"]}


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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_ui_shows_lineage_and_runs_of_the_demo(demo_dir):
    """`make ui`'s webserver on the demo's instance: both code locations, lineage from
    landing files to the champion and on into the world, and the demo's runs."""
    import signal
    import time
    import urllib.request

    root = Path(__file__).resolve().parents[2]
    port = _free_port()
    env = {**os.environ, "FLYWHEEL_DATA_DIR": str(demo_dir),
           "DAGSTER_HOME": str(demo_dir / "dagster_home")}
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml",
         "-h", "127.0.0.1", "-p", str(port)], cwd=root, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "webserver did not start"
                assert server.poll() is None, "webserver exited"
                time.sleep(1)
        query = ("{ assetNodes { assetKey { path } groupName dependencyKeys { path } "
                 "repository { location { name } } } "
                 "runsOrError { ... on Runs { results { jobName } } } }")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"})
        data = json.loads(urllib.request.urlopen(request, timeout=60).read())["data"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    nodes = {n["assetKey"]["path"][0]: n for n in data["assetNodes"]}
    deps = {k: {d["path"][0] for d in n["dependencyKeys"]} for k, n in nodes.items()}
    locations = {n["repository"]["location"]["name"] for n in nodes.values()}
    assert locations == {"flywheel", "world"}
    # Walk upstream from the champion: the lineage reaches the landing files.
    seen, frontier = set(), {"champion_model"}
    while frontier:
        key = frontier.pop()
        seen.add(key)
        frontier |= deps.get(key, set()) - seen
    assert {"landing_impressions", "raw_impressions", "curated_feedback", "training_set",
            "candidate_model", "model_evaluation"} <= seen
    assert "champion_model" in deps["simulated_traffic"]
    jobs = [r["jobName"] for r in data["runsOrError"]["results"]]
    assert jobs.count("daily_rotation_job") == 3


def test_the_carousel_profile_turns_on_required_columns_only(tmp_path):
    """`flywheel demo --profile carousel`: a product with anonymous requests, clicks only
    and a Thompson-sampling logger, through the console script and real Dagster runs;
    every day the oracle's true values sit beside the product's estimates."""
    data_dir = tmp_path / "carousel"
    cli = Path(sys.executable).with_name("flywheel")
    env = {**os.environ, "FLYWHEEL_DATA_DIR": str(data_dir)}
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.run([str(cli), "demo", "--profile", "carousel", "--days", "2",
                           "--requests-per-day", "4000", "--quiet"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((data_dir / "reports" / "demo_summary.json").read_text())
    import pandas as pd
    landed = pd.read_csv(data_dir / "landing/impressions/date=2026-01-01/impressions.csv")
    assert set(landed.columns) == {"impression_id", "request_id", "ts", "item_id", "position",
                                   "propensity", "policy_version"}
    assert landed["propensity"].between(0, 1, inclusive="right").all()
    assert summary["days"][0]["served_by"] == "thompson-sampling"  # day 1: the product's own
    for day in summary["days"]:
        assert day["quarantined"] == 0 and day["rotation_succeeded"]
        # The logs' own mean clicks per request is the logging policy's true value (on
        # policy; only sampling noise), and a trusted off-policy estimate is close to it.
        assert day["logging_rel_error"] < 0.1
        if day["uniform_trusted"]:
            assert day["uniform_rel_error_dr"] < 0.15
        assert day["truly_better"] in (True, False)
    assert "gate vs oracle" in proc.stdout and "uniform-random policy" in proc.stdout
