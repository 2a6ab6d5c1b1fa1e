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
# What users did (curate/profiles.py), as of the day before the row's: `p_*`.
PROFILE_FEATURES = ["p_user_known", "p_user_activity", "p_user_rate", "p_category_affinity",
                    "p_content_match", "p_factor_score", "p_item_known", "p_item_exposure",
                    "p_item_rate", "p_item_country_rate"]
KNOWN_NUMERIC = ["tenure_days", "item_age_days", "log_popularity", "log_duration", "hour",
                 *CONTENT_COLUMNS, *PROFILE_FEATURES]
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
    for c in PROFILE_FEATURES:
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
    """The features a fitted model (train/model.py) was trained on: as it recorded them,
    or, for a model saved before models recorded them, its encoding step's columns."""
    recorded = getattr(pipeline, "flywheel_features_", None)
    if recorded is not None:
        return FeatureSpec(tuple(recorded["categorical"]), tuple(recorded["numeric"]))
    columns = {name: list(cols) for name, _, cols in pipeline.named_steps["encode"].transformers}
    return FeatureSpec(tuple(columns.get("categorical", [])), tuple(columns.get("numeric", [])))


# --- features from profiles -----------------------------------------------------------


def _column(raw: pd.DataFrame, name: str) -> np.ndarray:
    if name in raw:
        return raw[name].astype(object).where(raw[name].notna(), None).to_numpy(dtype=object)
    return np.full(len(raw), None, dtype=object)


def _take(values: pd.Series, pos: np.ndarray, fill: float | np.ndarray) -> np.ndarray:
    """``values`` at positions ``pos``, ``fill`` where a lookup found nothing (-1)."""
    array = values.to_numpy(dtype="float64")
    found = pos >= 0
    out = np.array(np.broadcast_to(fill, pos.shape), dtype="float64")
    out[found] = array[pos[found]]
    return out


def _stack(vectors, width: int) -> np.ndarray:
    """Rows of a list of vectors (None → zeros) as a matrix, plus a zero row at the end
    for lookups that found nothing (index -1)."""
    out = np.zeros((len(vectors) + 1, width))
    for i, v in enumerate(vectors):
        if v is not None and len(v) == width:
            out[i] = v
    return out


