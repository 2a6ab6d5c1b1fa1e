"""Which examples people should label: active learning, triage and a random control.

The day's budget is spent in this order:

1. a uniformly random control slice (``control_share`` of the budget, at least 10%),
   drawn first and independently of everything else: an unbiased sample of the day that
   also feeds the gold set;
2. triage of *confident but contradicted* cases: an explicit negative (thumbs down) or
   an immediate skip on an item the champion ranked at the top of its request, the most
   confident first (``triage_share`` at most);
3. the rest split between three active-learning strategies on a model of the human
   label (``label_model``): uncertainty sampling (the smallest margin), query by
   committee (vote entropy of models fitted on bootstraps) and expected model change
   (the expected gradient length of a linear model of the graded label), from
   scikit-activeml. Until people have labelled enough examples of both kinds for the
   model (``min_labels``), the uncertainty is the champion's own: the examples whose
   predicted grade is nearest the relevance boundary.

Everything is a pure function of its inputs and a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from flywheel_assets.settings import check_label_budget
from flywheel_assets.train import features as feats

# Examples of these reasons may become gold: they are never trained on (training_set).
GOLD_REASONS = ("random", "contradicted")
# Expected model change's bootstraps: len(X) + 1 draws with replacement over all rows,
# each bootstrap fitted on the labelled rows it drew. scikit-activeml 1.0.1 draws
# ``len(X) * n_train + 1`` rows after turning a fractional ``n_train`` into a count
# already, so its default of 0.5 drew len(X)**2 / 2 rows (8.2 million for 4,048 rows);
# an integer 1 draws len(X) + 1 (and any integer above 1 is refused by its own check).
# Its docstring calls an integer "the total size": a release that honours it would make
# this one-row bootstraps, so the pin stays below 1.1 and `test_label_units` counts the
# rows each bootstrap fits on.
MODEL_CHANGE_BOOTSTRAP = 1


@dataclass(frozen=True)
class Budget:
    total: int
    control_share: float = 0.2
    triage_share: float = 0.2

    def __post_init__(self):
        check_label_budget(self.total, self.control_share, self.triage_share)

    @property
    def control(self) -> int:
        return int(np.ceil(self.control_share * self.total))

    @property
    def triage(self) -> int:
        return int(np.floor(self.triage_share * self.total))


def encoder(spec: feats.FeatureSpec) -> ColumnTransformer:
    """One-hot categoricals and standardised numerics (median-imputed): the numeric
    matrix the query strategies and the human-label model work on."""
    return ColumnTransformer(
        [("categorical", OneHotEncoder(handle_unknown="ignore", min_frequency=5,
                                       sparse_output=False), list(spec.categorical)),
         ("numeric", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                   StandardScaler()), list(spec.numeric))],
        verbose_feature_names_out=False, sparse_threshold=0.0)


def feature_space(rows: pd.DataFrame, max_categories: int = 50,
                  extra_features: tuple[str, ...] = ()) -> tuple[np.ndarray, object]:
    """The rows as a dense numeric matrix (the product's derived features, the item id
    left out: a human label is about the pair, not one item) and the fitted encoder."""
    derived = feats.derive(rows)
    spec = feats.choose(derived.drop(columns=[feats.ITEM_ID], errors="ignore"),
                        max_categories, extra_features)
    enc = encoder(spec)
    matrix = enc.fit_transform(feats.typed(derived, spec))
    return np.asarray(matrix, dtype="float64"), (enc, spec)


def transform(space, rows: pd.DataFrame) -> np.ndarray:
    enc, spec = space
    return np.asarray(enc.transform(feats.typed(feats.derive(rows), spec)), dtype="float64")


HUMAN_MAX_GRADE = 3  # people grade 0..3 (outbox.GRADE_NAMES)


def signal_boundary(relevant_grade: int, max_grade: int) -> float:
    """Where "relevant" starts on the scale of the product's signal grades (what the
    champion predicts, 0..``max_grade``): half a human grade below ``relevant_grade``,
    mapped from people's 0..3 (1.5 on the default scale, 0.5 for clicks only)."""
    return (relevant_grade - 0.5) * max_grade / HUMAN_MAX_GRADE


def relevant(grades, relevant_grade: int) -> np.ndarray:
    return (np.asarray(grades, dtype="float64") >= relevant_grade).astype("float64")


def label_model(random_state: int = 0):
    """The model of the human label (relevant or not) that active learning and the audit
    use: an L2 logistic regression, whose probabilities are calibrated enough to rank
    by uncertainty. Wrapped for scikit-activeml (NaN marks an unlabelled row)."""
    from skactiveml.classifier import SklearnClassifier
    from sklearn.linear_model import LogisticRegression

    return SklearnClassifier(LogisticRegression(max_iter=1000, C=1.0), classes=[0.0, 1.0],
                             missing_label=np.nan, random_state=random_state)


def committee(size: int, random_state: int = 0):
    from skactiveml.classifier import SklearnClassifier
    from sklearn.ensemble import BaggingClassifier
    from sklearn.linear_model import LogisticRegression

    return SklearnClassifier(
        BaggingClassifier(LogisticRegression(max_iter=1000), n_estimators=size,
                          random_state=random_state),
        classes=[0.0, 1.0], missing_label=np.nan, random_state=random_state)


def can_learn(y: np.ndarray, min_labels: int) -> bool:
    """Enough labels of both kinds for a model of the human label."""
    known = y[~np.isnan(y)]
    return len(known) >= min_labels and len(np.unique(known)) == 2


