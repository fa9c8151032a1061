"""The Bill and Energy flow pages in headless Chromium against `shems ui`: an operator opens the
simulated PV-and-battery home, sees its bill lines and its Sankey drawn; screenshots go to
tests/artifacts/."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from playwright.sync_api import expect, sync_playwright

from pipeline.energy.tariff import Tariff, TariffBook, TariffKind
from tests.test_viewer_browser import ARTIFACTS, CHROMIUM_ARGS, chromium  # noqa: F401 (a fixture)
from tests.viewer_seed import OTHER_HOME, PASSWORDS, seed
from tests.viewer_server import ViewerServer


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    from sinks.stores import open_store

    url = f"sqlite:///{tmp_path_factory.mktemp('bill_browser') / 'viewer.db'}"
    seed(url, sim_days=1.5)
    flat = Tariff(datetime(2013, 1, 1, tzinfo=timezone.utc), TariffKind.FLAT, "GBP", "UTC", "Solar flat",
                  import_price=0.25, export_price=0.15, standing_charge=0.60, tax_rate=0.05)
    store = open_store(url)
    try:
        store.upsert_tariffs(TariffBook("GBP", (flat,)).to_rows())
    finally:
        store.close()
    server = ViewerServer(url, {"SHEMS_UI_STALE_AFTER_S": "600"})
    server.wait_healthy()
    yield server
    server.stop()


def test_bill_and_energy_flow_pages_in_headless_chromium(chromium, viewer):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    shots = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{viewer.url}/?home={OTHER_HOME}")
            page.get_by_label("User name").fill("olga")
            page.get_by_role("textbox", name="Password").fill(PASSWORDS["olga"])
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name=f"Live · {OTHER_HOME}")).to_be_visible(timeout=30_000)
            for path, title in (("bill", "Bill"), ("flow", "Energy flow")):
                page.get_by_role("link", name=title).click()
                expect(page.get_by_role("heading", name=f"{title} · {OTHER_HOME}")).to_be_visible(timeout=30_000)
                if path == "bill":
                    expect(page.get_by_text("Projected month").first).to_be_visible()
                    expect(page.get_by_text("Standing charge").first).to_be_visible(timeout=15_000)
                    expect(page.get_by_text("The household sets its budget")).to_be_visible()
                else:
                    expect(page.get_by_text("Self-sufficiency")).to_be_visible()
                    expect(page.locator("g.sankey")).to_have_count(1, timeout=15_000)
                    # the page opens on the newest reading's day, which may not have seen the sun
                    # yet; the year holds the seeded days with daylight (hourly rollups)
                    page.get_by_text("Year", exact=True).click()
                    expect(page.get_by_text("per hour (what happened within an hour is netted)")).to_be_visible(
                        timeout=15_000)
                    expect(page.locator("g.sankey .node-label").filter(has_text="Solar")).to_have_count(1)
                page.wait_for_timeout(1500)  # let Plotly draw
                shot = ARTIFACTS / f"viewer_{path}_operator.png"
                page.screenshot(path=str(shot), full_page=True)
                shots.append(shot)
        finally:
            browser.close()
    for shot in shots:
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
