"""Drift between a reference window (what the model was trained on) and the current data.

Two views of one question. :func:`column_drift` is the verdict: it runs on the full
data inside DuckDB, one aggregate scan per side, and only per-column summaries (row
counts, 100 quantiles, category counts) ever reach Python. :func:`evidently_report` is
for people: Evidently's ``DataDriftPreset`` on a bounded sample (:func:`sample_frame`),
saved as HTML. Both use Evidently's large-sample statistics and thresholds (normalised
Wasserstein for numeric columns, Jensen–Shannon for categorical ones, 0.1 each, dataset
drift when at least half of the columns drift), so the verdict and the report agree up
to the differences documented on :func:`column_drift`.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pandas as pd

# Midpoints of 100 equal probability bins: the Wasserstein integral by the midpoint rule.
N_QUANTILES = 100
# Evidently floors the reference std at this value; using the same floor keeps the
# verdict and the report in agreement on a constant reference column.
MIN_STD = 0.001


@dataclass(frozen=True)
class ColumnSpec:
    """A column to compare and how to compare it."""

    name: str
    kind: Literal["categorical", "numeric"]


@dataclass(frozen=True)
class DriftThresholds:
    """A column drifts when its statistic is >= its threshold; the dataset drifts when
    the share of drifted columns is >= ``drift_share`` (Evidently's defaults)."""

    categorical: float = 0.1
    numeric: float = 0.1
    drift_share: float = 0.5


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift statistic and the facts needed to judge it."""

    column: str
    kind: str
    statistic: Literal["jensen_shannon", "wasserstein_norm"]
    value: float
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int
    current_null_share: float

    def as_dict(self) -> dict:
        """Plain dict for JSON metadata."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DriftVerdict:
    """The dataset-level verdict over all compared columns."""

    drifts: tuple[ColumnDrift, ...]
    drift_share: float
    dataset_drift: bool

    def top(self, n: int = 5) -> list[ColumnDrift]:
        """The ``n`` most drifted columns, by how far each is past its threshold."""
        return sorted(self.drifts, key=lambda d: d.value / d.threshold if d.threshold > 0
                      else math.inf, reverse=True)[:n]

    def as_dict(self) -> dict:
        """Plain dict for JSON metadata, columns most drifted first."""
        return {"drift_share": self.drift_share, "dataset_drift": self.dataset_drift,
                "n_columns": len(self.drifts), "n_drifted": sum(d.drifted for d in self.drifts),
                "columns": [d.as_dict() for d in self.top(len(self.drifts))]}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _subquery(sql: str) -> str:
    # A trailing semicolon is fine as a statement but not inside FROM ( ... ).
    return sql.strip().rstrip(";")


def _profile(conn: duckdb.DuckDBPyConnection, sql: str, columns: list[ColumnSpec],
             side: str) -> tuple[int, dict[str, dict]]:
    """Row count and per-column summaries of one side, in a single aggregate scan."""
    probs = [(k + 0.5) / N_QUANTILES for k in range(N_QUANTILES)]
    exprs = ["count(*)"]
    for spec in columns:
        col = _ident(spec.name)
        if spec.kind == "numeric":
            x = f"CAST({col} AS DOUBLE)"
            exprs.append(f"{{'n': count({col}), 'std': stddev_pop({x}), "
                         f"'q': quantile_cont({x}, {probs})}}")
        elif spec.kind == "categorical":
            # VARCHAR keys so that e.g. INTEGER and BIGINT categories still match.
            exprs.append(f"{{'n': count({col}), 'hist': histogram(CAST({col} AS VARCHAR))}}")
        else:
            raise ValueError(f"column {spec.name!r}: unknown kind {spec.kind!r}")
    row = conn.execute(f"SELECT {', '.join(exprs)} FROM ({_subquery(sql)}) AS src").fetchall()[0]
    if row[0] == 0:
        raise ValueError(f"drift: the {side} side is empty (0 rows) for SQL: {sql[:200]!r}")
    return row[0], {spec.name: summary for spec, summary in zip(columns, row[1:])}


def _js_distance(p_counts: dict, q_counts: dict) -> float:
    """Jensen–Shannon distance, base 2, between two count dicts (keys may differ)."""
    keys = list(dict.fromkeys([*p_counts, *q_counts]))
    p = np.array([p_counts.get(k, 0) for k in keys], dtype="float64")
    q = np.array([q_counts.get(k, 0) for k in keys], dtype="float64")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl_to_m(a: np.ndarray) -> float:
        # 0·log(0) = 0: a category absent on one side adds nothing to that side's term,
        # and m > 0 wherever a > 0, so no log(0) is ever taken.
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return math.sqrt(min(max(0.5 * (kl_to_m(p) + kl_to_m(q)), 0.0), 1.0))


def column_drift(conn: duckdb.DuckDBPyConnection, reference_sql: str, current_sql: str,
                 columns: list[ColumnSpec],
                 thresholds: DriftThresholds = DriftThresholds()) -> list[ColumnDrift]:
    """Per-column drift of ``current_sql`` against ``reference_sql`` on the full data.

    Categorical: Jensen–Shannon distance (base 2, in [0, 1]) between the category
    frequencies, NULL counted as a category of its own; categories seen on one side only
    are handled exactly. Evidently uses the natural log and drops NULLs, so without NULLs
    its value is ``sqrt(ln 2) ≈ 0.83`` times ours: ours is slightly stricter.
    Categorical columns are expected to be low-cardinality: their counts come to Python.

    Numeric: Wasserstein-1 distance divided by the reference population std. W1 is the
    integral over u of |F⁻¹(u) − G⁻¹(u)|, approximated by the midpoint rule on 100
    exact quantiles per side (``quantile_cont`` at 0.005, 0.015, …, 0.995): exact for a
    pure shift, within about 1% of the std for light-tailed data, blind to mass beyond
    the 0.5% tails. NULLs are ignored (their share is reported). A constant reference
    uses Evidently's std floor of 0.001; a side with no non-NULL values gives ``inf``
    (drifted) unless both sides are all NULL (0).

    Raises ``ValueError`` when either side has no rows.
    """
    ref_n, ref = _profile(conn, reference_sql, columns, "reference")
    cur_n, cur = _profile(conn, current_sql, columns, "current")
    drifts = []
    for spec in columns:
        r, c = ref[spec.name], cur[spec.name]
        if spec.kind == "categorical":
            # histogram() skips NULLs; put them back as the None category.
            value = _js_distance({**(r["hist"] or {}), None: ref_n - r["n"]},
                                 {**(c["hist"] or {}), None: cur_n - c["n"]})
            statistic, threshold = "jensen_shannon", thresholds.categorical
        else:
            if r["n"] and c["n"]:
                w1 = float(np.mean(np.abs(np.asarray(r["q"]) - np.asarray(c["q"]))))
                value = w1 / max(r["std"], MIN_STD)
            else:
                value = 0.0 if r["n"] == c["n"] == 0 else math.inf
            statistic, threshold = "wasserstein_norm", thresholds.numeric
        drifts.append(ColumnDrift(
            column=spec.name, kind=spec.kind, statistic=statistic, value=float(value),
            threshold=threshold, drifted=bool(value >= threshold), reference_rows=ref_n,
            current_rows=cur_n, current_null_share=(cur_n - c["n"]) / cur_n))
    return drifts


def drift_verdict(drifts: list[ColumnDrift],
                  thresholds: DriftThresholds = DriftThresholds()) -> DriftVerdict:
    """Dataset drift: the share of drifted columns reaches ``thresholds.drift_share``."""
    share = sum(d.drifted for d in drifts) / len(drifts) if drifts else 0.0
    return DriftVerdict(drifts=tuple(drifts), drift_share=share,
                        dataset_drift=bool(drifts) and share >= thresholds.drift_share)


def sample_frame(conn: duckdb.DuckDBPyConnection, sql: str, max_rows: int = 100_000,
                 seed: int = 0) -> pd.DataFrame:
    """At most ``max_rows`` rows of ``sql``, a uniform reservoir sample drawn in DuckDB.

    ``REPEATABLE (seed)`` makes the sample the same for the same data and seed (checked
    on DuckDB 2.0 with 1 to 16 threads); all rows when there are fewer than ``max_rows``.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    return conn.execute(f"SELECT * FROM ({_subquery(sql)}) AS src USING SAMPLE "
                        f"reservoir({int(max_rows)} ROWS) REPEATABLE ({int(seed)})").df()


def _import_evidently():
    # evidently 0.7.23 imports pandas.core.dtypes.common.infer_dtype_from_object, which
    # pandas 3 removed; only its legacy TestColumnsType uses it, so a faithful stand-in
    # lets the import succeed without touching the drift code paths.
    import pandas.core.dtypes.common as pd_common

    if not hasattr(pd_common, "infer_dtype_from_object"):
        def infer_dtype_from_object(dtype):
            if isinstance(dtype, type) and issubclass(dtype, np.generic):
                return dtype
            return pd_common.pandas_dtype(dtype).type

        pd_common.infer_dtype_from_object = infer_dtype_from_object
    import evidently
    import evidently.presets

    return evidently, evidently.presets


def evidently_report(reference: pd.DataFrame, current: pd.DataFrame,
                     columns: list[ColumnSpec], out_path: Path) -> dict:
    """Evidently's ``DataDriftPreset`` on two (sampled) frames, saved as HTML.

    The HTML is written to a temporary file next to ``out_path`` and moved into place,
    so a reader never sees half a report. Evidently picks its statistic per column from
    the reference size: above 1000 rows the same as :func:`column_drift`, below that
    KS / chi² / Z tests. Returns the path, Evidently's own drifted-column count and share
    (``None`` if absent from the snapshot) and the rows used.
    """
    if reference.empty or current.empty:
        side = "reference" if reference.empty else "current"
        raise ValueError(f"evidently_report: the {side} frame is empty")
    evidently, presets = _import_evidently()
    numeric = [c.name for c in columns if c.kind == "numeric"]
    categorical = [c.name for c in columns if c.kind == "categorical"]
    definition = evidently.DataDefinition(numerical_columns=numeric,
                                          categorical_columns=categorical)

    def dataset(frame: pd.DataFrame):
        frame = frame[[c.name for c in columns]].copy()
        # Evidently embeds the values in a <script> block of the HTML: a category from
        # the logs such as '</script><script>…' would end it and run. Shown as entities.
        for name in categorical:
            frame[name] = frame[name].map(
                lambda v: html.escape(v, quote=False) if isinstance(v, str) else v)
        # DuckDB hands integers with NULLs over as nullable Int64; that happens to work
        # in 0.7.23, but float64 with NaN is what Evidently's scipy statistics expect.
        frame[numeric] = frame[numeric].astype("float64")
        return evidently.Dataset.from_pandas(frame, data_definition=definition)

    snapshot = evidently.Report([presets.DataDriftPreset()]).run(
        current_data=dataset(current), reference_data=dataset(reference))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex}.tmp")
    try:
        snapshot.save_html(str(tmp))
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    count = share = None
    for metric in snapshot.dict().get("metrics", []):
        if metric.get("config", {}).get("type", "").endswith(":DriftedColumnsCount"):
            count, share = int(metric["value"]["count"]), float(metric["value"]["share"])
    return {"path": str(out_path), "evidently_drifted_columns": count,
            "evidently_drift_share": share, "reference_rows": len(reference),
            "current_rows": len(current)}
