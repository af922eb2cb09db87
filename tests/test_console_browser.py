"""The live console in a real Chromium: events written by another process appear, filters work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import launch_chromium
from tests.live_stream_support import LiveWeb, live_web, ops_user, session_cookie

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def web(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveWeb]:
    with django_db_blocker.unblock(), live_web(AUTOHEAL_RATE_LIMIT="100000/60s") as server:
        yield server


def event(kind: str, alertname: str, message: str) -> dict[str, Any]:
    return {"event": {"kind": kind, "alertname": alertname, "message": message, "target": "web-1"}}


def test_console_shows_live_events_from_the_worker_filters_by_kind_and_pauses(
    web: LiveWeb, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    cookie = session_cookie(ops_user())
    [earlier] = web.write([event("alert_received", "ContainerUnhealthy", "web-1 is unhealthy")])

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 800})
            context.add_cookies([{"name": "sessionid", "value": cookie, "domain": "127.0.0.1", "path": "/"}])
            page = context.new_page()
            blocked: list[str] = []
            page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)

            page.goto(web.url("/console"))
            connection = page.locator("#connection")
            rows = page.locator("#events-body tr")
            # The page is never empty: what happened before is there before anything streams.
            expect(page.locator(f'tr[data-id="{earlier}"]')).to_be_visible()
            expect(connection).to_have_text("live")

            [failed] = web.write([event("action_fail", "ContainerUnhealthy", "restart of web-1 failed")])
            expect(page.locator(f'tr[data-id="{failed}"]')).to_contain_text("restart of web-1 failed")
            expect(rows.first).to_have_attribute("data-id", str(failed))  # newest on top

            page.select_option("#filter-kind", "action_ok")
            page.get_by_role("button", name="Apply").click()
            expect(connection).to_have_text("live")
            expect(page.locator("#empty")).to_be_visible()
            skipped, ok = web.write(
                [
                    event("action_started", "ContainerUnhealthy", "restarting web-1"),
                    event("action_ok", "ContainerUnhealthy", "web-1 restarted"),
                ]
            )
            expect(page.locator(f'tr[data-id="{ok}"]')).to_contain_text("web-1 restarted")
            # The other kind was committed first, so had it been sent it would be here by now.
            expect(page.locator(f'tr[data-id="{skipped}"]')).to_have_count(0)
            expect(rows).to_have_count(1)

            page.get_by_role("button", name="Pause").click()
            [held] = web.write([event("action_ok", "ContainerUnhealthy", "web-1 restarted again")])
            expect(page.locator("#buffered")).to_have_text("1 new while paused")
            expect(page.locator(f'tr[data-id="{held}"]')).to_have_count(0)
            page.screenshot(path=str(artifacts_dir / "console.png"), full_page=True)
            page.get_by_role("button", name="Resume").click()
            expect(page.locator(f'tr[data-id="{held}"]')).to_be_visible()
            expect(rows.first).to_have_attribute("data-id", str(held))

            assert blocked == [], f"the Content-Security-Policy blocked something: {blocked}"
        finally:
            browser.close()
