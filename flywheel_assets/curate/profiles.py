"""Profiles from feedback: what users did, as the model's next inputs.

A day's profiles (partition d) summarise the curated feedback of the days up to and
including d: they are what the product knows at the end of day d, and the features of
any row of day d+1 (training, serving, evaluation) come from them, never from the
row's own day (`train/features.py`, :func:`snapshot_day`).

Every figure is de-biased the way the training target is: a group's engagement is its
summed grade over its summed examination probability (Σ w·grade / Σ w·θ, θ from the
day's `position_bias`, floored as in training), each row weighted
w = 0.5^(age in days / `profiles.half_life_days`) over `profiles.window_days`, and shrunk
towards the level above it by `profiles.prior_examinations` examinations' worth of
prior (an item towards its category, a user's category towards the user, a user towards
everyone). Tables (partition = the day the profile is as of):

- `curated.user_profiles`: per user (pseudonymous key) their segment (country|age band
  where the users snapshot has them), activity (Σ w·θ per day of data: how much of them
  the product sees), engagement rate, content taste (the de-biased covariance of their engagement
  with the items' content vectors) and collaborative factors; segment rows (no user
  key) average their users: a new user falls back to their segment, then to everyone
  (segment `*`).
- `curated.user_category_affinity`: per user (and segment) and category, the engagement
  rate in that category.
- `curated.item_profiles`: per item its exposure (Σ w·θ per day of data), engagement
  rate and factors; an item
  of the catalogue snapshot that nobody was shown gets its category's rate and factors
  mapped from its content (a ridge regression of known items' factors on content,
  kept on the row of everyone, `content_map`), so a new item is scored by how its
  content resembles what users engaged with.
- `curated.item_segment_rates`: per item and country, its engagement rate there.

The collaborative factors are a truncated SVD (scikit-learn) of the sparse
user × item matrix of de-biased residual engagement (what a pair did beyond the user's
and the item's own rates), rank `profiles.factors`.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD

from flywheel_assets import warehouse
from flywheel_assets.curate.feedback import consent_logged, consent_sql, latest_snapshot_date

CONTENT = [f"c{i}" for i in range(6)]
EVERYONE = "*"
MIN_EXAMINATION = 0.01
# A pair's residual is shrunk by this many examinations (its noise is ~1/sqrt(Σθ)).
PAIR_PRIOR = 1.0
RIDGE = 1.0
# A profile older than this (days before the row's) is not read: what a user did
# months ago, with nothing since, is not what they do now.
MAX_AGE_DAYS = 28

# Users × categories up to this many cells are summed on a dense grid (8 bytes a cell).
DENSE_USER_CATEGORY_CELLS = 50_000_000
# Rows of the user × item pairs streamed from DuckDB at a time.
PAIR_BATCH = 1_000_000


def segment_of(country, age_band) -> str:
    """A user's segment: country|age band, '?' for an unknown part."""
    def part(v):
        return "?" if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else str(v)
    return f"{part(country)}|{part(age_band)}"


