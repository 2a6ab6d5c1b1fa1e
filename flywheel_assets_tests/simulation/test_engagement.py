"""The responsive world: users come back more when served well, leave when served
badly or monotonously, and new users follow satisfaction."""

import json

import numpy as np
import pytest

from flywheel_assets.simulation import engagement, truth, world
from flywheel_assets.simulation.config import WorldConfig

CONFIG = WorldConfig(n_users=800, n_items=400, requests_per_day=4000, pool_size=20,
                     reserve_users=400)
DAYS = 4


class TruthPolicy:
    """Scores by the hidden utility (sign +1) or against it (-1)."""

    def __init__(self, config, sign: float, version: str):
        self.config, self.sign, self.version = config, sign, version

    def score(self, candidates):
        day = self.config.day_index(str(candidates["ts"].iloc[0])[:10])
        cat, pop = truth.catalogue(self.config, day), truth.population(self.config, day)
        u, i = candidates["world_user"].to_numpy(), candidates["world_item"].to_numpy()
        return self.sign * truth.utility(self.config, pop.taste[u], cat.latent[i], cat.quality[i])


def _audience(tmp_path, config, policy):
    out = []
    for day in range(1, DAYS + 1):
        date = config.date_of(day).isoformat()
        world.run_day(tmp_path, tmp_path / "landing", config, date, policy)
        out.append(json.loads((world.world_dir(tmp_path) / "truth" / f"date={date}" /
                               "day.json").read_text())["audience"])
    return out


def test_good_service_keeps_and_grows_the_audience_bad_service_loses_it(tmp_path):
    good = _audience(tmp_path / "good", CONFIG, TruthPolicy(CONFIG, 1.0, "good"))
    bad = _audience(tmp_path / "bad", CONFIG, TruthPolicy(CONFIG, -1.0, "bad"))
    assert good[-1]["requests"] > bad[-1]["requests"]
    assert good[-1]["engagement_per_request"] > bad[-1]["engagement_per_request"]
    assert bad[-1]["churned_total"] > good[-1]["churned_total"]
    assert good[-1]["joined_today"] >= bad[-1]["joined_today"]
    # Day 1 is the same traffic for both until the policies diverge: requests come from
    # the same people at the same rates.
    assert good[0]["active_users"] == pytest.approx(bad[0]["active_users"], rel=0.05)


def test_the_same_slate_every_day_grows_monotony(tmp_path):
    class Fixed:
        version = "fixed"

        def score(self, candidates):
            return -candidates["world_item"].to_numpy(dtype="float64")

    fixed = _audience(tmp_path, CONFIG, Fixed())
    assert fixed[-1]["monotony"] > fixed[0]["monotony"] + 0.1


def test_new_users_join_the_snapshot_and_the_state_round_trips(tmp_path):
    _audience(tmp_path, CONFIG, TruthPolicy(CONFIG, 1.0, "good"))
    directory = world.world_dir(tmp_path)
    state = world.user_state(directory, CONFIG, DAYS)
    assert state.joined[CONFIG.n_users:].any()
    assert len(state.joined) == CONFIG.n_users + CONFIG.reserve_users
    again = engagement.load(world.truth_dir(directory, CONFIG, DAYS))
    assert np.array_equal(again.seen, state.seen)
    assert np.array_equal(again.satisfaction, state.satisfaction)
    # A reserve user who joined is in the next users snapshot, with their signup day.
    joined = np.flatnonzero(state.joined[CONFIG.n_users:])[0] + CONFIG.n_users
    pop = truth.population(CONFIG, DAYS + 1, state)
    assert pop.joined[joined] and pop.activity[joined] > 0
    assert pop.users["signup_date"].iloc[joined] == np.datetime64(
        CONFIG.date_of(int(state.join_day[joined])))


def test_a_fixed_world_is_the_world_of_before(tmp_path):
    fixed = CONFIG.replace(responsive=False)
    pop = truth.population(fixed, 3)
    assert len(pop.users) == fixed.n_users and pop.joined.all()
    stats = world.run_day(tmp_path, tmp_path / "landing", fixed, "2026-01-01",
                          TruthPolicy(fixed, 1.0, "good"))
    assert stats["impressions"] >= fixed.requests_per_day * fixed.slate_size
    assert not (world.truth_dir(world.world_dir(tmp_path), fixed, 1) / engagement.STATE_FILE).exists()


def test_the_cold_start_slices_tell_a_good_ranking_from_a_bad_one(tmp_path):
    from flywheel_assets.simulation import oracle

    _audience(tmp_path, CONFIG, TruthPolicy(CONFIG, 1.0, "good"))
    # Day DAYS as it was served: the state after the day before.
    state = world.user_state(world.world_dir(tmp_path), CONFIG, DAYS - 1)
    date = CONFIG.date_of(DAYS)
    slices = oracle.cold_start(CONFIG, date, {"good": TruthPolicy(CONFIG, 1.0, "good"),
                                              "bad": TruthPolicy(CONFIG, -1.0, "bad")}, state)
    assert set(slices) == {"new_items", "new_users"}
    # Fresh items only: every pool holds items published in the last 7 days.
    published = truth.catalogue(CONFIG, DAYS).items["published_date"]
    assert slices["new_items"]["items"] == int(
        (published >= np.datetime64(date) - np.timedelta64(7, "D")).sum())
    assert slices["new_items"]["items"] >= CONFIG.new_items_per_day * DAYS
    assert slices["new_users"]["users"] == int(((state.join_day > 0) & state.joined
                                                & ~state.churned).sum())
    for found in slices.values():
        assert found["policies"]["good"]["ndcg_at_10"] > found["policies"]["bad"]["ndcg_at_10"] + 0.2


def test_the_daily_panel_leaves_the_reserve_out_and_new_users_keep_their_tenure(tmp_path):
    from flywheel_assets.simulation import oracle

    _audience(tmp_path, CONFIG, TruthPolicy(CONFIG, 1.0, "good"))
    state = world.user_state(world.world_dir(tmp_path), CONFIG, DAYS - 1)
    date = CONFIG.date_of(DAYS)
    seen = []

    class Recording(TruthPolicy):
        def score(self, candidates):
            seen.append(candidates)
            return super().score(candidates)

    policy = {"good": Recording(CONFIG, 1.0, "good")}
    oracle.evaluate_policies(CONFIG, date, policy)
    # The daily panel: people of the initial population only, never the reserve.
    panel = seen[-1]["world_user"].to_numpy()
    assert panel.max() < CONFIG.n_users
    assert len(np.unique(panel)) == min(CONFIG.oracle_requests, CONFIG.n_users
                                        - int(round(CONFIG.bot_fraction * CONFIG.n_users)))
    oracle.cold_start(CONFIG, date, policy, state)
    new_users = seen[-1]
    # Every user of the slice joined in the last 14 days and is scored with the sign-up
    # day they joined on, not the world's start.
    joined = state.join_day[new_users["world_user"].to_numpy()]
    assert (joined > 0).all() and (joined <= DAYS).all()
    signup = new_users["signup_date"].to_numpy(dtype="datetime64[D]")
    expected = np.array([np.datetime64(CONFIG.date_of(int(d))) for d in joined])
    assert (signup == expected).all()
