"""The Dagster UI in a real browser: the live instance of the drift scenario (webserver,
daemon, both code locations; see conftest), driven by Playwright in Debian's headless
Chromium. That the services stop, by process group, is asserted when the session ends.

Needs /usr/bin/chromium (`make browser`, which `make test` runs). Playwright never
downloads a browser here. Screenshots go to test-output/browser/.
"""

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Running as root on a machine with a closed network: no sandbox, and no background
# connections (Chromium's attempts are refused, many at a time, and slow it down).
# Playwright's launch() gives every browser a new empty profile (--user-data-dir).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "browser"
FLYWHEEL_GROUPS = ("ingest", "curate", "train", "evaluate", "monitor")
# Pages of a cold webserver on two busy cores can take a while to render.
UI_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def services(live_instance):
    """The live instance of the drift scenario (conftest): real webserver and daemon."""
    return live_instance["services"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"the browser tests need Debian's Chromium at {CHROMIUM}: run `make browser`")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1920, "height": 1200})
    context.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    yield context.new_page()
    context.close()


def _screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000, f"{path} is {len(data)} bytes: an empty page?"
    return path


def test_asset_graph_shows_the_flywheel_stages_and_the_champion(services, page):
    page.goto(f"{services.url}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    # The graph is an SVG whose nodes are HTML in <foreignObject>s; the same names
    # also appear in the sidebar, so look inside the graph only.
    graph = page.locator("svg:has(foreignObject)")
    # Collapsed by default: one node per group.
    for group in FLYWHEEL_GROUPS:
        expect(graph.get_by_text(group, exact=True)).to_be_visible()
    expect(graph.get_by_text("champion_model", exact=True)).to_have_count(0)

    # The graph's settings menu (the gear by the zoom controls; the navigation's
    # "Settings" button has the same icon) expands every group.
    page.locator("button:has([aria-label=settings])").filter(has_not_text="Settings").click()
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.keyboard.press("Escape")
    expect(page).to_have_url(re.compile(r"[?&]expanded="))
    champion = graph.get_by_text("champion_model", exact=True)
    expect(champion).to_be_visible()
    for asset in ("raw_impressions", "curated_feedback", "training_set", "candidate_model",
                  "model_evaluation"):
        expect(graph.get_by_text(asset, exact=True)).to_be_visible()
    for group in FLYWHEEL_GROUPS:
        expect(graph.get_by_text(group, exact=True)).to_be_visible()
    _screenshot(page, "asset_graph.png")


def test_drift_sensor_is_listed_and_running(services, page):
    page.goto(f"{services.url}/automation")
    expect(page.get_by_role("textbox", name="Search and filter automations")).to_be_visible()
    # Each automation is a row with a selection checkbox and, last, its on/off switch.
    def row(path: str):
        return page.locator("[data-index]").filter(has=page.locator(f'a[href="{path}"]'))

    # The schedule is stopped by default: the switch must tell stopped from running.
    schedule = row("/locations/flywheel/schedules/daily_rotation_schedule")
    expect(schedule).to_have_count(1)
    expect(schedule.locator("input[type=checkbox]").last).not_to_be_checked()

    sensor = row("/locations/flywheel/sensors/drift_sensor")
    expect(sensor).to_have_count(1)
    expect(sensor.get_by_text("drift_sensor", exact=True)).to_be_visible()
    expect(sensor.locator("input[type=checkbox]").last).to_be_checked()
    _screenshot(page, "sensors.png")
