"""Core library, plain Python: metrics, labels, promotion rule, model store, hashing."""


import duckdb
import numpy as np
import pandas as pd
import pytest

from flywheel_assets.core import metrics, model_store, promotion
from flywheel_assets.core.model import score, train
from flywheel_assets.core.pseudonymise import user_key
from flywheel_assets.core.signals import DEFAULT_HIERARCHY, grade_sql
from flywheel_assets_tests.helpers import tiny_training_rows


def test_ndcg_orders_perfect_reversed_and_ignores_requests_without_gain():
    groups = np.array(["a"] * 4 + ["b"] * 3)
    labels = np.array([3, 2, 0, 1, 0, 0, 0])
    perfect = np.array([4, 3, 1, 2, 9, 8, 7.0])
    assert metrics.ndcg_at_k(groups, labels, perfect) == pytest.approx(1.0)
    reversed_ = -perfect
    assert metrics.ndcg_at_k(groups, labels, reversed_) < 0.6
    assert metrics.ndcg_at_k(groups, labels, perfect, k=1) == pytest.approx(1.0)


def test_ranking_report_uses_examined_impressions_for_the_primary_metric():
    # Slate served in position order; the bottom item was never examined (no event).
    frame = pd.DataFrame({"request_id": ["r"] * 3, "label_grade": [0, 2, 0],
                          "n_interactions": [1, 1, 0]})
    prefers_unexamined = np.array([0.1, 0.5, 0.9])
    report = metrics.ranking_report(frame, prefers_unexamined)
    assert report["ndcg_at_10"] == pytest.approx(1.0)
    assert report["ndcg_at_10_all_logged"] < 1.0


def test_signal_hierarchy_grades():
    flags = ["skip", "partial", "complete", "save", "thumbs_up", "thumbs_down"]
    rows = pd.DataFrame([{f"has_{f}": f == on for f in flags} for on in flags + ["none"]])
    conn = duckdb.connect()
    conn.register("rows", rows)
    got = [r[0] for r in conn.execute(f"SELECT {grade_sql()} FROM rows").fetchall()]
    assert got == [0, 1, 2, 3, 3, 0, 0]
    both = pd.DataFrame([{**{f"has_{f}": False for f in flags}, "has_partial": True, "has_save": True}])
    conn.register("both_flags", both)
    assert conn.execute(f"SELECT {grade_sql()} FROM both_flags").fetchone()[0] == 3
    custom = {**DEFAULT_HIERARCHY, "partial": 2}
    assert conn.execute(f"SELECT {grade_sql(custom)} FROM rows").fetchall()[1][0] == 2


def _record(delta_ci=(0.1, 0.3), cand_cov=0.8, champ_cov=0.8, cand_gini=0.7, champ_gini=0.7,
            slice_cand=0.9, slice_champ=0.9, support=1.0):
    def policy(cov, gini):
        return {"dr": {"value": 6.0}, "support": support, "catalog_coverage": cov,
                "exposure_gini": gini}
    return {"off_policy": {"policies": {"candidate": policy(cand_cov, cand_gini),
                                        "champion": policy(champ_cov, champ_gini)},
                           "difference": {"dr": {"delta": sum(delta_ci) / 2, "ci_low": delta_ci[0],
                                                 "ci_high": delta_ci[1], "level": 0.95}}},
            "slices": {"new_items": {"requests": 500, "candidate": slice_cand,
                                     "champion": slice_champ}},
            "holdout": {"candidate": {"ndcg_at_10": 0.8}, "champion": {"ndcg_at_10": 0.7}},
            "holdout_difference": {"delta": 0.1, "ci_low": 0.05, "ci_high": 0.15, "level": 0.95}}


def test_promotion_rule():
    assert promotion.decide(_record()).promote
    assert not promotion.decide(_record(delta_ci=(-0.1, 0.3))).promote
    assert "not better with confidence" in promotion.decide(_record(delta_ci=(-0.1, 0.3))).reasons[0]
    first = promotion.decide(_record(delta_ci=(-1, -0.5)), has_champion=False)
    blocked = promotion.decide(_record(), ["raw_impressions:rows_reconcile failed"])
    stale = promotion.decide(_record(), older_than_champion="older")
    assert first.promote and not blocked.promote and not stale.promote
    assert "rows_reconcile" in blocked.reasons[0]
    strict = promotion.GatePolicy(min_effect=0.2)
    assert not promotion.decide(_record(delta_ci=(0.1, 0.3)), policy=strict).promote


