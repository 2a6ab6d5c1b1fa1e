"""Both code locations load with every named asset, check, job and schedule."""

from pathlib import Path

import dagster as dg
import yaml

from flywheel_assets.definitions import build_definitions
from flywheel_assets.simulation.definitions import build_world_definitions

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_ASSETS = {"raw_impressions", "raw_interactions", "quarantined_events", "raw_users",
                  "raw_items", "feedback_events", "curated_feedback", "training_set",
                  "candidate_model", "model_evaluation", "champion_model", "raw_candidates",
                  "drift_report", "flywheel_health", "labeling_queue", "human_labels",
                  "gold_set", "human_audit"}
GROUPS = {"ingest", "curate", "label", "train", "evaluate", "monitor"}


def _keys(defs: dg.Definitions) -> dict[str, object]:
    graph = defs.resolve_asset_graph()
    return {k.to_user_string(): graph.get(k) for k in graph.get_all_asset_keys()}


def test_product_location_has_every_named_part(tmp_path):
    defs = build_definitions(str(tmp_path))
    nodes = _keys(defs)
    assert PRODUCT_ASSETS <= set(nodes)
    materializable = {k: n for k, n in nodes.items() if n.is_materializable}
    assert {n.group_name for n in materializable.values()} == GROUPS
    for key, node in materializable.items():
        assert node.description and len(node.description) > 40, f"{key} lacks a docstring"
    checks = {c.to_user_string() for c in defs.resolve_asset_graph().asset_check_keys}
    for table in ("raw_impressions", "raw_interactions"):
        for check in ("rows_reconcile", "accepted_rows_expectations",
                      "quarantine_share_below_threshold"):
            assert f"{table}:{check}" in checks
    assert "training_set:training_set_is_usable" in checks
    assert "training_set:training_set_has_no_gold" in checks
    assert "model_evaluation:promotion_gate" in checks
    assert "champion_model:concentration_not_rising" in checks
    sensors = {s.name: s for s in defs.sensors}
    assert set(sensors) >= {"landing_sensor", "drift_sensor", "quality_sensor",
                            "labels_sensor", "run_failure_alert_sensor", "dead_run_sweeper"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())
    retrain = defs.resolve_job_def("retrain_job")
    assert {c.name for c in retrain.asset_layer.asset_graph.asset_check_keys} >= {
        "promotion_gate", "training_set_is_usable"}
    job = defs.resolve_job_def("daily_rotation_job")
    assert job.partitions_def is not None
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} >= PRODUCT_ASSETS
    assert defs.resolve_schedule_def("daily_rotation_schedule").cron_schedule == "0 2 * * *"


def test_world_location_and_workspace(tmp_path):
    world = _keys(build_world_definitions(str(tmp_path)))
    assert {"simulated_traffic", "oracle_evaluation"} <= {k for k, n in world.items()
                                                          if n.is_materializable}
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    modules = {e["python_module"]["module_name"] for e in workspace["load_from"]}
    assert modules == {"flywheel_assets.definitions", "flywheel_assets.simulation.definitions"}


def test_committed_instance_config_is_the_packaged_one():
    committed = ROOT / "data" / "dagster_home" / "dagster.yaml"
    config = yaml.safe_load(committed.read_text())
    assert config["telemetry"]["enabled"] is False
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert committed.resolve() == (ROOT / "flywheel_assets" / "dagster.yaml").resolve()


SNAPSHOT = Path(__file__).with_name("asset_graph.json")


def _graph_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {k.to_user_string(): {"group": graph.get(k).group_name,
                                   "deps": sorted(p.to_user_string() for p in graph.get(k).parent_keys)}
              for k in graph.get_all_asset_keys()}
    checks = sorted(c.to_user_string() for c in graph.asset_check_keys)
    return {"assets": dict(sorted(assets.items())), "checks": checks}


def test_the_asset_graph_matches_its_snapshot(tmp_path):
    """A rename, a lost dependency or a moved group shows up here, not in production.
    When the change is meant, write the printed graph to asset_graph.json."""
    import json

    current = _graph_snapshot(build_definitions(str(tmp_path)))
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, json.dumps(current, indent=1)