def model_change(random_state: int = 0):
    """scikit-activeml's expected model change with classic bootstraps
    (`MODEL_CHANGE_BOOTSTRAP`)."""
    from skactiveml.pool import ExpectedModelChangeMaximization
    return ExpectedModelChangeMaximization(n_train=MODEL_CHANGE_BOOTSTRAP,
                                           random_state=random_state)


def query(strategy: str, X: np.ndarray, y: np.ndarray, grades: np.ndarray,
          candidates: np.ndarray, n: int, random_state: int = 0,
          committee_size: int = 5) -> np.ndarray:
    """``n`` indices (into X) chosen by ``strategy`` among ``candidates`` (indices of
    unlabelled rows); ``y``: the relevance label of labelled rows, NaN elsewhere;
    ``grades``: the human grade of labelled rows (expected model change fits the
    graded label)."""
    from skactiveml.pool import QueryByCommittee, UncertaintySampling
    from skactiveml.regressor import SklearnRegressor
    from sklearn.linear_model import Ridge

    n = min(n, len(candidates))
    if n <= 0:
        return np.empty(0, dtype=int)
    if strategy == "uncertainty":
        chosen = UncertaintySampling(method="margin_sampling", random_state=random_state).query(
            X, y, label_model(random_state), candidates=candidates, batch_size=n)
    elif strategy == "committee":
        chosen = QueryByCommittee(method="vote_entropy", random_state=random_state).query(
            X, y, committee(committee_size, random_state), candidates=candidates, batch_size=n)
    elif strategy == "model_change":
        chosen = model_change(random_state).query(
            X, grades, SklearnRegressor(Ridge(alpha=1.0), missing_label=np.nan,
                                        random_state=random_state),
            candidates=candidates, batch_size=n)
    else:
        raise ValueError(f"unknown query strategy {strategy!r}")
    return np.asarray(chosen, dtype=int)


def contradicted(pool: pd.DataFrame) -> pd.Series:
    """Rows the champion ranked first in their request (``champion_rank`` 1) that the
    person rejected explicitly (thumbs down) or skipped right away (a skip and nothing
    else)."""
    signals = pool["signals"].apply(lambda s: set(s) if isinstance(s, (list, tuple, np.ndarray)) else set())
    negative = signals.apply(lambda s: "thumbs_down" in s or s == {"skip"})
    return (pool["champion_rank"] == 1) & negative


def select(pool: pd.DataFrame, X: np.ndarray, labelled_X: np.ndarray,
           labelled_grades: np.ndarray, budget: Budget, relevant_grade: int,
           min_labels: int, random_state: int = 0, committee_size: int = 5,
           boundary: float | None = None) -> pd.DataFrame:
    """The day's queue: rows of ``pool`` (the day's labellable examples, with
    ``champion_score`` and ``champion_rank``, ``signals``) with ``reason`` and
    ``priority`` (1 = review first), at most ``budget.total`` of them.

    ``X``: the pool in the label feature space; ``labelled_X`` / ``labelled_grades``:
    the examples people labelled before (their resolved grades); ``boundary``: where
    relevant starts on the champion's scale (`signal_boundary`)."""
    boundary = relevant_grade - 0.5 if boundary is None else boundary
    rng = np.random.default_rng(random_state)
    n = len(pool)
    taken = np.zeros(n, dtype=bool)
    picks: list[tuple[int, str]] = []

    control = rng.choice(n, min(budget.control, n), replace=False) if n else np.empty(0, int)
    taken[control] = True
    picks += [(int(i), "random") for i in control]

    flagged = np.flatnonzero(contradicted(pool).to_numpy() & ~taken)
    order = flagged[np.argsort(-pool["champion_score"].to_numpy()[flagged], kind="stable")]
    triage = order[:budget.triage]
    taken[triage] = True
    picks += [(int(i), "contradicted") for i in triage]

    left = budget.total - len(picks)
    free = np.flatnonzero(~taken)
    y_lab = relevant(labelled_grades, relevant_grade)
    if left > 0 and len(free) and can_learn(y_lab, min_labels):
        both = np.vstack([labelled_X, X])
        y = np.concatenate([y_lab, np.full(n, np.nan)])
        grades = np.concatenate([np.asarray(labelled_grades, "float64"), np.full(n, np.nan)])
        offset = len(labelled_X)
        strategies = ("uncertainty", "committee", "model_change")
        shares = np.diff(np.round(np.linspace(0, left, len(strategies) + 1))).astype(int)
        for strategy, share in zip(strategies, shares):
            candidates = np.flatnonzero(~taken) + offset
            chosen = query(strategy, both, y, grades, candidates, int(share),
                           random_state, committee_size) - offset
            taken[chosen] = True
            picks += [(int(i), strategy) for i in chosen]
    elif left > 0 and len(free):
        # No model of the human label yet: the champion's least certain examples.
        margin = np.abs(pool["champion_score"].to_numpy()[free] - boundary)
        chosen = free[np.argsort(margin, kind="stable")[:left]]
        taken[chosen] = True
        picks += [(int(i), "champion_margin") for i in chosen]

    queue = pool.iloc[[i for i, _ in picks]].copy()
    queue["reason"] = [r for _, r in picks]
    # Contradicted cases are reviewed first, then the active picks, then the control.
    rank = {"contradicted": 0, "uncertainty": 1, "committee": 1, "model_change": 1,
            "champion_margin": 1, "random": 2}
    queue["_order"] = queue["reason"].map(rank)
    queue = queue.sort_values(["_order"], kind="stable").drop(columns="_order")
    queue["priority"] = np.arange(1, len(queue) + 1)
    return queue.reset_index(drop=True)
