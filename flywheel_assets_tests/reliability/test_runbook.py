"""Every command docs/runbook.md tells on-call to run is run by a test.

The commands are read from the runbook's own text: inline code that starts with a
program (`flywheel`, `.venv/bin/...`, `python`, `make`, `dagster`, `duckdb`, `.`), an
environment assignment (`FLYWHEEL_PROFILES_ENABLED=0`) or SQL (`SELECT ...`), and every
statement or line of a fenced ```sql or ```sh block. Each is mapped to the test that
runs it (COMMANDS); a command added to the runbook without a test, a map entry naming a
test that does not exist, or one whose test no longer says it runs the command, fails
here.

The commands that no other test runs are run here as on-call would: in a shell with the
virtualenv activated as the runbook says, from a checkout whose `data/` is a small real
flywheel (three days of the small world, the third rotated by the runbook's own
`flywheel rotate` with `FLYWHEEL_PROFILES_ENABLED=0`), with `FLYWHEEL_DATA_DIR`
and `DAGSTER_HOME` set as `make ui` sets them, the runbook's placeholders replaced by
real values."""

from __future__ import annotations

import ast
import datetime as dt
import getpass
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from flywheel_assets import warehouse
from flywheel_assets.curate import profiles
from flywheel_assets.monitor.alerts import Alert, raise_alert
from flywheel_assets.serve.serving import current_policy, warehouse_profiles
from flywheel_assets.settings import Settings
from flywheel_assets.train import model_store
from flywheel_assets.train import training_set as ts_lib
from flywheel_assets.train.features import attach_profiles
from flywheel_assets_tests.helpers import land_day, turn_the_wheel
from flywheel_assets_tests.test_rotation_small_world import CONFIG

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "runbook.md"
HERE = "flywheel_assets_tests/reliability/test_runbook.py"
LIVE = "flywheel_assets_tests/harness/test_live_instance.py"

# What starts a command in inline code (its first word), besides `.venv/...`, an
# environment assignment and SQL.
PROGRAMS = {"flywheel", "python", "python3", "pip", "make", "dagster", "dagster-webserver",
            "dagster-daemon", "duckdb", ".", "source", "bash", "sh", "curl", "dmesg"}
ALONE = {"dmesg"}
SQL_START = re.compile(r"(?i)(SELECT|WITH|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER)\s")
ENV_ASSIGNMENT = re.compile(r"[A-Z][A-Z0-9_]*=\S*$")
SHELL_FENCES = {"sh", "bash", "shell", "console"}

# Runbook command (as `runbook_commands` normalises it) -> the pytest node id that runs it.
COMMANDS = {
    ". .venv/bin/activate": f"{HERE}::test_the_activated_virtualenv_has_every_program",
    'python -c "import duckdb, sys; duckdb.connect(\'data/warehouse.duckdb\', read_only=True)'
    '.sql(sys.argv[1]).show(max_width=250)" "SELECT …"':
        f"{HERE}::test_the_runbooks_sql_runs_read_only",
    "SELECT * FROM monitor.alerts ORDER BY raised_at DESC LIMIT 20":
        f"{HERE}::test_the_runbooks_sql_runs_read_only",
    "SELECT * FROM ml.promotions ORDER BY decided_at DESC LIMIT 10":
        f"{HERE}::test_the_runbooks_sql_runs_read_only",
    "SELECT * FROM monitor.flywheel_health ORDER BY partition_date DESC LIMIT 7":
        f"{HERE}::test_the_runbooks_sql_runs_read_only",
    "SELECT alert_key, webhook_status, webhook_attempts, webhook_error, next_attempt_at "
    "FROM monitor.alerts WHERE webhook_status <> 'delivered'":
        f"{HERE}::test_the_runbooks_sql_runs_read_only",
    "make ui": f"{LIVE}::test_the_drift_sensor_retrains_and_the_gate_decides",
    ".venv/bin/flywheel rotate --day 2026-01-05":
        f"{HERE}::test_rotate_runs_the_day_on_the_instance_the_ui_reads",
    "flywheel rotate": f"{HERE}::test_rotate_runs_the_day_on_the_instance_the_ui_reads",
    '.venv/bin/flywheel rollback --reason "what you saw"':
        f"{HERE}::test_rollback_puts_the_previous_champion_back",
    "flywheel rollback --reason …": f"{HERE}::test_rollback_puts_the_previous_champion_back",
    'flywheel promote --version m20260105-… --reason "…"':
        f"{HERE}::test_promote_puts_the_chosen_version_in_service",
    "flywheel champion": f"{HERE}::test_champion_prints_the_pointer",
    "FLYWHEEL_PROFILES_ENABLED=0": f"{HERE}::test_profiles_enabled_0_stops_new_profiles",
    "flywheel drill drift": f"{HERE}::test_the_drift_drill_prints_its_seconds",
    "flywheel evaluate --day D":
        "flywheel_assets_tests/test_minimal_logs.py::test_policies_are_valued_off_policy_on_the_catalogue",
}
# Tests elsewhere: what each must (still) contain for the map to be true. `make ui` is
# `dagster dev -w workspace.yaml -h ... -p ...` (test_make_ui_starts_dagster_dev below);
# the live-instance tests run that command through the session's `live_instance`.
EVIDENCE = {
    "make ui": [
        (f"{LIVE}::test_the_drift_sensor_retrains_and_the_gate_decides", "live_instance"),
        ("flywheel_assets_tests/conftest.py::live_instance", "DagsterServices("),
        ("flywheel_assets/harness/services.py::DagsterServices._launch", '"dev", "-w"')],
    "flywheel evaluate --day D": [
        ("flywheel_assets_tests/test_minimal_logs.py::"
         "test_policies_are_valued_off_policy_on_the_catalogue",
         'main(["evaluate", "--day", DAYS[1], "--data-dir", str(data_dir)])')],
}
# Commands of the host, not of the product: named, never run by the tests.
OUTSIDE_THE_PRODUCT = {"dmesg": "the kernel's log (an OOM kill); the operating system's tool"}

# Columns the runbook names for what its SQL reads.
RUNBOOK_COLUMNS = {
    "monitor.alerts": {"alert_key", "raised_at", "severity", "details", "webhook_status",
                       "webhook_attempts", "webhook_error", "next_attempt_at"},
    "ml.promotions": {"decided_at", "partition_date", "previous_champion", "new_champion",
                      "actor", "reasons"},
    "monitor.flywheel_health": {"partition_date", "signal_valid", "loop_closed",
                                "event_to_champion_hours", "quality_trend"},
}

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
ACTIVATE = ". .venv/bin/activate"


# --- the runbook's commands -------------------------------------------------------

def _one_line(text: str) -> str:
    return " ".join(text.split())


def _sql_statements(block: str) -> list[str]:
    code = "\n".join(line.split("--", 1)[0] for line in block.splitlines())
    return [_one_line(s) for s in code.split(";") if s.strip()]


def runbook_commands(text: str) -> list[str]:
    """Every command of the runbook, in order, whitespace collapsed (a command that
    wraps over lines is one command)."""
    commands: list[str] = []
    fence = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
    for match in fence.finditer(text):
        kind, block = match.group(1).lower(), match.group(2)
        if kind == "sql":
            commands += _sql_statements(block)
        elif kind in SHELL_FENCES:
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if line and not line.startswith("#"):
                    commands.append(_one_line(line))
        else:
            raise AssertionError(f"a ```{kind or '(no language)'} block in the runbook: run "
                                 "its commands in ```sql or ```sh, or teach this test its kind")
    prose = fence.sub("", text)
    for match in re.finditer(r"`([^`]+)`", prose):
        span = _one_line(match.group(1))
        first = span.split(" ", 1)[0]
        # A program's name alone (the `duckdb` pool, a name starting with `.`) is a name,
        # not a command, except for programs run without arguments.
        program = (first in PROGRAMS or first.startswith(".venv/")) and (
            " " in span or span in ALONE)
        if program or ENV_ASSIGNMENT.match(span):
            commands.append(span)
        elif SQL_START.match(span):
            commands += _sql_statements(span)
        else:
            # Looks like a command line (an option) but starts with no known program.
            assert not re.search(r"\s--?[A-Za-z]", span), (
                f"runbook code {span!r} looks like a command of an unknown program: add "
                "the program to PROGRAMS and the command to COMMANDS")
    return commands


