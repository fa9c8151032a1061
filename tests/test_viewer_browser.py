"""The running viewer (`shems ui`) in headless Chromium (Debian's package, driven by playwright):
sign in, see the live page refresh, save screenshots at desktop and phone widths."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from datetime import datetime, timezone

import pytest
from playwright.sync_api import expect, sync_playwright

from pipeline.tools.broker import free_port
from tests.viewer_seed import (
    FETCH,
    HOSTILE_HOME,
    HOSTILE_PASSWORD,
    OWN_HOME,
    PASSWORDS,
    PHISH,
    SCRIPT,
    seed,
    seed_hostile,
)
from tests.viewer_server import ROOT, ViewerServer

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> str:
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure_tools.sh"), "chromium"], check=True,
                   timeout=900)
    assert shutil.which(CHROMIUM), "Debian's chromium was not installed"
    return CHROMIUM


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'viewer.db'}"
    seed(url, sim_days=0.25)
    server = ViewerServer(url, {"SHEMS_UI_STALE_AFTER_S": "600", "SHEMS_UI_LIVE_REFRESH_S": "2",
                                "SHEMS_UI_METRICS_PORT": str(free_port())})
    server.wait_healthy()
    yield server
    server.stop()


def sign_in(page) -> None:
    page.get_by_label("User name").fill("alice")
    page.get_by_role("textbox", name="Password").fill(PASSWORDS["alice"])
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_and_live_page_in_headless_chromium(chromium, viewer):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.goto(viewer.url)
            sign_in(page)
            expect(page.get_by_role("heading", name=f"Live · {OWN_HOME}")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("Power now")).to_be_visible()
            expect(page.get_by_text(re.compile(r"Stale data: the newest reading is from \d+ minutes ago"))).to_be_visible()
            # The fragment refreshes in place (every 2 s here): the "Updated" time moves on.
            first = page.get_by_text(re.compile(r"^Updated \d\d:\d\d:\d\d")).inner_text()
            expect(page.get_by_text(re.compile(r"^Updated \d\d:\d\d:\d\d"))).not_to_have_text(
                first, timeout=15_000)
            assert f"home={OWN_HOME}" in page.url
            page.wait_for_timeout(1500)  # let Plotly draw
            desktop = ARTIFACTS / "viewer_live_desktop.png"
            page.screenshot(path=str(desktop), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})  # a phone
            page.wait_for_timeout(1500)
            phone = ARTIFACTS / "viewer_live_phone.png"
            page.screenshot(path=str(phone), full_page=True)
            # A homeowner editing the URL to another home: the reload opens a new browser
            # session (the token lives only in the tab's connection), and once signed in the
            # edited home is refused, not shown.
            page.goto(f"{viewer.url}/?home=sim-home-0000")
            sign_in(page)
            expect(page.get_by_text("You do not have access to home 'sim-home-0000'.")).to_be_visible(
                timeout=30_000)
            expect(page.get_by_text("Power now")).to_have_count(0)
            # Signed out, the sidebar lists no page (it kept the last user's list before).
            page.set_viewport_size({"width": 1280, "height": 1000})  # the sidebar open again
            expect(page.get_by_role("link", name="History")).to_be_visible()
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=30_000)
            expect(page.get_by_role("link", name="History")).to_have_count(0)
        finally:
            browser.close()
    # Nothing but the viewer itself: a ":material/...:" favicon was fetched from fonts.gstatic.com,
    # a third party told of every page a homeowner opened (and a request that fails offline).
    elsewhere = [url for url in requested if not url.startswith((viewer.url, "data:", "blob:"))]
    assert requested and not elsewhere, elsewhere
    for shot in (desktop, phone):
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
    # The viewer's server exposes its own metrics: the two sign-ins and the live page's runs.
    port = viewer.env["SHEMS_UI_METRICS_PORT"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'shems_viewer_signins_total{result="ok"} 2.0' in text
    runs = re.search(r'shems_viewer_page_seconds_count\{page="Live"\} (\d+)', text)
    assert runs and int(runs.group(1)) >= 2  # a full run per sign-in (fragments refresh alone)


def test_a_link_to_a_page_opens_that_page_once_signed_in(chromium, viewer):
    """A link shared or bookmarked (/history?home=...) opened Live after the sign-in form."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{viewer.url}/history?home={OWN_HOME}")
            sign_in(page)
            expect(page.get_by_role("heading", name=f"History · {OWN_HOME}")).to_be_visible(timeout=30_000)
            # A page this user does not have (a homeowner and the Fleet page) is not opened.
            page.goto(f"{viewer.url}/fleet")
            sign_in(page)
            expect(page.get_by_role("heading", name=re.compile(r"^Live"))).to_be_visible(timeout=30_000)
        finally:
            browser.close()