def test_guards_hold_back_a_better_but_degenerate_candidate():
    less_coverage = promotion.decide(_record(cand_cov=0.4, champ_cov=0.8))
    more_concentrated = promotion.decide(_record(cand_gini=0.8, champ_gini=0.7))
    worse_slice = promotion.decide(_record(slice_cand=0.8, slice_champ=0.9))
    for d in (less_coverage, more_concentrated, worse_slice):
        assert not d.promote and any("guard" in r and "regressed" in r for r in d.reasons)
    # Within the healthy levels a change against a very diverse champion is fine.
    assert promotion.decide(_record(cand_gini=0.55, champ_gini=0.3)).promote
    assert promotion.decide(_record(cand_cov=0.6, champ_cov=0.95)).promote
    # A slice with too few requests to judge does not guard.
    small = _record(slice_cand=0.5)
    small["slices"]["new_items"]["requests"] = 10
    assert promotion.decide(small).promote


def test_without_supported_off_policy_evidence_the_gate_uses_the_holdout():
    unsupported = promotion.decide(_record(delta_ci=(0.5, 0.9), support=0.4))
    assert "holdout" in unsupported.figures["primary"]["metric"]
    no_pools = _record()
    no_pools["off_policy"] = None
    decision = promotion.decide(no_pools)
    assert "no logged candidate pools" in decision.figures["primary"]["metric"]
    assert decision.promote  # holdout interval 0.05 .. 0.15 clears 0


def test_keyed_hash_depends_on_the_secret():
    assert user_key("alice", "s1") == user_key("alice", "s1")
    assert user_key("alice", "s1") != user_key("alice", "s2")
    assert "alice" not in user_key("alice", "s1")


def test_model_store_round_trip_pointer_and_refusal_of_foreign_types(tmp_path):
    rows = tiny_training_rows()
    pipe = train(rows, max_iter=5)
    model_store.save_model(tmp_path, "m1", pipe, {"note": "first"})
    model_store.save_model(tmp_path, "m2", pipe, {"note": "second"})
    loaded = model_store.load_model(tmp_path, "m1")
    assert np.allclose(score(loaded, rows), score(pipe, rows))
    assert model_store.load_card(tmp_path, "m2")["note"] == "second"
    assert model_store.champion_version(tmp_path) is None
    model_store.set_champion(tmp_path, "m1", "first", "test")
    pointer = model_store.set_champion(tmp_path, "m2", "better", "test")
    assert pointer["previous"] == "m1" and model_store.champion_version(tmp_path) == "m2"
    with pytest.raises(FileNotFoundError):
        model_store.set_champion(tmp_path, "nope", "x", "test")

    # An artifact that smuggles in a callable (here os.system) is refused before loading.
    import os

    import skops.io as sio

    (tmp_path / "m3").mkdir()
    sio.dump({"model": pipe, "hook": os.system}, tmp_path / "m3" / "model.skops")
    with pytest.raises(model_store.UntrustedModelError, match="posix.system"):
        model_store.load_model(tmp_path, "m3")


def test_model_versions_are_stable_and_sensitive():
    assert model_store.model_version("2026-01-02", "x") == model_store.model_version("2026-01-02", "x")
    assert model_store.model_version("2026-01-02", "x") != model_store.model_version("2026-01-02", "y")
    assert model_store.model_version("2026-01-02", "x").startswith("m20260102-")


def test_exposure_gini_and_coverage():
    assert metrics.exposure_gini(np.full(50, 7)) == pytest.approx(0.0)
    one_takes_all = np.zeros(100)
    one_takes_all[3] = 1000
    assert metrics.exposure_gini(one_takes_all) == pytest.approx(0.99)
    # Unexposed items count: the same exposures over a bigger catalogue are less even.
    assert metrics.exposure_gini(np.r_[np.ones(10), np.zeros(90)]) > metrics.exposure_gini(np.ones(10))
    assert metrics.catalog_coverage(np.array([[1, 2], [2, 3]]), 10) == pytest.approx(0.3)


def test_concentration_rising_needs_a_rise_at_every_recent_rotation():
    from flywheel_assets.core.loop_health import concentration_rising

    def series(*g):
        return [{"exposure_gini": x} for x in g]
    assert concentration_rising(series(0.70, 0.71, 0.72, 0.73), 3)
    assert not concentration_rising(series(0.70, 0.72, 0.71, 0.73), 3)
    assert not concentration_rising(series(0.71, 0.72, 0.73), 3)   # too short to tell
    assert not concentration_rising(series(0.70, 0.701, 0.702, 0.703), 3, min_step=0.005)


def test_calibrated_log_loss_rewards_informative_scores():
    from flywheel_assets.core.metrics import calibrated_log_loss

    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.3
    informative = y + rng.normal(0, 0.5, 4000)
    noise = rng.normal(0, 1, 4000)
    base = -(0.3 * np.log(0.3) + 0.7 * np.log(0.7))       # entropy of the base rate
    assert calibrated_log_loss(y, informative) < 0.8 * base
    assert abs(calibrated_log_loss(y, noise) - base) < 0.02
    assert np.isnan(calibrated_log_loss(np.zeros(10, bool), noise[:10]))
