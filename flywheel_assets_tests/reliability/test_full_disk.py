"""The disk fills while the product writes. The data directory (the warehouse, DuckDB's
temporary directory, the models) is on a small tmpfs whose free space a filler file
takes: a second day's rotation, run by the product's CLI, fails in the step that writes
the day, says the disk is full, and leaves every warehouse table as it was (no half
day, no passed check for it, no stray file); once the filler is gone the same day goes
through. A model saved or promoted on the full disk leaves the champion in service.

Where no tmpfs can be mounted (not root, no CAP_SYS_ADMIN), the writing process runs
under a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) instead: its writes past the
limit fail with EFBIG, an operating-system failure too. Never skipped."""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from flywheel_assets import warehouse
from flywheel_assets.cli import main
from flywheel_assets.serve.serving import current_policy
from flywheel_assets.settings import Settings
from flywheel_assets.train import model_store
from flywheel_assets.train.model import train
from flywheel_assets_tests.helpers import land_day, rotate, rows_digest, tiny_training_rows
from flywheel_assets_tests.ingest.test_ingest import INGEST
from flywheel_assets_tests.test_rotation_small_world import CONFIG

DAY1, DAY2 = "2026-01-01", "2026-01-02"
FLYWHEEL = [sys.executable, "-m", "flywheel_assets.cli"]
# Room for a few days of the small world (a rotated day takes about 10 MB); the filler
# takes whatever a test leaves free.
TMPFS_SIZE = "128m"
# A run that neither fails nor finishes in this long hangs.
HANG_SECONDS = 300


class FullDisk:
    """A data directory whose disk can be filled (a tmpfs and a filler file) or, where
    no tmpfs can be mounted, a file-size limit for the processes :meth:`run` starts."""

    def __init__(self, root: Path, mounted: bool):
        self.root, self.mounted = root, mounted
        self.filler = root / "filler"
        self.limit: int | None = None
        # What the operating system says to a write that does not fit.
        self.error = "No space left on device" if mounted else "File too large"

    def available(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def fill(self, headroom: int) -> None:
        """Leave ``headroom`` bytes that can be written (at most)."""
        if not self.mounted:
            self.limit = headroom
            return
        with open(self.filler, "wb") as fh:
            left = self.available() - headroom
            while left > 0:
                left -= fh.write(b"\0" * min(left, 1 << 20))
            fh.flush()
            os.fsync(fh.fileno())
        assert self.available() <= headroom

    def free(self) -> None:
        self.limit = None
        self.filler.unlink(missing_ok=True)

    def run(self, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
        """``argv`` in a process of its own, on the disk as it is now; fails the test if
        it does not end within HANG_SECONDS."""
        limit = self.limit

        def limited():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=HANG_SECONDS,
                                  env=env, preexec_fn=limited if limit is not None else None)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{argv[-5:]} hung on a full disk: {exc.stderr!r}") from exc


@pytest.fixture
def disk(tmp_path):
    root = tmp_path / "disk"
    root.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs",
                            str(root)], capture_output=True, text=True)
    mounted = mount.returncode == 0 and os.path.ismount(root)
    try:
        yield FullDisk(root, mounted)
    finally:
        if mounted and subprocess.run(["umount", str(root)]).returncode != 0:
            subprocess.run(["umount", "-l", str(root)], check=True)


def _digests(path: Path) -> dict[str, tuple]:
    """Rows and a digest of the sorted rows of every table of the warehouse, opened as
    the product opens it (read-write: a write-ahead log left behind is replayed)."""
    with warehouse.connect(path) as conn:
        tables = conn.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables() "
                              "WHERE NOT temporary ORDER BY 1").fetchall()
        return {table: rows_digest(conn, table) for (table,) in tables}


def _files(data_dir: Path) -> list[str]:
    """Every file and folder of the data directory but the Dagster instance's."""
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
                  if "dagster_home" not in p.relative_to(data_dir).parts)


def _messages(error) -> str:
    """A step's error and every error that caused it."""
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def _dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).parents[2] / "flywheel_assets" / "dagster.yaml", home)
    return home


