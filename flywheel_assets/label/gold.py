"""The gold set, what it guards and what it measures.

A gold version is a frozen, complete set of human-labelled examples: every labelled
example of the queue's random control slice and of its contradicted cases (the others,
chosen by active learning, teach the human-label model instead), production failures
first (examples the champion of their day got wrong: the contradicted cases and those
whose predicted relevance the people overturned). A new version is cut on a day when
new labels of that kind arrived; a version never changes once written (erasure aside).

Gold examples must never be trained on: `training_set` leaves out every example that is
or may become gold (same request and item, or same user and item), and a blocking check
fails when one appears. Gold metrics: the AUC of a model's scores for relevant against
not relevant examples (threshold-free, so a regressor of graded feedback and a
classifier of human labels compare on one scale).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flywheel_assets.label.selection import GOLD_REASONS, HUMAN_MAX_GRADE, signal_boundary

QUEUE_FEATURES = ("impression_id", "request_id", "ts", "user_key", "item_id", "position",
                  "propensity", "device", "country", "age_band", "signup_date", "category",
                  "published_date", "duration_s", "popularity", "c0", "c1", "c2", "c3",
                  "c4", "c5", "n_interactions", "extras")
GOLD_IN = ", ".join(f"'{r}'" for r in GOLD_REASONS)


def version_name(partition_date: str) -> str:
    return f"gold-{partition_date}"


def current_version(conn, partition_date: str) -> str | None:
    """The newest gold version cut on or before the day."""
    row = conn.execute("SELECT max(version) FROM label.gold_set WHERE partition_date <= ?",
                       [partition_date]).fetchone()
    return row[0] if row else None


def cut_version(conn, partition_date: str, relevant_grade: int, max_grade: int = 3) -> dict:
    """Cut the day's gold version when gold-bound labels arrived on the day (inside the
    caller's transaction): all gold-bound tasks' latest resolved labels as of the day,
    failures first. Returns what was done."""
    arrived = conn.execute(f"""
        SELECT count(*) FROM label.human_labels h
        JOIN label.labeling_queue q USING (task_key)
        WHERE h.partition_date = ? AND q.reason IN ({GOLD_IN})""", [partition_date]).fetchone()[0]
    conn.execute("DELETE FROM label.gold_set WHERE partition_date = ?", [partition_date])
    if not arrived:
        return {"new_examples": 0, "version": current_version(conn, partition_date)}
    version = version_name(partition_date)
    conn.execute(f"""
        INSERT INTO label.gold_set BY NAME
        WITH latest AS (
            SELECT task_key, arg_max(grade, partition_date) AS grade
            FROM label.human_labels WHERE partition_date <= $d GROUP BY task_key),
        gold AS (
            SELECT q.task_key, q.reason, l.grade, q.impression_id, q.request_id, q.user_key,
                   q.item_id, q.partition_date AS source_date,
                   q.reason = 'contradicted'
                     OR coalesce((q.champion_score >= $b) <> (l.grade >= $r), false)
                     AS failure
            FROM latest l JOIN label.labeling_queue q USING (task_key)
            WHERE q.reason IN ({GOLD_IN}) AND q.partition_date <= $d)
        SELECT DATE '{partition_date}' AS partition_date, '{version}' AS version,
               row_number() OVER (ORDER BY failure DESC, source_date, task_key) AS rank, *
        FROM gold""", {"d": partition_date, "r": relevant_grade,
                       "b": signal_boundary(relevant_grade, max_grade)})
    size, failures, before = conn.execute("""
        SELECT count(*), count(*) FILTER (WHERE failure),
               (SELECT count(*) FROM label.gold_set WHERE version =
                  (SELECT max(version) FROM label.gold_set WHERE partition_date < $d))
        FROM label.gold_set WHERE partition_date = $d""", {"d": partition_date}).fetchone()
    return {"version": version, "size": size, "failures": failures,
            "new_examples": size - (before or 0)}


def gold_rows(conn, partition_date: str, version: str | None = None) -> pd.DataFrame:
    """The gold examples of a version (default: the day's current one) with the
    attributes their queue rows carry (what a model scores) and the human grade."""
    version = version or current_version(conn, partition_date)
    if version is None:
        return pd.DataFrame()
    columns = ", ".join(f"q.{c}" for c in QUEUE_FEATURES if c not in (
        "impression_id", "request_id", "user_key", "item_id"))
    return conn.execute(f"""
        SELECT g.version, g.rank, g.task_key, g.reason, g.failure, g.grade AS human_grade,
               g.impression_id, g.request_id, g.user_key, g.item_id, g.source_date, {columns},
               q.signals, q.implicit_grade, q.champion_score
        FROM label.gold_set g JOIN label.labeling_queue q USING (task_key)
        WHERE g.version = ? ORDER BY g.rank""", [version]).df()


def reserved_filter(alias: str, partition_date: str, same_day: bool = False) -> str:
    """SQL: the rows of ``alias`` that are not, and may not become, gold as of the day
    (same request and item, or same user and item as a gold example, or as a random or
    contradicted pick of an earlier day's queue; of the day's own queue too with
    ``same_day``). The day's own queue is chosen after its training set, from its
    holdout: the holdout keeps those rows, so re-running the day's training set gives
    the same rows, and only the training split (a retrain that learns from part of the
    day) leaves them out."""
    before = "<=" if same_day else "<"
    return f"""NOT EXISTS (
        SELECT 1 FROM (SELECT request_id, user_key, item_id FROM label.gold_set
                       WHERE partition_date <= DATE '{partition_date}'
                       UNION
                       SELECT request_id, user_key, item_id FROM label.labeling_queue
                       WHERE reason IN ({GOLD_IN})
                         AND partition_date {before} DATE '{partition_date}') _gold
        WHERE _gold.item_id = {alias}.item_id
          AND (_gold.request_id = {alias}.request_id OR _gold.user_key = {alias}.user_key))"""


def leaked(conn, partition_date: str) -> tuple[int, list[dict]]:
    """Training rows of the day's training set that match a gold example (same request
    and item, or same user and item), and up to three examples."""
    query = """
        FROM ml.training_set t JOIN label.gold_set g
          ON g.item_id = t.item_id AND (g.request_id = t.request_id OR g.user_key = t.user_key)
        WHERE t.partition_date = ? AND g.partition_date <= ?"""
    n = conn.execute(f"SELECT count(DISTINCT t.impression_id) {query}",
                     [partition_date, partition_date]).fetchone()[0]
    examples = conn.execute(f"SELECT DISTINCT t.impression_id, t.split, g.task_key, g.version "
                            f"{query} ORDER BY 1 LIMIT 3", [partition_date, partition_date]).df()
    return int(n), examples.to_dict("records")


def seen_in_training(conn, version: str, model_versions) -> set[str]:
    """Gold tasks of ``version`` whose pair (same request or user, and item) is among the
    training rows of any of ``model_versions`` (a model trained before the example was
    picked may have learnt from it; it must not be judged on it)."""
    versions = [v for v in model_versions if v]
    if not versions:
        return set()
    rows = conn.execute(f"""
        SELECT DISTINCT g.task_key
        FROM label.gold_set g
        JOIN ml.model_registry r ON r.version IN ({", ".join("?" * len(versions))})
        JOIN ml.training_set t
          ON t.partition_date = r.partition_date AND t.split = 'train'
         AND t.item_id = g.item_id AND (t.request_id = g.request_id OR t.user_key = g.user_key)
        WHERE g.version = ?""", [*versions, version]).fetchall()
    return {r[0] for r in rows}


def judged(gold: pd.DataFrame, seen: set[str]) -> np.ndarray:
    """The gold examples a comparison of models rests on: the random control slice (an
    unbiased sample; the contradicted cases were chosen by the champion's own errors)
    that none of the compared models learnt from."""
    return (gold["reason"] == "random").to_numpy() & ~gold["task_key"].isin(seen).to_numpy()


def auc(scores: np.ndarray, relevant: np.ndarray) -> float | None:
    """P(a relevant example scores above a non-relevant one), ties counting half; None
    without both kinds."""
    relevant = np.asarray(relevant, dtype=bool)
    pos, neg = np.asarray(scores)[relevant], np.asarray(scores)[~relevant]
    if not len(pos) or not len(neg):
        return None
    ranks = pd.Series(np.concatenate([pos, neg])).rank(method="average").to_numpy()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def paired_auc_interval(a: np.ndarray, b: np.ndarray, relevant: np.ndarray,
                        samples: int = 500, confidence: float = 0.9,
                        seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of AUC(a) - AUC(b) on the same examples (resampled together)."""
    rng = np.random.default_rng(seed)
    n = len(relevant)
    diffs = []
    for _ in range(samples):
        pick = rng.integers(0, n, n)
        x, y = auc(a[pick], relevant[pick]), auc(b[pick], relevant[pick])
        if x is not None and y is not None:
            diffs.append(x - y)
    if not diffs:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(diffs, tail)), float(np.percentile(diffs, 100 - tail))


