"""Operator commands through the CLI: audited promote and rollback, the next served
slate uses the rolled-back model, a tampered model is refused."""

import datetime as dt
import os

import pytest

from flywheel_assets import warehouse
from flywheel_assets.cli import main
from flywheel_assets.serve.serving import current_policy
from flywheel_assets.settings import Settings
from flywheel_assets.simulation.config import WorldConfig
from flywheel_assets.simulation.traffic import simulate_day
from flywheel_assets.train import model_store
from flywheel_assets.train.model import train
from flywheel_assets_tests.helpers import tiny_training_rows


@pytest.fixture
def models(tmp_path):
    settings = Settings.from_env(tmp_path)
    for i, version in enumerate(["m1", "m2", "m3"]):
        model_store.save_model(settings.models_dir, version, train(tiny_training_rows(i), params={"max_iter": 5}), {"n": i})
    return settings


def _cli(settings, *args):
    return main([*args, "--data-dir", str(settings.data_dir)])


def test_promote_and_rollback_are_audited_and_serve_the_next_slate(models, capsys):
    for version in ("m1", "m2", "m3"):
        assert _cli(models, "promote", "--version", version, "--reason", f"try {version}") == 0
    assert _cli(models, "rollback", "--reason", "m3 hurts saves") == 0
    assert model_store.champion_version(models.models_dir) == "m2"
    # The next day of traffic is served by whatever the pointer says: m2.
    world = WorldConfig(n_users=200, n_items=150, requests_per_day=300, pool_size=20)
    traffic = simulate_day(world, dt.date(2026, 1, 1), current_policy(models))
    assert set(traffic.impressions["policy_version"]) == {"m2"}
    assert _cli(models, "rollback", "--reason", "m2 too") == 0
    assert model_store.champion_version(models.models_dir) == "m1"
    assert _cli(models, "rollback", "--reason", "again") == 2  # nothing before m1
    assert "nothing to roll back to" in capsys.readouterr().err
    with warehouse.connect(models.warehouse_path) as conn:
        audit = conn.execute("SELECT previous_champion, new_champion, actor, reasons "
                             "FROM ml.promotions ORDER BY decided_at").fetchall()
    assert [(a[0], a[1]) for a in audit] == [(None, "m1"), ("m1", "m2"), ("m2", "m3"),
                                             ("m3", "m2"), ("m2", "m1")]
    assert all(a[2].startswith("operator:") for a in audit)
    assert "m3 hurts saves" in audit[3][3]


def test_a_tampered_or_unknown_model_is_never_put_in_service(models, capsys):
    assert _cli(models, "promote", "--version", "m1", "--reason", "baseline") == 0
    import skops.io as sio

    (models.models_dir / "evil").mkdir()
    sio.dump({"hook": os.system}, models.models_dir / "evil" / "model.skops")
    assert _cli(models, "promote", "--version", "evil", "--reason", "trust me") == 2
    assert "is not made of: ['posix.system']" in capsys.readouterr().err
    assert _cli(models, "promote", "--version", "nope", "--reason", "typo") == 2
    assert model_store.champion_version(models.models_dir) == "m1"
