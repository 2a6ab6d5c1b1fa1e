"""Label noise by confident learning (cleanlab) on out-of-fold predictions.

Only impressions with a logged interaction are judged (a silent row says nothing about
its label). A classifier predicts the grade from user, item and context features and
the position, out of fold, and cleanlab ranks the rows whose logged grade its
predictions contradict most. At most ``max_share`` of the judged rows are flagged: in a
product most "surprising" outcomes are real, only the worst are likely to be errors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flywheel_assets.train import features


def flag_label_issues(rows: pd.DataFrame, max_share: float, seed: int = 0,
                      max_categories: int = 250) -> list[str]:
    """Impression ids whose grade is most likely wrong (at most ``max_share`` of rows)."""
    from cleanlab.filter import find_label_issues
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import cross_val_predict

    from flywheel_assets.train.model import build_pipeline

    y = rows["label_grade"].to_numpy()
    classes, counts = np.unique(y, return_counts=True)
    if len(rows) < 500 or len(classes) < 2 or counts.min() < 10 or max_share <= 0:
        return []
    y_codes = np.searchsorted(classes, y)
    derived = features.derive(rows)
    derived["position"] = rows["position"].to_numpy(dtype="float64")
    chosen = features.choose(derived.drop(columns="position"), max_categories)
    spec = features.FeatureSpec(chosen.categorical, (*chosen.numeric, "position"))
    X = features.typed(derived, spec)
    pipeline = build_pipeline(spec, estimator=HistGradientBoostingClassifier(
        max_iter=20, learning_rate=0.25, random_state=seed))
    # Two folds: each row is judged by a model that never saw it, at half the cost of three.
    pred = cross_val_predict(pipeline, X, y_codes, cv=2, method="predict_proba")
    ranked = find_label_issues(y_codes, pred, filter_by="prune_by_noise_rate",
                               return_indices_ranked_by="self_confidence", n_jobs=1)
    limit = int(max_share * len(rows))
    return rows["impression_id"].to_numpy()[ranked[:limit]].tolist()
