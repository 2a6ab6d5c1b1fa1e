"""The simulated world: deterministic for a seed, landing contract respected,
scenarios doing what they say."""

import datetime as dt
import gzip
import json

import numpy as np
import pandas as pd
import pytest

from flywheel_assets.serve.serving import popularity_policy
from flywheel_assets.simulation import truth, world
from flywheel_assets.simulation.config import Scenario, WorldConfig
from flywheel_assets.simulation.traffic import simulate_day

DAY = dt.date(2026, 1, 1)


def _landed_frames(data_dir):
    landing = data_dir / "landing"
    return {
        "impressions": pd.read_parquet(landing / "impressions/date=2026-01-01/part-0000.parquet"),
        "interactions": pd.read_json(landing / "interactions/date=2026-01-01/part-0000.jsonl.gz",
                                     lines=True, dtype=False),
        "users": pd.read_csv(landing / "users/date=2026-01-01/users.csv"),
        "items": pd.read_csv(landing / "items/date=2026-01-01/items.csv"),
    }


def test_same_seed_same_world_other_seed_other_world(tmp_path, small_world):
    runs = {}
    for name, cfg in (("a", small_world), ("b", small_world), ("c", small_world.replace(seed=8))):
        world.run_day(tmp_path / name, tmp_path / name / "landing", cfg, "2026-01-01",
                      popularity_policy())
        runs[name] = _landed_frames(tmp_path / name)
    for stream in runs["a"]:
        pd.testing.assert_frame_equal(runs["a"][stream], runs["b"][stream])
    assert not runs["a"]["impressions"]["item_id"].equals(runs["c"]["impressions"]["item_id"])
    truth_a = pd.read_parquet(tmp_path / "a/world/truth/date=2026-01-01/users.parquet")
    truth_b = pd.read_parquet(tmp_path / "b/world/truth/date=2026-01-01/users.parquet")
    pd.testing.assert_frame_equal(truth_a, truth_b)


def test_landing_layout_and_contract(landed_day, small_world):
    for stream in ("impressions", "interactions", "users", "items"):
        assert (landed_day / "landing" / stream / "date=2026-01-01" / "_SUCCESS").exists()
    frames = _landed_frames(landed_day)
    imp = frames["impressions"]
    assert len(imp) >= small_world.requests_per_day * small_world.slate_size
    assert imp["position"].between(1, small_world.slate_size).all()
    assert ((imp["propensity"] > 0) & (imp["propensity"] <= 1)).all()
    assert (imp["policy_version"] == "popularity").all()
    assert set(frames["interactions"]["signal"]) <= {"skip", "partial", "complete", "save",
                                                     "thumbs_up", "thumbs_down"}
    # Hidden truth stays in world/, never in the landing zone.
    assert not any("taste" in c or "quality" in c or "bot" in c
                   for f in frames.values() for c in f.columns)
    assert (landed_day / "world" / "truth" / "date=2026-01-01" / "users.parquet").exists()


def test_position_bias_shapes_the_outcomes(small_world):
    traffic = simulate_day(small_world.replace(requests_per_day=6000), DAY, popularity_policy())
    imp = traffic.impressions
    engaged = set(traffic.interactions["impression_id"])
    rate = imp.assign(e=imp["impression_id"].isin(engaged)).groupby("position")["e"].mean()
    assert rate[1] > 2 * rate[10]


def test_bots_are_regular_and_targeted(small_world):
    cfg = small_world.replace(bot_fraction=0.05)
    traffic = simulate_day(cfg, DAY, popularity_policy())
    imp = traffic.impressions.drop_duplicates("request_id")
    bots = set(traffic.bot_user_ids)
    gaps = imp.sort_values("ts").groupby("user_id")["ts"].apply(
        lambda s: s.diff().dt.total_seconds().dropna().std() / max(s.diff().dt.total_seconds().dropna().mean(), 1e-9))
    bot_cv = gaps[gaps.index.isin(bots)].dropna()
    human_cv = gaps[~gaps.index.isin(bots)].dropna()
    assert len(bot_cv) and bot_cv.median() < 0.05 < human_cv.median()


def test_scenarios_change_the_world(small_world):
    drift = small_world.replace(scenarios=(Scenario.parse("taste_drift@2"),))
    before = truth.population(drift, 1).taste
    after = truth.population(drift, 2).taste
    assert not np.allclose(before, after)
    drop = small_world.replace(scenarios=(Scenario.parse("catalog_drop@2"),))
    assert (len(truth.catalogue(drop, 2).items) - len(truth.catalogue(drop, 1).items)
            == drop.catalog_drop_size + drop.new_items_per_day)
    attack = small_world.replace(scenarios=(Scenario.parse("bot_attack@1"),), bot_fraction=0.05)
    calm = simulate_day(small_world.replace(bot_fraction=0.05), DAY, popularity_policy())
    loud = simulate_day(attack, DAY, popularity_policy())
    share = lambda t: t.impressions["user_id"].isin(t.bot_user_ids).mean()
    assert share(loud) > 2 * share(calm)


