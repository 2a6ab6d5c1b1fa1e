"""Candidate vs champion on the same data: holdout, slices, calibration, off-policy value,
concentration. Pure functions over frames, and `evaluate_day`, which reads the day's
evidence, writes the report and records the evaluation.

Two kinds of evidence:
- the temporal holdout (the training day's curated rows, never trained on): NDCG@K on
  examined impressions, AUC, RMSE, the same per slice (new items, new users, devices,
  where the data has them), and calibration of the predicted grade;
- the day's logged requests with their candidate pools: each model's ranking policy
  valued off-policy (IPS, SNIPS, doubly robust; see `off_policy`), and the exposure Gini
  and catalogue coverage of its top-K slates over those requests.

K is the product's slate size (`evaluation.slate_size`, or read from the day's logs).
"""

from __future__ import annotations

import dataclasses
import json
from statistics import NormalDist

import numpy as np
import pandas as pd

from flywheel_assets import warehouse
from flywheel_assets.curate.feedback import latest_snapshot_date
from flywheel_assets.evaluate import logged_pools, metrics, policy_values, promotion, report
from flywheel_assets.serve.serving import Reranking
from flywheel_assets.train import features as feats
from flywheel_assets.train import model as model_lib
from flywheel_assets.train import model_store
from flywheel_assets.train import training_set as ts_lib
from flywheel_assets.train.candidate import registered_candidate

# The day's candidate, and the one an earlier day's gate left awaiting confirmation
# (gate.rule = confirmed): each is compared with the champion on the same evidence.
CONTENDERS = ("candidate", "pending")
NEW_ITEM_DAYS = 7
NEW_USER_DAYS = 14


def slate_size(conn, partition_date: str, configured: int = 0) -> int:
    """K: ``configured`` when set, else the most common number of positions per request
    in the day's impressions (1 when the day has none)."""
    if configured > 0:
        return int(configured)
    value = conn.execute("""
        SELECT mode(n) FROM (SELECT count(DISTINCT position) AS n FROM raw.impressions
                             WHERE partition_date = ? GROUP BY request_id)""",
                         [partition_date]).fetchone()[0]
    return int(value or 1)


def positive_grade(max_grade: int) -> int:
    """The grade from which an outcome counts as positive for AUC and log loss: 2
    (complete or better) on a graded vocabulary, 1 on a click-only one."""
    return min(2, max(int(max_grade), 1))


def holdout_metrics(holdout: pd.DataFrame, scores: dict[str, np.ndarray], k: int,
                    positive: int = 2) -> dict[str, dict]:
    return {name: metrics.ranking_report(holdout, s, k, positive) for name, s in scores.items()}


def slice_masks(holdout: pd.DataFrame) -> dict[str, np.ndarray]:
    """Rows of each slice the data has: cold-start items, new users, each device."""
    derived = feats.derive(holdout)
    out = {}
    if "item_age_days" in derived and derived["item_age_days"].notna().any():
        out["new_items"] = (derived["item_age_days"] <= NEW_ITEM_DAYS).to_numpy()
    if "tenure_days" in derived and derived["tenure_days"].notna().any():
        out["new_users"] = (derived["tenure_days"] <= NEW_USER_DAYS).to_numpy()
    if "device" in holdout:
        for device in sorted(holdout["device"].dropna().unique()):
            out[f"device={device}"] = (holdout["device"] == device).to_numpy()
    return out


def slice_metrics(holdout: pd.DataFrame, scores: dict[str, np.ndarray], k: int,
                  level: float = 0.95) -> dict[str, dict]:
    """Examined-only NDCG@K per slice and model, with the number of requests it rests on;
    with a champion, each contender's paired difference with it per slice (the same
    requests) and a normal interval at ``level``: the guard is a non-inferiority bound,
    not a comparison of two points."""
    examined = holdout["n_interactions"].to_numpy() > 0
    groups, labels = holdout["request_id"].to_numpy(), holdout["label_grade"].to_numpy()
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    out = {}
    for name, mask in slice_masks(holdout).items():
        rows = mask & examined
        per_model = {m: metrics.ndcg_per_group(groups[rows], labels[rows], s[rows], k)
                     for m, s in scores.items()}
        first = next(iter(per_model.values()))
        out[name] = {"requests": int(len(first)),
                     **{m: float(v.mean()) if len(v) else float("nan")
                        for m, v in per_model.items()}}
        for contender in CONTENDERS:
            if contender in per_model and "champion" in per_model and len(first) > 1:
                diff = (per_model[contender] - per_model["champion"]).to_numpy()
                se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
                out[name][f"{contender}_vs_champion"] = {
                    "delta": float(diff.mean()), "ci_low": float(diff.mean() - z * se),
                    "ci_high": float(diff.mean() + z * se), "level": level}
    return out


def calibration(holdout: pd.DataFrame, scores: np.ndarray, bins: int = 10) -> dict:
    """Predicted vs observed debiased grade (the training target) by prediction decile,
    and the expected calibration error (row-weighted mean absolute gap). Each decile's
    observed value is the target's mean weighted as the model is fitted (Σ grade / Σ θ
    of its rows under the de-biased target)."""
    weight = metrics.fit_weights(holdout)
    frame = pd.DataFrame({"pred": scores, "wobs": weight * holdout["target"].to_numpy(dtype="float64"),
                          "w": weight})
    frame["bin"] = pd.qcut(frame["pred"].rank(method="first"), bins, labels=False)
    table = frame.groupby("bin").agg(pred=("pred", "mean"), wobs=("wobs", "sum"), w=("w", "sum"),
                                     n=("pred", "size"))
    table["obs"] = table["wobs"] / table["w"].where(table["w"] > 0)
    table = table[["pred", "obs", "n"]]
    ece = float((table["n"] * (table["pred"] - table["obs"]).abs()).sum() / table["n"].sum())
    return {"expected_calibration_error": ece,
            "bins": [{k: float(v) for k, v in row.items()} for _, row in table.iterrows()]}


def paired_ndcg_difference(holdout: pd.DataFrame, candidate: np.ndarray, champion: np.ndarray,
                           n_boot: int, level: float, k: int, seed: int = 0) -> dict:
    """Examined-only NDCG@K, candidate − champion per request, with a bootstrap
    interval over requests: the gate's fallback when pools are not logged."""
    examined = holdout["n_interactions"].to_numpy() > 0
    groups, labels = holdout["request_id"].to_numpy()[examined], holdout["label_grade"].to_numpy()[examined]
    diff = (metrics.ndcg_per_group(groups, labels, candidate[examined], k)
            - metrics.ndcg_per_group(groups, labels, champion[examined], k)).to_numpy()
    rng = np.random.default_rng(seed)
    # Poisson bootstrap: weighted means of the per-request differences.
    weights = rng.poisson(1.0, (n_boot, len(diff))).astype("float64")
    boot = weights @ diff / np.maximum(weights.sum(axis=1), 1.0)
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail]) if len(diff) else (np.nan, np.nan)
    return {"delta": float(diff.mean()) if len(diff) else float("nan"), "ci_low": float(lo),
            "ci_high": float(hi), "level": level, "requests": int(len(diff))}


def popularity_baseline(holdout: pd.DataFrame, item_engagement: dict[str, float]) -> np.ndarray:
    """The no-learning baseline's scores: the catalogue's popularity where the items
    snapshot has it, else each item's mean grade in the training split (unseen items 0)."""
    if "popularity" in holdout and holdout["popularity"].notna().all():
        return np.log1p(holdout["popularity"].to_numpy(dtype="float64"))
    return holdout["item_id"].map(item_engagement).fillna(0.0).to_numpy(dtype="float64")


def evaluate(holdout: pd.DataFrame, models: dict[str, object], k: int = 10,
             positive: int = 2, item_engagement: dict[str, float] | None = None,
             n_boot: int = 200, level: float = 0.95) -> dict:
    """The holdout part of the evaluation record, at K = ``k``: each model, the
    popularity baseline and the logged order itself (``logging``: the ranking that
    produced the logs, as they showed it), and the paired difference of the candidate
    with the champion, or, before any champion, with the logged order."""
    derived = feats.derive(holdout)
    scores = {name: model_lib.score(pipe, holdout, derived) for name, pipe in models.items()}
    # The no-learning baseline: is the signal worth learning from at all?
    baselines = {"popularity": popularity_baseline(holdout, item_engagement or {}),
                 "logging": -holdout["position"].to_numpy(dtype="float64")}
    record = {"k": k, "positive_grade": positive,
              "holdout": holdout_metrics(holdout, scores | baselines, k, positive),
              "slices": slice_metrics(holdout, scores, k, level),
              "calibration": {name: calibration(holdout, s) for name, s in scores.items()}}
    base = "champion" if "champion" in scores else "logging"
    differences = {name: {"versus": base, **paired_ndcg_difference(
        holdout, scores[name], (scores | baselines)[base], n_boot, level, k)}
        for name in CONTENDERS if name in scores}
    if differences:
        record["holdout_differences"] = differences
    if "candidate" in differences:
        record["holdout_difference"] = differences["candidate"]
    return record


