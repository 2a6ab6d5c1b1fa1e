"""The signal hierarchy: which feedback means how much.

save / thumbs_up (3) > complete (2) > partial (1) > skip / thumbs_down / nothing (0).
An impression's grade is its strongest signal. The hierarchy is configuration: pass
another mapping to :func:`grade_sql` to change it.
"""

from __future__ import annotations

DEFAULT_HIERARCHY: dict[str, int] = {
    "save": 3, "thumbs_up": 3, "complete": 2, "partial": 1, "skip": 0, "thumbs_down": 0,
}
MAX_GRADE = 3


def grade_sql(hierarchy: dict[str, int] = DEFAULT_HIERARCHY) -> str:
    """SQL over a feedback row (``has_<signal>`` flags) giving its graded label."""
    unknown = [s for s in hierarchy if not s.isidentifier()]
    if unknown:
        raise ValueError(f"signal names must be identifiers, got {unknown}")
    terms = [f"CASE WHEN has_{signal} THEN {int(grade)} ELSE 0 END"
             for signal, grade in hierarchy.items() if grade > 0]
    return f"greatest(0, {', '.join(terms)})" if terms else "0"
