"""No product code imports the world or reads its hidden truth."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flywheel_assets"


def _product_modules():
    return [p for p in PACKAGE.rglob("*.py") if "simulation" not in p.relative_to(PACKAGE).parts]


def test_no_module_outside_simulation_imports_it():
    offenders = []
    for path in _product_modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__"):
                names = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if any("simulation" in n for n in names):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders
    assert len(_product_modules()) > 15  # the scan really saw the product


def test_no_module_outside_simulation_names_the_world_directory():
    offenders = []
    for path in _product_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    ("world" in node.value.split("/") or node.value == "world"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders
