"""The world's annotators: people who answer the product's labelling queues.

A queue written on day q (`data/labeling/outbox/<q>/tasks.json`) is answered on day
q + `annotation_delay_days` and lands in `data/labeling/inbox/` as a Label Studio JSON
export, the format a real Label Studio project gives. The right answer is the grade
the world's truth gives the pair (the ordinal outcome model without its noise: the
number of grade thresholds the user's utility for the item clears); an annotator gives
it with probability 1 - `annotator_noise` and a uniformly random other grade otherwise.
A share `annotation_overlap` of tasks gets a second annotator (agreement), a share
`annotation_cancel_share` of answers is a skip (cancelled). Seeded by the world's seed
and the day.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

from flywheel_assets.label.outbox import CONTROL_NAME
from flywheel_assets.simulation import carousel, truth
from flywheel_assets.simulation.config import WorldConfig

ANNOTATION_KEY = 7001


def true_grades(truth_day_dir: Path, config: WorldConfig, request_ids, item_ids) -> np.ndarray:
    """The noise-free grade of each (request, item) pair of one day: -1 where the world
    does not know the pair."""
    requests = np.load(truth_day_dir / "requests.npz")
    users = pd.read_parquet(truth_day_dir / "users.parquet")
    items = pd.read_parquet(truth_day_dir / "items.parquet")
    d = config.latent_dim
    by_request = pd.Series(requests["user_idx"], index=requests["request_id"].astype(str))
    by_item = pd.Series(np.arange(len(items)), index=items["item_id"].astype(str))
    user_idx = by_request.reindex([str(r) for r in request_ids]).to_numpy()
    item_idx = by_item.reindex([str(i) for i in item_ids]).to_numpy()
    known = ~(pd.isna(user_idx) | pd.isna(item_idx))
    grades = np.full(len(user_idx), -1, dtype=int)
    if known.any():
        u = user_idx[known].astype(int)
        i = item_idx[known].astype(int)
        taste = users[[f"taste_{k}" for k in range(d)]].to_numpy()[u]
        latent = items[[f"latent_{k}" for k in range(d)]].to_numpy()[i]
        z = truth.utility(config, taste, latent, items["quality"].to_numpy()[i])
        grades[known] = (z[:, None] >= truth.GRADE_THRESHOLDS[None, :]).sum(axis=1)
    return grades


def noisy(grades: np.ndarray, noise: float, rng: np.random.Generator,
          levels: int = len(truth.GRADE_THRESHOLDS) + 1) -> np.ndarray:
    """Each grade kept with probability 1 - ``noise``, else a uniformly random other one."""
    wrong = rng.random(len(grades)) < noise
    shift = rng.integers(1, levels, len(grades))
    return np.where(wrong, (grades + shift) % levels, grades)


def answer(data_dir: Path, world_directory: Path, config: WorldConfig, date: str) -> dict:
    """Answer the queue due on ``date``; writes `inbox/<date>-world-annotators.json`."""
    from flywheel_assets.simulation.world import truth_dir

    if config.profile == carousel.PROFILE:
        return {"answered": 0, "note": "the carousel's requests are anonymous: no annotators"}
    asked = dt.date.fromisoformat(date) - dt.timedelta(days=config.annotation_delay_days)
    tasks_file = data_dir / "labeling" / "outbox" / asked.isoformat() / "tasks.json"
    if not tasks_file.exists():
        return {"answered": 0, "queue_date": asked.isoformat(), "note": "no queue that day"}
    tasks = json.loads(tasks_file.read_text())
    day = config.day_index(asked)
    data = [t["data"] for t in tasks]
    right = true_grades(truth_dir(world_directory, config, day), config,
                        [d["request_id"] for d in data], [d["item_id"] for d in data])
    rng = np.random.default_rng([config.seed, ANNOTATION_KEY, config.day_index(date)])
    first = rng.integers(0, config.annotators, len(tasks))
    second = np.where(rng.random(len(tasks)) < config.annotation_overlap,
                      (first + rng.integers(1, max(config.annotators, 2), len(tasks)))
                      % max(config.annotators, 1), -1)
    exported, answered, next_id = [], 0, 1
    for n, (task, grade) in enumerate(zip(tasks, right)):
        if grade < 0:
            continue
        annotations = []
        for who in (first[n], second[n]):
            if who < 0 or (annotations and config.annotators < 2):
                continue
            given = int(noisy(np.array([grade]), config.annotator_noise, rng)[0])
            cancelled = bool(rng.random() < config.annotation_cancel_share)
            annotations.append({
                "id": next_id, "completed_by": int(who) + 1, "was_cancelled": cancelled,
                "result": [] if cancelled else [
                    {"from_name": CONTROL_NAME, "to_name": "text", "type": "choices",
                     "value": {"choices": [str(given)]}}],
                "created_at": f"{date}T12:00:00Z"})
            next_id += 1
            answered += 1
        exported.append({"id": n + 1, "data": task["data"], "annotations": annotations})
    inbox = data_dir / "labeling" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / f"{date}-world-annotators.json"
    staging = inbox / f".{target.name}.writing"
    staging.write_text(json.dumps(exported))
    staging.replace(target)
    return {"answered": answered, "tasks": len(exported), "queue_date": asked.isoformat(),
            "file": str(target)}