@pytest.fixture(scope="module")
def hostile_viewer(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile_browser') / 'viewer.db'}"
    seed_hostile(url, datetime.now(timezone.utc))
    server = ViewerServer(url, {"SHEMS_UI_STALE_AFTER_S": "600"})
    server.wait_healthy()
    yield server
    server.stop()


def test_hostile_device_names_stay_text_in_the_browser(chromium, hostile_viewer):
    """The Alerts page of a home whose devices are named like a phishing link, a remote image and
    an HTML tag: the browser shows the names as text, makes no link to them, fetches nothing and
    runs nothing."""
    ARTIFACTS.mkdir(exist_ok=True)
    requests: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(hostile_viewer.url)
            page.get_by_label("User name").fill("hana")
            page.get_by_role("textbox", name="Password").fill(HOSTILE_PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name=f"Live · {HOSTILE_HOME}")).to_be_visible(timeout=30_000)
            page.wait_for_timeout(1500)  # the live page's chart, hover labels and table
            live_links = page.eval_on_selector_all("a[href*='evil.example']", "els => els.length")
            live_shot = ARTIFACTS / "viewer_live_hostile_names.png"
            page.screenshot(path=str(live_shot), full_page=True)
            page.get_by_role("link", name="Alerts").click()
            expect(page.get_by_role("heading", name=f"Alerts · {HOSTILE_HOME}")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("Open alerts (1)")).to_be_visible()
            page.wait_for_timeout(1000)
            shot = ARTIFACTS / "viewer_alerts_hostile_names.png"
            page.screenshot(path=str(shot), full_page=True)
            links = page.eval_on_selector_all(
                "a", "els => els.map(a => a.getAttribute('href') || '')")
            images = page.eval_on_selector_all(
                "img", "els => els.map(i => i.getAttribute('src') || '')")
            # The names carry invisible word joiners (they stop GFM's autolinks): read without.
            body = page.inner_text("body").replace("\u2060", "")
            # The Devices page lists the same names in its switch picker and command log.
            page.get_by_role("link", name="Devices").click()
            expect(page.get_by_role("heading", name=f"Devices · {HOSTILE_HOME}")).to_be_visible(timeout=30_000)
            page.get_by_text("Device", exact=True).first.wait_for()
            page.locator("[data-testid='stSelectbox']").last.click()
            page.wait_for_timeout(800)
            devices_shot = ARTIFACTS / "viewer_devices_hostile_names.png"
            page.screenshot(path=str(devices_shot), full_page=True)
            links += page.eval_on_selector_all("a", "els => els.map(a => a.getAttribute('href') || '')")
            images += page.eval_on_selector_all("img", "els => els.map(i => i.getAttribute('src') || '')")
            options = page.get_by_role("option").all_inner_texts()
        finally:
            browser.close()
    assert live_links == 0
    assert not [h for h in links if "evil.example" in h], links
    assert not [s for s in images if "127.0.0.1:9" in s or s == "x"], images
    assert not [u for u in requests if "127.0.0.1:9/" in u or "evil.example" in u], requests
    assert dialogs == []
    assert PHISH in options and SCRIPT in options and FETCH in options, options
    assert f"{PHISH} {FETCH} {SCRIPT}" in body  # the anomaly's message, as the device wrote it
    assert f"{PHISH} · long running since" in body and f"{SCRIPT} {FETCH}" in body
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
