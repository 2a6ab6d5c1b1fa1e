"""Import the inbox into the warehouse: annotations, quarantine, resolved labels.

A file belongs to the first day whose import saw it (by name and SHA-256, in
`label.inbox_files`); a day imported before is not imported again (a re-run reports
what it imported), and a file already imported on another day is not read again. Files are never
moved or deleted. Annotations are checked against the queues: a task key no queue
issued, or an annotator who already labelled the task (in an earlier file, or earlier
in this one), is quarantined with the reason. Tasks that got annotations on the day
are resolved (`inbox.resolve`) over all their annotations so far.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from flywheel_assets import warehouse
from flywheel_assets.label import inbox

ANNOTATION_COLUMNS = ("task_key", "annotator", "grade", "annotation_id", "created_at",
                      "source_file", "source_row")
QUARANTINE_COLUMNS = ("source_file", "source_row", "task_key", "reason", "record")


def inbox_files(inbox_dir: Path) -> list[Path]:
    if not inbox_dir.is_dir():
        return []
    return sorted(p for p in inbox_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _day_figures(conn, partition_date: str) -> dict:
    """The figures of a day already imported, from its tables."""
    manifest = conn.execute("SELECT source_file, sha256, format, rows_read, accepted, quarantined "
                            "FROM label.inbox_files WHERE partition_date = ? ORDER BY source_file",
                            [partition_date]).df()
    reasons = conn.execute("SELECT reason FROM label.quarantined_labels WHERE partition_date = ?",
                           [partition_date]).df()["reason"]
    everything = conn.execute("SELECT task_key, annotator, grade FROM label.annotations "
                              "WHERE partition_date <= ?", [partition_date]).df()
    today = conn.execute("SELECT task_key FROM label.annotations WHERE partition_date = ?",
                         [partition_date]).df()["task_key"]
    labels = conn.execute("SELECT count(*) FROM label.human_labels WHERE partition_date = ?",
                          [partition_date]).fetchone()[0]
    return {"files": len(manifest), "rows_read": int(manifest["rows_read"].sum()),
            "accepted": int(manifest["accepted"].sum()),
            "quarantined": int(manifest["quarantined"].sum()),
            "quarantine_reasons": reasons.str.split(":").str[0].value_counts().to_dict(),
            "labels": labels, "agreement_alpha": inbox.agreement(everything),
            "agreement_alpha_today": inbox.agreement(everything[everything["task_key"].isin(set(today))]),
            "files_detail": manifest.to_dict("records")}


def import_inbox(conn, inbox_dir: Path, partition_date: str) -> dict:
    """Import the files new to the inbox in one transaction; returns the day's figures.
    A day imported before keeps what it imported (a re-run reports it again): files
    that arrived since belong to the next day that runs."""
    if conn.execute("SELECT count(*) FROM label.inbox_files WHERE partition_date = ?",
                    [partition_date]).fetchone()[0]:
        return _day_figures(conn, partition_date)
    seen = {(r[0], r[1]) for r in conn.execute(
        "SELECT source_file, sha256 FROM label.inbox_files").fetchall()}
    files = []
    for path in inbox_files(inbox_dir):
        try:
            digest = _sha256(path)
        except OSError as error:
            # Gone or unreadable since the listing: the next day's import tries again.
            files.append((path, f"unreadable: {error}"))
            continue
        if (path.name, digest) not in seen:
            files.append((path, digest))
    known_tasks = {r[0] for r in conn.execute(
        "SELECT task_key FROM label.labeling_queue WHERE partition_date <= ?",
        [partition_date]).fetchall()}
    # Any other day's annotations count: a backfill of an earlier day must not accept
    # again what a later day imported.
    labelled = {(r[0], r[1]): r[2] for r in conn.execute(
        "SELECT task_key, annotator, source_file FROM label.annotations WHERE partition_date <> ?",
        [partition_date]).fetchall()}
    accepted, quarantined, manifest = [], [], []
    for path, digest in files:
        if digest.startswith("unreadable: "):
            parsed = inbox.Parsed(path.name)
            parsed.reject(0, digest, "")
            digest = None
        else:
            parsed = inbox.parse_file(path)
        kept = []
        for a in parsed.annotations:
            key = (a["task_key"], a["annotator"])
            if a["task_key"] not in known_tasks:
                parsed.reject(a["source_row"], f"unknown task {a['task_key']!r}: no labelling "
                                               f"queue up to {partition_date} issued it",
                              a, a["task_key"])
            elif key in labelled:
                parsed.reject(a["source_row"], f"duplicate: annotator {a['annotator']!r} already "
                                               f"labelled task {a['task_key']!r} (in "
                                               f"{labelled[key]})", a, a["task_key"])
            else:
                labelled[key] = path.name
                kept.append(a)
        accepted += kept
        quarantined += parsed.quarantined
        manifest.append({"source_file": path.name, "sha256": digest, "format": parsed.format,
                         "rows_read": len(kept) + len(parsed.quarantined),
                         "accepted": len(kept), "quarantined": len(parsed.quarantined)})
    day = pd.Timestamp(partition_date).date()
    frames = {
        "label.annotations": pd.DataFrame(accepted, columns=list(ANNOTATION_COLUMNS)),
        "label.quarantined_labels": pd.DataFrame(quarantined, columns=list(QUARANTINE_COLUMNS)),
        "label.inbox_files": pd.DataFrame(manifest, columns=["source_file", "sha256", "format",
                                                              "rows_read", "accepted", "quarantined"]),
    }
    with warehouse.transaction(conn):
        for table, frame in frames.items():
            conn.register("_rows", frame.assign(partition_date=day))
            try:
                warehouse.replace_partition(conn, table, partition_date, "SELECT * FROM _rows")
            finally:
                conn.unregister("_rows")
        resolve_day(conn, partition_date)
    return _day_figures(conn, partition_date)


def resolve_day(conn, partition_date: str) -> int:
    """One resolved label per task annotated on the day (inside the caller's
    transaction); returns how many."""
    rows = conn.execute("""
        SELECT task_key, list(grade ORDER BY annotator) AS grades
        FROM label.annotations
        WHERE partition_date <= $d
          AND task_key IN (SELECT task_key FROM label.annotations WHERE partition_date = $d)
        GROUP BY task_key ORDER BY task_key""", {"d": partition_date}).fetchall()
    frame = pd.DataFrame({
        "task_key": [r[0] for r in rows],
        "grade": [inbox.resolve(r[1]) for r in rows],
        "annotations": [len(r[1]) for r in rows],
        "unanimous": [len(set(r[1])) == 1 for r in rows],
    })
    conn.register("_labels", frame.assign(partition_date=pd.Timestamp(partition_date).date()))
    try:
        return warehouse.replace_partition(conn, "label.human_labels", partition_date,
                                           "SELECT * FROM _labels")
    finally:
        conn.unregister("_labels")
