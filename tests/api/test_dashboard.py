"""The web dashboard in real headless Chromium (Playwright), against the API on a real runtime."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import T0, serving

from twinfleet.api.app import create_app
from twinfleet.api.auth import TokenStore
from twinfleet.runtime import DeviceMessage
from twinfleet.runtime.stores import open_store
from twinfleet.runtime.telemetry import open_telemetry

Served = Any  # the fixture's class lives in conftest.py

CHROMIUM = Path("/usr/bin/chromium")
# The screenshot in the docs is refreshed on purpose (TWINFLEET_SCREENSHOT=1), not by every run.
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("ray_session"),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get)"
    ),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
expect = sync_api.expect


class Dashboard:
    """The API with the dashboard installed, on a free port, and its admin token."""

    def __init__(self, url: str, admin: str) -> None:
        self.url = url
        self.admin = admin

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.admin}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def dashboard(served: Served) -> Iterator[Dashboard]:
    runtime = served.runtime
    # A short history for the chart (api-4 stays the warmest twin).
    runtime.ingest(
        DeviceMessage(
            "api-4",
            "telemetry",
            {"temperature": 24.0 + (i % 5) * 0.4},
            T0 + 60 * i,
            "test",
            "smart-sensor",
        )
        for i in range(1, 25)
    )
    runtime.flush()
    tokens = TokenStore(open_store("memory://"))
    _, admin = tokens.create("admin")
    app = create_app(runtime, tokens, telemetry=open_telemetry(runtime.settings.telemetry))
    with serving(app) as url:
        yield Dashboard(url, admin)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def test_the_static_files_are_served(dashboard: Dashboard) -> None:
    with httpx.Client(base_url=dashboard.url) as client:
        index = client.get("/")
        assert index.status_code == 200
        assert '<script type="module" src="app.js">' in index.text
        assert client.get("/app.js").headers["content-type"].startswith("text/javascript")
        assert client.get("/app.css").status_code == 200
        # The API keeps its routes (and its 401s) under the mount.
        assert client.get("/api/v1/twins").status_code == 401
        assert client.get("/healthz").json() == {"status": "ok"}


def test_dashboard_in_chromium(
    dashboard: Dashboard, browser: Any, served: Served, tmp_path: Path
) -> None:
    api = dashboard.client()
    twins = api.get("/api/v1/twins", params={"limit": 1000}).json()["items"]
    online = sum(1 for twin in twins if twin["connectivity"]["online"])

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(15_000)
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        # The token prompt, then the overview.
        page.goto(dashboard.url + "/")
        page.fill("#token", dashboard.admin)
        page.press("#token", "Enter")
        expect(page.locator("#count-total")).to_have_text(str(len(twins)))
        expect(page.locator("#count-online")).to_have_text(str(online))
        expect(page.locator("#by-type tr[data-type='smart-sensor'] td").nth(1)).to_have_text(
            str(len(twins))
        )
        expect(page.locator("#stream")).to_have_text("stream: live")

        # The twin list with a filter; a malformed one shows the API's message.
        page.click("header >> text=Twins")
        page.fill("#filter", "reported.temperature > 22")
        page.press("#filter", "Enter")
        expect(page.locator("#twins tbody tr")).to_have_count(2)
        shown = page.locator("#twins tbody tr").evaluate_all(
            "rows => rows.map(row => row.dataset.twin)"
        )
        assert shown == ["api-3", "api-4"]
        bad = api.get("/api/v1/twins", params={"filter": "reported.temperature >"})
        assert bad.status_code == 400
        page.fill("#filter", "reported.temperature >")
        page.press("#filter", "Enter")
        expect(page.get_by_role("alert")).to_have_text(bad.json()["error"]["message"])

        # A twin: change desired in the editor.
        page.fill("#filter", "reported.temperature > 22")
        page.press("#filter", "Enter")
        page.click("#twins >> text=api-4")
        version = api.get("/api/v1/twins/api-4").json()["version"]
        expect(page.locator("#version")).to_have_text(f"version {version}")
        expect(page.locator("#reported")).to_contain_text('"temperature"')
        expect(page.locator("#metric")).to_have_value("temperature")
        # The model's scores are a series of their own beside the readings; which model
        # (and version: a training's) scores them is on the page.
        expect(page.locator("#metric option[value='anomaly score']")).to_have_count(1)
        expect(page.locator("#model")).to_have_text("ewma 1 (default)")
        page.fill("#desired-editor", '{"interval": 7}')
        page.click("#send-patch")
        expect(page.locator("#editor-status")).to_contain_text(f"version {version + 1}")
        expect(page.locator("#desired")).to_contain_text('"interval": 7')
        assert api.get("/api/v1/twins/api-4").json()["desired"]["interval"] == 7

        # A change made elsewhere arrives through the event stream.
        changed = api.patch(
            "/api/v1/twins/api-4/desired",
            content=b'{"mode": "eco"}',
            headers={"Content-Type": "application/merge-patch+json"},
        ).json()
        expect(page.locator("#version")).to_have_text(f"version {changed['version']}")
        expect(page.locator("#desired")).to_contain_text('"mode": "eco"')
        expect(page.locator("#live-note")).to_contain_text("desired")
        expect(page.locator("#desired-editor")).to_have_value(re.compile('"mode": "eco"'))

        # An edit based on an old version is refused with 412 and shown as a conflict.
        page.fill("#desired-editor", '{"interval": 9}')
        later = api.patch(
            "/api/v1/twins/api-4/desired",
            content=b'{"interval": 8}',
            headers={"Content-Type": "application/merge-patch+json"},
        ).json()
        expect(page.locator("#version")).to_have_text(f"version {later['version']}")
        page.click("#send-patch")
        expect(page.locator("#conflict")).to_contain_text("Conflict")
        assert api.get("/api/v1/twins/api-4").json()["desired"]["interval"] == 8
        page.click("#conflict >> text=Discard my edit and reload")
        expect(page.locator("#desired-editor")).to_have_value(re.compile('"interval": 8'))

        # A command: the device (no live connection here) has it queued or sent.
        page.fill("input[name=name]", "reboot")
        page.fill("input[name=timeout]", "0")
        page.click("text=Send command")
        expect(page.locator("#command-state")).to_have_text(re.compile("^(queued|sent)$"))

        page.evaluate("window.scrollTo(0, 0)")
        shot = DOCS_SCREENSHOT if os.environ.get("TWINFLEET_SCREENSHOT") else tmp_path / "twin.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000  # a page was drawn

        # A patient monitor whose SpO2 drops: its alarm shows up and is acknowledged here.
        served.runtime.ingest(
            DeviceMessage("dash-pm-1", "telemetry", {"spo2": v}, T0 + k, "t", "patient-monitor")
            for k, v in enumerate((97.0, 88.0, 87.0))
        )
        served.runtime.flush()
        page.goto(dashboard.url + "/#/twin/dash-pm-1")
        row = page.locator("#alarms tr", has_text="spo2-low")
        expect(row.locator(".alarm-state")).to_have_text("active")
        row.locator("text=Acknowledge").click()
        expect(row.locator(".alarm-state")).to_have_text("acknowledged")
        (alarm,) = api.get("/api/v1/twins/dash-pm-1").json()["alarms"]
        assert alarm["state"] == "acknowledged"
        # The events view shows new events as they arrive.
        page.click("header >> text=Events")
        api.patch(
            "/api/v1/twins/api-1/desired",
            content=b'{"interval": 3}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        expect(page.locator("#events tbody tr", has_text="api-1").first).to_contain_text("desired")
    finally:
        page.close()
    assert not problems
    assert all(url.startswith(dashboard.url) for url in requests), requests


def test_the_overview_shows_messages_and_lag_per_protocol(
    dashboard: Dashboard, browser: Any, served: Served
) -> None:
    runtime = served.runtime
    stop = threading.Event()

    def feed() -> None:
        """MQTT readings that an edge received 0.3 s before they are routed."""
        step = 0
        while not stop.is_set():
            now = time.time()
            runtime.ingest(
                DeviceMessage(
                    f"lag-{k}",
                    "telemetry",
                    {"temperature": 20.0 + step % 3},
                    now,
                    "mqtt",
                    "smart-sensor",
                    now - 0.3,
                )
                for k in range(20)
            )
            step += 1
            stop.wait(0.1)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(20_000)
    try:
        page.goto(dashboard.url + "/")
        page.fill("#token", dashboard.admin)
        page.press("#token", "Enter")
        row = page.locator("#ingest-table tr[data-protocol='mqtt']")
        expect(row).to_be_visible()
        expect(row.locator("td").nth(1)).not_to_have_text("0.0")
        lag = row.locator("td.lag-p99")
        expect(lag).to_have_text(re.compile(r"^\d+ ms$"))
        shown = int(lag.inner_text().split()[0])
        assert 300 <= shown <= 500  # 0.3 s and a little: inside the (0.25, 0.5] s bucket
    finally:
        stop.set()
        feeder.join(10)
        page.close()
