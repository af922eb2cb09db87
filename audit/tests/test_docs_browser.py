"""The API docs page in a real Chromium: Swagger UI renders /audit under the strict CSP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from conftest import launch_chromium

pytestmark = [pytest.mark.postgres, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_api_docs_show_the_audit_parameters_with_no_csp_violation(
    live_server: Any, django_user_model: Any, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    user = django_user_model.objects.create_user("docs-reader", password="not-used-here-9")
    user.groups.add(Group.objects.get_or_create(name="ops")[0])
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value
    host = live_server.url.split("//", 1)[1].split(":", 1)[0]

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(viewport={"width": 1300, "height": 900})
            context.add_cookies([{"name": "sessionid", "value": cookie, "domain": host, "path": "/"}])
            page = context.new_page()
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            outside: list[str] = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(live_server.url) else None)
            page.goto(live_server.url + "/api/docs/")
            operation = page.locator("#operations-audit-audit_list")
            expect(operation).to_be_visible(timeout=15_000)
            operation.locator(".opblock-summary").click()
            for name in ("kind", "alertname", "since", "until", "contains", "n", "cursor"):
                expect(operation.locator(f'tr[data-param-name="{name}"]')).to_be_visible()
            page.screenshot(path=str(artifacts_dir / "api-docs.png"), full_page=False)
        finally:
            browser.close()
    assert violations == []
    assert [url for url in outside if not url.startswith(("data:", "blob:"))] == []