def test_a_day_that_fills_the_disk_fails_in_its_write_and_leaves_the_warehouse_as_it_was(
        disk, tmp_path):
    data_dir = disk.root / "data"
    settings = Settings.from_env(data_dir)
    # What `flywheel rotate` creates on its first call (it does so before it runs).
    settings.ensure_dagster_home()
    instance = dg.DagsterInstance.ephemeral()
    # How much a day's rows take in the warehouse: day 1 ingested into an empty one.
    land_day(data_dir, CONFIG, DAY1)
    with warehouse.connect(settings.warehouse_path):
        pass
    empty = settings.warehouse_path.stat().st_size
    rotate(data_dir, DAY1, instance, selection=INGEST)
    day_size = settings.warehouse_path.stat().st_size - empty
    assert day_size > 0
    # Then the whole of day 1, and day 2 landed: the state the failed day must leave.
    rotate(data_dir, DAY1, instance)
    land_day(data_dir, CONFIG, DAY2)
    before, files = _digests(settings.warehouse_path), _files(data_dir)
    assert before["raw.impressions"][0] > 0 and before["curated.curated_feedback"][0] > 0

    # Day 2 is as large as day 1: half of day 1's size cannot hold it.
    disk.fill(day_size // 2)
    home = _dagster_home(tmp_path)
    run = disk.run([*FLYWHEEL, "rotate", "--day", DAY2, "--data-dir", str(data_dir)],
                   env={**os.environ, "DAGSTER_HOME": str(home)})

    # The run failed (it did not hang), in the step that writes the day, and what it
    # recorded says the disk is full; so does what the operator reads.
    assert run.returncode == 1, (run.stdout, run.stderr[-3000:])
    run_id = re.search(rf"^{DAY2}: run (\S+) FAILED; 0 impressions", run.stdout, re.M)
    assert run_id, run.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance_on_disk:
        assert instance_on_disk.get_run_by_id(run_id[1]).status == dg.DagsterRunStatus.FAILURE
        failed = {e.dagster_event.step_key: _messages(e.dagster_event.event_specific_data.error)
                  for e in instance_on_disk.all_logs(
                      run_id[1], of_type=dg.DagsterEventType.STEP_FAILURE)}
    assert "landing_day" in failed, failed
    assert all(disk.error in message for message in failed.values()), failed
    # The summary's line for the failed step names the cause, not Dagster's wrapper.
    summary = re.search(r"^step landing_day failed: (.*)$", run.stderr, re.M)
    assert summary and disk.error in summary[1], run.stderr[-3000:]
    # The warehouse opens and holds what it held before, table for table, row for row:
    # nothing of day 2, and no check of day 2 that passed.
    assert _digests(settings.warehouse_path) == before
    with warehouse.connect(settings.warehouse_path) as conn:
        assert conn.execute("SELECT count(*) FROM monitor.check_results WHERE partition_date "
                            "= ? AND passed", [DAY2]).fetchall() == [(0,)]
    # No write-ahead log, spill file or half-written file left behind.
    assert _files(data_dir) == files

    # Space freed: the same day goes through.
    disk.free()
    rotate(data_dir, DAY2, instance)
    with warehouse.connect(settings.warehouse_path) as conn:
        assert conn.execute("SELECT count(*) FROM raw.impressions WHERE partition_date = ?",
                            [DAY2]).fetchall()[0][0] > 0
        assert conn.execute("SELECT count(*) FROM monitor.check_results WHERE partition_date "
                            "= ? AND asset = 'raw_impressions' AND check_name = "
                            "'rows_reconcile' AND passed", [DAY2]).fetchall() == [(1,)]


# On the full disk: a model saved as the training step saves it, then an operator's
# `flywheel promote` of a saved one. What each did, by line.
ATTEMPTS = textwrap.dedent("""
    import sys
    from flywheel_assets.cli import main
    from flywheel_assets.settings import Settings
    from flywheel_assets.train import model_store
    from flywheel_assets.train.model import train
    from flywheel_assets_tests.helpers import tiny_training_rows

    data_dir = sys.argv[1]
    model = train(tiny_training_rows(3), params={"max_iter": 5})
    for name, attempt in [
            ("save", lambda: model_store.save_model(Settings.from_env(data_dir).models_dir,
                                                    "m3", model, {"n": 3})),
            ("promote", lambda: main(["promote", "--version", "m2", "--reason", "better",
                                      "--data-dir", data_dir]))]:
        try:
            print(name, "returned", attempt())
        except Exception as exc:
            print(name, "raised", type(exc).__name__, exc)
""")


def _models(models_dir: Path) -> dict[str, bytes]:
    """Every file of the models dir but the pointer's lock (empty; model_store.champion_lock
    makes it on the first move)."""
    return {str(p.relative_to(models_dir)): p.read_bytes() if p.is_file() else b"/"
            for p in sorted(models_dir.rglob("*")) if p.name != "champion.lock"}


def test_a_model_or_a_promotion_on_a_full_disk_leaves_the_champion_in_service(disk):
    data_dir = disk.root / "data"
    settings = Settings.from_env(data_dir)
    for i, version in enumerate(["m1", "m2"]):
        model_store.save_model(settings.models_dir, version,
                               train(tiny_training_rows(i), params={"max_iter": 5}), {"n": i})
    model_store.set_champion(settings.models_dir, "m1", "first", "test")
    with warehouse.connect(settings.warehouse_path):
        pass
    before = _models(settings.models_dir)

    disk.fill(0)
    attempts = disk.run([sys.executable, "-c", ATTEMPTS, str(data_dir)])
    assert attempts.returncode == 0, attempts.stderr[-3000:]
    outcome = dict(line.split(" ", 1) for line in attempts.stdout.splitlines())
    # Both refused by the operating system, said as it said it: the save raises, the
    # command says why and exits 2.
    assert outcome.keys() == {"save", "promote"}, attempts.stdout
    assert outcome["save"].startswith("raised OSError") and disk.error in outcome["save"], outcome
    assert outcome["promote"] == "returned 2", outcome
    promote_said = re.search(r"^flywheel promote: (.*)$", attempts.stderr, re.M)
    assert promote_said and disk.error in promote_said[1], attempts.stderr[-3000:]
    # Byte for byte what it was: no m3, no staging folder, no temporary pointer; the
    # pointer and the history untouched, m1 is what serving loads, and no promotion is
    # recorded.
    assert _models(settings.models_dir) == before
    assert current_policy(settings).version == "m1"
    with warehouse.connect(settings.warehouse_path) as conn:
        assert conn.execute("SELECT count(*) FROM ml.promotions").fetchall() == [(0,)]

    disk.free()
    assert main(["promote", "--version", "m2", "--reason", "better",
                 "--data-dir", str(data_dir)]) == 0
    assert current_policy(settings).version == "m2"
    assert json.loads((settings.models_dir / model_store.CHAMPION_HISTORY).read_text()) == [
        "m1", "m2"]
    with warehouse.connect(settings.warehouse_path) as conn:
        assert conn.execute("SELECT new_champion FROM ml.promotions").fetchall() == [("m2",)]
