"""The pages a person uses every day, in a real Chromium: a phone's width, a laptop's, the charts
with one day of data, the icon, and the navigation each role sees.

A live daphne process and a separate worker serve the test database (as in
tests/test_browser_command_center.py); both are stopped by PID.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import launch_chromium
from tests.live_stream_support import ROOT, LiveWeb, live_web, ops_user, session_cookie

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TOKEN = "layout-webhook-token"
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1366, "height": 900}
POLICY = """
policies:
  - name: note-layout-check
    matchers: ['alertname=~"LayoutCheck.*"']
    action: log_only
    target: "{{ labels.container }}"
"""


@pytest.fixture(scope="module")
def web(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveWeb]:
    with (
        django_db_blocker.unblock(),
        live_web(AUTOHEAL_RATE_LIMIT="100000/60s", AUTOHEAL_WEBHOOK_TOKENS=TOKEN) as server,
    ):
        yield server


@pytest.fixture
def incidents(web: LiveWeb) -> Iterator[None]:
    """Three open incidents with long names, each with a finished action today (one day of data)."""
    from remediation.models import Job
    from remediation.policies import policies_import, policies_load_yaml

    policies_import(documents=policies_load_yaml(POLICY), actor="test")
    starts = (datetime.now(UTC) - timedelta(seconds=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
    alerts = [
        {
            "status": "firing",
            "fingerprint": f"{n:016x}",
            "labels": {
                "alertname": f"LayoutCheckWithAQuiteLongAlertName{n}",
                "container": f"payments-api-blue-green-canary-{n}",
                "severity": "critical",
            },
            "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z",
        }
        for n in range(1, 4)
    ]
    answer = httpx.post(
        web.url("/alert"),
        content=json.dumps({"version": "4", "status": "firing", "alerts": alerts}),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    log = web.data_dir / "layout-worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "autoheal_worker", "--name", "layout-worker"],
            cwd=ROOT,
            env=web.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        import time

        deadline = time.monotonic() + 60
        while Job.objects.filter(state=Job.State.OK).count() < 3:
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
            assert worker.poll() is None, log.read_text(errors="replace")[-2000:]
            time.sleep(0.2)
        yield
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


def _admin() -> Any:
    from accounts.services import roles_set

    user = ops_user(username="admin-amy", role="admin")
    roles_set(user=user, roles=["admin"])
    return user


def _context(browser: Any, web: LiveWeb, viewport: dict[str, int], cookie: str | None) -> Any:
    context = browser.new_context(viewport=viewport)
    if cookie:
        context.add_cookies([{"name": "sessionid", "value": cookie, "domain": "127.0.0.1", "path": "/"}])
    return context


def _overflow(page: Any) -> dict[str, int]:
    return page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
        " body: document.body.scrollWidth})"
    )


def _open(page: Any, url: str, missing: list[str]) -> None:
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.goto(url)
    page.wait_for_load_state("load")


def test_ops_console_and_login_fit_a_phone(web: LiveWeb, incidents: None, artifacts_dir: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    admin_cookie = session_cookie(_admin())
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            for path, cookie, name in [
                ("/ops/", admin_cookie, "ops-390.png"),
                ("/console", admin_cookie, "console-390.png"),
                ("/accounts/login/", None, "login-390.png"),
            ]:
                page = _context(browser, web, PHONE, cookie).new_page()
                missing: list[str] = []
                _open(page, web.url(path), missing)
                if path == "/ops/":
                    expect(page.locator("#incidents tr[data-fingerprint]")).to_have_count(3)
                page.screenshot(path=str(artifacts_dir / name), full_page=True)
                size = _overflow(page)
                assert size["scroll"] <= size["inner"], f"{path} is {size['scroll']} px wide at 390 px: {size}"
                assert missing == [], f"{path} asked for missing files: {missing}"
                # Every navigation link is on screen, none clipped at the edge.
                for box in page.locator(".site-nav a").evaluate_all(
                    "links => links.map(a => a.getBoundingClientRect().toJSON())"
                ):
                    assert box["left"] >= 0 and box["right"] <= PHONE["width"], box
                if cookie:
                    assert page.locator(".site-nav a").count() == 5
        finally:
            browser.close()


def test_no_table_is_cut_off_on_a_laptop_with_open_incidents(
    web: LiveWeb, incidents: None, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    admin_cookie = session_cookie(_admin())
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = _context(browser, web, LAPTOP, admin_cookie).new_page()
            page.goto(web.url("/ops/"))
            expect(page.locator("#incidents tr[data-fingerprint]")).to_have_count(3)
            page.screenshot(path=str(artifacts_dir / "ops-1366.png"), full_page=True)
            size = _overflow(page)
            assert size["scroll"] <= size["inner"], size
            # Each table fits its panel whole: nothing hidden behind a scroll bar at this width.
            tables = page.locator(".table-scroll").evaluate_all(
                "boxes => boxes.map(b => ({id: b.closest('section').id, scroll: b.scrollWidth, client: b.clientWidth,"
                " last: b.querySelector('thead th:last-child').getBoundingClientRect().right,"
                " edge: b.getBoundingClientRect().right}))"
            )
            assert {t["id"] for t in tables} >= {"incidents", "recent"}
            for table in tables:
                assert table["scroll"] <= table["client"], table
                assert table["last"] <= table["edge"] + 0.5, table
            # The last column of the incidents (the Ack form) is in view and usable once scrolled to
            # vertically (panels above it may push it below the fold; never sideways out of view).
            ack = page.locator("#incidents tr[data-fingerprint]").first.get_by_role("button", name="Ack")
            ack.scroll_into_view_if_needed()
            expect(ack).to_be_in_viewport()
        finally:
            browser.close()


def test_daily_charts_show_one_day_of_data_as_bars(web: LiveWeb, incidents: None, artifacts_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    admin_cookie = session_cookie(_admin())
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = _context(browser, web, LAPTOP, admin_cookie).new_page()
            page.goto(web.url("/ops/"))
            page.locator("#metrics").screenshot(path=str(artifacts_dir / "ops-charts-one-day.png"))
            for chart in ("chart-actions", "chart-success", "chart-ttr"):
                drawn = page.evaluate(
                    """id => {
                        const chart = Chart.getChart(id);
                        const bars = chart.getDatasetMeta(0).data;
                        const today = bars[bars.length - 1];
                        return {type: chart.config.type, width: today.width, height: Math.abs(today.base - today.y),
                                days: bars.length};
                    }""",
                    chart,
                )
                # Today's value is a bar a person can see, not a lone point at the edge.
                assert drawn["type"] == "bar", (chart, drawn)
                assert drawn["days"] == 30 and drawn["width"] >= 4 and drawn["height"] >= 4, (chart, drawn)
        finally:
            browser.close()


def test_navigation_shows_each_role_what_it_can_use(web: LiveWeb) -> None:
    from playwright.sync_api import expect, sync_playwright

    ops_cookie = session_cookie(ops_user(username="ops-oscar"))
    admin_cookie = session_cookie(_admin())
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            ops_page = _context(browser, web, LAPTOP, ops_cookie).new_page()
            ops_page.goto(web.url("/ops/"))
            expect(ops_page.locator(".site-nav")).to_contain_text("Command Center")
            expect(ops_page.locator(".site-nav").get_by_role("link", name="Admin")).to_have_count(0)
            # Typed by hand, the admin says what is missing instead of asking for a role they hold.
            ops_page.goto(web.url("/admin/"))
            expect(ops_page.locator("#needs-role")).to_contain_text("needs the admin role")
            expect(ops_page.locator("#needs-role")).to_contain_text("with the ops role")

            admin_page = _context(browser, web, LAPTOP, admin_cookie).new_page()
            admin_page.goto(web.url("/ops/"))
            admin_page.locator(".site-nav").get_by_role("link", name="Admin").click()
            expect(admin_page).to_have_url(web.url("/admin/"))

            # Not signed in: the API docs send a browser to the login page, which has an icon.
            anonymous = _context(browser, web, LAPTOP, None).new_page()
            anonymous.goto(web.url("/api/docs/"))
            expect(anonymous).to_have_url(web.url("/accounts/login/?next=/api/docs/"))
            icon = anonymous.locator('link[rel="icon"]').get_attribute("href")
            assert icon and httpx.get(web.url(icon), timeout=10).status_code == 200
            root_icon = httpx.get(web.url("/favicon.ico"), timeout=10, follow_redirects=True)
            assert root_icon.status_code == 200 and root_icon.headers["content-type"].startswith("image/svg")
        finally:
            browser.close()
