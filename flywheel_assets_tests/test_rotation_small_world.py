"""Full rotations of the product on a small simulated world, on a real DuckDB file and
Dagster: deletion and tombstones, IPS weights and switches, bots filtered."""

import dagster as dg
import pandas as pd
import pytest

from flywheel_assets import warehouse
from flywheel_assets.definitions import build_definitions
from flywheel_assets.evaluate import promotion
from flywheel_assets.ingest.pseudonymise import user_key
from flywheel_assets.settings import Settings
from flywheel_assets.simulation.config import WorldConfig
from flywheel_assets.train import model_store
from flywheel_assets_tests.helpers import turn_the_wheel

DAYS = ["2026-01-01", "2026-01-02"]
CONFIG = WorldConfig(n_users=400, n_items=300, requests_per_day=1500, pool_size=20,
                     bot_fraction=0.05, deletion_requests_per_day=3)


def _rotate(data_dir, day, instance, overrides=None):
    return turn_the_wheel(data_dir, CONFIG, [day], instance, overrides)[0]


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("rotation")
    results = turn_the_wheel(data_dir, CONFIG, DAYS)
    return data_dir, results


def _text_columns(conn):
    return conn.execute("""
        SELECT table_schema || '.' || table_name, column_name FROM information_schema.columns
        WHERE table_schema IN ('raw', 'curated', 'label', 'ml', 'monitor') AND data_type = 'VARCHAR'
    """).fetchall()


def _deleted_users(data_dir):
    frames = [pd.read_csv(data_dir / "landing" / "deletions" / f"date={d}" / "deletions.csv")
              for d in DAYS]
    return list(pd.concat(frames)["user_id"])


def test_deleted_users_are_nowhere_but_the_tombstone(rotated):
    data_dir, _ = rotated
    settings = Settings.from_env(data_dir)
    deleted = _deleted_users(data_dir)
    assert len(deleted) == 2 * CONFIG.deletion_requests_per_day
    keys = {user_key(u, settings.pseudonym_secret) for u in deleted}
    with warehouse.connect(settings.warehouse_path) as conn:
        # They were active before asking: their day-1 rows did land.
        landed = pd.read_parquet(data_dir / "landing/impressions/date=2026-01-01/part-0000.parquet")
        assert landed["user_id"].isin(deleted).any()
        hits = []
        for table, column in _text_columns(conn):
            for needle in [*keys, *deleted]:
                n = conn.execute(f'SELECT count(*) FROM {table} WHERE contains("{column}", ?)',
                                 [needle]).fetchone()[0]
                if n and table != "raw.deletion_requests":
                    hits.append((table, column, needle, n))
        assert not hits, hits
        tombstones = {r[0] for r in conn.execute("SELECT user_key FROM raw.deletion_requests").fetchall()}
        assert keys <= tombstones
        # Day 1's rows erased on day 2 are counted: the day still reconciles.
        for stream, table in (("impressions", "raw.impressions"), ("interactions", "raw.interactions")):
            read, erased = conn.execute("SELECT sum(rows_read), sum(rows_erased) FROM raw.landing_files "
                                        "WHERE partition_date = ? AND stream = ?", [DAYS[0], stream]).fetchone()
            kept = conn.execute(f"SELECT count(*) FROM {table} WHERE partition_date = ?", [DAYS[0]]).fetchone()[0]
            quarantined = conn.execute("SELECT count(*) FROM raw.quarantined_events WHERE partition_date = ? "
                                       "AND stream = ?", [DAYS[0], stream]).fetchone()[0]
            assert erased > 0 and read - erased == kept + quarantined


