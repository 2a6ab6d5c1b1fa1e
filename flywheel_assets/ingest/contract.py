"""The landing contract: what a product writes, field by field, as data.

Each stream's contract turns into SQL that types every accepted row and gives every
rejected row the first column that failed and a reason a person can act on. One
definition serves the parser, the validator, the quarantine and the docs.

Required is only what every ranking product logs: impressions (`impression_id`,
`request_id`, `ts`, `item_id`, `position`, `propensity`) and interactions (`event_id`,
`impression_id`, `ts`, `signal`). Everything else is optional and used when present:
`user_id` (anonymous traffic is valid; the request is then the unit), the users and
items snapshots and each of their attributes, candidate pools. A column the contract
does not name is kept, as JSON in the table's `extras` column, and can become a
feature (train/features.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from flywheel_assets.settings import DEFAULT_GRADES

DEFAULT_SIGNALS = tuple(DEFAULT_GRADES)
# The longest id and text value a row may carry, and the most its other fields (kept in
# `extras`) may hold: a longer one is a broken or hostile client, quarantined, not kept
# as a ten-million-character id.
MAX_ID_CHARS = 1_024
MAX_TEXT_CHARS = 8_192
MAX_EXTRAS_CHARS = 1_048_576


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # id | string | timestamp | date | int | float | bool
    required: bool = True
    min: float | None = None
    min_exclusive: bool = False
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    # Replaced by a keyed hash before anything is stored; stored as `stored_name`.
    pseudonymise: bool = False
    stored_name: str | None = None

    @property
    def column(self) -> str:
        return self.stored_name or self.name


@dataclass(frozen=True)
class StreamContract:
    stream: str
    table: str
    fields: tuple[Field, ...]
    id_fields: tuple[str, ...] = ()
    # Event streams: `ts` must fall inside the partition's UTC day.
    ts_in_partition: bool = False
    description: str = ""
    # Columns the contract does not name are kept (JSON in `extras`), not dropped.
    keeps_extras: bool = True

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _shown(expr: str) -> str:
    """The offending value, quoted and cut short, for a reason message."""
    return f"'''' || left({expr}, 60) || ''''"


def typed_expr(f: Field) -> str:
    """SQL that turns the raw string of ``f`` into its typed value (NULL if absent)."""
    raw = quote_ident(f.name)
    return {
        "id": f"nullif(trim({raw}), '')",
        "string": f"nullif(trim({raw}), '')",
        "timestamp": f"TRY_CAST({raw} AS TIMESTAMPTZ)",
        "date": f"TRY_CAST({raw} AS DATE)",
        "int": f"CAST(TRY_CAST({raw} AS DOUBLE) AS BIGINT)",
        "float": f"TRY_CAST({raw} AS DOUBLE)",
        "bool": f"CASE WHEN lower(trim({raw})) IN ('true','t','1','yes') THEN TRUE "
                f"WHEN lower(trim({raw})) IN ('false','f','0','no') THEN FALSE END",
    }[f.kind]


def _checks(f: Field) -> list[tuple[str, str]]:
    """(condition that marks the row bad, SQL string expression of the reason)."""
    raw = quote_ident(f.name)
    present = f"nullif(trim({raw}), '') IS NOT NULL"
    out: list[tuple[str, str]] = []
    if f.kind in ("id", "string"):
        limit = MAX_ID_CHARS if f.kind == "id" else MAX_TEXT_CHARS
        out.append((f"length({raw}) > {limit}",
                     f"'too long: ' || length({raw}) || ' characters (limit {limit})'"))
    if f.required:
        out.append((f"NOT ({present})", "'missing'"))
    as_double = f"TRY_CAST({raw} AS DOUBLE)"
    if f.kind == "timestamp":
        out.append((f"{present} AND TRY_CAST({raw} AS TIMESTAMPTZ) IS NULL",
                    f"'not an ISO-8601 timestamp: ' || {_shown(raw)}"))
    elif f.kind == "date":
        out.append((f"{present} AND TRY_CAST({raw} AS DATE) IS NULL",
                    f"'not a date (YYYY-MM-DD): ' || {_shown(raw)}"))
    elif f.kind in ("int", "float"):
        out.append((f"{present} AND ({as_double} IS NULL OR NOT isfinite({as_double}))",
                    f"'not a number: ' || {_shown(raw)}"))
        if f.kind == "int":
            out.append((f"{present} AND {as_double} <> round({as_double})",
                        f"'not an integer: ' || {_shown(raw)}"))
            # Beyond BIGINT the cast on insert would fail the whole day, not one row.
            out.append((f"{present} AND abs({as_double}) >= 9.2e18",
                        f"'out of range for an integer: ' || {_shown(raw)}"))
        if f.min is not None:
            op = "<=" if f.min_exclusive else "<"
            word = ">" if f.min_exclusive else ">="
            out.append((f"{present} AND {as_double} {op} {f.min}",
                        f"'out of range: ' || {_shown(raw)} || ' (expected {word} {f.min:g})'"))
        if f.max is not None:
            out.append((f"{present} AND {as_double} > {f.max}",
                        f"'out of range: ' || {_shown(raw)} || ' (expected <= {f.max:g})'"))
    elif f.kind == "bool":
        out.append((f"{present} AND ({typed_expr(f)}) IS NULL",
                    f"'not a boolean (true/false): ' || {_shown(raw)}"))
    if f.allowed:
        values = ", ".join("'" + v + "'" for v in f.allowed)
        out.append((f"{present} AND trim({raw}) NOT IN ({values})",
                    f"'not one of [{', '.join(f.allowed)}]: ' || {_shown(raw)}"))
    return out


def rejection_sql(contract: StreamContract, partition_date: str,
                  extras_kept: bool = True) -> tuple[str, str, str]:
    """Three SQL expressions: over a staged row, the number of its first failing rule
    (``_flywheel_rule``); over that number, the failing column and the reason.

    All are NULL for a row that satisfies the contract. The first failing rule wins,
    in field order, so a row has exactly one reason.
    """
    rules: list[tuple[str, str, str]] = [("_parse_error IS NOT NULL", "NULL", "_parse_error")]
    if extras_kept:  # other fields are judged only where they are stored
        rules.append((f"length(_extras) > {MAX_EXTRAS_CHARS}", "'extras'",
                      f"'other fields too long: ' || length(_extras) || ' characters of JSON "
                      f"(limit {MAX_EXTRAS_CHARS})'"))
    for f in contract.fields:
        rules += [(cond, f"'{f.name}'", reason) for cond, reason in _checks(f)]
    if contract.ts_in_partition:
        ts_raw = quote_ident("ts")
        shown = _shown(ts_raw)
        rules.append((f"CAST(TRY_CAST({ts_raw} AS TIMESTAMPTZ) AS DATE) <> DATE '{partition_date}'",
                      "'ts'", f"'outside partition {partition_date} (UTC): ' || {shown}"))
    # The conditions are evaluated once per row (the first failing rule's number); the
    # column and the reason are looked up from it, the reason built for bad rows only.
    rule = "CASE " + " ".join(f"WHEN {c} THEN {i}" for i, (c, _, _) in enumerate(rules)) + " END"
    column = "CASE _flywheel_rule " + " ".join(f"WHEN {i} THEN {col}" for i, (_, col, _) in enumerate(rules)) + " END"
    reason = "CASE _flywheel_rule " + " ".join(f"WHEN {i} THEN {r}" for i, (_, _, r) in enumerate(rules)) + " END"
    return rule, column, reason


def _f(name, kind, **kw) -> Field:
    return Field(name, kind, **kw)


IMPRESSIONS = StreamContract(
    stream="impressions",
    table="raw.impressions",
    id_fields=("impression_id",),
    ts_in_partition=True,
    description="One row per item shown to a user, with the logging policy's propensity.",
    fields=(
        _f("impression_id", "id"),
        _f("request_id", "id"),
        _f("ts", "timestamp"),
        _f("user_id", "id", required=False, pseudonymise=True, stored_name="user_key"),
        _f("item_id", "id"),
        _f("position", "int", min=1, max=10_000),
        _f("propensity", "float", min=0, min_exclusive=True, max=1),
        _f("policy_version", "string", required=False),
        _f("device", "string", required=False),
        # Declared by the product: this slate was drawn at random (exploration).
        _f("explored", "bool", required=False),
    ),
)


CANDIDATES = StreamContract(
    stream="candidates",
    table="raw.candidates",
    description="Optional. One row per candidate of a request's pool, with the logging "
                "policy's probability that the candidate is shown anywhere in the slate. "
                "Off-policy evaluation of another ranking needs it; without it the gate "
                "falls back to the holdout. With `greedy_position` too (the candidate's "
                "position in the slate the policy serves when it does not explore, empty "
                "outside it) and epsilon-greedy exploration by a uniformly random slate, "
                "evaluation uses the lower-variance policy-aware estimator.",
    fields=(
        _f("request_id", "id"),
        _f("item_id", "id"),
        _f("exposure_propensity", "float", required=False, min=0, max=1),
        _f("greedy_position", "int", required=False, min=1, max=10_000),
    ),
)


def interactions_contract(signals: tuple[str, ...] = DEFAULT_SIGNALS) -> StreamContract:
    return StreamContract(
        stream="interactions",
        table="raw.interactions",
        id_fields=("event_id",),
        ts_in_partition=True,
        description="One row per feedback event on an impression.",
        fields=(
            _f("event_id", "id"),
            _f("impression_id", "id"),
            _f("ts", "timestamp"),
            _f("signal", "string", allowed=signals),
            _f("value", "float", required=False, min=0),
        ),
    )


USERS = StreamContract(
    stream="users",
    table="raw.users",
    id_fields=("user_id",),
    description="Daily snapshot of user attributes and training consent.",
    fields=(
        _f("user_id", "id", pseudonymise=True, stored_name="user_key"),
        _f("country", "string", required=False),
        _f("age_band", "string", required=False),
        _f("signup_date", "date", required=False),
        _f("consent_training", "bool", required=False),
    ),
)

ITEMS = StreamContract(
    stream="items",
    table="raw.items",
    id_fields=("item_id",),
    description="Daily snapshot of the catalogue with content features.",
    fields=(
        _f("item_id", "id"),
        _f("category", "string", required=False),
        _f("published_date", "date", required=False),
        _f("duration_s", "float", required=False, min=0, min_exclusive=True),
        _f("popularity", "int", required=False, min=0),
        *(_f(f"c{i}", "float", required=False) for i in range(6)),
    ),
)


DELETIONS = StreamContract(
    stream="deletions",
    table="raw.deletion_requests",
    id_fields=("user_id",),
    description="Users who asked for their data to be erased. The stored keyed hashes "
                "are the tombstones: those users' rows are erased from every table and "
                "never ingested again.",
    keeps_extras=False,
    fields=(
        _f("user_id", "id", pseudonymise=True, stored_name="user_key"),
        _f("requested_at", "timestamp", required=False),
    ),
)


def default_contracts(signals: tuple[str, ...] = DEFAULT_SIGNALS) -> tuple[StreamContract, ...]:
    # Deletions first: today's erasure requests apply to today's rows too.
    # Candidates after impressions: an erased user's requests are known by then.
    return (DELETIONS, IMPRESSIONS, CANDIDATES, interactions_contract(signals), USERS, ITEMS)


# The landing streams, in the order they are read, and the asset that holds each
# stream's accepted rows.
LANDING_STREAMS = ("impressions", "candidates", "interactions", "users", "items", "deletions")
RAW_ASSETS = {"impressions": "raw_impressions", "candidates": "raw_candidates",
              "interactions": "raw_interactions", "users": "raw_users", "items": "raw_items",
              "deletions": "deletion_requests"}
# The blocking checks on each raw table (ingest/checks.py), which the gate reads.
INGEST_CHECK_NAMES = ("rows_reconcile", "landing_files_read", "quarantine_share_below_threshold",
                      "accepted_rows_expectations")
BLOCKING_CHECKS = [(asset, check) for asset in RAW_ASSETS.values() for check in INGEST_CHECK_NAMES]
