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


def test_promotion_rule():
    better = promotion.decide({"ndcg_at_10": 0.8}, {"ndcg_at_10": 0.7})
    worse = promotion.decide({"ndcg_at_10": 0.7}, {"ndcg_at_10": 0.8})
    first = promotion.decide({"ndcg_at_10": 0.1}, None)
    blocked = promotion.decide({"ndcg_at_10": 0.9}, None, ["raw_impressions:rows_reconcile failed"])
    stale = promotion.decide({"ndcg_at_10": 0.9}, {"ndcg_at_10": 0.1}, older_than_champion="older")
    assert better.promote and not worse.promote and first.promote
    assert not blocked.promote and "rows_reconcile" in blocked.reasons[0]
    assert not stale.promote
    assert "not better" in worse.reasons[0]
    assert not promotion.decide({"ndcg_at_10": 0.71}, {"ndcg_at_10": 0.7}, min_effect=0.02).promote


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
