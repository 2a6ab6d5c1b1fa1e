"""The Label Studio round trip against the real server (`.venv-label-studio`, pinned by
`make label-studio-install`): a queue the outbox wrote goes in with its predictions,
people's annotations (two annotators on one task, a cancelled one) come back through
all three export formats, and the inbox reads them as they were given. The server runs
on a free port with a fresh data directory and a random token, and is stopped at the
end, its whole process group with it."""

import csv
import io
import json
import re
import secrets
import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from flywheel_assets import warehouse
from flywheel_assets.harness.services import group_members
from flywheel_assets.ingest.pseudonymise import user_key
from flywheel_assets.label import inbox, labels, outbox, studio

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LS_VENV = ROOT / ".venv-label-studio"
DAY = "2026-01-05"
MODEL = "m-test"
# Raw ids exist only here, upstream of the pseudonymiser: nothing sent to Label Studio
# may carry them.
RAW_USER_IDS = ("raw-user-7731904", "raw-user-9902518")
SECRET = "a-test-pseudonym-secret"
# The champion's predicted grades: confidence 0.0, 0.8, 0.5, 1.0, 0.8, 0.8 (outbox).
SCORES = (0.5, 2.9, 1.25, 0.0, 2.4, 1.6)
# What Label Studio adds to a flat (JSON_MIN / CSV) record besides the task's data.
FLAT_EXPORT_FIELDS = {"id", "annotator", "annotation_id", "created_at", "updated_at",
                      "lead_time", outbox.CONTROL_NAME}


def _queue() -> pd.DataFrame:
    rows = []
    for i, score in enumerate(SCORES):
        rows.append({
            "task_key": f"{DAY}/imp-{i}", "impression_id": f"imp-{i}", "request_id": f"req-{i // 2}",
            "user_key": user_key(RAW_USER_IDS[i % 2], SECRET), "item_id": f"item-{10 + i}",
            "position": i % 3 + 1, "category": ["books", "music", "news"][i % 3],
            "country": "DE", "age_band": "25-34", "device": ["mobile", "desktop"][i % 2],
            "reason": "champion_margin" if i < 4 else "random", "priority": i + 1,
            "champion_score": score})
    return pd.DataFrame(rows)


def test_label_studio_round_trip(tmp_path):
    executable = LS_VENV / "bin" / "label-studio"
    if not executable.exists():
        pytest.fail(f"Label Studio is not installed ({executable} is missing): run "
                    f"`make label-studio-install` (make test does)")
    token = secrets.token_hex(16)
    port = studio.free_port()
    proc = studio.start_server(LS_VENV, tmp_path / "label_studio", port, "admin@example.com",
                               secrets.token_urlsafe(16), token)
    pgid = proc.pid
    try:
        client = studio.LabelStudio(f"http://127.0.0.1:{port}", token)
        started = time.monotonic()
        version = client.wait_ready(120, proc=proc)
        print(f"Label Studio {version.get('release')} ready in {time.monotonic() - started:.1f} s "
              f"(fresh data dir)")
        assert version.get("release") == "1.23.2", version
        assert studio.served_port(proc) == port
        _round_trip(client, tmp_path)
    finally:
        studio.stop_server(proc)
    assert proc.returncode is not None
    assert not group_members(pgid), "a Label Studio process outlived the test"
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


