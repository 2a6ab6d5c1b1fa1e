"""The ranking model: a scikit-learn pipeline that predicts the graded label."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from flywheel_assets.train import features as feats
from flywheel_assets.train.features import FeatureSpec

# 50 rounds at 0.2: as good as 80 at 0.15 on the simulated world, and scoring (a million
# candidates a day) costs per tree.
DEFAULT_PARAMS = dict(max_iter=50, learning_rate=0.2, max_leaf_nodes=31,
                      min_samples_leaf=40, l2_regularization=1.0)


def build_pipeline(spec: FeatureSpec, random_state: int = 0, estimator=None,
                   **params) -> Pipeline:
    """Ordinal-encoded categoricals + numerics → gradient-boosted trees (or
    ``estimator``, which must accept ``categorical_features``).

    Unknown categories (a new country, a new device) become missing values, which the
    trees handle, instead of failing at serving time.
    """
    encode = ColumnTransformer(
        [("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                        encoded_missing_value=np.nan), list(spec.categorical)),
         ("numeric", "passthrough", list(spec.numeric))],
        verbose_feature_names_out=False,
    )
    categorical = list(range(len(spec.categorical))) or None
    model = estimator or HistGradientBoostingRegressor(
        early_stopping=False, random_state=random_state, **{**DEFAULT_PARAMS, **params})
    model.set_params(categorical_features=categorical)
    return Pipeline([("encode", encode), ("model", model)])


def train(rows: pd.DataFrame, label: str = "label_grade", weight: str | None = "weight",
          random_state: int = 0, max_categories: int = 250,
          extra_features: tuple[str, ...] = (), **params) -> Pipeline:
    """Fit on raw training rows; the features are chosen from what the rows carry
    (train/features.py) and derived here, as at serving time."""
    derived = feats.derive(rows)
    spec = feats.choose(derived, max_categories, extra_features)
    pipeline = build_pipeline(spec, random_state=random_state, **params)
    fit_params = {} if weight is None else {
        "model__sample_weight": rows[weight].to_numpy(dtype="float64")}
    pipeline.fit(feats.typed(derived, spec), rows[label].to_numpy(dtype="float64"), **fit_params)
    return pipeline


def score(pipeline: Pipeline, rows: pd.DataFrame, derived: pd.DataFrame | None = None
          ) -> np.ndarray:
    """Predicted graded relevance for raw rows; higher ranks first. Pass ``derived``
    (``features.derive(rows)``) to score several models on the same rows at once."""
    derived = feats.derive(rows) if derived is None else derived
    return pipeline.predict(feats.typed(derived, feats.spec_of(pipeline)))
