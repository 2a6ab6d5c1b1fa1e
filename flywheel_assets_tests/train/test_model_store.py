"""Versioned models on disk, the champion pointer, refusal of foreign types."""

import numpy as np
import pytest

from flywheel_assets.train import model_store
from flywheel_assets.train.model import score, train
from flywheel_assets_tests.helpers import tiny_training_rows


def test_model_store_round_trip_pointer_and_refusal_of_foreign_types(tmp_path):
    rows = tiny_training_rows()
    pipe = train(rows, params={"max_iter": 5})
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


def test_the_model_is_configuration_and_the_loader_trusts_what_it_is_made_of(tmp_path):
    from flywheel_assets.train import model as model_lib

    rows = tiny_training_rows()
    linear = train(rows, model="linear", params={"alpha": 3.0})
    described = model_lib.describe(linear, "linear")
    assert described["estimator"] == "sklearn.linear_model._ridge.Ridge"
    assert described["params"]["alpha"] == 3.0
    model_store.save_model(tmp_path, "lin", linear, {"model": "linear"})
    assert np.allclose(score(model_store.load_model(tmp_path, "lin"), rows), score(linear, rows))
    # The same factory named by its dotted path.
    dotted = train(rows, model="flywheel_assets.train.model:linear")
    assert np.allclose(score(dotted, rows), score(train(rows, model="linear"), rows))
    # Trees in an artifact whose card says "linear": not what a linear model is made of.
    trees = train(rows, params={"max_iter": 5})
    model_store.save_model(tmp_path, "lying", trees, {"model": "linear"})
    with pytest.raises(model_store.UntrustedModelError, match="TreePredictor"):
        model_store.load_model(tmp_path, "lying")
    with pytest.raises(ValueError, match="gradient_boosting"):
        train(rows, model="no_such_model")


def test_a_card_cannot_make_the_loader_import_code(tmp_path):
    """The card is as untrusted as the artifact: a dotted path on it is imported only
    when it is the configured model."""
    rows = tiny_training_rows()
    linear = train(rows, model="linear")
    model_store.save_model(tmp_path, "m", linear, {"model": "flywheel_assets.train.model:linear"})
    with pytest.raises(model_store.UntrustedModelError, match="neither a model"):
        model_store.load_model(tmp_path, "m")
    loaded = model_store.load_model(tmp_path, "m", "flywheel_assets.train.model:linear")
    assert np.allclose(score(loaded, rows), score(linear, rows))
    # A model its card's parameters cannot build is refused, not a crash.
    model_store.save_model(tmp_path, "bad", linear, {"model": "linear",
                                                     "model_params": {"no_such": 1}})
    with pytest.raises(model_store.UntrustedModelError, match="cannot tell"):
        model_store.load_model(tmp_path, "bad")
