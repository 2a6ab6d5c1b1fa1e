"""The signal vocabulary: graded labels from the signals logged on an impression."""

import duckdb
import pytest

from flywheel_assets.curate.signals import grade_sql, has_signal
from flywheel_assets.settings import DEFAULT_GRADES, Settings


def _grades(lists, grades=DEFAULT_GRADES):
    conn = duckdb.connect()
    values = ", ".join(f"({l!r}::VARCHAR[])" if l else "(NULL::VARCHAR[])" for l in lists)
    return [r[0] for r in conn.execute(
        f"SELECT {grade_sql(grades)} FROM (VALUES {values}) t(signals)").fetchall()]


def test_default_grades_take_the_strongest_signal():
    singles = ["skip", "partial", "complete", "save", "thumbs_up", "thumbs_down", "click"]
    assert _grades([[s] for s in singles] + [None]) == [0, 1, 2, 3, 3, 0, 1, 0]
    assert _grades([["partial", "save"], ["skip", "complete"]]) == [3, 2]


def test_a_click_only_or_purchase_vocabulary_is_configuration():
    settings = Settings.from_env("/tmp/unused", {"signals.grades": "click:1,add_to_cart:2,purchase:5"})
    grades = settings.signals.grades
    assert settings.signals.max_grade == 5
    assert _grades([["click"], ["click", "purchase"], ["add_to_cart"], ["save"]], grades) == [1, 5, 2, 0]


def test_has_signal_is_false_for_a_signal_never_logged():
    conn = duckdb.connect()
    got = conn.execute(f"SELECT {has_signal('thumbs_down')} FROM (VALUES (['click']), (NULL)) t(signals)").fetchall()
    assert got == [(False,), (False,)]


@pytest.mark.parametrize("text", ["", "click", "click:x", ":2", "click:-1"])
def test_a_malformed_vocabulary_is_refused(text):
    with pytest.raises(ValueError, match="signals.grades"):
        Settings.from_env("/tmp/unused", {"signals.grades": text})