def test_tombstones_stop_deleted_users_coming_back(rotated):
    data_dir, _ = rotated
    settings = Settings.from_env(data_dir)
    keys = [user_key(u, settings.pseudonym_secret) for u in _deleted_users(data_dir)]
    job = build_definitions(str(data_dir)).resolve_job_def("daily_rotation_job")
    # A champion newer than the day re-run: day 2's candidate, put in service by the
    # operator if the gate kept day 1's model.
    with warehouse.connect(settings.warehouse_path) as conn:
        day2 = conn.execute("SELECT candidate_version FROM ml.model_evaluations "
                            "WHERE partition_date = ?", [DAYS[1]]).fetchone()[0]
    if model_store.champion_version(settings.models_dir) != day2:
        promotion.promote(settings, day2, "test: a champion newer than day 1", "test")
    champion = model_store.champion_version(settings.models_dir)
    assert champion == day2
    # Day 1 is re-ingested from its landing files, which still hold the users' rows.
    result = job.execute_in_process(partition_key=DAYS[0], instance=dg.DagsterInstance.ephemeral())
    assert result.success
    # Re-running an old day does not roll the champion back to that day's model.
    assert model_store.champion_version(settings.models_dir) == champion
    with warehouse.connect(settings.warehouse_path) as conn:
        placeholders = ", ".join("?" for _ in keys)
        assert conn.execute(f"SELECT count(*) FROM raw.impressions WHERE user_key IN ({placeholders})",
                            keys).fetchone()[0] == 0
        erased = conn.execute("SELECT sum(rows_erased) FROM raw.landing_files WHERE partition_date = ? "
                              "AND stream = 'impressions'", [DAYS[0]]).fetchone()[0]
        assert erased > 0
    reconcile = [e for e in result.get_asset_check_evaluations() if e.check_name == "rows_reconcile"]
    assert reconcile and all(e.passed for e in reconcile)


def test_ips_weights_follow_the_estimated_curve(rotated):
    data_dir, _ = rotated
    settings = Settings.from_env(data_dir)
    with warehouse.connect(settings.warehouse_path) as conn:
        rows = conn.execute("""
            SELECT t.position, any_value(t.weight), any_value(pb.examination),
                   bool_and(abs(t.target - t.label_grade / t.weight) < 1e-9)
            FROM ml.training_set t JOIN curated.position_bias pb
              ON pb.partition_date = t.partition_date AND pb.position = t.position
            WHERE t.partition_date = ? GROUP BY t.position ORDER BY 1""", [DAYS[1]]).fetchall()
    assert len(rows) == CONFIG.slate_size
    for _position, weight, examination, target_ok in rows:
        assert weight == pytest.approx(min(examination, 1.0))
        assert target_ok
    assert rows[0][1] == pytest.approx(1.0)


def test_switches_turn_ips_and_filters_off(tmp_path):
    _rotate(tmp_path, DAYS[0], dg.DagsterInstance.ephemeral(),
            {"training.ips": False, "curation.filters": False})
    with warehouse.connect(Settings.from_env(tmp_path).warehouse_path) as conn:
        weights = conn.execute("SELECT min(weight), max(weight) FROM ml.training_set").fetchone()
        reasons = {r[0] for r in conn.execute("SELECT DISTINCT reason FROM curated.feedback_removals").fetchall()}
    assert weights == (1.0, 1.0)
    assert reasons <= {"duplicate impression of the same request and item", "no training consent"}


def test_bots_are_filtered_with_high_precision_and_recall(rotated):
    data_dir, _ = rotated
    settings = Settings.from_env(data_dir)
    from flywheel_assets.simulation import signal_quality

    quality = signal_quality.measure(settings, CONFIG, DAYS[1])
    assert quality["bots_active"] > 5
    assert quality["bot_filter_precision"] >= 0.9
    assert quality["bot_filter_recall"] >= 0.9


def test_a_rotation_is_reproducible(tmp_path):
    """Same world, same day, two fresh data directories: the same rows are removed for
    the same reasons and the same model comes out (versions hash the training rows)."""
    outcomes = []
    for name in ("a", "b"):
        _rotate(tmp_path / name, DAYS[0], dg.DagsterInstance.ephemeral())
        with warehouse.connect(Settings.from_env(tmp_path / name).warehouse_path) as conn:
            removals = sorted(conn.execute("SELECT impression_id, reason FROM curated.feedback_removals").fetchall())
            version = conn.execute("SELECT version FROM ml.model_registry").fetchall()
        outcomes.append((removals, version))
    assert outcomes[0][0] and outcomes[0] == outcomes[1]