def runbook_command(prefix: str) -> str:
    """The runbook's command that starts with ``prefix`` (exactly one)."""
    found = {c for c in runbook_commands(RUNBOOK.read_text()) if c.startswith(prefix)}
    assert len(found) == 1, (prefix, found)
    return found.pop()


def _definition(node_id: str) -> tuple[str, ast.AST]:
    """The source and node of the function a node id (or ``path::Class.method``) names."""
    path, _, name = node_id.partition("::")
    name = re.sub(r"\[.*\]$", "", name).replace("::", ".")
    source = (REPO / path).read_text()
    scope: list[ast.AST] = list(ast.parse(source).body)
    node = None
    for part in name.split("."):
        node = next((n for n in scope if isinstance(
            n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == part), None)
        assert node is not None, f"{node_id}: no {part} in {path}"
        scope = list(node.body)
    return source, node


def test_every_runbook_command_is_run_by_a_test():
    commands = runbook_commands(RUNBOOK.read_text())
    # The extraction itself finds what it must (a broken regex would find nothing).
    assert len(commands) >= 10 and "flywheel champion" in commands
    missing = sorted({c for c in commands if c not in COMMANDS and c not in OUTSIDE_THE_PRODUCT})
    assert not missing, f"runbook commands no test runs (add a test and a COMMANDS entry): {missing}"
    stale = sorted(set(COMMANDS) - set(commands))
    assert not stale, f"COMMANDS entries the runbook no longer has: {stale}"
    for command, node_id in COMMANDS.items():
        _, node = _definition(node_id)
        assert node.name.startswith("test_"), node_id
        for where, needle in EVIDENCE.get(command, []):
            source, found = _definition(where)
            assert needle in ast.get_source_segment(source, found), (command, where, needle)


def test_the_extraction_catches_new_commands():
    text = ("Run `flywheel frobnicate --day D` then `FLYWHEEL_X=1`, `curl -s http://x` and\n"
            "`SELECT 1 FROM t`; not `gate.rule = confirmed`, `trigger=drift`, `duckdb`, `.`.\n"
            "```sql\nSELECT a FROM b; -- why\nSELECT c\n  FROM d;\n```\n"
            "```sh\n$ make ui\nflywheel champion \\\n  --data-dir x\n```\n")
    assert runbook_commands(text) == ["SELECT a FROM b", "SELECT c FROM d", "make ui",
                                      "flywheel champion --data-dir x",
                                      "flywheel frobnicate --day D", "FLYWHEEL_X=1",
                                      "curl -s http://x", "SELECT 1 FROM t"]
    with pytest.raises(AssertionError, match="unknown program"):
        runbook_commands("`kubectl rollout undo --to-revision 3`")
    with pytest.raises(AssertionError, match="teach this test"):
        runbook_commands("```python\nprint(1)\n```\n")


# --- a small real flywheel, and the on-call's shell --------------------------------

def _checkout(root: Path) -> None:
    """``root`` as the repository root on-call works from: its virtualenv at `.venv`."""
    (root / ".venv").symlink_to(REPO / ".venv", target_is_directory=True)


def _env(root: Path) -> dict:
    """The environment `make ui` gives (`FLYWHEEL_DATA_DIR`, `DAGSTER_HOME`), with no
    virtualenv on the PATH: the runbook's activation puts it there."""
    venv_bin = str(REPO / ".venv" / "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and Path(p).resolve() != Path(venv_bin).resolve())
    env["FLYWHEEL_DATA_DIR"] = str(root / "data")
    env["DAGSTER_HOME"] = str(root / "data" / "dagster_home")
    return env


def sh(root: Path, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``command`` as on-call types it, in bash, after the runbook's activation."""
    return subprocess.run(["bash", "-c", f"{ACTIVATE} && {command}"], cwd=root, env=_env(root),
                          capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, (proc.args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


def _rotate_command(day: str) -> str:
    command = runbook_command(".venv/bin/flywheel rotate --day ")
    return command.replace("2026-01-05", day)


@dataclass
class Wheel:
    root: Path
    # Day 3: the runbook's `flywheel rotate`, with its FLYWHEEL_PROFILES_ENABLED=0.
    rotated: subprocess.CompletedProcess

    @property
    def data(self) -> Path:
        return self.root / "data"

    def read(self):
        return warehouse.connect(self.data / "warehouse.duckdb", read_only=True)

    def versions(self) -> dict[str, str]:
        with self.read() as conn:
            return {str(d): v for d, v in conn.execute(
                "SELECT partition_date, version FROM ml.model_registry ORDER BY 1").fetchall()}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Wheel:
    root = tmp_path_factory.mktemp("oncall")
    _checkout(root)
    data = root / "data"
    turn_the_wheel(data, CONFIG, DAYS[:2])  # in process, profiles on
    land_day(data, CONFIG, DAYS[2])
    switch = runbook_command("FLYWHEEL_PROFILES_ENABLED=")
    rotated = sh(root, f"{switch} {_rotate_command(DAYS[2])}")
    _ok(rotated)
    # What a sensor records when something fires (the runbook's first look reads it).
    with warehouse.connect(data / "warehouse.duckdb") as conn:
        raise_alert(conn, Alert(key=f"drift:{DAYS[2]}", source="drift_sensor",
                                severity="warning", title="drift on the day",
                                partition_date=DAYS[2]), None)
    return Wheel(root, rotated)


@pytest.fixture
def own_copy(wheel, tmp_path) -> Wheel:
    """The flywheel copied, for a test that moves the champion."""
    _checkout(tmp_path)
    shutil.copytree(wheel.data, tmp_path / "data", symlinks=True)
    return Wheel(tmp_path, wheel.rotated)


def _audit(w: Wheel) -> list[tuple]:
    with w.read() as conn:
        return conn.execute("SELECT previous_champion, new_champion, actor, reasons "
                            "FROM ml.promotions ORDER BY decided_at").fetchall()


# --- the commands ------------------------------------------------------------------

def test_the_activated_virtualenv_has_every_program(wheel):
    """After `. .venv/bin/activate`, `flywheel`, `python` (with duckdb) and `dagster`
    are the project's, which the shell the tests start from does not have."""
    out = _ok(sh(wheel.root, "command -v flywheel python dagster && "
                             "python -c 'import duckdb, flywheel_assets'"))
    found = [Path(p) for p in out.split()]
    assert len(found) == 3
    assert all(p.parent.resolve() == (REPO / ".venv" / "bin").resolve() for p in found), found
    before = subprocess.run(["bash", "-c", "command -v flywheel"], cwd=wheel.root,
                            env=_env(wheel.root), capture_output=True, text=True)
    assert (REPO / ".venv").resolve().as_posix() not in before.stdout


def test_rotate_runs_the_day_on_the_instance_the_ui_reads(wheel):
    """`.venv/bin/flywheel rotate --day D` (FLYWHEEL_DATA_DIR and DAGSTER_HOME as for
    `make ui`): the day is rotated in this data dir and the run is recorded, tagged, in
    the instance at DAGSTER_HOME, which the UI reads."""
    out = wheel.rotated.stdout
    found = re.search(rf"^{DAYS[2]}: run (\S+) succeeded; (\d+) impressions and (\d+) "
                      "interactions accepted", out, re.M)
    assert found, out
    assert re.search(r"^gate: (PROMOTED|held) — ", out, re.M), out
    with dg.DagsterInstance.from_config(str(wheel.data / "dagster_home")) as instance:
        run = instance.get_run_by_id(found.group(1))
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.job_name == "daily_rotation_job"
        assert run.tags["dagster/partition"] == DAYS[2] and run.tags["flywheel/cli"] == "rotate"
        assert "flywheel/host" in run.tags  # what dead_run_sweeper judges it by
    with wheel.read() as conn:
        impressions = conn.execute("SELECT count(*) FROM raw.impressions WHERE "
                                   "partition_date = ?", [DAYS[2]]).fetchone()[0]
        evaluated = conn.execute("SELECT count(*) FROM ml.model_evaluations WHERE "
                                 "partition_date = ?", [DAYS[2]]).fetchone()[0]
    assert impressions == int(found.group(2)) > 0 and evaluated == 1


def test_profiles_enabled_0_stops_new_profiles(wheel):
    """`FLYWHEEL_PROFILES_ENABLED=0` on the rotation of day 3: no profiles for day 3,
    and day 3's model reads none although its rows had day 1's to read; a model trained
    with them still finds day 2's, the last ones, for 28 days."""
    _ok(wheel.rotated)
    tables = ("user_profiles", "user_category_affinity", "item_profiles", "item_segment_rates")
    with wheel.read() as conn:
        rows = {(t, str(d)): n for t in tables for d, n in conn.execute(
            f"SELECT partition_date, count(*) FROM curated.{t} GROUP BY 1").fetchall()}
        cards = {str(d): json.loads(c) for d, c in conn.execute(
            "SELECT partition_date, card FROM ml.model_registry").fetchall()}
        # What day 3's model would have read with profiles on: its day-2 rows know
        # their users from day 1's profiles.
        train = ts_lib.read_split(conn, DAYS[2], "train")
        readable = attach_profiles(conn, train[train["source_date"].astype(str).str[:10] == DAYS[1]])
        last = dt.date.fromisoformat(DAYS[1])
        assert profiles.available_day(conn, dt.date.fromisoformat(DAYS[2]) + dt.timedelta(1)) == last
        assert profiles.available_day(conn, last + dt.timedelta(28)) == last
        assert profiles.available_day(conn, last + dt.timedelta(29)) is None
    for table in tables:
        assert rows.get((table, DAYS[1]), 0) > 0, table  # switched on: built
        assert (table, DAYS[2]) not in rows, table       # switched off: none
    assert len(readable) and readable["p_user_known"].mean() > 0.5
    assert not [f for f in cards[DAYS[2]]["features"]["numeric"] if f.startswith("p_")]
    # Serving, for a model that reads them: the last profiles, then none.
    load = warehouse_profiles(wheel.data / "warehouse.duckdb")
    after = [last + dt.timedelta(2), last + dt.timedelta(29)]
    snapshots = load(after)
    assert snapshots[after[0]] is not None and snapshots[after[1]] is None
    with dg.DagsterInstance.from_config(str(wheel.data / "dagster_home")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("feedback_profiles"))
    assert event.dagster_event.partition == DAYS[2]
    assert event.asset_materialization.metadata["enabled"].value is False


def test_promote_puts_the_chosen_version_in_service(own_copy):
    """`flywheel promote --version m20260105-… --reason "…"`: the version is in service
    (the pointer `data/models/champion.json`, and serving's next request), audited with
    the operator's name."""
    w = own_copy
    settings = Settings.from_env(w.data)
    before = model_store.champion_version(settings.models_dir)
    versions = w.versions()
    chosen = next(v for v in reversed(versions.values()) if v != before)
    command = runbook_command("flywheel promote ")
    example = re.search(r"m\d{8}-…", command).group(0)
    # The runbook's example is shaped as the versions are: m<day>-<hash>.
    day = next(d for d, v in versions.items() if v == chosen)
    assert re.fullmatch(rf"m{day.replace('-', '')}-[0-9a-f]+", chosen), chosen
    reason = "the gate held a better model"
    out = _ok(sh(w.root, command.replace(example, chosen).replace('"…"', shlex.quote(reason))))
    assert out.strip() == f"champion is now {chosen} (was {before or 'none'})"
    assert json.loads((w.root / "data/models/champion.json").read_text())["version"] == chosen
    assert current_policy(settings).version == chosen
    previous, new, actor, reasons = _audit(w)[-1]
    assert (previous, new) == (before, chosen)
    assert actor == f"operator:{getpass.getuser()}"
    assert f"override: {reason}" in json.loads(reasons)["reasons"]


def test_rollback_puts_the_previous_champion_back(own_copy):
    """Both of the runbook's `flywheel rollback --reason ...`: each puts the champion
    before back in service, audited as the operator's rollback with the reason."""
    w = own_copy
    settings = Settings.from_env(w.data)
    first, second, third = w.versions().values()
    for version in (first, second, third):
        model_store.set_champion(settings.models_dir, version, "test: a history", "test")
    written = runbook_command(".venv/bin/flywheel rollback ")
    quality = runbook_command("flywheel rollback --reason …")
    reason = "quality fell right after the new champion"
    for command, back_to, was in ((written, second, third),
                                  (quality.replace("…", shlex.quote(reason)), first, second)):
        out = _ok(sh(w.root, command))
        assert out.strip() == f"champion is now {back_to} (was {was})"
        assert model_store.champion_version(settings.models_dir) == back_to
        assert current_policy(settings).version == back_to  # serving's next request
    audit = _audit(w)[-2:]
    assert [(a[0], a[1]) for a in audit] == [(third, second), (second, first)]
    assert {a[2] for a in audit} == {f"operator:{getpass.getuser()}"}
    assert json.loads(audit[0][3])["reasons"] == ["rollback: what you saw"]
    assert json.loads(audit[1][3])["reasons"] == [f"rollback: {reason}"]


def test_champion_prints_the_pointer(own_copy):
    """`flywheel champion` prints the pointer (`data/models/champion.json`) as it is,
    here just moved by a promotion."""
    w = own_copy
    settings = Settings.from_env(w.data)
    before = model_store.champion_version(settings.models_dir)
    version = next(v for v in w.versions().values() if v != before)
    model_store.set_champion(settings.models_dir, version, "test: a pointer to show", "test")
    shown = json.loads(_ok(sh(w.root, runbook_command("flywheel champion"))))
    assert shown == json.loads((w.root / "data/models/champion.json").read_text())
    assert shown["version"] == version and shown["previous"] == before


def test_the_runbooks_sql_runs_read_only(wheel):
    """Each SQL statement of the runbook through the runbook's read-only one-liner:
    it succeeds, shows the columns a read-only connection returns (those the runbook
    names among them) and each row; while a run writes the warehouse it fails with the
    message the runbook gives."""
    one_liner = runbook_command("python -c ")
    statements = [c for c in runbook_commands(RUNBOOK.read_text()) if SQL_START.match(c)]
    assert len(statements) >= 4
    for statement in statements:
        with wheel.read() as conn:
            result = conn.execute(statement)
            columns = [d[0] for d in result.description]
            rows = result.fetchall()
        table = re.search(r"\bFROM (\w+\.\w+)", statement).group(1)
        if statement.startswith("SELECT * "):  # (a list of columns fails if one is gone)
            missing = RUNBOOK_COLUMNS[table] - set(columns)
            assert not missing, (statement, missing)
        out = _ok(sh(wheel.root, one_liner.replace('"SELECT …"', shlex.quote(statement))))
        header = out.splitlines()[:3]
        for column in columns:
            assert any(column in line for line in header), (statement, column, out)
        assert rows, f"nothing for {statement!r} on a flywheel that ran"
        for row in rows:
            assert str(row[0])[:10] in out, (statement, row[0], out)
    with warehouse.connect(wheel.data / "warehouse.duckdb"):  # a run writing
        busy = sh(wheel.root, one_liner.replace('"SELECT …"', shlex.quote(statements[0])))
    assert busy.returncode != 0 and "Could not set lock" in busy.stderr


def test_make_ui_starts_dagster_dev():
    """`make ui` is `dagster dev` on the repository's workspace at the runbook's address:
    the command the live-instance tests start (harness/services.py)."""
    from flywheel_assets.harness.services import default_workspace

    out = subprocess.run(["make", "-n", "ui"], cwd=REPO, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if not k.startswith(("UI_", "MAKE"))})
    assert out.returncode == 0, out.stderr
    assert ".venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000" in out.stdout
    assert "http://127.0.0.1:3000" in RUNBOOK.read_text()
    assert default_workspace() == REPO / "workspace.yaml"


DRILL_WORLD = " --users 400 --items 300 --requests-per-day 1500"


@pytest.mark.slow
def test_the_drift_drill_prints_its_seconds(tmp_path):
    """`flywheel drill drift` as on-call runs it, on a smaller world than its default
    (its size options; the default world takes minutes more): it ends with
    `drift_to_decision_seconds=<N>` and leaves no temporary instance behind."""
    _checkout(tmp_path)
    command = runbook_command("flywheel drill ") + DRILL_WORLD
    env = {**_env(tmp_path), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    started = time.monotonic()
    proc = subprocess.run(["bash", "-c", f"{ACTIVATE} && {command}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    last = proc.stdout.strip().splitlines()[-1]
    found = re.fullmatch(r"drift_to_decision_seconds=(\d+(?:\.\d+)?)", last)
    assert found, proc.stdout[-2000:]
    assert 0 < float(found.group(1)) < time.monotonic() - started
    assert "decision:" in proc.stdout and "retrain_job" in proc.stdout
    assert not list((tmp_path / "tmp").glob("flywheel-drill-*"))  # removed when it ended
