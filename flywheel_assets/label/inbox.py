"""Labels people returned: parse what lands in `data/labeling/inbox/`, resolve, agree.

Three formats are read, told apart by content, not by name: Label Studio's JSON export
(a list of tasks, each with `data` and `annotations`), its JSON_MIN export (a list of
flat records, one per annotation: the task's data fields, the control's value under its
name, `annotator`) and CSV (the same flat records, as Label Studio or a spreadsheet
writes them). Every annotation read is either accepted or quarantined with a reason
(rows read = accepted + quarantined): a file that cannot be parsed is one quarantined
row; cancelled (skipped) annotations, rows without a task key, unknown task keys,
grades outside the scale and duplicates (the same annotator on the same task again,
as a cumulative export repeats) are quarantined row by row. Nothing raises.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flywheel_assets.label.outbox import CONTROL_NAME, GRADE_NAMES

FORMATS = ("label_studio_json", "label_studio_json_min", "csv")
RECORD_CHARS = 500


@dataclass
class Parsed:
    """One inbox file: its format, the annotations read and the rows quarantined."""

    source_file: str
    format: str | None = None
    annotations: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return len(self.annotations) + len(self.quarantined)

    def reject(self, row: int, reason: str, record, task_key=None) -> None:
        text = record if isinstance(record, str) else json.dumps(record, default=str)
        self.quarantined.append({"source_file": self.source_file, "source_row": row,
                                 "task_key": task_key, "reason": reason,
                                 "record": text[:RECORD_CHARS]})


def parse_grade(value) -> int | None:
    """The grade of a choice value ("2", 2, "2 - relevant", ["2"]), None when it is not
    one of the scale's grades."""
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    if isinstance(value, dict):
        value = (value.get("choices") or [None])[0]
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, np.integer)):
        grade = int(value)
    elif isinstance(value, float):
        grade = int(value) if value.is_integer() else None
    else:
        head = str(value)[:20].strip().split(" ")[0].split("-")[0].strip()
        grade = int(head) if head.isdigit() and len(head) <= 3 else None
        if grade is None:
            names = {name: g for g, name in GRADE_NAMES.items()}
            grade = names.get(str(value).strip().lower())
    return grade if grade in GRADE_NAMES else None


