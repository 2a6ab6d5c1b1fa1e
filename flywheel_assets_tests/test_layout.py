"""The layout keeps its promises: one folder per stage in flow order, only the thin
Dagster files import Dagster, and no product module imports the world or the harness
around it, or reads the world's hidden truth."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flywheel_assets"
STAGES = ("ingest", "curate", "label", "train", "evaluate", "serve", "monitor")
OUTSIDE_THE_PRODUCT = ("simulation", "harness")
# The only files that may import Dagster: each stage's thin Dagster files, and the
# shared plumbing that wires them.
STAGE_DAGSTER_FILES = {"assets.py", "checks.py", "sensors.py", "jobs.py"}
PLUMBING_DAGSTER_FILES = {"definitions.py", "resources.py", "partitions.py", "jobs.py",
                          "metadata.py"}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            names = [a.value for a in node.args if isinstance(a, ast.Constant)]
        out += [(node.lineno, n) for n in names]
    return out


def _product_modules():
    return [p for p in PACKAGE.rglob("*.py")
            if not set(p.relative_to(PACKAGE).parts) & set(OUTSIDE_THE_PRODUCT)]


def test_no_product_module_imports_the_world_or_the_harness():
    offenders = [f"{path.relative_to(PACKAGE)}:{line}: {name}"
                 for path in _product_modules() for line, name in _imports(path)
                 if any(part in name.split(".") for part in OUTSIDE_THE_PRODUCT)]
    assert not offenders, offenders
    assert len(_product_modules()) > 15  # the scan really saw the product


def test_no_product_module_names_the_world_directory():
    offenders = []
    for path in _product_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    ("world" in node.value.split("/") or node.value == "world"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders


def test_only_the_dagster_files_import_dagster():
    offenders, dagster_files = [], []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in OUTSIDE_THE_PRODUCT:
            continue
        allowed = (rel.name in PLUMBING_DAGSTER_FILES if len(rel.parts) == 1 else
                   rel.parts[0] in STAGES and rel.name in STAGE_DAGSTER_FILES)
        uses = [f"{rel}:{line}: {name}" for line, name in _imports(path)
                if name.split(".")[0] in ("dagster", "dagster_duckdb")]
        if uses and not allowed:
            offenders += uses
        if uses:
            dagster_files.append(rel)
    assert not offenders, offenders
    assert len(dagster_files) >= 10  # the scan saw the Dagster side too


def test_one_folder_per_stage_with_its_logic_and_its_dagster_files():
    for stage in STAGES:
        folder = PACKAGE / stage
        modules = {p.name for p in folder.glob("*.py")} - {"__init__.py"}
        assert modules - STAGE_DAGSTER_FILES, f"{stage} has no pure module"
    for stage in ("ingest", "curate", "train", "evaluate", "monitor"):
        assert (PACKAGE / stage / "assets.py").exists(), stage
    assert not (PACKAGE / "core").exists() and not (PACKAGE / "defs").exists()