def _window_rows(conn, day: str, window_days: int, half_life_days: float, consent: str) -> None:
    """`_pf_rows`: the window's curated rows with their decay weight w, w·grade and
    w·θ, the user's country and age band, consent applied as in training."""
    users_date = latest_snapshot_date(conn, "raw.users", day)
    identified = conn.execute(
        "SELECT count(*) > 0 AND count(*) = count(examination) FROM curated.position_bias "
        "WHERE partition_date = ?", [day]).fetchone()[0]
    theta = (f"least(greatest(coalesce(pb.examination, 1.0), {MIN_EXAMINATION}), 1.0)"
             if identified else "1.0")
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE _pf_rows AS
        SELECT f.user_key, f.item_id, u.country, u.age_band,
               pow(0.5, date_diff('day', f.partition_date, DATE '{day}') / $hl) AS w,
               w * f.grade AS wy, w * {theta} AS we
        FROM curated.curated_feedback f
        LEFT JOIN curated.position_bias pb ON pb.partition_date = $d AND pb.position = f.position
        LEFT JOIN raw.users u ON u.user_key = f.user_key AND u.partition_date = $ud
        WHERE f.partition_date BETWEEN $ws AND $d AND f.item_id IS NOT NULL
          AND {consent_sql(consent, consent_logged(conn, users_date))}""",
                 {"d": day, "ws": warehouse.window_start(day, window_days),
                  "ud": users_date, "hl": float(half_life_days)})


def _pairs(conn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The window's user × item pairs (user index, item index, Σ w·grade, Σ w·θ): the
    largest arrays of the profiles (tens of millions at production volume). Grouped
    into a temporary table DuckDB can spill, then streamed into arrays of their final
    size (32-bit indices): no whole query result is held beside them."""
    conn.execute("""
        CREATE OR REPLACE TEMP TABLE _pf_pairs AS
        SELECT u.ui::INTEGER AS ui, i.ii::INTEGER AS ii, sum(r.wy) AS s, sum(r.we) AS e
        FROM _pf_rows r JOIN _pf_users u USING (user_key) JOIN _pf_items i USING (item_id)
        GROUP BY ALL""")
    n = conn.execute("SELECT count(*) FROM _pf_pairs").fetchall()[0][0]
    ui, ii = np.empty(n, np.int32), np.empty(n, np.int32)
    ps, pe = np.empty(n), np.empty(n)
    done = 0
    for batch in conn.sql("SELECT ui, ii, s, e FROM _pf_pairs").to_arrow_reader(PAIR_BATCH):
        rows = slice(done, done + batch.num_rows)
        for target, column in zip((ui, ii, ps, pe), batch.columns):
            target[rows] = column.to_numpy()
        done += batch.num_rows
    conn.execute("DROP TABLE _pf_pairs")
    return ui, ii, ps, pe


def _shrunk(s: np.ndarray, e: np.ndarray, prior: np.ndarray | float, m: float) -> np.ndarray:
    return (s + m * prior) / (e + m)


@dataclass
class _Built:
    users: pd.DataFrame
    categories: pd.DataFrame
    items: pd.DataFrame
    segments: pd.DataFrame
    stats: dict = field(default_factory=dict)


