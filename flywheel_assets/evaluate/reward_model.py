"""The doubly robust estimators' reward model: one model of the grade once examined,
fitted on the day's own logs, cross-fitted, and shared by every policy valued.

A policy's own scores make a poor reward model: they are what it ranks by, not a
calibrated grade, and a model scoring its own choices optimistically shifts the direct
part of its estimate (the estimate stays unbiased only while every propensity and θ is
exact). This one regresses the observed grade of each shown candidate, de-biased by the
examination of its position (y / θ, weighted by θ: the weighted least-squares estimate
is Σ y / Σ θ, the ratio of observed to expected examination), on every policy's score
of it (and its popularity, when the product has one). Cross-fitting: the users are split
in two folds and each fold is predicted by the model fitted on the other, so no
request's own outcome enters its reward model (Chernozhukov et al., "Double/debiased
machine learning", 2018). Every policy valued on the day shares the same predictions,
so the model cannot favour one of them in a paired difference.
"""

from __future__ import annotations

import numpy as np

FOLDS = 2
# Fewer shown candidates than this in a fold: no model (the estimators' direct part is 0,
# doubly robust = IPS).
MIN_ROWS = 200
# A model of a few scores needs no more rows than this per fold (a reproducible sample).
MAX_ROWS = 50_000


def features(scores: dict[str, np.ndarray], popularity: np.ndarray | None,
             shape: tuple[int, int]) -> np.ndarray:
    """R×P×F: each policy's score (by name, sorted) and the popularity."""
    columns = [np.nan_to_num(scores[name]) for name in sorted(scores)]
    if popularity is not None:
        columns.append(np.log1p(np.maximum(np.nan_to_num(popularity), 0.0)))
    return np.stack(columns, axis=-1) if columns else np.zeros((*shape, 0))


def cross_fitted(x: np.ndarray, shown_position: np.ndarray, grade: np.ndarray,
                 theta: np.ndarray, cluster: np.ndarray | None, seed: int = 0
                 ) -> tuple[np.ndarray, dict]:
    """R×P predicted grade once examined, and how it was made."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    n_requests = shown_position.shape[0]
    cluster = np.arange(n_requests) if cluster is None else np.asarray(cluster)
    shown = ~np.isnan(shown_position)
    rows, cols = np.nonzero(shown)
    at = shown_position[rows, cols].astype(np.int64) - 1
    exam = np.maximum(theta[np.clip(at, 0, len(theta) - 1)], 1e-6)
    target, weight = grade[rows, cols] / exam, exam
    codes = np.unique(cluster, return_inverse=True)[1]
    fold_of = np.random.default_rng(seed).integers(0, FOLDS, size=int(codes.max(initial=0)) + 1)
    fold = fold_of[codes]
    out = np.zeros(shown_position.shape)
    info = {"kind": "cross-fitted", "folds": FOLDS, "rows": int(len(rows)),
            "max_rows_per_fold": MAX_ROWS,
            "features": int(x.shape[-1])}
    if x.shape[-1] == 0 or min(int((fold[rows] == f).sum()) for f in range(FOLDS)) < MIN_ROWS:
        return out, {**info, "kind": "none (too few shown candidates or no scores)"}
    rng = np.random.default_rng(seed + 1)
    for f in range(FOLDS):
        train = np.flatnonzero(fold[rows] != f)
        if len(train) > MAX_ROWS:
            train = np.sort(rng.choice(train, MAX_ROWS, replace=False))
        model = HistGradientBoostingRegressor(max_iter=100, max_leaf_nodes=15,
                                              learning_rate=0.1, early_stopping=False,
                                              random_state=seed)
        model.fit(x[rows[train], cols[train]], target[train], sample_weight=weight[train])
        predict = fold == f
        out[predict] = model.predict(x[predict].reshape(-1, x.shape[-1])).reshape(
            int(predict.sum()), x.shape[1])
    return np.maximum(out, 0.0), info
