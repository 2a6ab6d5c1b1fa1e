"""Great Expectations suites for accepted rows, generated from the landing contract.

The contract already says what a valid row is; the suite states it again as GX
expectations over what was *stored*, so a bug in the ingestion SQL cannot let a bad row
through unnoticed. GX is imported lazily: it takes seconds to import.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import pandas as pd

from flywheel_assets.ingest.contract import StreamContract

_CONTEXT = None


@dataclass(frozen=True)
class SuiteResult:
    success: bool
    evaluated: int
    failed: list[dict]


def _context():
    """One ephemeral GX context per process, progress bars off."""
    global _CONTEXT
    if _CONTEXT is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        _CONTEXT = gx.get_context(mode="ephemeral")
        _CONTEXT.variables.progress_bars = ProgressBarsConfig(globally=False)
    return _CONTEXT


def build_suite(contract: StreamContract, partition_date: str):
    """Expectations on the stored table of ``contract`` for one partition."""
    import great_expectations as gx

    E = gx.expectations
    suite = gx.ExpectationSuite(name=f"{contract.stream}_accepted_rows")
    for f in contract.fields:
        col = f.column
        suite.add_expectation(E.ExpectColumnToExist(column=col))
        if f.required:
            suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=col))
        if f.kind in ("int", "float"):
            # GX names pandas' nullable integers by their dtype class (Int64Dtype).
            types = (["int32", "int64", "Int64Dtype", "Int32Dtype"] if f.kind == "int"
                     else ["float64", "Float64"])
            suite.add_expectation(E.ExpectColumnValuesToBeInTypeList(column=col, type_list=types))
        if f.min is not None or f.max is not None:
            suite.add_expectation(E.ExpectColumnValuesToBeBetween(
                column=col, min_value=f.min, max_value=f.max, strict_min=f.min_exclusive))
        if f.allowed:
            suite.add_expectation(E.ExpectColumnValuesToBeInSet(column=col, value_set=list(f.allowed)))
        if f.pseudonymise:
            # Stored ids must be keyed hashes, never raw ids.
            suite.add_expectation(E.ExpectColumnValuesToMatchRegex(column=col, regex=r"^u_[0-9a-f]{24}$"))
    for id_field in contract.id_fields:
        column = next(f.column for f in contract.fields if f.name == id_field)
        suite.add_expectation(E.ExpectColumnValuesToBeUnique(column=column))
    if contract.ts_in_partition:
        day = dt.date.fromisoformat(partition_date)
        start = pd.Timestamp(day, tz="UTC")
        suite.add_expectation(E.ExpectColumnValuesToBeBetween(
            column="ts", min_value=start, max_value=start + pd.Timedelta(days=1), strict_max=True))
    return suite


def validate(frame: pd.DataFrame, contract: StreamContract, partition_date: str) -> SuiteResult:
    context = _context()
    name = f"{contract.stream}_{partition_date}"
    source = context.data_sources.add_or_update_pandas(name)
    asset = source.add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe(name).get_batch(
        batch_parameters={"dataframe": frame})
    result = batch.validate(build_suite(contract, partition_date))
    failed = []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            failed.append({"expectation": cfg.type, "column": cfg.kwargs.get("column"),
                           "unexpected_count": (r.result or {}).get("unexpected_count"),
                           "examples": [str(v) for v in ((r.result or {}).get("partial_unexpected_list") or [])[:3]]})
    context.data_sources.delete(name)
    return SuiteResult(success=bool(result.success), evaluated=len(result.results), failed=failed)


def stored_rows(conn, contract: StreamContract, partition_date: str,
                max_rows: int) -> tuple[pd.DataFrame, int]:
    """The partition's stored rows for the suite, and how many are stored: all of them
    up to ``max_rows``, a reproducible sample beyond. Every row already passed the
    contract's SQL at ingestion; the suite re-validates what was stored."""
    rows = conn.execute(f"SELECT count(*) FROM {contract.table} WHERE partition_date = ?",
                        [partition_date]).fetchone()[0]
    sample = (f" USING SAMPLE reservoir({max_rows} ROWS) REPEATABLE (0)"
              if rows > max_rows else "")
    frame = conn.execute(f"SELECT * EXCLUDE (partition_date, source_file, source_row) "
                         f"FROM (SELECT * FROM {contract.table} WHERE partition_date = ?)"
                         f"{sample}", [partition_date]).df()
    # An integer column with empty values arrives as floats: back to nullable integers.
    for f in contract.fields:
        if f.kind == "int" and f.column in frame and frame[f.column].dtype.kind == "f":
            frame[f.column] = frame[f.column].astype("Int64")
    return frame, rows
