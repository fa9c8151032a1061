"""From an import to insight, in headless Chromium: two real homes whose data end on different days
(REFIT House 2 in October 2014, House 20 in April 2014) are imported with `shems import`; the
viewer opens each home's pages on its own newest data (not on an empty "today"), says how old it
is, and shows both homes' history, forecasts and alerts. House 20 has a logger outage (every
device silent for three hours): one alert listing its devices, not one per device.

Screenshots of every page for a homeowner and an operator go to tests/artifacts/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta

import polars as pl
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.test_viewer_browser import ARTIFACTS, CHROMIUM_ARGS, chromium  # noqa: F401 - a fixture
from tests.viewer_server import ROOT, ViewerServer, free_port

FIXTURES = ROOT / "tests" / "fixtures"
DEMO_TARIFFS = ROOT / "pipeline" / "data" / "demo_tariffs.toml"
H2, H20 = "refit-house2", "refit-house20"
COLUMNS = {"aggregate_w": ("mains", "meter"), "kettle_w": ("kettle", "appliance"),
           "dishwasher_w": ("dishwasher", "appliance"),
           "washing_machine_w": ("washing_machine", "appliance"), "microwave_w": ("microwave", "appliance")}
DAYS = 14
OUTAGE_HOURS = 3
PASSWORD = "correct horse battery staple"
PAGES = ["Live", "History", "Forecast", "Alerts", "Devices"]


def _long(wide: pl.DataFrame, home: str) -> pl.DataFrame:
    return pl.concat([wide.select(pl.lit(home).alias("home_id"), pl.lit(device).alias("device_id"),
                                  pl.lit(kind).alias("kind"), "ts",
                                  pl.col(column).cast(pl.Float64).alias("power_w"))
                      for column, (device, kind) in COLUMNS.items()]).drop_nulls("power_w")


def two_homes(path) -> dict[str, object]:
    """The last DAYS days of both REFIT fixtures at 1 minute, in the long layout; House 20 loses
    every device for OUTAGE_HOURS one afternoon (a logger outage)."""
    h2 = pl.read_parquet(FIXTURES / "refit_house2_4weeks_1min.parquet")
    h20 = (pl.read_parquet(FIXTURES / "refit_house20_2014-04_4weeks.parquet")
           .with_columns(pl.col("timestamp").dt.replace_time_zone("Europe/London")
                         .dt.convert_time_zone("UTC").alias("ts"))
           .group_by_dynamic("ts", every="1m").agg(pl.col(list(COLUMNS)).mean()))
    h2 = h2.filter(pl.col("ts") > h2["ts"].max() - timedelta(days=DAYS))
    h20 = h20.filter(pl.col("ts") > h20["ts"].max() - timedelta(days=DAYS))
    outage = h20["ts"].max().replace(hour=13, minute=0) - timedelta(days=3)
    h20 = h20.filter((pl.col("ts") < outage) | (pl.col("ts") >= outage + timedelta(hours=OUTAGE_HOURS)))
    frame = pl.concat([_long(h2, H2), _long(h20, H20)]).sort("ts")
    frame.write_parquet(path)
    return {"outage": outage, "ends": {H2: h2["ts"].max(), H20: h20["ts"].max()}}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("import_browser")
    url = f"sqlite:///{folder / 'store.db'}"
    facts = two_homes(folder / "two_homes.parquet")
    # Piped, as in CI or a log file: progress comes as lines, the summary at the end.
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "import", str(folder / "two_homes.parquet"),
         "--store-url", url, "--tariffs", str(DEMO_TARIFFS), "--progress-every", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    from ui.accounts import Accounts
    from ui.auth import Role
    from ui.db import Database

    db = Database(url, migrate=True)
    try:
        accounts = Accounts(db)
        accounts.add_user("hilda", PASSWORD, Role.HOMEOWNER, [H2, H20], by="test")
        accounts.add_user("otto", PASSWORD, Role.OPERATOR, [], by="test")
        counts = {t: dict(db.rows(f"SELECT home_id, count(*) FROM {t} GROUP BY home_id"))
                  for t in ("forecasts", "anomalies", "recommendations")}
    finally:
        db.close()
    server = ViewerServer(url, {"SHEMS_UI_METRICS_PORT": str(free_port()), "SHEMS_UI_LOCALE": "en_GB"})
    server.wait_healthy()
    yield server, proc.stdout, facts, counts, url
    server.stop()


def test_import_summary_says_what_was_made_and_how_to_see_it(imported):
    _, out, _, counts, url = imported
    assert re.search(r"^importing two_homes\.parquet: [\d,]+ of [\d,]+ readings \(\d+%", out, re.M), out
    assert f"store: {url}" in out
    assert "homes: 2 (refit-house2, refit-house20)" in out
    for label in ("readings", "forecasts", "forecast scores", "anomalies", "recommendations"):
        assert re.search(rf"^  {label}: +[\d,]+ new", out, re.M), (label, out)
    see = re.search(r"^see them: (.+) ui --store-url '(.+)'$", out, re.M)
    assert see and see[2] == url, out
    # The command as printed runs from the shell the import ran in (whose PATH may have no shems:
    # `make` runs .venv/bin/shems).
    shell = subprocess.run(f"{see[1]} ui --help", shell=True, cwd=ROOT, capture_output=True, text=True,
                           timeout=120, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert shell.returncode == 0 and "--store-url" in shell.stdout, (see[1], shell.stderr)
    # Forecasts are kept per home: the home whose data end six months earlier keeps its own.
    assert counts["forecasts"].get(H2, 0) > 0 and counts["forecasts"].get(H20, 0) > 0
    # The outage: every device of House 20 silent at once is one anomaly of the home (the
    # detector groups them), and its message names every device.
    from ui.db import Database

    db = Database(url, migrate=False)
    try:
        rows = db.rows("SELECT kind, device_id, message FROM anomalies WHERE home_id = :h", {"h": H20})
    finally:
        db.close()
    assert [(kind, device) for kind, device, _ in rows] == [("silent", "")], rows
    assert rows[0][2].startswith(f"Your home went quiet: {len(COLUMNS)} devices"), rows[0][2]
    assert all(device.replace("_", " ") in rows[0][2] for device, _ in COLUMNS.values()), rows[0][2]


def sign_in(page, user: str) -> None:
    page.get_by_label("User name").fill(user)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def visit(page, title: str, home: str) -> str:
    if title != "Live":
        page.get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=f"{title} · {home}")).to_be_visible(timeout=60_000)
    page.wait_for_load_state("networkidle")
    if title == "History":  # its date picker and download buttons load after the charts
        expect(page.get_by_text("Download CSV")).to_be_visible(timeout=30_000)
    page.wait_for_timeout(2500)  # Plotly draws after the page's last message
    return page.inner_text("section.stMain") if page.locator("section.stMain").count() else page.inner_text("body")


@pytest.mark.parametrize("user", ["hilda", "otto"])
def test_both_homes_open_on_their_own_newest_data(chromium, imported, user):  # noqa: F811
    server, _, facts, _, _ = imported
    ARTIFACTS.mkdir(exist_ok=True)
    seen: dict[tuple[str, str], str] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            # Tall: Streamlit scrolls inside its own container, so a "full page" shot is the viewport.
            page = browser.new_page(viewport={"width": 1280, "height": 2400})
            for home in (H2, H20):
                page.goto(f"{server.url}/?home={home}")
                sign_in(page, user)
                for title in PAGES:
                    seen[(home, title)] = visit(page, title, home)
                    page.screenshot(path=str(ARTIFACTS / f"import_{user}_{home}_{title.lower()}.png"),
                                    full_page=True)
        finally:
            browser.close()
    for home in (H2, H20):
        end = facts["ends"][home]
        day = f"{end:%Y-%m-%d}"
        for title in ("Live", "History", "Forecast", "Alerts"):
            text = seen[(home, title)]
            assert f"Showing data up to {day}" in text and "years ago" in text, (home, title, text[:400])
            assert "None" not in text, (home, title)
        history = seen[(home, "History")]
        assert "No data for this home in this range" not in history
        assert "Usage by device" in history and "kWh" in history
        assert "device_id" not in history and "started_at" not in history
        forecast = seen[(home, "Forecast")]
        assert "needs some history first" not in forecast
        if user == "otto":
            assert "Recent error by horizon" in forecast
        else:
            assert "MAE" not in forecast
    # The outage (one anomaly of the home in the store) is one alert among House 20's earlier ones
    # (the table is drawn on a canvas: its rows are not text; the screenshot shows them).
    assert "Earlier alerts (1)" in seen[(H20, "Alerts")]
