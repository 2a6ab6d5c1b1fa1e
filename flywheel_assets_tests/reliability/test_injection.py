"""Script and spreadsheet injection: strings a client sends (a device, a country, a
category) reach every page and file the product writes for people, inert. A rotation
of a small simulated world whose second day carries hostile values, on a real DuckDB
file and Dagster; then every report, labelling export and asset metadata is read."""

import csv
import json
import re

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flywheel_assets.label.outbox import escape_cell
from flywheel_assets.reporting import inert, markdown_table
from flywheel_assets.settings import Settings
from flywheel_assets_tests.helpers import rotate_a_tampered_day
from flywheel_assets_tests.test_rotation_small_world import CONFIG

DAYS = ["2026-01-01", "2026-01-02"]
SCRIPT = '</script><script>alert("flywheel")</script>'
LINK = '=HYPERLINK("http://evil.example")|[x](javascript:alert(1))'
# What must never appear in a page people open: tags ours would not write; in markdown,
# also a link to script (an escaped bracket, "\\](", is text, not a link). In the HTML
# the values are data of a script block, shown as text: a bracket there is no link.
TAGS = re.compile(r"<script>alert|</script><script>|<img")
LINKS = re.compile(r"(?<!\\)\]\(javascript:")


def _poison_day(landing, day: str) -> None:
    """Rewrite the world's files of ``day``: a third of impressions with a hostile
    device, another third with a formula and a link; some users and items likewise."""
    imp = next((landing / "impressions" / f"date={day}").glob("*.parquet"))
    table = pq.read_table(imp).to_pandas()
    table.loc[table.index % 3 == 0, "device"] = SCRIPT
    table.loc[table.index % 3 == 1, "device"] = LINK
    table.to_parquet(imp, index=False)
    for stream, column in (("users", "country"), ("items", "category")):
        path = landing / stream / f"date={day}" / f"{stream}.csv"
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame.loc[frame.index % 4 == 0, column] = SCRIPT
        frame.to_csv(path, index=False)


@pytest.fixture(scope="module")
def hostile_rotation(tmp_path_factory):
    settings, _, result = rotate_a_tampered_day(tmp_path_factory.mktemp("hostile"), CONFIG,
                                                DAYS, _poison_day)
    return settings, result


def _pages(settings: Settings):
    """Every page and export people open: HTML and markdown reports, labelling CSVs."""
    for root in (settings.reports_dir, settings.labeling_dir):
        for path in root.rglob("*"):
            if path.suffix in (".html", ".md", ".csv") and path.is_file():
                yield path


@pytest.mark.slow
def test_hostile_values_were_ingested_and_reported(hostile_rotation):
    # The values are data: stored as sent, compared and reported, only made inert.
    settings, _ = hostile_rotation
    drift = (settings.reports_dir / "drift" / f"{DAYS[1]}.html").read_text()
    assert "&lt;/script&gt;&lt;script&gt;alert" in drift
    report = (settings.reports_dir / "evaluation" / DAYS[1] / "report.md").read_text()
    assert "device=&lt;/script&gt;" in report


@pytest.mark.slow
def test_no_page_or_export_carries_a_live_script_or_formula(hostile_rotation):
    settings, _ = hostile_rotation
    pages = list(_pages(settings))
    assert any(p.suffix == ".html" for p in pages) and any(p.suffix == ".csv" for p in pages)
    for path in pages:
        text = path.read_text(errors="replace")
        # Pages: no tag; markdown: no link. A spreadsheet runs no script: its cells
        # keep the value as sent, but none may start a formula.
        assert path.suffix == ".csv" or not TAGS.search(text), path
        assert path.suffix != ".md" or not LINKS.search(text), path
        if path.suffix == ".csv":
            with open(path, newline="") as fh:
                cells = [c for row in csv.reader(fh) for c in row]
            assert not [c for c in cells if c[:1] in ("=", "+", "@")], path


@pytest.mark.slow
def test_no_asset_metadata_carries_a_live_script(hostile_rotation):
    _, result = hostile_rotation
    texts = [json.dumps({k: getattr(v, "value", v) for k, v in
                         e.event_specific_data.materialization.metadata.items()}, default=str)
             for e in result.all_events if e.is_step_materialization]
    assert texts and any("device" in t for t in texts)
    for text in texts:
        assert not TAGS.search(text) and not LINKS.search(text)


@pytest.mark.parametrize("value", [SCRIPT, LINK, "a|b", "line\nbreak", "<img src=x onerror=1>"])
def test_a_markdown_cell_from_the_logs_is_inert(value):
    table = markdown_table(["device", "n"], [(value, 1)])
    row = table.splitlines()[2]
    # One cell break per column and none from the value; no tag, no link, one line.
    assert row.replace("\\|", "").count("|") == 3
    assert "<" not in row and "](" not in row.replace("\\]", "")
    assert inert("m20260101-abc") == "m20260101-abc" and inert(0.5) == "0.5"
    assert escape_cell(value).startswith("'") == (value[:1] in "=+-@")