def sampled_requests(requests: pd.Series, max_requests: int) -> set | None:
    """At most ``max_requests`` of ``requests``, a deterministic hash sample; None when
    they are that few already."""
    requests = requests.drop_duplicates()
    if len(requests) <= max_requests:
        return None
    order = np.argsort(pd.util.hash_array(requests.to_numpy(dtype=object)), kind="stable")
    return set(requests.to_numpy()[order[:max_requests]])


def bounded_holdout(conn, day: str, max_requests: int) -> pd.DataFrame:
    """The day's holdout rows of at most ``max_requests`` requests (a hash sample),
    read from the warehouse for the sampled requests only: memory and time stay bounded
    however big a day gets."""
    requests = conn.execute("SELECT DISTINCT request_id FROM ml.training_set "
                            "WHERE partition_date = ? AND split = 'holdout'", [day]).df()["request_id"]
    keep = sampled_requests(requests, max_requests)
    if keep is None:
        return ts_lib.read_split(conn, day, "holdout")
    conn.register("_sampled_requests", pd.DataFrame({"request_id": sorted(keep)}))
    try:
        return conn.execute("""
            SELECT * FROM ml.training_set
            WHERE partition_date = ? AND split = 'holdout'
              AND request_id IN (SELECT request_id FROM _sampled_requests)
            ORDER BY request_id, position, impression_id""", [day]).df()
    finally:
        conn.unregister("_sampled_requests")


def catalogue_size(conn, partition_date: str) -> int:
    """Items in the latest items snapshot, or, when the product lands none, the distinct
    items of the day's impressions and candidate pools."""
    items_date = latest_snapshot_date(conn, "raw.items", partition_date)
    if items_date is not None:
        return conn.execute("SELECT count(DISTINCT item_id) FROM raw.items WHERE "
                            "partition_date = ?", [items_date]).fetchone()[0]
    return conn.execute("""
        SELECT count(DISTINCT item_id) FROM (
            SELECT item_id FROM raw.impressions WHERE partition_date = $d
            UNION ALL SELECT item_id FROM raw.candidates WHERE partition_date = $d)""",
                        {"d": partition_date}).fetchone()[0]


def examination_curve(conn, day: str) -> tuple[dict, np.ndarray | None]:
    """The day's examination curve from `position_bias` (position → θ̂) and its bootstrap
    draws (D×positions; None when the curve was not identified or has no draws)."""
    rows = conn.execute("SELECT position, examination, draws FROM curated.position_bias "
                        "WHERE partition_date = ? ORDER BY position", [day]).fetchall()
    examination = {position: theta for position, theta, _ in rows}
    draws = [d for _, theta, d in rows if theta is not None]
    if not rows or len(draws) != len(rows) or any(d is None for d in draws) \
            or len({len(d) for d in draws}) != 1:
        return examination, None
    return examination, np.array(draws, dtype="float64").T


def day_inputs(conn, day: str, configured_k: int) -> tuple[dict, int, int, dict, np.ndarray | None]:
    """What evaluating a day needs besides the models: the examination curve, the
    catalogue size, K, each item's mean grade in the training split (the popularity
    baseline of a product without a catalogue snapshot) and the curve's bootstrap draws."""
    examination, draws = examination_curve(conn, day)
    engagement = dict(conn.execute(
        "SELECT item_id, avg(label_grade) FROM ml.training_set WHERE partition_date = ? "
        "AND split = 'train' GROUP BY item_id", [day]).fetchall())
    return (examination, catalogue_size(conn, day), slate_size(conn, day, configured_k),
            engagement, draws)


class NothingToEvaluate(RuntimeError):
    """No candidate registered for the day, or an empty holdout."""