def compute_profiles(conn: duckdb.DuckDBPyConnection, day: str, window_days: int = 28,
                     half_life_days: float = 14.0, n_factors: int = 16,
                     prior: float = 10.0, consent: str = "when_logged") -> _Built:
    """The profiles as of the end of ``day`` (frames in the tables' columns)."""
    _window_rows(conn, day, window_days, half_life_days, consent)
    items_date = latest_snapshot_date(conn, "raw.items", day)
    # Dense indices for users and items (the catalogue snapshot's items too: an item
    # nobody was shown still gets a profile from its content).
    conn.execute("""
        CREATE OR REPLACE TEMP TABLE _pf_users AS
        SELECT user_key, any_value(country) AS country, any_value(age_band) AS age_band,
               (row_number() OVER (ORDER BY user_key) - 1)::BIGINT AS ui
        FROM _pf_rows WHERE user_key IS NOT NULL GROUP BY user_key""")
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE _pf_items AS
        SELECT i.item_id, (row_number() OVER (ORDER BY i.item_id) - 1)::BIGINT AS ii,
               it.category, {", ".join(f"it.{c}" for c in CONTENT)}
        FROM (SELECT DISTINCT item_id FROM _pf_rows
              UNION SELECT item_id FROM raw.items WHERE partition_date = $id) i
        LEFT JOIN (SELECT * FROM raw.items WHERE partition_date = $id) it USING (item_id)""",
                 {"id": items_date})
    users = conn.execute("SELECT user_key, country, age_band FROM _pf_users ORDER BY ui").df()
    items = conn.execute(f"SELECT item_id, category, {', '.join(CONTENT)} FROM _pf_items "
                         "ORDER BY ii").df()
    ui, ii, ps, pe = _pairs(conn)
    by_item = conn.execute("""
        SELECT i.ii, sum(r.wy) AS s, sum(r.we) AS e FROM _pf_rows r JOIN _pf_items i USING (item_id)
        GROUP BY ALL""").fetchnumpy()
    by_country = conn.execute("""
        SELECT i.ii, r.country, sum(r.wy) AS s, sum(r.we) AS e FROM _pf_rows r
        JOIN _pf_items i USING (item_id) WHERE r.country IS NOT NULL GROUP BY ALL""").df()
    total_s, total_e, rows = conn.execute(
        "SELECT coalesce(sum(wy), 0), coalesce(sum(we), 0), count(*) FROM _pf_rows").fetchone()
    # Activity and exposure are per day of data (Σ w·θ over the days' summed weights),
    # so they mean the same while the window fills as once it is full.
    day_weight = conn.execute("SELECT coalesce(sum(w), 0) FROM (SELECT DISTINCT w FROM _pf_rows)"
                              ).fetchone()[0] or 1.0
    for temp in ("_pf_rows", "_pf_users", "_pf_items"):
        conn.execute(f"DROP TABLE IF EXISTS {temp}")

    n_users, n_items = len(users), len(items)
    mu = total_s / total_e if total_e > 0 else 0.0
    m = float(prior)
    # --- items: category rate, then each item shrunk towards its category ------------
    item_s = np.zeros(n_items)
    item_e = np.zeros(n_items)
    np.add.at(item_s, by_item["ii"], by_item["s"])
    np.add.at(item_e, by_item["ii"], by_item["e"])
    category = items["category"].fillna("?").to_numpy(dtype=object)
    cat_names, cat_idx = np.unique(category, return_inverse=True)
    cat_s = np.bincount(cat_idx, item_s, len(cat_names))
    cat_e = np.bincount(cat_idx, item_e, len(cat_names))
    cat_rate = _shrunk(cat_s, cat_e, mu, m)
    item_rate = _shrunk(item_s, item_e, cat_rate[cat_idx], m)
    # --- users ---------------------------------------------------------------------
    user_s = np.bincount(ui, ps, n_users)
    user_e = np.bincount(ui, pe, n_users)
    user_rate = _shrunk(user_s, user_e, mu, m)
    # user × category: summed over a dense users × categories grid when it is small
    # beside the pairs (the same sums, in the same order, as over np.unique's inverse,
    # without its sort)
    uc = ui.astype(np.int64) * len(cat_names) + cat_idx[ii]
    cells = n_users * len(cat_names)
    if cells <= min(DENSE_USER_CATEGORY_CELLS, 4 * len(uc)):
        uc_keys = np.flatnonzero(np.bincount(uc, minlength=cells))
        uc_s = np.bincount(uc, ps, cells)[uc_keys]
        uc_e = np.bincount(uc, pe, cells)[uc_keys]
    else:
        uc_keys, uc_inv = np.unique(uc, return_inverse=True)
        uc_s = np.bincount(uc_inv, ps)
        uc_e = np.bincount(uc_inv, pe)
        del uc_inv
    del uc
    uc_user = uc_keys // len(cat_names)
    uc_cat = uc_keys % len(cat_names)
    uc_aff = _shrunk(uc_s, uc_e, user_rate[uc_user], m)
    # --- collaborative factors: SVD of the residual matrix ---------------------------
    residual = (ps - pe * (user_rate[ui] + item_rate[ii] - mu)) / (pe + PAIR_PRIOR)
    rank = min(int(n_factors), n_users - 1, n_items - 1)
    if rank >= 1 and len(ps):
        matrix = sp.csr_matrix((residual, (ui, ii)), shape=(n_users, n_items))
        svd = TruncatedSVD(n_components=rank, algorithm="randomized", n_iter=5, random_state=0)
        user_f = svd.fit_transform(matrix)
        item_f = svd.components_.T.copy()
    else:
        rank = 0
        user_f, item_f = np.zeros((n_users, 0)), np.zeros((n_items, 0))
    # --- content: users' taste; new items' factors from their content ----------------
    content = items[CONTENT].to_numpy(dtype="float64") if len(items) else np.zeros((0, 6))
    has_content = ~np.isnan(content).any(axis=1) if len(items) else np.zeros(0, bool)
    taste, content_map = None, None
    if has_content.any() and len(ps):
        weight = item_e * has_content
        centre = (content[has_content] * weight[has_content, None]).sum(0) / max(weight.sum(), 1e-12)
        centred = np.where(has_content[:, None], content - centre, 0.0)
        engaged = ps - pe * user_rate[ui]
        taste = np.zeros((n_users, len(CONTENT)))
        for j in range(len(CONTENT)):
            taste[:, j] = np.bincount(ui, engaged * centred[ii, j], n_users)
        taste /= (user_e + m)[:, None]
        if rank:
            known = has_content & (item_e > 0)
            x = np.hstack([content[known], np.ones((known.sum(), 1))])
            w = item_e[known] / item_e[known].mean() if known.any() else np.ones(0)
            a = x.T @ (x * w[:, None]) + RIDGE * np.eye(x.shape[1])
            content_map = np.linalg.solve(a, x.T @ (item_f[known] * w[:, None]))
            unseen = has_content & (item_e == 0)
            item_f[unseen] = np.hstack([content[unseen], np.ones((unseen.sum(), 1))]) @ content_map
    # --- segments: a new user's fallback ---------------------------------------------
    segment = np.array([segment_of(c, a) for c, a in zip(users["country"], users["age_band"])],
                       dtype=object) if n_users else np.zeros(0, object)
    seg_rows, seg_cat_rows = [], []
    for name, members in [(EVERYONE, np.ones(n_users, bool))] + [
            (s, segment == s) for s in sorted(set(segment.tolist()))]:
        if not members.any():
            continue
        wts = user_e[members] + 1e-12
        seg_s, seg_e = user_s[members].sum(), user_e[members].sum()
        rate = _shrunk(seg_s, seg_e, mu, m)
        seg_rows.append({"user_key": None, "segment": name, "activity": float(seg_e / day_weight),
                         "rate": float(rate),
                         "taste": None if taste is None else
                         list(np.average(taste[members], axis=0, weights=wts)),
                         "factors": list(np.average(user_f[members], axis=0, weights=wts))
                         if rank else None})
        in_seg = members[uc_user]
        cs = np.bincount(uc_cat[in_seg], uc_s[in_seg], len(cat_names))
        ce = np.bincount(uc_cat[in_seg], uc_e[in_seg], len(cat_names))
        for c in np.flatnonzero(ce > 0):
            seg_cat_rows.append({"user_key": None, "segment": name, "category": cat_names[c],
                                 "affinity": float(_shrunk(cs[c], ce[c], rate, m))})
    user_frame = pd.DataFrame({
        "user_key": users["user_key"].to_numpy(dtype=object), "segment": segment,
        "activity": user_e / day_weight, "rate": user_rate,
        "taste": list(taste) if taste is not None else [None] * n_users,
        "factors": list(user_f) if rank else [None] * n_users})
    user_frame = pd.concat([user_frame, pd.DataFrame(seg_rows)], ignore_index=True)
    category_frame = pd.concat([pd.DataFrame({
        "user_key": users["user_key"].to_numpy(dtype=object)[uc_user], "segment": segment[uc_user],
        "category": cat_names[uc_cat], "affinity": uc_aff}), pd.DataFrame(seg_cat_rows)],
        ignore_index=True)
    category_frame = category_frame[category_frame["category"] != "?"]
    cat_f = (np.vstack([np.average(item_f[cat_idx == c], axis=0,
                                   weights=item_e[cat_idx == c] + 1e-12)
                        for c in range(len(cat_names))]) if rank and n_items else None)
    item_frame = pd.concat([
        pd.DataFrame({"item_id": items["item_id"].to_numpy(dtype=object),
                      "category": items["category"].to_numpy(dtype=object),
                      "exposure": item_e / day_weight, "rate": item_rate,
                      "factors": list(item_f) if rank else [None] * n_items,
                      "content_map": [None] * n_items}),
        pd.DataFrame({"item_id": [None] * len(cat_names), "category": list(cat_names),
                      "exposure": cat_e / day_weight, "rate": cat_rate,
                      "factors": list(cat_f) if cat_f is not None else [None] * len(cat_names),
                      "content_map": [None] * len(cat_names)}),
        pd.DataFrame({"item_id": [None], "category": [None], "exposure": [float(total_e / day_weight)],
                      "rate": [float(mu)], "factors": [None],
                      "content_map": [None if content_map is None else
                                      list(content_map.ravel())]})], ignore_index=True)
    item_frame = item_frame[(item_frame["category"] != "?") | item_frame["item_id"].notna()]
    if len(by_country):
        code = by_country["ii"].to_numpy(dtype=np.int64)
        segment_frame = pd.DataFrame({
            "item_id": items["item_id"].to_numpy(dtype=object)[code],
            "segment": by_country["country"].to_numpy(dtype=object),
            "rate": _shrunk(by_country["s"].to_numpy(dtype="float64"),
                            by_country["e"].to_numpy(dtype="float64"), item_rate[code], m)})
    else:
        segment_frame = pd.DataFrame(columns=["item_id", "segment", "rate"])
    stats = {"rows": int(rows), "users": n_users, "items_seen": int((item_e > 0).sum()),
             "items": n_items, "pairs": int(len(ps)), "factors": rank,
             "mean_rate": float(mu), "content_taste": taste is not None,
             "new_items_from_content": int((has_content & (item_e == 0)).sum())
             if content_map is not None else 0}
    return _Built(user_frame, category_frame, item_frame, segment_frame, stats)


def build_profiles(conn: duckdb.DuckDBPyConnection, day: str, window_days: int = 28,
                   half_life_days: float = 14.0, n_factors: int = 16, prior: float = 10.0,
                   consent: str = "when_logged") -> dict:
    """Compute the profiles as of ``day`` and replace their partitions in one
    transaction; returns counts and seconds. A window without a row writes no profile
    (the day's partitions are emptied): the next day's rows then read an older one, or
    none, rather than rates of zero that look like knowledge."""
    started = time.perf_counter()
    built = compute_profiles(conn, day, window_days, half_life_days, n_factors, prior, consent)
    if not built.stats["rows"]:
        built = _Built(*(frame.iloc[0:0] for frame in (built.users, built.categories,
                                                        built.items, built.segments)),
                       stats=built.stats)
    frames = {"curated.user_profiles": built.users,
              "curated.user_category_affinity": built.categories,
              "curated.item_profiles": built.items,
              "curated.item_segment_rates": built.segments}
    with warehouse.transaction(conn):
        for table, frame in frames.items():
            frame = frame.assign(partition_date=dt.date.fromisoformat(day))
            conn.register("_pf_frame", frame)
            try:
                warehouse.replace_partition(conn, table, day, "SELECT * FROM _pf_frame")
            finally:
                conn.unregister("_pf_frame")
    return {**built.stats, "seconds": round(time.perf_counter() - started, 2)}


# --- reading -------------------------------------------------------------------------


@dataclass
class ProfileSnapshot:
    """One day's profiles in memory, indexed for lookups (train/features.py)."""

    as_of: dt.date
    users: pd.DataFrame       # index user_key: segment, activity, rate, taste, factors
    segments: pd.DataFrame    # index segment
    affinity: pd.Series       # index (key, category), key a user key or "segment:<s>"
    items: pd.DataFrame       # index item_id: exposure, rate, factors
    categories: pd.DataFrame  # index category: rate, factors
    mean_rate: float
    content_map: np.ndarray | None
    segment_rates: pd.Series  # index (item_id, country)

    @property
    def n_factors(self) -> int:
        first = next((f for f in self.items["factors"] if f is not None), None)
        return 0 if first is None else len(first)


def snapshot_day(row_day: dt.date) -> dt.date:
    """The profile partition the rows of ``row_day`` may read: the day before (their
    own day's outcomes never reach their features)."""
    return row_day - dt.timedelta(days=1)


def available_day(conn: duckdb.DuckDBPyConnection, row_day: dt.date) -> dt.date | None:
    """The newest profile partition a row of ``row_day`` may read (at most
    ``MAX_AGE_DAYS`` old: after a longer gap the row reads none), or None."""
    latest = snapshot_day(row_day)
    return conn.execute("SELECT max(partition_date) FROM curated.item_profiles "
                        "WHERE partition_date BETWEEN ? AND ?",
                        [latest - dt.timedelta(days=MAX_AGE_DAYS - 1), latest]).fetchone()[0]


def _array(values) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype="float64")