def _round_trip(client: studio.LabelStudio, tmp_path: Path) -> None:
    labeling = tmp_path / "labeling"
    queue = _queue()
    outbox.write_outbox(labeling / "outbox", DAY, queue, MODEL)
    written = json.loads((labeling / "outbox" / DAY / "tasks.json").read_text())
    expected = {t["data"]["task_key"]: t for t in written}
    keys = [t["data"]["task_key"] for t in written]  # the queue's (priority) order

    # Push: the project with the outbox's interface, every task with its prediction.
    pushed = studio.push_queue(client, labeling, DAY)
    project_id = pushed["project_id"]
    assert len(pushed["task_ids"]) == len(written) and pushed["skipped"] == 0
    again = studio.push_queue(client, labeling, DAY)
    assert again == {"project_id": project_id, "task_ids": [], "skipped": len(written)}
    project = client.call("GET", f"/api/projects/{project_id}/")
    assert project["title"] == studio.PROJECT_TITLE
    assert project["sampling"] == "Uncertainty sampling"
    assert project["show_collab_predictions"] is False  # blind: the guess is not shown
    assert project["parsed_label_config"][outbox.CONTROL_NAME]["labels"] == ["0", "1", "2", "3"]

    tasks = {t["data"]["task_key"]: t for t in client.tasks(project_id)}
    assert sorted(tasks) == sorted(keys)
    assert [tasks[k]["id"] for k in keys] == pushed["task_ids"]
    for key, task in tasks.items():
        assert task["data"] == expected[key]["data"]
        assert set(task["data"]) == set(outbox.TASK_FIELDS)
        assert re.fullmatch(r"u_[0-9a-f]{24}", task["data"]["user_key"])
        (prediction,) = task["predictions"]
        (sent,) = expected[key]["predictions"]
        assert prediction["model_version"] == MODEL
        assert prediction["score"] == pytest.approx(sent["score"])
        assert prediction["result"] == sent["result"]
    # Uncertainty sampling: the least confident guess (score 0.5 -> confidence 0) first.
    least_sure = min(keys, key=lambda k: expected[k]["predictions"][0]["score"])
    assert client.call("GET", f"/api/projects/{project_id}/next")["id"] == tasks[least_sure]["id"]

    # Nothing annotated yet: nothing lands in the inbox.
    assert all(studio.pull_export(client, project_id, labeling, kind) is None
               for kind in studio.EXPORT_TYPES)
    assert not (labeling / "inbox").exists() or not any((labeling / "inbox").iterdir())

    # Annotate as people would: two annotators on one task, one skip, some single grades.
    admin = client.whoami()["id"]
    second = client.create_user("annotator-two@example.com")
    given = [(keys[0], admin, 3), (keys[0], second, 1), (keys[1], admin, 2),
             (keys[2], admin, 0), (keys[3], second, 2)]
    for key, annotator, grade in given:
        made = client.annotate(tasks[key]["id"], grade, completed_by=annotator, lead_time=3.5)
        assert made["completed_by"] == annotator and not made["was_cancelled"]
    cancelled = client.annotate(tasks[keys[4]]["id"], None, cancelled=True)
    assert cancelled["was_cancelled"] is True and cancelled["completed_by"] == admin
    posted = sorted((key, str(annotator), grade) for key, annotator, grade in given)

    # Pull all three formats into the inbox and read them with the product's parser.
    paths = {kind: studio.pull_export(client, project_id, labeling, kind)
             for kind in ("JSON", "JSON_MIN", "CSV")}
    inbox_dir = labeling / "inbox"
    assert sorted(p.name for p in inbox_dir.iterdir()) == sorted(p.name for p in paths.values())
    for kind, path in paths.items():
        assert path.parent == inbox_dir
        assert re.fullmatch(rf"label-studio-{project_id}-\d{{8}}T\d{{12}}Z\."
                            rf"{'csv' if kind == 'CSV' else 'json'}", path.name), path.name
        text = path.read_text()
        for raw in RAW_USER_IDS:
            assert raw not in text, f"raw user id in the {kind} export"
        parsed = inbox.parse_file(path)
        got = sorted((a["task_key"], a["annotator"], a["grade"]) for a in parsed.annotations)
        assert got == posted, kind
        if kind == "JSON":
            content = json.loads(text)
            rows = sum(len(t["annotations"]) for t in content)
            assert parsed.format == "label_studio_json"
            assert {t["data"]["task_key"] for t in content} == set(keys[:5])
            assert all(set(t["data"]) == set(outbox.TASK_FIELDS) for t in content)
            (skip,) = parsed.quarantined
            assert skip["task_key"] == keys[4] and skip["reason"].startswith("cancelled")
        else:
            records = (json.loads(text) if kind == "JSON_MIN"
                       else list(csv.DictReader(io.StringIO(text))))
            rows = len(records)
            assert parsed.format == ("label_studio_json_min" if kind == "JSON_MIN" else "csv")
            assert all(set(r) == set(outbox.TASK_FIELDS) | FLAT_EXPORT_FIELDS for r in records), \
                sorted(records[0])
            assert parsed.quarantined == []  # these formats leave cancelled ones out
        assert rows == len(parsed.annotations) + len(parsed.quarantined) == parsed.rows_read
    assert all(raw not in json.dumps(list(tasks.values())) for raw in RAW_USER_IDS)

    # The day's import takes the first export; the later ones repeat it (duplicates).
    with warehouse.connect(tmp_path / "warehouse.duckdb") as conn:
        warehouse.replace_partition_with_frame(conn, "label.labeling_queue", DAY, queue.assign(
            partition_date=pd.Timestamp(DAY).date(), champion_version=MODEL))
        figures = labels.import_inbox(conn, inbox_dir, DAY)
        resolved = dict(conn.execute("SELECT task_key, grade FROM label.human_labels").fetchall())
    assert figures["files"] == 3
    assert figures["accepted"] == len(given)
    assert figures["quarantined"] == 1 + 2 * len(given)
    assert resolved == {keys[0]: inbox.resolve([3, 1]), keys[1]: 2, keys[2]: 0, keys[3]: 2}
