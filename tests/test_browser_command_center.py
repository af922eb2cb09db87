"""The Command Center and the policy admin in a real Chromium, against a live web and worker process.

daphne serves the test database on a loopback socket the test opened (port 0); a separate
``manage.py autoheal_worker`` process runs the jobs, as in production. Both are stopped by PID.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import launch_chromium
from tests.live_stream_support import ROOT, LiveWeb, live_web, ops_user, session_cookie

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TOKEN = "command-center-webhook-token"
PASSWORD = "a-long-local-test-password"


@pytest.fixture(scope="module")
def web(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveWeb]:
    with (
        django_db_blocker.unblock(),
        live_web(AUTOHEAL_RATE_LIMIT="100000/60s", AUTOHEAL_WEBHOOK_TOKENS=TOKEN) as server,
    ):
        yield server


@pytest.fixture
def worker(web: LiveWeb) -> Iterator[subprocess.Popen[bytes]]:
    log = web.data_dir / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "autoheal_worker", "--name", "browser-worker"],
            cwd=ROOT,
            env=web.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    yield proc
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def admin_user() -> Any:
    from django.contrib.auth.models import Group, User

    from accounts.services import roles_set

    # Transactional tests flush the groups the migration created: make sure the role exists.
    Group.objects.get_or_create(name="admin")
    user = User.objects.create_user(username="admin-ann", password=PASSWORD)
    roles_set(user=user, roles=["admin"])
    return user


def test_admin_makes_a_policy_tries_it_watches_it_act_acks_and_pauses_and_ops_only_looks(
    web: LiveWeb,
    worker: subprocess.Popen[bytes],
    artifacts_dir: Path,
    fixture_body: Callable[[str], bytes],
) -> None:
    from playwright.sync_api import expect, sync_playwright

    admin_user()
    ops_cookie = session_cookie(ops_user(username="ops-olga"))
    payload = fixture_body("single-firing.json")

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.set_default_timeout(30_000)
            blocked: list[str] = []
            page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)

            # An admin signs in through the one login page and lands on the Command Center.
            page.goto(web.url("/accounts/login/?next=/admin/remediation/policy/add/"))
            page.fill("#id_username", "admin-ann")
            page.fill("#id_password", PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#id_name")).to_be_visible()

            # A bad matcher is refused with a message that says what is wrong.
            page.fill("#id_name", "restart-flagged")
            page.fill("#id_matchers", 'alertname=~"(AutohealTestFlag"')
            page.select_option("#id_action", "log_only")
            page.click('input[name="_continue"]')
            expect(page.locator(".errorlist")).to_contain_text("invalid regular expression")

            page.fill("#id_matchers", 'alertname="AutohealTestFlag"\nseverity=~"critical|page"')
            page.click('input[name="_continue"]')
            expect(page.locator(".messagelist")).to_contain_text("was added successfully")
            expect(page.locator("#policy-history")).to_contain_text("admin-ann")

            # "Try this policy": the simulator's decision for the pasted payload, nothing stored.
            page.get_by_role("link", name="Try this policy").click()
            page.fill("#id_payload", payload.decode())
            page.get_by_role("button", name="Try it").click()
            expect(page.locator("#trial-summary")).to_have_text("Matches 1 of 1 alert.")
            expect(page.locator("#trial-outcomes tr.this-policy")).to_contain_text("would log_only ah-sleeper")
            expect(page.locator("#trial-outcomes tr.this-policy .decision")).to_contain_text("run")

            # The Command Center follows the live stream; an alert arrives and the worker acts.
            page.goto(web.url("/ops/"))
            expect(page.locator("#connection")).to_have_text("live", timeout=15_000)
            expect(page.locator("#switch-controls")).to_be_visible()
            answer = httpx.post(
                web.url("/alert"),
                content=payload,
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                timeout=10,
            )
            assert answer.status_code == 202, answer.text
            action_ok = page.locator('#events-body tr[data-kind="action_ok"]')
            # The worker's turn: generous, since a loaded machine may take a while to get there.
            expect(action_ok).to_contain_text("AutohealTestFlag", timeout=30_000)
            expect(page.locator('#events-body tr[data-kind="alert_received"]')).to_be_visible()

            # The incident is open: take it over.
            page.reload()
            incident = page.locator("#incidents tr[data-fingerprint]")
            expect(incident).to_contain_text("AutohealTestFlag")
            incident.locator('input[name="note"]').fill("looking at the sleeper")
            incident.get_by_role("button", name="Ack").click()
            expect(page.locator("#messages")).to_contain_text("acked by admin-ann")
            expect(page.locator("#incidents")).to_contain_text("acked by admin-ann")
            recent = page.locator("#recent tr[data-job]").first
            expect(recent).to_contain_text("ok")

            # An operator's verdict on the action counts in the false-positive rate.
            recent.get_by_role("button", name="Needed").click()
            expect(page.locator("#messages")).to_contain_text("marked needed")
            expect(page.locator("#metric-false_positive_rate")).to_contain_text("1 of 1 actions reviewed")

            # Pause everything for 30 minutes, with a reason.
            pause = page.locator("#switch-controls form", has=page.locator('input[value="pause"]'))
            pause.locator('input[name="minutes"]').fill("30")
            pause.locator('input[name="reason"]').fill("database failover")
            pause.get_by_role("button", name="Pause").click()
            expect(page.locator("#messages")).to_contain_text("Pause: done.")
            expect(page.locator("#state-enabled dd")).to_have_text("paused")
            expect(page.locator("#state-paused dd")).to_contain_text("(30 min left)")
            expect(page.locator("#connection")).to_have_text("live", timeout=15_000)
            expect(page.locator('#events-body tr[data-kind="switch_changed"]').first).to_contain_text(
                "database failover"
            )
            page.screenshot(path=str(artifacts_dir / "ops.png"), full_page=True)

            page.goto(web.url("/console"))
            expect(page.locator("#connection")).to_have_text("live", timeout=15_000)
            expect(page.locator('#events-body tr[data-kind="ack"]')).to_contain_text("looking at the sleeper")
            page.screenshot(path=str(artifacts_dir / "console.png"), full_page=True)
            assert blocked == [], f"the Content-Security-Policy blocked something: {blocked}"

            # An ops user sees the same page, but no control of the switch.
            ops_context = browser.new_context(viewport={"width": 1400, "height": 900})
            ops_context.add_cookies([{"name": "sessionid", "value": ops_cookie, "domain": "127.0.0.1", "path": "/"}])
            ops_page = ops_context.new_page()
            ops_page.goto(web.url("/ops/"))
            expect(ops_page.locator("#state-enabled dd")).to_have_text("paused")
            expect(ops_page.locator("#switch-readonly")).to_have_text("Changing the switch needs the admin role.")
            expect(ops_page.locator("#switch-controls")).to_have_count(0)
            expect(ops_page.locator("#incidents")).to_contain_text("acked by admin-ann")
        finally:
            browser.close()
