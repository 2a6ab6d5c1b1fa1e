"""The audit: is the loop optimising a proxy?

A model trained on human labels only (the labels of examples active learning chose,
never a gold example) is compared with the champion on the gold set (its random control
slice, less any pair the champion trained on), by AUC of
relevant against not relevant, with a paired bootstrap interval of the difference. A
human-only model that beats the champion (the interval's lower end above zero) means
the champion, trained on implicit feedback, ranks worse than a few hundred human labels
would: the loop is optimising a proxy, and an alert says so.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from flywheel_assets.label import gold as gold_lib
from flywheel_assets.label import queue as queue_lib
from flywheel_assets.label import selection
from flywheel_assets.train import model as model_lib
from flywheel_assets.train import model_store

VERDICTS = ("champion ahead", "no clear difference", "human-only model ahead",
            "not enough labels")


def due(conn, partition_date: str, every_days: int) -> bool:
    last = conn.execute("SELECT max(partition_date) FROM label.audits WHERE partition_date < ? "
                        "AND verdict <> 'not enough labels'", [partition_date]).fetchone()[0]
    return last is None or (dt.date.fromisoformat(partition_date) - last).days >= every_days


def run_audit(conn, settings, partition_date: str) -> dict:
    lab = settings.labeling
    version = gold_lib.current_version(conn, partition_date)
    gold = gold_lib.gold_rows(conn, partition_date, version) if version else None
    train = queue_lib.labelled_examples(conn, partition_date, gold_bound=False)
    champion = model_store.champion_version(settings.models)
    record = {"gold_version": version, "champion_version": champion,
              "gold_examples": 0 if gold is None else len(gold),
              "human_labels_used": len(train), "champion_auc": None, "human_model_auc": None,
              "difference_low": None, "difference_high": None,
              "verdict": "not enough labels"}
    if gold is None or champion is None:
        return record
    gold = gold[gold_lib.judged(gold, gold_lib.seen_in_training(conn, version, [champion]))]
    gold = gold.reset_index(drop=True)
    record["gold_examples"] = len(gold)
    truth = selection.relevant(gold["human_grade"], lab.relevant_grade).astype(bool)
    y = selection.relevant(train["human_grade"], lab.relevant_grade) if len(train) else np.empty(0)
    if len(gold) < settings.gate.min_gold_examples or truth.all() or not truth.any() \
            or not selection.can_learn(y, lab.min_labels):
        return record
    gold_p = queue_lib.with_profiles(conn, gold)
    train_p = queue_lib.with_profiles(conn, train)
    X, space = selection.feature_space(train_p, extra_features=settings.training.extra_features)
    human = selection.label_model().fit(X, y)
    human_scores = human.predict_proba(selection.transform(space, gold_p))[:, 1]
    pipeline = model_store.load_model(settings.models, champion, settings.training.model)
    champion_scores = model_lib.score(pipeline, gold_p)
    low, high = gold_lib.paired_auc_interval(human_scores, champion_scores, truth,
                                             settings.evaluation.bootstrap_samples,
                                             settings.gate.confidence)
    record.update(champion_auc=gold_lib.auc(champion_scores, truth),
                  human_model_auc=gold_lib.auc(human_scores, truth),
                  difference_low=low, difference_high=high,
                  verdict=("human-only model ahead" if low > 0 else
                           "champion ahead" if high < 0 else "no clear difference"))
    return record
