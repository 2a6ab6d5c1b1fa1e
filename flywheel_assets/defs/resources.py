"""The one resource every asset uses: settings plus the DuckDB warehouse."""

import contextlib
from typing import Iterator

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from flywheel_assets.core import warehouse
from flywheel_assets.settings import Settings


class FlywheelResource(dg.ConfigurableResource):
    """Paths and thresholds (from ``FLYWHEEL_DATA_DIR`` unless ``data_dir`` is set) and
    short-lived connections to the warehouse through dagster-duckdb."""

    data_dir: str | None = None
    warehouse_db: DuckDBResource | None = None
    # Experiment switches (None: FLYWHEEL_FILTERS / FLYWHEEL_IPS, default on).
    use_filters: bool | None = None
    use_ips: bool | None = None
    # How serving re-ranks (None: FLYWHEEL_SERVING_DIVERSITY, default 0.15, and
    # FLYWHEEL_SERVING_POPULARITY_BALANCE, default 0.6).
    serving_diversity: float | None = None
    serving_popularity_balance: float | None = None

    @property
    def settings(self) -> Settings:
        overrides = {k: v for k, v in (("use_filters", self.use_filters),
                                       ("use_ips", self.use_ips),
                                       ("serving_diversity", self.serving_diversity),
                                       ("serving_popularity_balance",
                                        self.serving_popularity_balance))
                     if v is not None}
        return Settings.from_env(self.data_dir, **overrides)

    def _duckdb(self) -> DuckDBResource:
        return self.warehouse_db or DuckDBResource(database=str(self.settings.warehouse_path))

    @contextlib.contextmanager
    def warehouse(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with the schema in place; closed when the block ends."""
        s = self.settings
        s.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        with self._duckdb().get_connection() as conn:
            # DuckDBResource closes the connection only when the block succeeds; a
            # failed step would leave the file open and lock out the next connection.
            try:
                warehouse.prepare(conn, s.duckdb_temp_dir, s.duckdb_memory_limit)
                warehouse.create_schema(conn)
                yield conn
            finally:
                conn.close()
