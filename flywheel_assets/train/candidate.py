"""The day's candidate: trained on the training set's `train` split, saved with a model
card, registered in `ml.model_registry`."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager

import duckdb
import pandas as pd

from flywheel_assets import warehouse
from flywheel_assets.train import model as model_lib
from flywheel_assets.train import model_store
from flywheel_assets.train import training_set as ts_lib
from flywheel_assets.train.features import PROFILE_FEATURES, attach_profiles, spec_of

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


def train_candidate(connect: Connect, models: model_store.Models, partition_date: str,
                    max_categories: int = 250, extra_features: tuple[str, ...] = (),
                    profiles: bool = True, model: str = model_lib.DEFAULT_MODEL,
                    model_params: dict | None = None) -> dict:
    """Train, save and register the candidate of ``partition_date``; returns its card
    (with ``version`` and ``path``). With ``profiles``, each row also carries the `p_*`
    features of the profiles of the day before its own. Same rows, labels, profile
    features and parameters → same version; change any of them → a new one."""
    with connect() as conn:
        rows = ts_lib.read_split(conn, partition_date, "train")
        fingerprint = ts_lib.fingerprint(conn, partition_date)
        if profiles:
            rows = attach_profiles(conn, rows)
    if profiles and len(rows):
        values = rows[PROFILE_FEATURES].fillna(-1.0)
        fingerprint += f":{int(pd.util.hash_pandas_object(values, index=False).sum())}"
    pipeline = model_lib.train(rows, label="target", weight="weight", max_categories=max_categories,
                               extra_features=extra_features, model=model, params=model_params)
    features = spec_of(pipeline).to_dict()
    described = model_lib.describe(pipeline, model)
    version = model_store.model_version(
        partition_date, f"{fingerprint}:{json.dumps(described, sort_keys=True)}"
                        f":{json.dumps(features)}")
    parent = model_store.champion_before(models, version)
    card = {
        "partition_date": partition_date, "features": features,
        "label": "target = label_grade (the signal vocabulary's grade) / the examination "
                 "probability of its position, sample weight = that probability",
        "model": described["name"], "model_params": model_params or {},
        "estimator": described["estimator"],
        "params": described["params"], "train_rows": len(rows),
        "window_start": str(rows["source_date"].min()), "window_end": str(rows["source_date"].max()),
        "source_partitions": sorted(str(d) for d in rows["source_date"].unique()),
        "parent_version": parent, "fingerprint": fingerprint,
    }
    model_store.save_model(models, version, pipeline, card)
    where = model_store.as_location(models).where(version)
    with connect() as conn:
        warehouse.replace_rows(conn, "ml.model_registry", {"version": version}, {
            "version": version, "partition_date": partition_date, "created_at": warehouse.now(),
            "path": where, "parent_version": parent, "train_rows": len(rows),
            "window_start": card["window_start"], "window_end": card["window_end"],
            "card": json.dumps(card)})
    return {**card, "version": version, "path": where}


def registered_candidate(conn: duckdb.DuckDBPyConnection, partition_date: str) -> str | None:
    """The newest candidate registered for the day."""
    row = conn.execute("SELECT version FROM ml.model_registry WHERE partition_date = ? "
                       "ORDER BY created_at DESC LIMIT 1", [partition_date]).fetchone()
    return row[0] if row else None
