"""What drift compares: the day's curated feedback against what the model in service
learnt from, column by column, in the same shape.

Both sides come from `ml.training_set`, which carries every row's raw attributes:
the reference is the train split of the partition the serving model was trained for;
the current side is the day's own rows. Columns: user, item and context attributes
(what the model sees), and the signal (graded label, examined or not) — so a change in
how people react is drift too. The model's scores are compared on a sample
(:func:`score_columns`), since scoring is not a DuckDB job.
"""

from __future__ import annotations

from flywheel_assets.core.drift import ColumnSpec

CATEGORICAL = ["device", "country", "age_band", "category", "grade", "examined"]
NUMERIC = ["hour", "tenure_days", "item_age_days", "log_popularity", "log_duration",
           "c0", "c1", "c2", "c3", "c4", "c5"]
COLUMNS = [ColumnSpec(c, "categorical") for c in CATEGORICAL] + \
          [ColumnSpec(c, "numeric") for c in NUMERIC]
SCORE = ColumnSpec("model_score", "numeric")

_SELECT = """
    SELECT device, country, age_band, category, label_grade::VARCHAR AS grade,
           (n_interactions > 0)::VARCHAR AS examined,
           extract(hour FROM ts)::DOUBLE AS hour,
           (ts::DATE - signup_date)::DOUBLE AS tenure_days,
           (ts::DATE - published_date)::DOUBLE AS item_age_days,
           ln(1 + greatest(popularity, 0)) AS log_popularity,
           ln(1 + greatest(duration_s, 0)) AS log_duration,
           c0, c1, c2, c3, c4, c5{raw}
    FROM ml.training_set"""
# With these the sampled rows can be scored by the model (features.RAW_COLUMNS).
RAW_FOR_SCORING = ", ts, signup_date, published_date, popularity, duration_s"


def reference_sql(trained_for: str, with_raw: bool = False) -> str:
    """The train split the serving model learnt from (``trained_for`` is its partition)."""
    return (_SELECT.format(raw=RAW_FOR_SCORING if with_raw else "")
            + f" WHERE partition_date = DATE '{trained_for}' AND split = 'train'")


def current_sql(day: str, with_raw: bool = False) -> str:
    """The day's own curated rows."""
    return (_SELECT.format(raw=RAW_FOR_SCORING if with_raw else "")
            + f" WHERE partition_date = DATE '{day}' AND source_date = DATE '{day}'")
