"""The model's features: one definition for training and serving (no skew).

Inputs are the raw attributes a product knows at request time (the request's context,
the user and item snapshots when the product lands them, the extra columns it logs);
derived features are computed here and only here. Which features a model uses is
decided from the data at training time (:func:`choose`): every known attribute that has
values in the training rows, the item id when the catalogue is small enough to learn
per item, and the extra columns the product names (`training.extra_features`), numeric
or categorical. The choice is recorded in the
model card and in the fitted pipeline, and scoring derives the same features
(:func:`spec_of`), so a product with no user ids or no content features still trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

CONTENT_COLUMNS = [f"c{i}" for i in range(6)]
# Known attributes in a fixed order (the order of the model's inputs).
KNOWN_CATEGORICAL = ["country", "age_band", "category", "device"]
KNOWN_NUMERIC = ["tenure_days", "item_age_days", "log_popularity", "log_duration", "hour",
                 *CONTENT_COLUMNS]
ITEM_ID = "item_id"
# Extra columns (the landing files' columns beyond the contract) become `x_<name>`.
EXTRA_PREFIX = "x_"


@dataclass(frozen=True)
class FeatureSpec:
    """The features one model uses, categorical first."""

    categorical: tuple[str, ...]
    numeric: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    def to_dict(self) -> dict:
        return {"categorical": list(self.categorical), "numeric": list(self.numeric)}


def _days_between(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    """Whole days from ``earlier`` to ``later`` (NaN where either is missing)."""
    later_days = pd.to_datetime(later, utc=True).dt.tz_localize(None).dt.floor("D")
    earlier_days = pd.to_datetime(pd.Series(earlier, index=later.index)).dt.floor("D")
    return ((later_days - earlier_days) / pd.Timedelta(days=1)).to_numpy(dtype="float64")


def _scalars(record: dict) -> dict:
    # A list or an object (tags, a nested payload) is not a feature.
    return {k: v for k, v in record.items() if not isinstance(v, (dict, list))}


def _extras(raw: pd.DataFrame) -> pd.DataFrame:
    """The scalar extra columns of each row (JSON objects in `extras`) as `x_<name>`."""
    if "extras" not in raw.columns or not raw["extras"].notna().any():
        return pd.DataFrame(index=raw.index)
    records = [_scalars(json.loads(v)) if isinstance(v, str) and v else {}
               for v in raw["extras"]]
    frame = pd.DataFrame.from_records(records, index=raw.index)
    return frame.rename(columns=lambda c: f"{EXTRA_PREFIX}{c}")


def derive(raw: pd.DataFrame) -> pd.DataFrame:
    """Every feature the raw columns allow (untyped extras), in the fixed order."""
    out = pd.DataFrame(index=raw.index)
    ts = pd.to_datetime(raw["ts"], utc=True) if "ts" in raw else None
    for c in KNOWN_CATEGORICAL:
        if c in raw:
            out[c] = raw[c]
    if ITEM_ID in raw:
        out[ITEM_ID] = raw[ITEM_ID]
    if ts is not None and "signup_date" in raw:
        out["tenure_days"] = _days_between(ts, raw["signup_date"])
    if ts is not None and "published_date" in raw:
        out["item_age_days"] = _days_between(ts, raw["published_date"])
    if "popularity" in raw:
        out["log_popularity"] = np.log1p(raw["popularity"].astype("float64").clip(lower=0))
    if "duration_s" in raw:
        out["log_duration"] = np.log1p(raw["duration_s"].astype("float64").clip(lower=0))
    if ts is not None:
        out["hour"] = ts.dt.hour.astype("float64")
    for c in CONTENT_COLUMNS:
        if c in raw:
            out[c] = raw[c].astype("float64")
    extras = _extras(raw)
    return pd.concat([out, extras], axis=1) if len(extras.columns) else out


def _is_numeric(values: pd.Series) -> bool:
    present = values.dropna()
    return bool(len(present)) and pd.to_numeric(present, errors="coerce").notna().all()


def choose(derived: pd.DataFrame, max_categories: int,
           extra_features: tuple[str, ...] = ()) -> FeatureSpec:
    """The features the training rows support: a column with at least one value; a
    categorical one (item id and text extras) with at most ``max_categories`` values.
    Extra columns are features only when named in ``extra_features`` (``"*"``: all):
    an unnamed column may carry the outcome itself (a dwell time logged on the
    impression) or an identifier."""
    categorical, numeric = [], []
    for c in derived.columns:
        values = derived[c]
        if c.startswith(EXTRA_PREFIX) and "*" not in extra_features \
                and c[len(EXTRA_PREFIX):] not in extra_features:
            continue
        if not values.notna().any():
            continue
        if c in KNOWN_NUMERIC or (c.startswith(EXTRA_PREFIX) and _is_numeric(values)):
            numeric.append(c)
        elif values.nunique(dropna=True) <= max_categories:
            categorical.append(c)
    return FeatureSpec(tuple(categorical), tuple(numeric))


def typed(derived: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The model's inputs from derived features; raises KeyError naming a missing known
    attribute. An extra column the rows do not carry (the product stopped logging it)
    is missing values, which the trees handle, not a failure."""
    missing = [c for c in spec.names if c not in derived.columns]
    known = [c for c in missing if not c.startswith(EXTRA_PREFIX)]
    if known:
        raise KeyError(f"scoring rows lack the columns the model's features need: {known}")
    out = pd.DataFrame(index=derived.index)
    for c in spec.categorical:
        values = derived[c] if c in derived else pd.Series(pd.NA, index=derived.index)
        out[c] = values.astype("string").fillna("unknown").astype(object)
    for c in spec.numeric:
        values = derived[c] if c in derived else pd.Series(np.nan, index=derived.index)
        out[c] = pd.to_numeric(values, errors="coerce").astype("float64")
    return out


def feature_frame(raw: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Model inputs of ``spec`` from raw attributes."""
    return typed(derive(raw), spec)


def spec_of(pipeline) -> FeatureSpec:
    """The features a fitted pipeline (train/model.py) was trained on."""
    columns = {name: list(cols) for name, _, cols in pipeline.named_steps["encode"].transformers}
    return FeatureSpec(tuple(columns.get("categorical", [])), tuple(columns.get("numeric", [])))