def test_plays_feed_tomorrows_popularity(tmp_path, small_world):
    """Exposure feedback: what was played today is more popular (and so retrieved more)
    tomorrow; with the feedback off, popularity never moves."""
    for day in ("2026-01-01", "2026-01-02"):
        world.run_day(tmp_path, tmp_path / "landing", small_world, day, popularity_policy())
    truth_dir = tmp_path / "world" / "truth"
    day1 = pd.read_parquet(truth_dir / "date=2026-01-01" / "items.parquet")
    day2 = pd.read_parquet(truth_dir / "date=2026-01-02" / "items.parquet")
    assert day1["plays"].sum() > 0
    # Yesterday's plays count in full; the items snapshot the product lands agrees.
    grown = day2["popularity"].to_numpy()[: len(day1)] - day1["popularity"].to_numpy()
    assert np.array_equal(grown, np.round(small_world.play_feedback * day1["plays"].to_numpy()))
    landed = pd.read_csv(tmp_path / "landing/items/date=2026-01-02/items.csv")
    assert np.array_equal(landed["popularity"].to_numpy(), day2["popularity"].to_numpy())
    # Day 3 sees day 1's plays at 0.5^(1 / half-life) and day 2's in full.
    past = world.past_plays(tmp_path / "world", small_world, 3)
    decay = 0.5 ** (1 / small_world.popularity_half_life_days)
    expected = day2["plays"].to_numpy().astype(float)
    expected[: len(day1)] += decay * day1["plays"].to_numpy()
    assert np.allclose(past, expected)
    still = small_world.replace(play_feedback=0.0)
    assert np.array_equal(truth.catalogue(still, 2, past).items["popularity"],
                          truth.catalogue(still, 2).items["popularity"])


def test_broken_client_writes_malformed_rows(tmp_path, small_world):
    cfg = small_world.replace(scenarios=(Scenario.parse("broken_client@1"),))
    stats = world.run_day(tmp_path, tmp_path / "landing", cfg, "2026-01-01", popularity_policy())
    assert stats["broken_rows"] > 0
    path = tmp_path / "landing/impressions/date=2026-01-01/part-broken-client.jsonl.gz"
    lines = gzip.open(path, "rt").read().splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            parsed.append(None)
    assert None in parsed  # some lines are not even JSON
    assert any(r and r.get("position") == "first" for r in parsed)


def test_scenario_parsing():
    assert Scenario.parse("bot_attack@3-4") == Scenario("bot_attack", 3, 4)
    assert Scenario.parse("taste_drift@5") == Scenario("taste_drift", 5, None)
    assert Scenario.parse("broken_client@2") == Scenario("broken_client", 2, 2)
    with pytest.raises(ValueError, match="unknown scenario"):
        Scenario.parse("meteor@1")
    with pytest.raises(ValueError, match="needs a day"):
        Scenario.parse("bot_attack")


def test_the_carousel_logs_thompson_sampling_with_monte_carlo_propensities():
    """The carousel's logged propensities are the sampler's: per (item, position) the
    share of posterior draws, close to the rate at which the day's slates put the item
    there."""
    from flywheel_assets.simulation import carousel

    rng = np.random.default_rng(0)
    a, b = rng.uniform(1, 30, 40), rng.uniform(1, 30, 40)
    mc = carousel.monte_carlo_propensities(np.random.default_rng(1), a, b, k=3)
    assert mc.shape == (40, 3) and (mc > 0).all() and (mc <= 1).all()
    assert np.allclose(mc.sum(axis=0), 1.0, atol=40 / carousel.MONTE_CARLO_DRAWS)
    slates = carousel.thompson_slates(np.random.default_rng(2), a, b, 50_000, 3)
    observed = np.stack([np.bincount(slates[:, k], minlength=40) for k in range(3)], axis=1) / 50_000
    assert np.abs(observed - mc).max() < 0.01


def test_the_carousel_lands_required_columns_and_is_deterministic(tmp_path):
    from flywheel_assets.simulation import carousel

    config = carousel.carousel_config(requests_per_day=500)
    frames = []
    for name in ("a", "b"):
        world.run_day(tmp_path / name, tmp_path / name / "landing", config, "2026-01-01",
                      popularity_policy())
        frames.append(pd.read_csv(tmp_path / name / "landing/impressions/date=2026-01-01/impressions.csv"))
    pd.testing.assert_frame_equal(*frames)
    assert len(frames[0]) == 500 * 3 and frames[0]["position"].max() == 3
    landing = tmp_path / "a" / "landing"
    assert sorted(p.name for p in landing.iterdir()) == ["impressions", "interactions"]
    clicks = pd.read_json(landing / "interactions/date=2026-01-01/clicks.jsonl", lines=True)
    assert set(clicks["signal"]) == {"click"} and clicks["impression_id"].isin(frames[0]["impression_id"]).all()