def test_the_gate_reads_the_days_checks_even_when_run_alone(rotated):
    """Materialising champion_model on its own must not skip a failed blocking check."""
    data_dir, _ = rotated
    settings = Settings.from_env(data_dir)
    with warehouse.connect(settings.warehouse_path) as conn:
        warehouse.record_check(conn, DAYS[1], "raw_impressions", "rows_reconcile", False,
                               "planted failure")
        conn.execute("DELETE FROM ml.promotions")
    from flywheel_assets.evaluate.assets import champion_model
    from flywheel_assets.resources import FlywheelResource

    pointer = model_store.read_champion(settings.models_dir)
    # Step back to another model than the day's candidate (whether or not it was promoted).
    versions = sorted(p.name for p in settings.models_dir.iterdir() if p.is_dir())
    model_store.set_champion(settings.models_dir, (pointer or {}).get("previous") or versions[0],
                             "test: step back", "test")
    stepped_back = model_store.champion_version(settings.models_dir)
    result = dg.materialize([champion_model], partition_key=DAYS[1],
                            resources={"flywheel": FlywheelResource(data_dir=str(data_dir))})
    assert result.success
    assert model_store.champion_version(settings.models_dir) == stepped_back
    with warehouse.connect(settings.warehouse_path) as conn:
        promoted, reasons = conn.execute("SELECT promoted, reasons FROM ml.promotions "
                                         "WHERE partition_date = ? ORDER BY decided_at DESC "
                                         "LIMIT 1", [DAYS[1]]).fetchone()
    assert not promoted and "planted failure" in reasons


def test_serving_and_evaluation_read_the_same_profile_features(rotated):
    """The same request and candidate on day 2: the world's serving path (raw user id,
    attributes from the world) and the evaluation path (the warehouse's logged pools)
    give the same `p_*` features, read from the profiles of day 1."""
    import numpy as np

    from flywheel_assets.evaluate import logged_pools
    from flywheel_assets.serve.serving import RankingPolicy, warehouse_profiles
    from flywheel_assets.simulation import truth, world
    from flywheel_assets.simulation.traffic import candidate_frame
    from flywheel_assets.train import features as feats

    data_dir, _ = rotated
    settings = Settings.from_env(data_dir)
    day = DAYS[1]
    with warehouse.connect(settings.warehouse_path) as conn:
        logged = logged_pools.load(conn, day, 500, 200, 10)
        evaluated = feats.attach_profiles(conn, logged.pools)
    with np.load(world.world_dir(data_dir) / "truth" / f"date={day}" / "requests.npz") as npz:
        req = {k: npz[k] for k in npz.files}
    index = CONFIG.day_index(day)
    cat, pop = truth.catalogue(CONFIG, index), truth.population(CONFIG, index)
    ts = pd.Series(pd.Timestamp(day, tz="UTC") + pd.to_timedelta(req["seconds"], unit="s"))
    candidates = candidate_frame(pop.users, cat.items, req["user_idx"], req["pools"], ts,
                                 req["device"])
    candidates["request_id"] = np.repeat(req["request_id"], req["pools"].shape[1])
    policy = RankingPolicy("any", None, warehouse_profiles(settings.warehouse_path),
                           settings.pseudonym_secret)
    served = policy.with_profiles(candidates)
    both = evaluated.merge(served, on=["request_id", "item_id"], suffixes=("_eval", "_serve"))
    assert len(both) > 1000
    assert both["p_user_known_eval"].mean() > 0.8 and both["p_item_known_eval"].mean() > 0.8
    for column in feats.PROFILE_FEATURES:
        assert np.allclose(both[f"{column}_eval"], both[f"{column}_serve"], equal_nan=True), column