def signal_validity(gold: pd.DataFrame, grades: dict[str, int], relevant_grade: int) -> dict:
    """What each logged signal says about the human label, on the random control slice
    of the gold set (unbiased: the contradicted cases were chosen by their signals): per
    signal type, how often it appears, the share of its examples people call relevant,
    its agreement (the signal's grade on the hierarchy and the human call, relevant or
    not, agree) and the mutual information (bits) between its presence and relevance."""
    sample = gold[gold["reason"] == "random"] if len(gold) else gold
    if not len(sample):
        return {"examples": 0, "signals": {}}
    human = sample["human_grade"].to_numpy() >= relevant_grade
    sets = sample["signals"].apply(lambda s: set(s) if isinstance(s, (list, tuple, np.ndarray)) else set())
    out = {}
    for signal in [*grades, "none"]:
        present = sets.apply(lambda s: not s if signal == "none" else signal in s).to_numpy()
        if not present.any():
            continue
        # The signal's grade on people's 0..3 scale.
        max_grade = max(grades.values()) or 1
        says_relevant = grades.get(signal, 0) * HUMAN_MAX_GRADE / max_grade >= relevant_grade
        out[signal] = {
            "examples": int(present.sum()),
            "relevant_share": round(float(human[present].mean()), 4),
            "agreement": round(float((human[present] == says_relevant).mean()), 4),
            "mutual_information_bits": round(mutual_information(present, human), 5)}
    implicit = sample["implicit_grade"].to_numpy() * HUMAN_MAX_GRADE / (max(grades.values()) or 1) \
        >= relevant_grade
    return {"examples": int(len(sample)), "relevant_share": round(float(human.mean()), 4),
            "implicit_agreement": round(float((implicit == human).mean()), 4),
            "implicit_mutual_information_bits": round(mutual_information(implicit, human), 5),
            "signals": out}


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(A; B) in bits of two boolean arrays."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n = len(a)
    if not n:
        return 0.0
    total = 0.0
    for x in (False, True):
        for y in (False, True):
            joint = np.mean((a == x) & (b == y))
            if joint > 0:
                total += joint * np.log2(joint / (np.mean(a == x) * np.mean(b == y)))
    return float(total)