def test_the_oracle_judges_an_unidentified_position_bias_curve_as_no_estimate(tmp_path, small_world):
    """Serving without exploration leaves the curve unidentified (NULL examination): the
    signal figures say there is no estimate instead of failing the oracle."""
    import datetime as dt

    from flywheel_assets import warehouse
    from flywheel_assets.settings import Settings
    from flywheel_assets.simulation import signal_quality

    settings = Settings.from_env(tmp_path)
    with warehouse.connect(settings.warehouse_path) as conn:
        for k in range(1, small_world.slate_size + 1):
            conn.execute("INSERT INTO curated.position_bias (partition_date, position, examination, "
                         "method) VALUES (?, ?, NULL, 'not identified: 0 explored requests')",
                         [dt.date(2026, 1, 1), k])
    figures = signal_quality.measure(settings, small_world, "2026-01-01")
    assert figures["position_bias_max_rel_error"] is None


def test_worlds_that_break_the_click_model():
    """Cascade examination depends on what was shown above; trust bias turns rejections
    into partial plays near the top; the first position need not always be examined."""
    rng = np.random.default_rng(0)
    n, k = 20000, 5
    draws = rng.random((n, k))
    satisfying = np.zeros((n, k), int)
    satisfying[:, 0] = 3
    base = WorldConfig(slate_size=k)
    pbm = truth.examine(base, np.random.default_rng(1), draws, satisfying)
    cascade_cfg = base.replace(examination_model="cascade", cascade_stop=0.5)
    after_satisfied = truth.examine(cascade_cfg, np.random.default_rng(1), draws, satisfying)
    after_rejected = truth.examine(cascade_cfg, np.random.default_rng(1), draws,
                                   np.zeros((n, k), int))
    theta = truth.examination_curve(base)
    # The position model examines position 2 at θ_2 whatever was above.
    assert pbm[:, 1].mean() == pytest.approx(theta[1], abs=0.01)
    # Cascade: without a satisfying item it goes on at the same rates; after one, half stop.
    assert after_rejected[:, 1].mean() == pytest.approx(theta[1], abs=0.01)
    assert after_satisfied[:, 1].mean() == pytest.approx(0.5 * theta[1], abs=0.01)
    # A first position not always examined.
    top = truth.examine(base.replace(examination_top=0.6), np.random.default_rng(1), draws,
                        satisfying)
    assert top[:, 0].mean() == pytest.approx(0.6, abs=0.01)
    # Trust bias: rejections become partial plays, more often at the top.
    trusted = truth.trusted_grade(base.replace(trust_bias=0.3), np.random.default_rng(2),
                                  np.zeros((n, k), int))
    assert trusted[:, 0].mean() == pytest.approx(0.3, abs=0.01)
    assert trusted[:, 4].mean() == pytest.approx(0.3 * theta[4], abs=0.01)
    with pytest.raises(ValueError, match="examination_model"):
        WorldConfig(examination_model="random")


def test_the_fast_path_draws_distinct_pools_that_follow_popularity():
    from flywheel_assets.simulation.traffic import sample_pools_fast

    rng = np.random.default_rng(0)
    popularity = np.array([1000.0] * 5 + [0.0] * 95)
    pools = sample_pools_fast(rng, popularity, 4000, 30, 1.0)
    assert pools.shape == (4000, 30) and pools.min() >= 0 and pools.max() < 100
    ranked = np.sort(pools, axis=1)
    assert (ranked[:, 1:] != ranked[:, :-1]).all()  # no item twice in a pool
    counts = np.bincount(pools.ravel(), minlength=100)
    # Popular items are in more pools than the rest; every item can be drawn.
    assert counts[:5].min() > counts[5:].max() and counts.min() > 0
    with pytest.raises(ValueError, match="exceeds the catalogue"):
        sample_pools_fast(rng, popularity[:10], 5, 30, 1.0)


def test_the_fast_path_lands_the_same_kind_of_day(tmp_path, small_world):
    fast = small_world.replace(fast=True)
    world.run_day(tmp_path, tmp_path / "landing", fast, "2026-01-01", popularity_policy())
    frames = _landed_frames(tmp_path)
    inter = frames["interactions"]
    # DuckDB's JSON Lines carry the same fields, nulls where a signal has no value.
    assert list(inter.columns) == ["event_id", "impression_id", "ts", "signal", "value"]
    assert inter.loc[inter["signal"].isin(["thumbs_up", "thumbs_down"]), "value"].isna().all()
    assert inter["impression_id"].str.replace("-dup", "").isin(
        frames["impressions"]["impression_id"]).mean() > 0.99
    assert frames["impressions"]["impression_id"].is_unique
