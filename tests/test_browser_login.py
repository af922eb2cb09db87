"""Signing in keeps where a link pointed: /ops/#job-42 opened while signed out comes back to
/ops/#job-42 after the login form, in a real Chromium against a live daphne (stopped by PID)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conftest import launch_chromium
from tests.live_stream_support import LiveWeb, live_web

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-local-password-for-the-browser-test"


@pytest.fixture(scope="module")
def web(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveWeb]:
    with django_db_blocker.unblock(), live_web(AUTOHEAL_RATE_LIMIT="100000/60s", AUTOHEAL_LOCAL_LOGIN="true") as server:
        yield server


def _operator() -> None:
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(username="olga", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name="ops")[0])


@pytest.mark.parametrize(
    ("opened", "lands_on"),
    [
        ("/ops/#job-42", "/ops/#job-42"),
        ("/ops/", "/ops/"),  # no fragment: nothing added
    ],
)
def test_the_fragment_of_a_link_survives_the_login_form(web: LiveWeb, opened: str, lands_on: str) -> None:
    from playwright.sync_api import sync_playwright

    _operator()
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.goto(web.url(opened))
            page.wait_for_url("**/accounts/login/**")
            page.fill("#id_username", "olga")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(web.url(lands_on))
            assert page.evaluate("() => location.pathname + location.hash") == lands_on
        finally:
            browser.close()
