"""Features chosen from what the data has, and derived the same way when scoring."""

import json

import numpy as np
import pandas as pd
import pytest

from flywheel_assets.train import features
from flywheel_assets.train import model as model_lib
from flywheel_assets_tests.helpers import tiny_training_rows


def test_a_full_snapshot_gives_the_known_features_in_their_order():
    spec = features.choose(features.derive(tiny_training_rows()), max_categories=250)
    assert spec.categorical == ("country", "age_band", "category", "device")
    # Attributes only: the profile features come with profiles (attach_profiles).
    assert spec.numeric == tuple(c for c in features.KNOWN_NUMERIC
                                 if c not in features.PROFILE_FEATURES)
    rows = tiny_training_rows()
    profiled = rows.assign(**{c: np.linspace(0, 1, len(rows)) for c in features.PROFILE_FEATURES})
    spec = features.choose(features.derive(profiled), max_categories=250)
    assert spec.numeric == tuple(features.KNOWN_NUMERIC)


def test_extra_columns_become_numeric_or_categorical_features():
    n = 300
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({
        "ts": pd.Timestamp("2026-01-01 10:00", tz="UTC"), "item_id": rng.choice(["a", "b", "c"], n),
        "extras": [json.dumps({"page": p, "price": str(v), "session": f"s{i}", "tags": ["a", i]})
                   for i, (p, v) in enumerate(zip(rng.choice(["home", "search"], n), rng.uniform(1, 9, n)))],
        "label_grade": rng.integers(0, 2, n), "weight": 1.0})
    # Opt-in: without naming them, extras are kept but not learnt from.
    assert features.choose(features.derive(rows), 250).numeric == ("hour",)
    spec = features.choose(features.derive(rows), max_categories=250, extra_features=("*",))
    # A session id with a value per row is too many categories to learn from.
    assert spec.categorical == ("item_id", "x_page")
    assert spec.numeric == ("hour", "x_price")
    assert features.choose(features.derive(rows), 250, ("price",)).numeric == ("hour", "x_price")
    pipeline = model_lib.train(rows, extra_features=("*",))
    assert features.spec_of(pipeline) == spec
    scores = model_lib.score(pipeline, rows.drop(columns=["label_grade", "weight"]))
    assert scores.shape == (n,) and np.isfinite(scores).all()
    # A day on which the product stopped logging its extra columns still scores (missing
    # values, which the trees handle), where a missing known attribute would fail.
    without = model_lib.score(pipeline, rows.drop(columns=["label_grade", "weight", "extras"]))
    assert np.isfinite(without).all()


def test_scoring_rows_without_a_feature_the_model_needs_fail_naming_it():
    pipeline = model_lib.train(tiny_training_rows())
    with pytest.raises(KeyError, match="country"):
        model_lib.score(pipeline, tiny_training_rows().drop(columns=["country"]))
