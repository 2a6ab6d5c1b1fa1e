"""The ranking model: a scikit-learn pipeline that predicts the graded label.

Which model is configuration (`training.model`): the name of a factory registered in
the ``flywheel.models`` entry-point group (``gradient_boosting``, the default, and
``linear`` ship with the product), or a dotted path ``package.module:factory`` to one of
your own. A factory takes the :class:`FeatureSpec` (the categorical and numeric
columns of the feature frame, `train/features.py`), a random state and keyword
parameters (`training.model_params`, JSON) and returns an unfitted scikit-learn
regressor or pipeline that accepts that frame and ``sample_weight`` in ``fit``
(through ``model__sample_weight`` when it is a pipeline whose last step is ``model``).
The model card records the name, the estimator's class and every parameter; the safe
loader (`model_store`) trusts exactly the types a model of that name is made of.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from functools import lru_cache
from importlib.metadata import entry_points

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from flywheel_assets.train import features as feats
from flywheel_assets.train.features import FeatureSpec

MODEL_GROUP = "flywheel.models"
DEFAULT_MODEL = "gradient_boosting"
# 50 rounds at 0.2: as good as 80 at 0.15 on the simulated world, and scoring (a million
# candidates a day) costs per tree.
DEFAULT_PARAMS = dict(max_iter=50, learning_rate=0.2, max_leaf_nodes=31,
                      min_samples_leaf=40, l2_regularization=1.0)
# The attribute a fitted model keeps its features in (what scoring derives).
SPEC_ATTRIBUTE = "flywheel_features_"


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


def gradient_boosting(spec: FeatureSpec, random_state: int = 0, **params) -> Pipeline:
    """The default: gradient-boosted trees over ordinal-encoded categoricals."""
    return build_pipeline(spec, random_state=random_state, **params)


def linear(spec: FeatureSpec, random_state: int = 0, alpha: float = 1.0) -> Pipeline:
    """A ridge regression over one-hot categoricals and standardised numerics (missing
    values imputed by the median): the simple, fast reference."""
    encode = ColumnTransformer(
        [("categorical", OneHotEncoder(handle_unknown="ignore", min_frequency=5),
          list(spec.categorical)),
         ("numeric", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                   StandardScaler()), list(spec.numeric))],
        verbose_feature_names_out=False)
    return Pipeline([("encode", encode), ("model", Ridge(alpha=alpha))])


BUILT_IN = {"gradient_boosting": gradient_boosting, "linear": linear}


def registered(name: str) -> bool:
    """Is ``name`` a model the installation provides (built in, or an entry point of
    ``flywheel.models``), as opposed to a dotted path?"""
    return name in BUILT_IN or name in {ep.name for ep in entry_points(group=MODEL_GROUP)}


def resolve(name: str) -> Callable[..., object]:
    """The factory named ``name``: built in, an entry point of ``flywheel.models``, or a
    dotted path ``package.module:factory``. Raises ValueError naming what is available."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    found = {ep.name: ep for ep in entry_points(group=MODEL_GROUP)}
    if name in found:
        return found[name].load()
    module, sep, attr = name.partition(":")
    if sep and module and attr:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"training.model {name!r}: {exc}") from exc
    raise ValueError(f"training.model {name!r} is neither a registered model "
                     f"({', '.join(sorted({*BUILT_IN, *found}))}) nor a dotted path "
                     "'package.module:factory'")


def parse_params(text: str | dict | None) -> dict:
    """`training.model_params`: a JSON object (empty: the factory's defaults)."""
    if isinstance(text, dict):
        return dict(text)
    if not text or not str(text).strip():
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"training.model_params must be a JSON object, got {text!r}")
    return value


def make(name: str, spec: FeatureSpec, random_state: int = 0, params: dict | None = None):
    return resolve(name)(spec, random_state=random_state, **(params or {}))


def _final_step(model):
    return model.steps[-1][1] if isinstance(model, Pipeline) else model


def describe(model, name: str) -> dict:
    """What the card records of a model: its name, estimator class and parameters."""
    final = _final_step(model)
    params = {k: v for k, v in final.get_params(deep=False).items()
              if isinstance(v, (int, float, str, bool, type(None)))}
    return {"name": name, "estimator": f"{type(final).__module__}.{type(final).__qualname__}",
            "params": params}


def train(rows: pd.DataFrame, label: str = "label_grade", weight: str | None = "weight",
          random_state: int = 0, max_categories: int = 250,
          extra_features: tuple[str, ...] = (), model: str = DEFAULT_MODEL,
          params: dict | None = None) -> Pipeline:
    """Fit the model named ``model`` on raw training rows; the features are chosen from
    what the rows carry (train/features.py) and derived here, as at serving time."""
    derived = feats.derive(rows)
    spec = feats.choose(derived, max_categories, extra_features)
    estimator = make(model, spec, random_state, params)
    sample_weight = None if weight is None else rows[weight].to_numpy(dtype="float64")
    fit_params = {}
    if sample_weight is not None:
        fit_params = ({f"{estimator.steps[-1][0]}__sample_weight": sample_weight}
                      if isinstance(estimator, Pipeline) else {"sample_weight": sample_weight})
    estimator.fit(feats.typed(derived, spec), rows[label].to_numpy(dtype="float64"), **fit_params)
    setattr(estimator, SPEC_ATTRIBUTE, spec.to_dict())
    return estimator


@lru_cache(maxsize=None)
def artifact_types(name: str, params_json: str = "{}") -> frozenset[str]:
    """The non-default types a saved model of ``name`` (with the factory's parameters
    ``params_json``) is made of: found by fitting one on a few synthetic rows and asking
    skops (the safe loader trusts exactly these)."""
    import skops.io as sio

    rng = np.random.default_rng(0)
    n = 200
    rows = pd.DataFrame({"ts": pd.Timestamp("2026-01-01", tz="UTC"),
                         "category": rng.choice(["a", "b", "c"], n), "c0": rng.normal(size=n),
                         "label": rng.integers(0, 4, n).astype("float64"), "weight": 1.0})
    fitted = train(rows, label="label", model=name, params=json.loads(params_json))
    return frozenset(sio.get_untrusted_types(data=sio.dumps(fitted)))


def score(pipeline, rows: pd.DataFrame, derived: pd.DataFrame | None = None) -> np.ndarray:
    """Predicted graded relevance for raw rows; higher ranks first. Pass ``derived``
    (``features.derive(rows)``) to score several models on the same rows at once."""
    derived = feats.derive(rows) if derived is None else derived
    return np.asarray(pipeline.predict(feats.typed(derived, feats.spec_of(pipeline))),
                      dtype="float64")
