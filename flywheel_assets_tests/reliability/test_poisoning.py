"""The poisoning benchmark (`flywheel benchmark poisoning`, harness/poisoning.py): a bot
ring of 5% of the users pushes five items, with the `bot_attack` scenario on the later
days; the same world turned with the product's bot defences on and switched off by
settings overrides, and where the champion in service ranks the ring's targets.

The quick tests check the pieces (attack days, the overrides, the matched controls,
the panel, the ranks); the slow ones run the benchmark itself on a small world for a
few days (both arms, one module fixture) and check it against the world's truth and
the product's own tables."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from flywheel_assets import warehouse
from flywheel_assets.cli import build_parser
from flywheel_assets.harness import poisoning
from flywheel_assets.settings import Settings
from flywheel_assets.simulation import truth, world
from flywheel_assets.simulation.config import WorldConfig
from flywheel_assets.train import model_store

DAYS, ATTACK, SEED = 4, (3, 4), 7
WORLD = {"n_users": 400, "n_items": 300, "requests_per_day": 1500, "pool_size": 20}
SMALL = WorldConfig(bot_fraction=0.05, **WORLD)


# --- the pieces ---------------------------------------------------------------------


def test_attack_days_default_to_the_second_half_and_need_a_baseline_day():
    assert poisoning.attack_days(None, 14) == (8, 14)
    assert poisoning.attack_days("5-9", 12) == (5, 9)
    assert poisoning.attack_days("5", 12) == (5, 12)
    for bad in ("1-3", "5-13", "6-4"):
        with pytest.raises(ValueError):
            poisoning.attack_days(bad, 12)


def test_the_cli_knows_the_benchmark_and_its_options():
    args = build_parser().parse_args(["benchmark", "poisoning", "--days", "6", "--attack",
                                      "4-6", "--panel", "50", "--users", "400", "--jobs", "1"])
    assert (args.name, args.days, args.attack, args.panel, args.users) == \
        ("poisoning", 6, "4-6", 50, 400)
    assert args.bot_fraction == poisoning.BOT_FRACTION == 0.05


def test_defences_off_are_settings_only_and_switch_every_bot_defence_off(tmp_path):
    on = Settings.from_env(tmp_path / "on", poisoning.DEFENCES_ON)
    off = Settings.from_env(tmp_path / "off", poisoning.DEFENCES_OFF)
    assert on.curation.filters and not off.curation.filters
    # The detector's every rule is out of reach of the busiest bot of any world here.
    rules = off.curation_rules
    busiest = SMALL.requests_per_day * 10 * SMALL.slate_size
    assert min(rules.min_gaps, rules.min_reactions, rules.min_saves_for_burst,
               rules.max_requests_per_day, rules.per_user_cap) > busiest
    assert off.curation.max_label_issue_share == 0 == on.curation.max_label_issue_share
    # Nothing else differs between the arms: the world is served the same way.
    differ = {k for k, v in off.knobs().items() if on.knobs()[k] != v}
    assert differ == set(poisoning.DEFENCES_OFF) - {"curation.max_label_issue_share"}
    specs = poisoning.arms(tmp_path, SEED, ATTACK, **WORLD)
    assert specs["defences_on"][2] == specs["defences_off"][2]
    assert specs["defences_on"][2].bot_fraction == 0.05
    assert specs["defences_on"][2].active("bot_attack", 3)
    assert not specs["defences_on"][2].active("bot_attack", 2)


def test_controls_are_other_items_of_the_same_outside_popularity():
    targets = truth.population(SMALL, 1).bot_targets
    controls = poisoning.matched_controls(SMALL)
    assert len(controls) == len(set(controls)) == 5 * len(targets)
    assert not set(controls) & set(targets) and controls.max() < SMALL.n_items
    outside = np.log1p(truth.catalogue(SMALL, 1).items["popularity"].to_numpy())
    gaps = np.abs(outside[controls].reshape(len(targets), 5) - outside[targets][:, None])
    # Nearer than a random item of the catalogue is to the target, by far.
    random_gap = np.abs(outside[:SMALL.n_items][None, :] - outside[targets][:, None]).mean()
    assert gaps.mean() < random_gap / 5


def test_the_panel_is_a_fixed_sample_of_humans():
    users = poisoning.panel(SMALL, 50, DAYS)
    pop = truth.population(SMALL, DAYS)
    assert len(users) == len(set(users)) == 50
    assert not pop.is_bot[users].any() and not pop.gone[users].any()
    assert (poisoning.panel(SMALL, 50, DAYS) == users).all()


def test_ranks_count_places_above_and_share_ties():
    scores = np.array([[3.0, 1.0, 2.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    assert poisoning._ranks(scores, np.array([0, 2, 3])).tolist() == [[1, 2.5, 2.5], [4, 2, 1]]
    summary = poisoning._summary(np.array([[1.0, 4.0]]), 4)
    assert summary["mean_rank"] == 2.5 and summary["mean_percentile"] == 50.0


# --- the benchmark on a small world ---------------------------------------------------

DAY_KEYS = {"day", "date", "attack", "champion_version", "champion_changed", "promoted",
            "oracle_ndcg_at_10", "popularity_oracle_ndcg_at_10", "bot_filter_precision",
            "bot_filter_recall", "ranks", "served", "bots"}
RANK_KEYS = {"mean_rank", "median_rank", "mean_percentile", "truth_mean_rank",
             "truth_mean_percentile", "popularity_percentile"}
BOT_KEYS = {"bot_rows", "bot_rows_caught", "bot_rows_caught_share", "bot_target_saves",
            "bot_target_saves_kept", "bots_active", "bots_flagged", "humans_flagged",
            "human_rows", "human_rows_removed_as_bots"}
SERVED_KEYS = {"requests", "bot_requests", "bot_request_share",
               "targets_impressions_per_item_per_1k_human_requests",
               "controls_impressions_per_item_per_1k_human_requests"}
HEADLINE_KEYS = {"before_day", "after_day", "before_champion", "after_champion", "targets",
                 "controls", "net_percentile_rise", "net_percentile_rise_since_day_1",
                 "attack_oracle_ndcg_at_10",
                 "attack_bot_rows_caught_share", "attack_bot_target_saves_kept",
                 "attack_human_rows_removed_as_bots"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    base = tmp_path_factory.mktemp("poisoning")
    # The arms set DAGSTER_HOME in this process: put it back for the modules after.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", os.environ.get("DAGSTER_HOME", str(base / "home")))
        return base, poisoning.run(base, DAYS, SEED, ATTACK, **WORLD)


def _settings(base, arm):
    return Settings.from_env(base / arm, poisoning.ARMS[arm])


@pytest.mark.slow
def test_both_arms_turned_the_same_world(bench):
    base, result = bench
    assert set(result["arms"]) == {"defences_on", "defences_off"}
    configs = [world.load_config(world.world_dir(base / arm)) for arm in result["arms"]]
    assert configs[0] == configs[1] and configs[0].bot_fraction == 0.05
    assert [s.name for s in configs[0].scenarios] == ["bot_attack"]
    for arm, record in result["arms"].items():
        assert len(record["by_day"]) == DAYS
        assert record["curation_filters"] == (arm == "defences_on")
        assert _settings(base, arm).curation.filters == (arm == "defences_on")
        # Every day was a rotation of the product and a day of the world.
        for day in range(1, DAYS + 1):
            assert (world.truth_dir(world.world_dir(base / arm), configs[0], day)
                    / "requests.npz").exists()
    assert json.loads((base / "result.json").read_text()) == json.loads(
        json.dumps(result, default=str))


@pytest.mark.slow
def test_the_attack_really_happened(bench):
    base, result = bench
    config = world.load_config(world.world_dir(base / "defences_on"))
    for arm in result["arms"]:
        share = {}
        for day in range(1, DAYS + 1):
            with np.load(world.truth_dir(world.world_dir(base / arm), config, day)
                         / "requests.npz") as npz:
                share[day] = npz["is_bot"].mean()
        before = np.mean([share[d] for d in range(1, ATTACK[0])])
        during = np.mean([share[d] for d in range(ATTACK[0], ATTACK[1] + 1)])
        assert before > 0 and during > 2 * before, share
        by_day = result["arms"][arm]["by_day"]
        assert [r["attack"] for r in by_day] == [ATTACK[0] <= d <= ATTACK[1]
                                                 for d in range(1, DAYS + 1)]
        # The ring saved its targets more often on the attack days.
        saves = [r["bots"]["bot_target_saves"] for r in by_day]
        assert min(saves[ATTACK[0] - 1:]) > max(saves[:ATTACK[0] - 1]), saves


@pytest.mark.slow
def test_with_defences_off_curation_caught_no_bot(bench):
    base, result = bench
    for record in result["arms"]["defences_off"]["by_day"]:
        bots = record["bots"]
        assert bots["bot_rows"] > 0 and bots["bots_active"] > 0
        assert bots["bot_rows_caught"] == 0 and bots["bots_flagged"] == 0
        assert bots["bot_target_saves_kept"] == bots["bot_target_saves"] > 0
    with warehouse.connect(_settings(base, "defences_off").warehouse_path,
                           read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM curated.flagged_users").fetchall()[0][0] == 0
        # Curation removed duplicate copies only (consent is applied before, in
        # feedback_events, and is no bot defence).
        reasons = {r[0] for r in conn.execute(
            "SELECT DISTINCT reason FROM curated.feedback_removals "
            "WHERE stage = 'curated_feedback'").fetchall()}
    assert reasons and all(r.startswith("duplicate") for r in reasons), reasons


@pytest.mark.slow
def test_with_defences_on_curation_caught_the_ring(bench):
    base, result = bench
    on, off = (result["arms"][a]["by_day"] for a in ("defences_on", "defences_off"))
    for record in on:
        bots = record["bots"]
        assert bots["bots_flagged"] > 0 and bots["bot_rows_caught_share"] > 0.5
    kept = {arm: sum(r["bots"]["bot_target_saves_kept"] for r in records)
            for arm, records in (("on", on), ("off", off))}
    assert kept["on"] < kept["off"] / 2, kept
    # The rows caught are the ring's: the flagged users are bots by the world's truth.
    config = world.load_config(world.world_dir(base / "defences_on"))
    settings = _settings(base, "defences_on")
    from flywheel_assets.ingest.pseudonymise import user_key

    users = pd.read_parquet(world.truth_dir(world.world_dir(base / "defences_on"), config,
                                            DAYS) / "users.parquet")
    bot_keys = {user_key(u, settings.pseudonym_secret) for u in users.loc[users["is_bot"], "user_id"]}
    with warehouse.connect(settings.warehouse_path, read_only=True) as conn:
        flagged = {r[0] for r in conn.execute("SELECT user_key FROM curated.flagged_users "
                                              "WHERE partition_date = ?",
                                              [config.date_of(DAYS).isoformat()]).fetchall()}
    assert flagged and flagged <= bot_keys, len(flagged - bot_keys)


@pytest.mark.slow
def test_the_report_has_every_field(bench):
    _, result = bench
    assert {"days", "seed", "attack", "bot_fraction", "panel_users", "defences_off_overrides",
            "world", "arms", "comparison"} <= set(result)
    assert {"targets_percentile_after_off_minus_on", "targets_rank_after_on_minus_off",
            "net_rise_off_minus_on", "net_rise_since_day_1_off_minus_on"} <= set(result["comparison"])
    assert result["attack"] == list(ATTACK) and result["days"] == DAYS
    for arm in result["arms"].values():
        assert HEADLINE_KEYS <= set(arm["headline"])
        assert (arm["headline"]["before_day"], arm["headline"]["after_day"]) == \
            (ATTACK[0] - 1, ATTACK[1])
        for group in poisoning.GROUPS:
            assert {"rank_before", "rank_after", "rank_rise", "percentile_before",
                    "percentile_after", "percentile_rise", "percentile_day_1",
                    "percentile_rise_since_day_1", "popularity_percentile_before",
                    "popularity_percentile_after", "served_before",
                    "served_after"} <= set(arm["headline"][group])
        for record in arm["by_day"]:
            assert DAY_KEYS <= set(record)
            assert BOT_KEYS <= set(record["bots"]) and SERVED_KEYS <= set(record["served"])
            for group in poisoning.GROUPS:
                ranks = record["ranks"][group]
                assert RANK_KEYS <= set(ranks)
                assert 1 <= ranks["mean_rank"] <= record["ranks"]["catalogue_items"]
                assert 0 <= ranks["mean_percentile"] <= 100
            assert 0 < record["oracle_ndcg_at_10"] <= 1
    lines = poisoning.headline_lines({k: a["headline"] for k, a in result["arms"].items()})
    assert "defences on" in lines[0] and "defences off" in lines[0]


@pytest.mark.slow
def test_the_ranks_are_the_champions_in_service(bench):
    base, result = bench
    config = world.load_config(world.world_dir(base / "defences_on"))
    groups = {"targets": np.sort(truth.population(config, 1).bot_targets),
              "controls": poisoning.matched_controls(config)}
    users = poisoning.panel(config, poisoning.PANEL_USERS, DAYS)
    for arm, record in result["arms"].items():
        settings = _settings(base, arm)
        summary = json.loads((settings.reports_dir / "demo_summary.json").read_text())
        by_day = record["by_day"]
        assert [r["champion_version"] for r in by_day] == \
            [d["champion_version"] for d in summary["days"]]
        assert all(r["ranks"]["policy_version"] == r["champion_version"] for r in by_day)
        assert by_day[-1]["champion_version"] == model_store.champion_version(settings.models_dir)
        # Day 1 is served by the popularity policy (the first candidate awaits
        # confirmation): its ranks are the catalogue's popularity order.
        first = by_day[0]["ranks"]["targets"]
        assert by_day[0]["champion_version"] == "popularity"
        assert first["mean_percentile"] == pytest.approx(first["popularity_percentile"])
        models = [r for r in by_day if r["champion_version"] != "popularity"]
        assert models, "no model was promoted in the run"
        last = models[-1]
        # Measured again from the champion of that day: the same figures; from another
        # policy (popularity, or the model before it): others.
        again = poisoning.champion_ranks(settings, config, last["day"], last["champion_version"],
                                         users, groups)
        assert again["targets"] == pytest.approx(last["ranks"]["targets"])
        assert last["ranks"]["targets"]["mean_percentile"] != pytest.approx(
            last["ranks"]["targets"]["popularity_percentile"])
        others = {r["champion_version"] for r in by_day} - {last["champion_version"]}
        for version in others:
            other = poisoning.champion_ranks(settings, config, last["day"], version, users, groups)
            assert other["targets"]["mean_rank"] != pytest.approx(
                last["ranks"]["targets"]["mean_rank"]), version


@pytest.mark.slow
def test_the_defences_hold_the_targets_lower(bench):
    """The direction only, no size: on this world, seeds 7, 8 and 9 all had the
    targets rise more over the attack (net of the controls) and end higher with the
    defences off than on."""
    _, result = bench
    on, off = (result["arms"][a]["headline"] for a in ("defences_on", "defences_off"))
    assert off["net_percentile_rise"] > on["net_percentile_rise"]
    assert off["targets"]["percentile_after"] > on["targets"]["percentile_after"]
    assert result["comparison"]["net_rise_off_minus_on"] > 0
