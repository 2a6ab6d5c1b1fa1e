"""The rotation benchmark's floor runs exactly the steps of daily_rotation_job."""

from flywheel_assets.definitions import build_definitions
from flywheel_assets.harness import rotation_benchmark as rb
from flywheel_assets.jobs import ROTATION_GROUPS


def test_the_floor_runs_every_step_of_the_rotation_in_its_order(tmp_path):
    defs = build_definitions(str(tmp_path))
    job = defs.resolve_job_def("daily_rotation_job")
    steps = rb.rotation_steps(defs)
    assert [name for name, _, _ in steps] == [n.name for n in job.graph.nodes_in_topological_order]
    assert {stage for _, stage, _ in steps} == set(ROTATION_GROUPS)
    assert all(callable(body) for _, _, body in steps)


def test_the_benchmark_world_is_sized_from_the_impressions():
    small, large = rb.world_for(100_000), rb.world_for(10_000_000)
    assert small.requests_per_day * small.slate_size == 100_000
    assert large.requests_per_day * large.slate_size == 10_000_000
    assert large.n_users > small.n_users and large.n_items > small.n_items
    assert large.fast and not large.responsive


def test_stage_figures_add_up_by_stage():
    result = {"steps": {"landing_day": 2.0, "rows_reconcile": 0.5, "model_evaluation": 3.0},
              "groups": {"landing_day": "ingest", "rows_reconcile": "ingest",
                         "model_evaluation": "evaluate"}}
    stages = rb.by_stage(result)
    assert stages["ingest"] == 2.5 and stages["evaluate"] == 3.0 and stages["train"] == 0.0