def _annotator(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("email") or value.get("id")
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return None
    return str(value).strip()


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def _accept(parsed: Parsed, row: int, task_key, annotator, grade_value, cancelled,
            annotation_id, created_at, record) -> None:
    key = None if task_key is None else str(task_key).strip() or None
    if cancelled:
        parsed.reject(row, "cancelled annotation (the annotator skipped the task)", record, key)
        return
    if key is None:
        parsed.reject(row, "no task_key in the task's data: not a task of our queues", record)
        return
    if grade_value is None or (isinstance(grade_value, str) and not grade_value.strip()):
        parsed.reject(row, "unanswered: no grade given", record, key)
        return
    grade = parse_grade(grade_value)
    if grade is None:
        parsed.reject(row, f"{CONTROL_NAME!r} is not a grade of 0..{max(GRADE_NAMES)}: "
                           f"{str(grade_value)[:60]!r}", record, key)
        return
    parsed.annotations.append({
        "task_key": key, "annotator": _annotator(annotator) or "unknown", "grade": grade,
        "annotation_id": None if annotation_id in (None, "") else str(annotation_id),
        "created_at": None if created_at in (None, "") else str(created_at),
        "source_file": parsed.source_file, "source_row": row})


def _control_value(result: list) -> object:
    for part in result or []:
        if isinstance(part, dict) and part.get("from_name") == CONTROL_NAME:
            return part.get("value")
    return None


def _from_export(parsed: Parsed, tasks: list) -> None:
    row = 0
    for task in tasks:
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            parsed.reject(row, "a task without a `data` object", task)
            row += 1
            continue
        annotations = task.get("annotations")
        if not isinstance(annotations, list):
            parsed.reject(row, "a task without an `annotations` list", task, data.get("task_key"))
            row += 1
            continue
        for annotation in annotations:
            if not isinstance(annotation, dict):
                parsed.reject(row, "an annotation that is not an object", annotation,
                              data.get("task_key"))
            else:
                _accept(parsed, row, data.get("task_key"), annotation.get("completed_by"),
                        _control_value(annotation.get("result")),
                        bool(annotation.get("was_cancelled")), annotation.get("id"),
                        annotation.get("created_at"),
                        {"task_key": data.get("task_key"), "annotation": annotation})
            row += 1


def _from_flat(parsed: Parsed, records: list) -> None:
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            parsed.reject(row, "a record that is not an object", record)
            continue
        _accept(parsed, row, record.get("task_key"), record.get("annotator"),
                record.get(CONTROL_NAME), _truthy(record.get("was_cancelled", "")),
                record.get("annotation_id"), record.get("created_at"), record)


def parse_text(text: str, source_file: str) -> Parsed:
    """Parse one inbox file's text (never raises: anything unexpected quarantines the
    whole file, with the error)."""
    try:
        return _parse(text, source_file)
    except Exception as error:  # noqa: BLE001 - one bad file must not stop the import
        parsed = Parsed(source_file)
        parsed.reject(0, f"unreadable: {type(error).__name__}: {str(error)[:200]}", text[:RECORD_CHARS])
        return parsed


def _parse(text: str, source_file: str) -> Parsed:
    parsed = Parsed(source_file)
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped[:1] in ("[", "{"):
        try:
            content = json.loads(stripped)
        except json.JSONDecodeError as error:
            parsed.reject(0, f"not valid JSON: {error}", stripped)
            return parsed
        if isinstance(content, dict):
            content = [content]
        if content and all(isinstance(t, dict) and "annotations" in t for t in content):
            parsed.format = "label_studio_json"
            _from_export(parsed, content)
        else:
            parsed.format = "label_studio_json_min"
            _from_flat(parsed, content)
        return parsed
    try:
        rows = list(csv.DictReader(io.StringIO(stripped)))
    except csv.Error as error:
        parsed.reject(0, f"not valid CSV: {error}", stripped)
        return parsed
    if not rows or "task_key" not in rows[0] or CONTROL_NAME not in rows[0]:
        parsed.reject(0, f"not a label export: JSON (Label Studio JSON or JSON_MIN) or CSV "
                         f"with `task_key` and `{CONTROL_NAME}` columns expected", stripped)
        return parsed
    parsed.format = "csv"
    _from_flat(parsed, rows)
    return parsed


def parse_file(path: Path) -> Parsed:
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        parsed = Parsed(path.name)
        parsed.reject(0, f"unreadable: {error}", "")
        return parsed
    return parse_text(text, path.name)


def resolve(grades) -> int:
    """One label from several annotators' grades: the most common; a tie goes to the
    lower of the tied grades nearest the median (an ordinal scale has no mean)."""
    values = np.asarray(list(grades), dtype=int)
    counts = np.bincount(values, minlength=max(GRADE_NAMES) + 1)
    tied = np.flatnonzero(counts == counts.max())
    median = np.median(values)
    return int(tied[np.argmin(np.abs(tied - median) + tied * 1e-9)])


def agreement(annotations) -> float | None:
    """Krippendorff's alpha (ordinal) over the tasks with two or more annotators; None
    when no task has two, or every grade given is the same (alpha is undefined)."""
    import krippendorff

    frame = annotations if hasattr(annotations, "groupby") else None
    if frame is None or not len(frame):
        return None
    multi = frame.groupby("task_key")["annotator"].transform("nunique") >= 2
    shared = frame[multi]
    if not len(shared) or shared["grade"].nunique() < 2:
        return None
    matrix = shared.pivot_table(index="annotator", columns="task_key", values="grade",
                                aggfunc="first").to_numpy(dtype="float64")
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal",
                                    value_domain=sorted(GRADE_NAMES)))
