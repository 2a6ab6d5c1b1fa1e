"""The one resource every asset uses: settings plus the DuckDB warehouse."""

import contextlib
from typing import Iterator

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from flywheel_assets import warehouse
from flywheel_assets.settings import Settings


class FlywheelResource(dg.ConfigurableResource):
    """Paths and knobs (from ``FLYWHEEL_DATA_DIR`` and the ``FLYWHEEL_<GROUP>_<FIELD>``
    environment unless ``data_dir`` is set) and short-lived connections to the
    warehouse through dagster-duckdb. ``overrides`` changes knobs by their dotted names
    (``{"serving.diversity": "0"}``; `flywheel_assets.settings`)."""

    data_dir: str | None = None
    warehouse_db: DuckDBResource | None = None
    overrides: dict[str, str] = {}

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.data_dir, self.overrides)

    def _duckdb(self) -> DuckDBResource:
        return self.warehouse_db or DuckDBResource(database=str(self.settings.warehouse_path))

    @contextlib.contextmanager
    def warehouse(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with the schema in place; closed when the block ends. On a lake
        (many writers), a write that lost a race with another's commit is tried again:
        the step is retried (every write replaces what it writes, so again is safe)."""
        s = self.settings
        if isinstance(s.warehouse, warehouse.Lake) and self.warehouse_db is None:
            try:
                with warehouse.connect(s.warehouse, s.duckdb_temp_dir,
                                       s.duckdb_memory_limit) as conn:
                    yield conn
            except duckdb.Error as exc:
                if not warehouse.lost_a_race(exc):
                    raise
                raise dg.RetryRequested(max_retries=warehouse.RACE_RETRIES,
                                        seconds_to_wait=warehouse.race_wait()) from exc
            return
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
                warehouse.release_memory()
