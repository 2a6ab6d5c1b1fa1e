"""The model's features: one definition for training and serving (no skew).

Inputs are the raw attributes a product knows at request time (user and item
snapshots, the request's context); derived features are computed here and only here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CONTENT_COLUMNS = [f"c{i}" for i in range(6)]
# Raw columns a scoring frame must carry (training set rows and served candidates alike).
RAW_COLUMNS = ["ts", "device", "country", "age_band", "signup_date", "category",
               "published_date", "duration_s", "popularity", *CONTENT_COLUMNS]
CATEGORICAL_FEATURES = ["country", "age_band", "category", "device"]
NUMERIC_FEATURES = ["tenure_days", "item_age_days", "log_popularity", "log_duration",
                    "hour", *CONTENT_COLUMNS]
FEATURES = CATEGORICAL_FEATURES + NUMERIC_FEATURES


def _days_between(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    later_days = pd.to_datetime(later, utc=True).dt.tz_localize(None).values.astype("datetime64[D]")
    earlier_days = pd.to_datetime(earlier).values.astype("datetime64[D]")
    return (later_days - earlier_days).astype("int64").astype("float64")


def feature_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Model inputs from raw attributes; raises KeyError naming a missing column."""
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise KeyError(f"scoring frame lacks raw columns {missing}")
    ts = pd.to_datetime(raw["ts"], utc=True)
    out = pd.DataFrame(index=raw.index)
    for c in CATEGORICAL_FEATURES:
        out[c] = raw[c].astype("string").fillna("unknown").astype(object)
    out["tenure_days"] = _days_between(ts, raw["signup_date"])
    out["item_age_days"] = _days_between(ts, raw["published_date"])
    out["log_popularity"] = np.log1p(raw["popularity"].astype("float64").clip(lower=0))
    out["log_duration"] = np.log1p(raw["duration_s"].astype("float64").clip(lower=0))
    out["hour"] = ts.dt.hour.astype("float64")
    for c in CONTENT_COLUMNS:
        out[c] = raw[c].astype("float64")
    return out[FEATURES]
