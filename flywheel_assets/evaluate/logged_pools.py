"""A day's logged requests with their pools: what off-policy evaluation reads.

Requests come from `feedback_events` (rows with training consent) less the users flagged
as bots that day and less any request of the day's training split, hash-sampled to a
bounded number; every request left out is counted with its reason. Each request's pool
is the candidate pool the product logged, or, for a product that logs none, the
catalogue (the items snapshot, else the items shown that day) when it is small enough
to rank whole (`evaluation.max_catalogue_pool`). Rows carry the raw attributes the
models score. The family of estimators follows what the product logs: exposure
propensities on every pool row → "exposure" (on complete slates; a partial slate is
counted as skipped), and with each candidate's greedy position too, when the logged
propensities are those of epsilon-greedy logging with a uniformly random slate (checked
on every request), "policy-aware"; else "item-position" (partial slates valued on their
positions). Why a day is not policy-aware is said in ``family_note``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import duckdb
import numpy as np
import pandas as pd

from flywheel_assets.curate.feedback import latest_snapshot_date
from flywheel_assets.evaluate import off_policy
from flywheel_assets.serve.serving import PLAIN_TOP_K, Reranking
from flywheel_assets.warehouse import merged_extras


class NoPools(RuntimeError):
    """The day cannot value rankings: no logged pools and a catalogue too large to rank."""


@dataclass
class LoggedDay:
    pools: pd.DataFrame             # one row per (request, candidate), for scoring
    log: off_policy.LoggedSlates
    row_index: np.ndarray           # R×P: row of `pools` (-1 in padding)
    categories: np.ndarray | None   # R×P codes (None: the product logs no category)
    popularity: np.ndarray | None   # R×P (None: no popularity in the catalogue)
    shown_position: np.ndarray      # R×P, NaN where not shown
    grade: np.ndarray               # R×P, 0 where not shown or silent
    family: str                     # "exposure" | "item-position"
    pool_source: str
    skipped: dict[str, int] = field(default_factory=dict)
    family_note: str = ""

    def matrix(self, values: np.ndarray, fill=np.nan) -> np.ndarray:
        """Per-row values of `pools` as an R×P matrix."""
        out = np.full(self.row_index.shape, fill, dtype="float64")
        inside = self.row_index >= 0
        out[inside] = np.asarray(values, dtype="float64")[self.row_index[inside]]
        return out


def _catalogue(conn, day: str, items_date) -> list[str]:
    if items_date is not None:
        return [r[0] for r in conn.execute(
            "SELECT DISTINCT item_id FROM raw.items WHERE partition_date = ? ORDER BY 1",
            [items_date]).fetchall()]
    return [r[0] for r in conn.execute(
        "SELECT DISTINCT item_id FROM raw.impressions WHERE partition_date = ? ORDER BY 1",
        [day]).fetchall()]


def load(conn: duckdb.DuckDBPyConnection, day: str, max_requests: int,
         max_catalogue_pool: int, slate_size: int) -> LoggedDay:
    """The day's logged requests and pools; raises :class:`NoPools` when rankings cannot
    be valued on it. A slate is complete when it logged every position from 1 to the
    product's ``slate_size`` (or to its pool's size, when the pool is smaller)."""
    users_date = latest_snapshot_date(conn, "raw.users", day)
    items_date = latest_snapshot_date(conn, "raw.items", day)
    logs_pools = conn.execute("SELECT count(*) > 0 FROM raw.candidates WHERE partition_date = ?",
                              [day]).fetchone()[0]
    conn.execute("""
        CREATE OR REPLACE TEMP TABLE _eligible AS
        SELECT f.request_id, any_value(f.user_key) AS user_key, min(f.ts) AS ts,
               any_value(f.device) AS device, any_value(f.extras) AS extras,
               bool_and(b.user_key IS NULL) AS human, bool_or(t.request_id IS NOT NULL) AS trained_on
        FROM curated.feedback_events f
        LEFT JOIN curated.flagged_users b
               ON b.partition_date = f.partition_date AND b.user_key = f.user_key
        LEFT JOIN (SELECT DISTINCT request_id FROM ml.training_set
                   WHERE partition_date = $d AND split = 'train') t ON t.request_id = f.request_id
        WHERE f.partition_date = $d GROUP BY f.request_id""", {"d": day})
    skipped = dict(zip(["flagged bot", "in the training split"], conn.execute(
        "SELECT count(*) FILTER (WHERE NOT human), count(*) FILTER (WHERE human AND trained_on) "
        "FROM _eligible").fetchone()))
    if logs_pools:
        # The requests with a logged pool; the pools themselves are read below for the
        # sampled requests only (the whole day's pools are several times the sample's).
        conn.execute("CREATE OR REPLACE TEMP TABLE _logged AS SELECT DISTINCT request_id "
                     "FROM raw.candidates WHERE partition_date = ?", [day])
        skipped["no logged pool"] = conn.execute("""
            SELECT count(*) FROM _eligible WHERE human AND NOT trained_on AND request_id NOT IN
            (SELECT request_id FROM _logged)""").fetchone()[0]
        pool_sql = """SELECT request_id, item_id, max(exposure_propensity) AS exposure,
                             max(greedy_position) AS greedy
                      FROM raw.candidates WHERE partition_date = $d
                      AND request_id IN (SELECT request_id FROM _requests) GROUP BY ALL"""
        source = "logged candidate pools"
        eligible = "human AND NOT trained_on AND request_id IN (SELECT request_id FROM _logged)"
    else:
        catalogue = _catalogue(conn, day, items_date)
        if not catalogue or len(catalogue) > max_catalogue_pool:
            conn.execute("DROP TABLE _eligible")
            raise NoPools(f"the product logs no candidate pools and its catalogue has "
                          f"{len(catalogue)} items (more than evaluation.max_catalogue_pool = "
                          f"{max_catalogue_pool} to rank whole)")
        conn.register("_catalogue", pd.DataFrame({"item_id": catalogue}))
        pool_sql = ("SELECT NULL::VARCHAR AS request_id, item_id, NULL::DOUBLE AS exposure, "
                    "NULL::INTEGER AS greedy FROM _catalogue")
        source = f"the catalogue ({len(catalogue)} items; the product logs no pools)"
        eligible = "human AND NOT trained_on"
    total = conn.execute(f"SELECT count(*) FROM _eligible WHERE {eligible}").fetchone()[0]
    conn.execute(f"""CREATE OR REPLACE TEMP TABLE _requests AS SELECT * FROM _eligible
                     WHERE {eligible} ORDER BY hash(request_id), request_id LIMIT $n""",
                 {"n": int(max_requests)})
    skipped["beyond the sample of evaluation.max_ope_requests"] = max(total - max_requests, 0)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _pool AS {pool_sql}", {"d": day} if logs_pools else {})
    if not logs_pools:
        conn.unregister("_catalogue")
    pool_join = ("JOIN _pool p ON p.request_id = r.request_id" if logs_pools
                 else "CROSS JOIN _pool p")
    pools = conn.execute(f"""
        SELECT r.request_id, r.user_key, p.item_id, p.exposure, p.greedy, r.ts, r.device, u.country,
               u.age_band, u.signup_date, it.category, it.published_date, it.duration_s,
               it.popularity, it.c0, it.c1, it.c2, it.c3, it.c4, it.c5,
               {merged_extras("u", "it", "r")} AS extras
        FROM _requests r {pool_join}
        LEFT JOIN raw.users u ON u.user_key = r.user_key AND u.partition_date = $ud
        LEFT JOIN raw.items it ON it.item_id = p.item_id AND it.partition_date = $id
        ORDER BY r.request_id, p.item_id""", {"ud": users_date, "id": items_date}).df()
    shown = conn.execute("""
        SELECT request_id, item_id, position, propensity, grade FROM curated.feedback_events
        WHERE partition_date = $d AND request_id IN (SELECT request_id FROM _requests)
        -- A double-logged impression is one showing: keep the copy with the outcomes.
        QUALIFY row_number() OVER (PARTITION BY request_id, position
                                   ORDER BY n_interactions DESC, impression_id) = 1
        ORDER BY request_id, position""", {"d": day}).df()
    for temp in ("_eligible", "_logged", "_pool", "_requests"):
        conn.execute(f"DROP TABLE IF EXISTS {temp}")
    return assemble(pools, shown, source, skipped, slate_size)


def partial_slates(pools: pd.DataFrame, shown: pd.DataFrame, slate_size: int) -> np.ndarray:
    """Requests whose slate is not complete: it did not log every position from 1 to
    the product's slate size (or to its pool's size, when the pool is smaller)."""
    positions = shown.groupby("request_id")["position"].agg(["nunique", "max"])
    need = np.minimum(pools.groupby("request_id").size(), int(slate_size))
    positions = positions.reindex(need.index)
    complete = ((positions["nunique"] == positions["max"]) & (positions["max"] >= need)
                ).fillna(False)
    return complete.index[~complete.to_numpy(dtype=bool)].to_numpy()


def assemble(pools: pd.DataFrame, shown: pd.DataFrame, source: str, skipped: dict,
             slate_size: int) -> LoggedDay:
    """Matrices and the log from the pool rows and the shown impressions."""
    family = ("exposure" if len(pools) and pools["exposure"].notna().all() else "item-position")
    if family == "exposure":
        # Exposure weighting reads "not shown" from a missing impression: complete slates only.
        partial = partial_slates(pools, shown, slate_size)
        skipped["partial slate (the exposure estimators need complete slates)"] = len(partial)
        pools = pools[~pools["request_id"].isin(partial)].reset_index(drop=True)
        shown = shown[~shown["request_id"].isin(partial)]
    requests, codes = np.unique(pools["request_id"].to_numpy(dtype=object), return_inverse=True)
    # A user's requests resample together; an anonymous request is its own cluster.
    first = pools.drop_duplicates("request_id").set_index("request_id")
    users = (first["user_key"] if "user_key" in first else pd.Series(None, index=first.index,
                                                                        dtype=object))
    users = users.reindex(requests).to_numpy(dtype=object)
    unit = [f"request:{r}" if pd.isna(u) else f"user:{u}" for r, u in zip(requests, users)]
    cluster = np.unique(np.asarray(unit, dtype=object), return_inverse=True)[1]
    column = pools.groupby(codes, sort=False).cumcount().to_numpy()
    sizes = np.bincount(codes, minlength=len(requests))
    width = int(sizes.max(initial=0))
    row_index = np.full((len(requests), width), -1, dtype=np.int64)
    row_index[codes, column] = np.arange(len(pools))
    items = np.full((len(requests), width), None, dtype=object)
    items[codes, column] = pools["item_id"].to_numpy(dtype=object)
    place = pd.DataFrame({"request_id": pools["request_id"], "item_id": pools["item_id"],
                          "n": codes, "j": column})
    imp = shown.merge(place, on=["request_id", "item_id"], how="inner")
    not_in_pool = len(shown) - len(imp)
    if not_in_pool:
        skipped["impressions of an item outside the request's pool"] = int(not_in_pool)
    n, j = imp["n"].to_numpy(), imp["j"].to_numpy()
    position = imp["position"].to_numpy(dtype=np.int64)
    shown_position = np.full(row_index.shape, np.nan)
    grade = np.zeros(row_index.shape)
    shown_position[n, j] = position
    grade[n, j] = imp["grade"].to_numpy(dtype="float64")
    pairs = frozenset(zip(shown["item_id"], shown["position"].astype(int)))
    propensity = imp["propensity"].to_numpy(dtype="float64")
    day = LoggedDay(pools=pools, log=None, row_index=row_index, categories=None, popularity=None,
                    shown_position=shown_position, grade=grade, family=family,
                    pool_source=source, skipped={k: int(v) for k, v in skipped.items() if v})
    exposure = day.matrix(pools["exposure"]) if family == "exposure" else None
    day.log = off_policy.LoggedSlates(
        n_requests=len(requests), pool_sizes=sizes, imp_request=n, imp_column=j,
        imp_position=position, imp_propensity=propensity,
        imp_reward=imp["grade"].to_numpy(dtype="float64"), pool_items=items,
        supported_pairs=pairs, exposure=exposure, cluster=cluster)
    if family == "exposure":
        greedy = (day.matrix(pools["greedy"].astype("float64"), fill=np.nan)
                  if "greedy" in pools else None)
        logger, note = epsilon_greedy(greedy, exposure, sizes, n, j, position, propensity)
        if logger is not None:
            day.family = "policy-aware"
            day.log = replace(day.log, **logger)
        day.family_note = note
    if pools["category"].notna().any():
        day.categories = day.matrix(pd.factorize(pools["category"], sort=True)[0], fill=-1)
    if len(pools) and pools["popularity"].notna().all():
        day.popularity = day.matrix(pools["popularity"])
    return day


# Logged propensities are rounded (to 6 decimals, say); beyond this absolute or relative
# gap they are not epsilon-greedy's.
EPSILON_GREEDY_TOLERANCE = 1e-5
EPSILON_GREEDY_RELATIVE = 1e-3


def _close(predicted: np.ndarray, logged: np.ndarray) -> np.ndarray:
    return np.abs(predicted - logged) <= np.maximum(EPSILON_GREEDY_TOLERANCE,
                                                    EPSILON_GREEDY_RELATIVE * np.abs(logged))


def epsilon_greedy(greedy: np.ndarray | None, exposure: np.ndarray, sizes: np.ndarray,
                   n: np.ndarray, j: np.ndarray, position: np.ndarray,
                   propensity: np.ndarray) -> tuple[dict | None, str]:
    """The logging policy as epsilon-greedy with a uniformly random ordered slate, if the
    logs say it is: each request's ε from its impressions' propensities (at the greedy
    position 1 − ε + ε/P, elsewhere ε/P), then every impression propensity and every
    candidate's exposure ((1 − ε)[in the greedy slate] + ε · depth / P) recomputed from
    it and compared with the logged ones. Returns the fields of `LoggedSlates` that
    describe it (None when it is not) and a note saying why not."""
    if greedy is None or np.isnan(greedy).all():
        return None, "the product logs no greedy positions: exposure estimators"
    pools = ~np.isnan(exposure)
    g = np.where(np.isnan(greedy), 0, greedy).astype(np.int64)
    depth = ((g > 0) & pools).sum(axis=1)
    size = sizes.astype("float64")
    at_greedy = g[n, j] == position
    spread = 1.0 - 1.0 / np.maximum(size[n], 1.0)
    eps_i = np.where(at_greedy, np.divide(1.0 - propensity, spread, out=np.zeros_like(spread),
                                          where=spread > 0), propensity * size[n])
    count = np.bincount(n, minlength=len(sizes))
    eps = np.clip(np.bincount(n, eps_i, minlength=len(sizes)) / np.maximum(count, 1), 0.0, 1.0)
    predicted = eps[n] / size[n] + (1.0 - eps[n]) * at_greedy
    off = ~_close(predicted, propensity)
    mu = (1.0 - eps[:, None]) * (g > 0) + (eps * depth / np.maximum(size, 1.0))[:, None]
    off_pool = pools & ~_close(mu, np.nan_to_num(exposure))
    bad = np.unique(np.concatenate([n[off], np.nonzero(off_pool)[0]]))
    # The greedy positions of a request: 1..depth, each once.
    ranked = np.sort(np.where(g > 0, g, np.iinfo(np.int64).max), axis=1)
    expected = np.arange(1, g.shape[1] + 1)[None, :]
    gaps = ((ranked != expected) & (expected <= depth[:, None])).any(axis=1)
    if (count == 0).any() or (depth == 0).any() or len(bad) or gaps.any():
        what = (f"{len(bad)} requests' logged propensities are not those of epsilon-greedy "
                f"logging with a uniformly random slate" if len(bad) else
                f"{int(gaps.sum())} requests' greedy positions are not 1..n, each once"
                if gaps.any() else "some requests have no greedy slate or no impression")
        return None, f"{what}: exposure estimators"
    return {"greedy": g, "epsilon": eps, "depth": depth}, ""


def slates(day: LoggedDay, scores: np.ndarray, k: int,
           reranking: Reranking = PLAIN_TOP_K) -> np.ndarray:
    """The deterministic policy "serve each pool by these scores" (R×P, padding
    ignored): R×K pool columns in position order, as `serving` re-ranks them (-1 where a
    pool has fewer than K candidates). Pools of each size are ranked together."""
    sizes = day.log.pool_sizes
    out = np.full((len(sizes), k), -1, dtype=np.int64)
    for size in np.unique(sizes):
        rows = np.flatnonzero(sizes == size)
        cut = lambda a: None if a is None else a[rows, :size]  # noqa: E731
        chosen = reranking.slates(scores[rows, :size], min(k, int(size)), cut(day.categories),
                                  cut(day.popularity))
        out[rows, :chosen.shape[1]] = chosen
    return out