def evaluate_day(connect, settings, partition_date: str) -> dict:
    """Evaluate the day's candidate against the champion it competes with, write the
    report under ``reports/evaluation/<day>/`` and record it in `ml.model_evaluations`;
    returns the record, with ``report`` (its paths and chart)."""
    day = partition_date
    with connect() as conn:
        candidate = registered_candidate(conn, day)
    if candidate is None:
        raise NothingToEvaluate(f"no candidate model registered for {day}")
    store, e = settings.models, settings.evaluation
    champion = model_store.champion_before(store, candidate)
    configured = settings.training.model
    models = {"candidate": model_store.load_model(store, candidate, configured)}
    if champion:
        models["champion"] = model_store.load_model(store, champion, configured)
    with connect() as conn:
        pending = (promotion.awaiting_confirmation(conn, day, candidate, champion)
                   if settings.gate.rule == "confirmed" else None)
    if pending:
        models["pending"] = model_store.load_model(store, pending, configured)
    with connect() as conn:
        holdout = bounded_holdout(conn, day, e.max_holdout_requests)
        examination, catalogue, k, engagement, draws = day_inputs(conn, day, e.slate_size)
        try:
            logged, no_ope = logged_pools.load(conn, day, e.max_ope_requests,
                                               e.max_catalogue_pool, k), None
        except logged_pools.NoPools as exc:
            logged, no_ope = None, str(exc)
        holdout, logged = with_profiles(conn, holdout, logged)
    if holdout.empty:
        raise NothingToEvaluate(f"the holdout of {day} is empty: nothing to evaluate on")
    positive = positive_grade(settings.signals.max_grade)
    record = {"partition_date": day, "candidate_version": candidate,
              "champion_version": champion, "pending_version": pending,
              "holdout_rows": len(holdout),
              "holdout_requests": int(holdout["request_id"].nunique()),
              "catalogue_size": int(catalogue), "examination": examination,
              **evaluate(holdout, models, k, positive, engagement, e.bootstrap_samples,
                         settings.gate.confidence)}
    with connect() as conn:
        record["gold"] = gold_metrics(conn, settings, day, models, {
            "candidate": candidate, "champion": champion, "pending": pending})
    if logged is not None and logged.log.n_requests:
        record["off_policy"] = value_day(logged, models, settings, k, examination, catalogue,
                                         engagement, draws=draws)
    else:
        record["off_policy"] = None
        record["off_policy_unavailable"] = no_ope or "no logged request left to value"
    written = report.write(settings.reports, record)
    with connect() as conn:
        record_evaluation(conn, record, written["dir"])
    return {**record, "report": written}


def gold_metrics(conn, settings, partition_date: str, models: dict,
                 versions: dict) -> dict | None:
    """Each model's AUC on the day's gold set (relevant by human label against not
    relevant) and the paired bootstrap interval of each contender minus the champion,
    on the gold examples a comparison can rest on (`gold.judged`: the random control
    slice, none of the compared models trained on); the production failures the gold
    set also holds are counted. None before a gold version exists."""
    from flywheel_assets.label import gold as gold_lib

    rows = gold_lib.gold_rows(conn, partition_date)
    if rows.empty:
        return None
    version = str(rows["version"].iloc[0])
    used = gold_lib.judged(rows, gold_lib.seen_in_training(conn, version, versions.values()))
    out = {"version": version, "examples": len(rows), "failures": int(rows["failure"].sum()),
           "judged": int(used.sum())}
    rows = feats.attach_profiles(conn, rows[used].reset_index(drop=True))
    relevant = rows["human_grade"].to_numpy() >= settings.labeling.relevant_grade
    out["relevant"] = int(relevant.sum())
    if not len(rows):
        return out
    derived = feats.derive(rows)
    scores = {name: model_lib.score(m, rows, derived) for name, m in models.items()}
    out |= {name: gold_lib.auc(s, relevant) for name, s in scores.items()}
    if "champion" in scores and relevant.any() and not relevant.all():
        for name in scores.keys() - {"champion"}:
            low, high = gold_lib.paired_auc_interval(
                scores[name], scores["champion"], relevant,
                settings.evaluation.bootstrap_samples, settings.gate.confidence)
            out[f"{name}_vs_champion"] = {"difference": out[name] - out["champion"],
                                          "ci_low": low, "ci_high": high}
    return out


def with_profiles(conn, holdout: pd.DataFrame | None,
                  logged: logged_pools.LoggedDay | None):
    """The holdout rows and the logged pools with the `p_*` features of the profiles
    before their day, as the models serve (a model that reads them, even one trained
    before `profiles.enabled` was switched off; a model that does not ignores them)."""
    if holdout is not None:
        holdout = feats.attach_profiles(conn, holdout)
    if logged is not None:
        logged = dataclasses.replace(logged, pools=feats.attach_profiles(conn, logged.pools))
    return holdout, logged


def trust_limits(settings) -> policy_values.TrustLimits:
    e = settings.evaluation
    return policy_values.TrustLimits(e.min_effective_sample_size, e.min_ess_share,
                                     e.max_weight_share, settings.gate.min_ope_support)