def profile_features(raw: pd.DataFrame, snapshot) -> pd.DataFrame:
    """The `p_*` features of raw rows from one day's profiles (a
    `curate.profiles.ProfileSnapshot`; None: every feature missing).

    A user the profiles know reads their own row; a new or anonymous user their
    segment's (country|age band), else everyone's (`p_user_known` = 0). An item the
    profiles know reads its own row; an item they never saw its category's rate and
    factors mapped from its content (`p_item_known` = 0): how its content resembles
    what users engaged with. `p_content_match` is the user's content taste · the item's
    content; `p_factor_score` the dot product of the collaborative factors.
    """
    from flywheel_assets.curate.profiles import EVERYONE, segment_of

    if ITEM_ID not in raw:
        # Every row of the contract names its item: without it, every item would read
        # as new, silently (a skew between training and serving).
        raise KeyError("rows scored with profile features need their item_id")
    out = pd.DataFrame(index=raw.index, columns=PROFILE_FEATURES, dtype="float64")
    if snapshot is None or not len(raw):
        return out
    users, segments, items = snapshot.users, snapshot.segments, snapshot.items
    keys = _column(raw, "user_key")
    seg = np.array([segment_of(c, a) for c, a in zip(_column(raw, "country"),
                                                       _column(raw, "age_band"))], dtype=object)
    user_pos = users.index.get_indexer(pd.Index(keys, dtype=object))
    known_user = user_pos >= 0
    seg_pos = segments.index.get_indexer(pd.Index(seg, dtype=object))
    everyone = segments.index.get_indexer([EVERYONE])[0]
    seg_pos = np.where(seg_pos >= 0, seg_pos, everyone)
    # The last entry answers a lookup that found nothing (-1).
    seg_key = np.append(segments.index.to_numpy(dtype=object), EVERYONE)[seg_pos]
    out["p_user_known"] = known_user.astype("float64")
    out["p_user_activity"] = np.log1p(_take(users["activity"], user_pos, 0.0))
    seg_rate = _take(segments["rate"], seg_pos, snapshot.mean_rate)
    user_rate = _take(users["rate"], user_pos, seg_rate)
    out["p_user_rate"] = user_rate

    category = _column(raw, "category")
    seg_lookup = np.array([f"segment:{k}" for k in seg_key], dtype=object)
    lookup_key = np.where(known_user, keys, seg_lookup)
    own = snapshot.affinity.reindex(pd.MultiIndex.from_arrays(
        [lookup_key, category.astype(str)])).to_numpy(dtype="float64")
    of_segment = snapshot.affinity.reindex(pd.MultiIndex.from_arrays(
        [seg_lookup, category.astype(str)])).to_numpy(dtype="float64")
    out["p_category_affinity"] = np.where(np.isnan(own), np.where(np.isnan(of_segment),
                                                                  user_rate, of_segment), own)

    item_ids = _column(raw, "item_id")
    item_pos = items.index.get_indexer(pd.Index(item_ids, dtype=object))
    exposure = _take(items["exposure"], item_pos, 0.0)
    out["p_item_known"] = (exposure > 0).astype("float64")
    out["p_item_exposure"] = np.log1p(exposure)
    cat_pos = snapshot.categories.index.get_indexer(pd.Index(category, dtype=object))
    cat_rate = _take(snapshot.categories["rate"], cat_pos, snapshot.mean_rate)
    item_rate = _take(items["rate"], item_pos, cat_rate)
    out["p_item_rate"] = item_rate
    country_rate = snapshot.segment_rates.reindex(pd.MultiIndex.from_arrays(
        [item_ids, _column(raw, "country")])).to_numpy(dtype="float64")
    out["p_item_country_rate"] = np.where(np.isnan(country_rate), item_rate, country_rate)

    content = (raw[CONTENT_COLUMNS].to_numpy(dtype="float64")
               if all(c in raw for c in CONTENT_COLUMNS) else None)
    taste_width = len(CONTENT_COLUMNS)
    if content is not None and any(t is not None for t in users["taste"]):
        user_taste = _stack(list(users["taste"]), taste_width)
        seg_taste = _stack(list(segments["taste"]), taste_width)
        taste = np.where(known_user[:, None], user_taste[user_pos], seg_taste[seg_pos])
        out["p_content_match"] = np.einsum("ij,ij->i", taste, np.nan_to_num(content))
    width = snapshot.n_factors
    if width:
        user_f = np.where(known_user[:, None], _stack(list(users["factors"]), width)[user_pos],
                          _stack(list(segments["factors"]), width)[seg_pos])
        item_f = _stack(list(items["factors"]), width)[item_pos]
        unseen = item_pos < 0
        if unseen.any():
            fallback = _stack(list(snapshot.categories["factors"]), width)[cat_pos[unseen]]
            if snapshot.content_map is not None and content is not None:
                rows = content[unseen]
                mapped = np.hstack([np.nan_to_num(rows), np.ones((len(rows), 1))]) @ snapshot.content_map
                fallback = np.where(np.isnan(rows).any(axis=1)[:, None], fallback, mapped)
            item_f[unseen] = fallback
        out["p_factor_score"] = np.einsum("ij,ij->i", user_f, item_f)
    return out


def row_days(raw: pd.DataFrame) -> np.ndarray:
    """Each row's day (UTC) from its time stamp."""
    return pd.to_datetime(raw["ts"], utc=True).dt.tz_localize(None).dt.date.to_numpy()


def with_profiles(raw: pd.DataFrame, store: dict) -> pd.DataFrame:
    """``raw`` with its `p_*` columns, each row's from the snapshot of its day in
    ``store`` (row day → snapshot, `curate.profiles.load_store`)."""
    days = row_days(raw)
    values = np.full((len(raw), len(PROFILE_FEATURES)), np.nan)
    positional = raw.reset_index(drop=True)  # any index, unique or not
    for day in sorted(set(days)):
        rows = np.flatnonzero(days == day)
        values[rows] = profile_features(positional.iloc[rows], store.get(day)).to_numpy(
            dtype="float64")
    out = raw.drop(columns=[c for c in PROFILE_FEATURES if c in raw])
    return out.assign(**{c: values[:, j] for j, c in enumerate(PROFILE_FEATURES)})


def attach_profiles(conn, raw: pd.DataFrame) -> pd.DataFrame:
    """``raw`` with the `p_*` features of the profiles in the warehouse (each row from
    the newest partition before its own day)."""
    from flywheel_assets.curate.profiles import load_store

    if not len(raw) or "ts" not in raw:
        return raw
    return with_profiles(raw, load_store(conn, set(row_days(raw))))
