"""Approve and Deny on /ops/ in a real Chromium against a live web process, and the evidence panel."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.services import audit_record
from conftest import launch_chromium
from remediation.models import Job
from remediation.tests.exec_helpers import drain, events, make_alert, make_job, make_policy
from tests.live_stream_support import LiveWeb, live_web, ops_user, session_cookie

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def web(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveWeb]:
    # The operator allows the program the approved command runs (approval decides every guard).
    allow = shutil.which("touch") or "/usr/bin/touch"
    with (
        django_db_blocker.unblock(),
        live_web(AUTOHEAL_RATE_LIMIT="100000/60s", AUTOHEAL_COMMAND_ALLOW=allow) as server,
    ):
        yield server


def _live_evidence(job: Job) -> None:
    """Written from another thread: the browser's event loop owns this one."""
    from django.db import connection

    audit_record(
        kind="evidence_captured",
        alertname=job.alert.alertname,
        fingerprint=job.alert.fingerprint,
        target="db",
        data={
            "job": job.pk,
            "evidence": {
                "container": "db",
                "state": {"Status": "running"},
                "health": {"status": "unhealthy", "failing_streak": 1, "probes": []},
                "logs": "OOM killer\n",
            },
        },
    )
    connection.close()


def _cookie(web: LiveWeb, value: str) -> list[dict[str, str]]:
    return [{"name": "sessionid", "value": value, "domain": "127.0.0.1", "path": "/"}]


def test_an_admin_approves_and_denies_on_ops_with_a_reason_and_ops_only_sees_the_jobs(
    web: LiveWeb, tmp_path: Path, artifacts_dir: Path, settings: Any
) -> None:
    from playwright.sync_api import expect, sync_playwright

    settings.AUTOHEAL_COMMAND_ALLOW = [shutil.which("touch") or "/usr/bin/touch"]
    marker = tmp_path / "ran"
    policy = make_policy(action="command", params={"argv": ["touch", str(marker)]}, mode="approve")
    first = make_job(policy=policy, alert=make_alert())
    second = make_job(
        policy=policy,
        alert=make_alert(labels={"alertname": "ContainerUnhealthy", "container": "db", "severity": "critical"}),
    )
    drain()
    assert set(Job.objects.values_list("state", flat=True)) == {Job.State.AWAITING_APPROVAL}
    audit_record(
        kind="evidence_captured",
        alertname=second.alert.alertname,
        fingerprint=second.alert.fingerprint,
        target="db",
        data={
            "job": second.pk,
            "action": "restart_container",
            "evidence": {
                "container": "db",
                "state": {"Status": "running", "StartedAt": "2026-12-03T08:00:00Z"},
                "health": {
                    "status": "unhealthy",
                    "failing_streak": 3,
                    "probes": [{"exit_code": 1, "output": "db down"}],
                },
                "logs": "FATAL: could not open relation\n",
                "logs_truncated": False,
            },
        },
    )
    admin_cookie = session_cookie(ops_user(username="admin-ada", role="admin"))
    ops_cookie = session_cookie(ops_user(username="ops-olga", role="ops"))

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            # ops sees the waiting jobs (the notification's link lands on the row) but no buttons.
            ops_context = browser.new_context()
            ops_context.add_cookies(_cookie(web, ops_cookie))
            ops_page = ops_context.new_page()
            ops_page.set_default_timeout(30_000)
            ops_page.goto(web.url(f"/ops/#job-{first.pk}"))
            expect(ops_page.locator(f"#job-{first.pk}")).to_contain_text("an admin decides")
            expect(ops_page.locator(f"#job-{first.pk} button")).to_have_count(0)
            # The evidence of the open incident is shown, opened on demand.
            evidence = ops_page.locator(f'#evidence details[data-job="{second.pk}"]')
            evidence.locator("summary").first.click()
            expect(evidence.locator(".evidence-logs")).to_be_visible()
            expect(evidence).to_contain_text("FATAL: could not open relation")
            expect(evidence).to_contain_text("db down")

            # The console's event detail shows it too: from the page's backlog...
            console = ops_context.new_page()
            console.goto(web.url("/console"))
            row = console.locator('tr[data-kind="evidence_captured"]')
            row.locator("details summary").click()
            expect(row.locator(".evidence-logs")).to_have_text("FATAL: could not open relation\n")
            # ...and from the live stream.
            expect(console.locator("#connection")).to_have_text("live", timeout=15_000)
            writer = threading.Thread(target=_live_evidence, args=(second,))
            writer.start()
            writer.join(timeout=30)
            live = console.locator('tr.fresh[data-kind="evidence_captured"]')
            live.locator("details summary").click()
            expect(live.locator(".evidence-logs")).to_have_text("OOM killer\n")
            expect(live).to_contain_text("health unhealthy")

            context = browser.new_context()
            context.add_cookies(_cookie(web, admin_cookie))
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(web.url("/ops/"))
            row = page.locator(f"#job-{first.pk}")
            # No reason: the browser refuses to send the form, nothing is decided.
            row.get_by_role("button", name="Approve").click()
            expect(row).to_be_visible()
            assert row.get_by_label(f"Reason for job {first.pk}").evaluate("e => e.validity.valueMissing")

            row.get_by_label(f"Reason for job {first.pk}").fill("checked: safe to restart")
            row.get_by_role("button", name="Approve").click()
            expect(page.locator("#messages")).to_contain_text(f"Job {first.pk} approved")
            expect(page.locator(f"#job-{first.pk}")).to_have_count(0)

            other = page.locator(f"#job-{second.pk}")
            other.get_by_label(f"Reason for job {second.pk}").fill("the database team is on it")
            other.get_by_role("button", name="Deny").click()
            expect(page.locator("#messages")).to_contain_text("approval_denied")
            page.screenshot(path=str(artifacts_dir / "ops-approvals.png"), full_page=True)
        finally:
            browser.close()

    # Only the decisions sent with a reason reached the server.
    assert len(events("approval_granted")) == 1 and len(events("approval_denied")) == 1
    granted = events("approval_granted")[0]
    assert granted.actor == "admin-ada" and granted.data["reason"] == "checked: safe to restart"
    denied = events("approval_denied")[0]
    assert denied.actor == "admin-ada" and denied.data["job"] == second.pk
    drain()
    assert Job.objects.get(pk=first.pk).state == Job.State.OK
    assert marker.exists()
    assert Job.objects.get(pk=second.pk).skip_reason == "approval_denied"