def value_day(logged: logged_pools.LoggedDay, models: dict, settings, k: int,
              examination: dict, catalogue: int, engagement: dict, uniform: bool = True,
              draws: np.ndarray | None = None) -> dict:
    """Every policy's off-policy value on the day's logged requests (policy_values)."""
    e = settings.evaluation
    baseline = (np.log1p(logged.popularity) if logged.popularity is not None else
                logged.matrix(logged.pools["item_id"].map(engagement).fillna(0.0)))
    return policy_values.value_policies(
        logged, models, k, e.value, examination, int(catalogue), trust_limits(settings),
        e.bootstrap_samples, settings.gate.confidence,
        Reranking(settings.serving.diversity, settings.serving.popularity_balance), baseline,
        uniform, draws, contenders=CONTENDERS)


NAMED_POLICIES = ("logging", "uniform", "popularity", "champion", "candidate")


def evaluate_policies(settings, partition_date: str, names: list[str]) -> dict:
    """``flywheel evaluate``: what would each policy in ``names`` (one of
    :data:`NAMED_POLICIES` or a model version) have done on the day's logged requests?
    ``candidate`` is the day's registered candidate, ``champion`` the model in service.
    The day's candidate is scored (and so a feature of the shared doubly robust reward
    model) whether or not it is asked for."""
    day, e, store = partition_date, settings.evaluation, settings.models
    # A command a person runs: it waits for a run that holds the warehouse.
    with warehouse.operator_connect(settings.warehouse) as conn:
        candidate = registered_candidate(conn, day)
        examination, catalogue, k, engagement, draws = day_inputs(conn, day, e.slate_size)
        logged = logged_pools.load(conn, day, e.max_ope_requests, e.max_catalogue_pool, k)
        _, logged = with_profiles(conn, None, logged)
    versions = {"candidate": candidate, "champion": model_store.champion_version(store)}
    models, missing = {}, {}
    if candidate:
        models["candidate"] = model_store.load_model(store, candidate,
                                                     settings.training.model)
    for name in names:
        if name in ("logging", "uniform", "popularity"):
            continue
        version = versions.get(name, name)
        if version is None:
            missing[name] = ("no model of ours has served: the logging policy is the champion"
                             if name == "champion" else f"no candidate registered for {day}")
            continue
        models[name] = model_store.load_model(store, version, settings.training.model)
    record = value_day(logged, models, settings, k, examination, catalogue, engagement,
                       uniform="uniform" in names, draws=draws)
    record["policies"] = {n: record["policies"][n] for n in names if n in record["policies"]}
    record["not_valued"] = {n: why for n, why in record.get("not_valued", {}).items()
                            if n in names} | missing
    record["versions"] = {n: versions.get(n, n) for n in names if n in models}
    return record


def record_evaluation(conn, record: dict, report_dir) -> None:
    """Replace the day's evaluation in `ml.model_evaluations`. A gate decision taken on
    the evaluation it replaces goes with it, in the same transaction: the gate must
    judge the new evidence before `champion_model` can apply anything."""
    day = record["partition_date"]
    with warehouse.transaction(conn):
        warehouse.replace_rows(conn, "ml.model_evaluations", {"partition_date": day}, {
            "partition_date": day, "candidate_version": record["candidate_version"],
            "champion_version": record["champion_version"],
            "holdout_rows": record["holdout_rows"], "holdout_requests": record["holdout_requests"],
            "metrics": json.dumps(record, default=str), "report_path": str(report_dir),
            "evaluated_at": warehouse.now()}, own_transaction=False)
        conn.execute("DELETE FROM ml.gate_decisions WHERE partition_date = ?", [day])


def read_evaluation(conn, partition_date: str) -> dict | None:
    """The day's recorded evaluation, or None."""
    row = conn.execute("SELECT metrics FROM ml.model_evaluations WHERE partition_date = ?",
                       [partition_date]).fetchone()
    return json.loads(row[0]) if row else None


def headline_figures(record: dict) -> dict:
    """What the UI shows of an evaluation at a glance."""
    ope = record["off_policy"] or {"policies": {}}
    figures = {"k": record.get("k"), "logged_requests": ope.get("requests", 0),
               "candidate_holdout_ndcg_at_k": record["holdout"]["candidate"]["ndcg_at_k"]}
    gold = record.get("gold")
    if gold:
        figures |= {"gold_version": gold["version"], "gold_examples": gold["examples"],
                    "gold_judged": gold.get("judged"),
                    **{f"{name}_gold_auc": gold.get(name) for name in ("candidate", "champion")
                       if name in gold}}
    for name, p in ope["policies"].items():
        figures[f"{name}_dr_value"] = p["dr"]["value"]
        figures[f"{name}_trusted"] = p["trusted"]
        if "catalog_coverage" in p:
            figures |= {f"{name}_catalog_coverage": p["catalog_coverage"],
                        f"{name}_exposure_gini": p["exposure_gini"]}
    return figures
