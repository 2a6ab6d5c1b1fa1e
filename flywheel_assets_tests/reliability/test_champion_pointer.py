"""The champion pointer on the bad day: a promotion killed half-way leaves the old
champion in service, a failed write leaves no stray file, and a corrupted pointer is
refused with a message that says how to repair it, which `flywheel promote` does."""

import json

import duckdb

import pytest

from flywheel_assets import storage
from flywheel_assets.cli import main
from flywheel_assets.serve.serving import current_policy
from flywheel_assets.settings import Settings
from flywheel_assets.train import model_store
from flywheel_assets.train.model import train
from flywheel_assets_tests.helpers import tiny_training_rows


@pytest.fixture
def models(tmp_path):
    settings = Settings.from_env(tmp_path)
    for i, version in enumerate(["m1", "m2"]):
        model_store.save_model(settings.models_dir, version,
                               train(tiny_training_rows(i), params={"max_iter": 5}), {"n": i})
    model_store.set_champion(settings.models_dir, "m1", "first", "test")
    return settings


def _killed_before_the_pointer(models, monkeypatch, version: str) -> None:
    """A promotion of ``version`` that dies after writing the history, before the pointer."""
    real = storage.Location.write_bytes

    def dies_before_the_pointer(location, rel, data):
        if rel == model_store.CHAMPION_POINTER:
            raise KeyboardInterrupt("killed")
        real(location, rel, data)

    monkeypatch.setattr(storage.Location, "write_bytes", dies_before_the_pointer)
    with pytest.raises(KeyboardInterrupt):
        model_store.set_champion(models.models_dir, version, "better", "test")
    monkeypatch.undo()


def test_a_promotion_killed_between_its_writes_leaves_the_old_champion(models, monkeypatch):
    _killed_before_the_pointer(models, monkeypatch, "m2")
    assert model_store.champion_version(models.models_dir) == "m1"
    # The next promotion goes through, and a rollback goes back to m1.
    model_store.set_champion(models.models_dir, "m2", "better", "test")
    assert model_store.rollback_target(models.models_dir) == "m1"


def test_a_first_promotion_killed_before_its_pointer_leaves_nothing_to_roll_back_to(
        models, monkeypatch):
    (models.models_dir / model_store.CHAMPION_POINTER).unlink()
    (models.models_dir / model_store.CHAMPION_HISTORY).unlink()
    _killed_before_the_pointer(models, monkeypatch, "m2")
    assert model_store.champion_version(models.models_dir) is None
    model_store.set_champion(models.models_dir, "m1", "first", "test")
    with pytest.raises(RuntimeError, match="nothing to roll back to"):
        model_store.rollback_target(models.models_dir)  # m2 never served


def test_a_write_that_fails_at_the_rename_leaves_the_pointer_and_no_stray_file(models, monkeypatch):
    before = (models.models_dir / model_store.CHAMPION_POINTER).read_text()

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_store.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        model_store.set_champion(models.models_dir, "m2", "better", "test")
    monkeypatch.undo()
    assert (models.models_dir / model_store.CHAMPION_POINTER).read_text() == before
    assert not list(models.models_dir.glob(".*"))


@pytest.mark.parametrize("content", ['{"version": "m1", "promo', "[1, 2]", '{"version": "m9"}',
                                     "\udcff"])
def test_a_corrupted_pointer_is_refused_and_a_promotion_repairs_it(models, capsys, content):
    pointer = models.models_dir / model_store.CHAMPION_POINTER
    pointer.write_text(content, errors="surrogateescape")
    with pytest.raises(model_store.CorruptPointerError, match="flywheel promote"):
        current_policy(models)  # serving refuses it, never serves from it
    assert main(["champion", "--data-dir", str(models.data_dir)]) == 2
    assert "is not a champion pointer" in capsys.readouterr().err
    assert main(["promote", "--version", "m2", "--reason", "repair the pointer",
                 "--data-dir", str(models.data_dir)]) == 0
    assert json.loads(pointer.read_text())["version"] == "m2"
    assert model_store.champion_version(models.models_dir) == "m2"


class _CommitFails:
    """A real DuckDB connection whose COMMIT fails as on a full disk (the one fault
    injected; everything else is DuckDB's). DuckDB 2.0 ends a transaction whose commit
    failed; this one leaves it open, so that the test also shows the warehouse's
    transaction rolls back after a failed commit rather than leave it for the
    connection's next statement to commit."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql, *args):
        if sql.strip().upper() == "COMMIT":
            raise duckdb.IOException('Could not write file "warehouse.duckdb.wal": '
                                     "No space left on device")
        return self.conn.execute(sql, *args)


@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_a_move_whose_audit_row_cannot_commit_is_undone(models, action):
    from flywheel_assets import warehouse
    from flywheel_assets.evaluate.promotion import change_champion

    model_store.set_champion(models.models_dir, "m2", "better", "test")
    before = model_store.pointer_files(models.models_dir)
    with warehouse.connect(models.warehouse_path) as conn:
        with pytest.raises(duckdb.IOException, match="No space left"):
            change_champion(_CommitFails(conn), models.models_dir,
                            new_version="m1" if action == "promote" else None,
                            reasons=["test"], figures={}, actor="test",
                            rollback=action == "rollback")
        assert conn.execute("SELECT count(*) FROM ml.promotions").fetchall() == [(0,)]
    # The pointer had moved to m1 before the commit: it is back, with its history.
    assert model_store.champion_version(models.models_dir) == "m2"
    assert model_store.pointer_files(models.models_dir) == before
    assert not [p for p in models.models_dir.iterdir() if p.name.startswith(".")]


def test_the_pointer_is_held_from_its_reading_to_its_move(tmp_path):
    """`model_store.champion_lock`: a second holder (another thread here; another
    process or pod alike, it is a file lock) waits until the first has moved the pointer;
    the same holder may take it again inside (promote → change_champion)."""
    import threading
    import time

    events = []

    def first():
        with model_store.champion_lock(tmp_path):
            with model_store.champion_lock(tmp_path):  # nested: no deadlock
                events.append("first reads")
                time.sleep(0.5)
                events.append("first moves")

    thread = threading.Thread(target=first)
    thread.start()
    while not events:
        time.sleep(0.01)
    with model_store.champion_lock(tmp_path):
        events.append("second reads")
    thread.join()
    assert events == ["first reads", "first moves", "second reads"]