def load_snapshot(conn: duckdb.DuckDBPyConnection, as_of: dt.date) -> ProfileSnapshot | None:
    """The profiles of partition ``as_of`` (None when there are none)."""
    items = conn.execute("SELECT item_id, category, exposure, rate, factors, content_map "
                         "FROM curated.item_profiles WHERE partition_date = ?", [as_of]).df()
    if items.empty:
        return None
    users = conn.execute("SELECT user_key, segment, activity, rate, taste, factors "
                         "FROM curated.user_profiles WHERE partition_date = ?", [as_of]).df()
    affinity = conn.execute("""
        SELECT coalesce(user_key, 'segment:' || segment) AS key, category, affinity
        FROM curated.user_category_affinity WHERE partition_date = ?""", [as_of]).df()
    rates = conn.execute("SELECT item_id, segment, rate FROM curated.item_segment_rates "
                         "WHERE partition_date = ?", [as_of]).df()
    for frame in (users, items):
        for column in ("taste", "factors", "content_map"):
            if column in frame:
                frame[column] = [_array(v) if isinstance(v, (list, np.ndarray)) else None
                                 for v in frame[column]]
    everyone = items[items["item_id"].isna() & items["category"].isna()]
    content_map = everyone["content_map"].iloc[0] if len(everyone) else None
    if content_map is not None:
        content_map = content_map.reshape(len(CONTENT) + 1, -1)
    return ProfileSnapshot(
        as_of=as_of,
        users=users[users["user_key"].notna()].set_index("user_key"),
        segments=users[users["user_key"].isna()].set_index("segment"),
        affinity=affinity.set_index(["key", "category"])["affinity"],
        items=items[items["item_id"].notna()].set_index("item_id"),
        categories=items[items["item_id"].isna() & items["category"].notna()].set_index("category"),
        mean_rate=float(everyone["rate"].iloc[0]) if len(everyone) else 0.0,
        content_map=content_map,
        segment_rates=rates.set_index(["item_id", "segment"])["rate"])


def load_store(conn: duckdb.DuckDBPyConnection, row_days) -> dict[dt.date, ProfileSnapshot | None]:
    """The snapshot each row day may read (the newest partition on or before the day
    before, :func:`available_day`), each partition loaded once."""
    loaded: dict[dt.date, ProfileSnapshot | None] = {}
    out: dict[dt.date, ProfileSnapshot | None] = {}
    for row_day in sorted(set(row_days)):
        as_of = available_day(conn, row_day)
        if as_of is not None and as_of not in loaded:
            loaded[as_of] = load_snapshot(conn, as_of)
        out[row_day] = loaded.get(as_of) if as_of is not None else None
    return out
