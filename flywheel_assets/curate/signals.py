"""The signal vocabulary: which feedback means how much.

The product's vocabulary and grades are configuration (`signals.grades`; the default:
save / thumbs_up 3 > complete 2 > partial / click 1 > skip / thumbs_down / nothing 0).
An impression's grade is its strongest signal, computed once, when `feedback_events`
is built, from the list of signals logged on it; every later stage reads that grade.
"""

from __future__ import annotations

from flywheel_assets.settings import DEFAULT_GRADES


def grade_sql(grades: dict[str, int] = DEFAULT_GRADES, signals: str = "signals") -> str:
    """SQL over a row whose ``signals`` column lists its logged signals, giving its
    graded label (0 when none of them grades above 0)."""
    terms = [f"CASE WHEN list_contains({signals}, '{name}') THEN {int(grade)} ELSE 0 END"
             for name, grade in grades.items() if grade > 0]
    return f"greatest(0, {', '.join(terms)})" if terms else "0"


def has_signal(name: str, signals: str = "signals") -> str:
    """SQL: the row logged ``name`` (FALSE for a signal the product does not log)."""
    return f"coalesce(list_contains({signals}, '{name}'), FALSE)"
