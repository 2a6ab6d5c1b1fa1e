"""The queue as files people open: Label Studio import JSON and a spreadsheet CSV.

`data/labeling/outbox/<date>/` holds `tasks.json` (Label Studio's import format: one
task per example with its `data` and the champion's guess as a prediction, whose `score`
is the confidence of the guess so that Label Studio can show the least certain first),
`tasks.csv` (the same tasks for a spreadsheet; a cell that starts with `=`, `+`, `-` or
`@` is prefixed with `'` so no spreadsheet runs it as a formula) and `label_config.xml`
(the labelling interface for a Label Studio project). Written to a temporary folder and
renamed into place: a reader never sees half a queue.

Tasks carry pseudonymous keys only (the warehouse's `user_key`, never a raw user id).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

# The grades people give: a graded relevance rating on the signal hierarchy's scale.
GRADE_NAMES = {0: "not relevant", 1: "somewhat relevant", 2: "relevant", 3: "very relevant"}
CONTROL_NAME = "relevance"
# What an annotator sees of a task (and the keys that bring the answer back).
# Labelling is blind: what the user did (the implicit signals) is not shown.
TASK_FIELDS = ("task_key", "impression_id", "request_id", "user_key", "item_id", "position",
               "category", "country", "age_band", "device", "reason", "priority", "text")
FORMULA_PREFIXES = ("=", "+", "-", "@")


def label_config() -> str:
    """The Label Studio labelling interface: the task's text and one graded choice."""
    choices = "\n".join(f'    <Choice value="{g}" hint="{name}"/>'
                        for g, name in GRADE_NAMES.items())
    return (f'<View>\n  <Header value="Would this person find this item relevant?"/>\n'
            f'  <Text name="text" value="$text"/>\n'
            f'  <Choices name="{CONTROL_NAME}" toName="text" choice="single" required="true">\n'
            f'{choices}\n  </Choices>\n</View>\n')


def _text(row) -> str:
    parts = [f"item {row.get('item_id')} (category {row.get('category') or 'unknown'})",
             f"shown at position {row.get('position')}"]
    who = ", ".join(str(row[c]) for c in ("country", "age_band", "device")
                    if c in row and pd.notna(row[c]))
    if who:
        parts.append(f"to a user ({who})")
    return "; ".join(parts)


def task_rows(queue: pd.DataFrame) -> list[dict]:
    """The tasks' `data` fields, in priority order."""
    out = []
    for _, row in queue.sort_values("priority").iterrows():
        record = {k: row[k] for k in TASK_FIELDS if k in row and k != "text"}
        record = {k: (None if isinstance(v, float) and np.isnan(v) else
                      v.item() if isinstance(v, np.generic) else v) for k, v in record.items()}
        record["text"] = _text(record)
        out.append(record)
    return out


def import_tasks(queue: pd.DataFrame, model_version: str | None,
                 max_grade: int = max(GRADE_NAMES)) -> list[dict]:
    """Label Studio import JSON: `data` plus the champion's guess (its predicted grade
    on the product's signal scale 0..``max_grade``, rounded and mapped onto people's
    0..3) as a prediction whose `score` is the confidence of that guess (1 - the
    distance of the prediction from the grade it rounds to, times 2)."""
    tasks = []
    by_key = queue.set_index("task_key")
    for data in task_rows(queue):
        task = {"data": data}
        predicted = by_key.at[data["task_key"], "champion_score"] if "champion_score" in by_key else None
        if predicted is not None and pd.notna(predicted) and model_version:
            on_scale = float(np.clip(np.round(predicted), 0, max_grade))
            guess = int(np.round(on_scale * max(GRADE_NAMES) / max_grade))
            confidence = float(np.clip(1.0 - 2.0 * abs(float(predicted) - np.round(predicted)), 0, 1))
            task["predictions"] = [{
                "model_version": model_version, "score": round(confidence, 4),
                "result": [{"from_name": CONTROL_NAME, "to_name": "text", "type": "choices",
                            "value": {"choices": [str(guess)]}}]}]
        tasks.append(task)
    return tasks


def escape_cell(value) -> str:
    """A spreadsheet cell that cannot run as a formula (OWASP's CSV injection advice)."""
    text = "" if value is None else str(value)
    stripped = text.lstrip(" \t\r\n")
    if stripped[:1] in FORMULA_PREFIXES or text[:1] in ("\t", "\r"):
        return "'" + text
    return text


def tasks_csv(tasks: list[dict]) -> str:
    # The two columns a person fills in: who they are, and the grade.
    columns = list(TASK_FIELDS) + ["model_version", "predicted_grade", "confidence",
                                   "annotator", CONTROL_NAME]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for task in tasks:
        data = task["data"]
        prediction = (task.get("predictions") or [{}])[0]
        guess = ((prediction.get("result") or [{}])[0].get("value") or {}).get("choices", [""])[0] \
            if prediction else ""
        values = {**data, "model_version": prediction.get("model_version", ""),
                  "predicted_grade": guess, "confidence": prediction.get("score", ""),
                  "annotator": "", CONTROL_NAME: ""}
        writer.writerow([escape_cell(values.get(c)) for c in columns])
    return buffer.getvalue()


def write_outbox(outbox_dir: Path, partition_date: str, queue: pd.DataFrame,
                 model_version: str | None, max_grade: int = max(GRADE_NAMES)) -> Path:
    """Write the day's queue atomically; returns the day's folder."""
    final = outbox_dir / partition_date
    staging = outbox_dir / f".{partition_date}.writing-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    tasks = import_tasks(queue, model_version, max_grade)
    (staging / "tasks.json").write_text(json.dumps(tasks, indent=1, default=str))
    (staging / "tasks.csv").write_text(tasks_csv(tasks))
    (staging / "label_config.xml").write_text(label_config())
    if final.exists():
        old = outbox_dir / f".{partition_date}.old-{os.getpid()}"
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old)
    else:
        staging.rename(final)
    return final
