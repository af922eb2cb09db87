"""The embedded login: local Django accounts in the ops and admin groups."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from accounts.roles import user_roles

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery-staple-7"


def test_autoheal_user_reads_the_password_from_a_file_and_the_user_can_log_in(client: Any, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    out = io.StringIO()
    call_command("autoheal_user", "create", "olga", "--role", "ops", "--password-file", str(secret), stdout=out)
    assert "olga" in out.getvalue() and PASSWORD not in out.getvalue()
    user = get_user_model().objects.get(username="olga")
    assert user_roles(user) == {"ops"}
    assert not user.is_staff

    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b"Sign in" in page.content and b"single sign-on" not in page.content
    response = client.post("/accounts/login/", {"username": "olga", "password": PASSWORD, "next": "/audit"})
    assert response.status_code == 302 and response["Location"] == "/audit"
    assert client.get("/audit").status_code == 200


def test_autoheal_user_reads_stdin(monkeypatch: Any) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    call_command("autoheal_user", "create", "ada", "--role", "admin", "--password-file", "-", stdout=io.StringIO())
    user = get_user_model().objects.get(username="ada")
    assert user_roles(user) == {"admin"} and user.is_staff and user.check_password(PASSWORD)


def test_weak_passwords_and_duplicates_are_refused_and_change_nothing(tmp_path: Path) -> None:
    weak = tmp_path / "weak"
    weak.write_text("password\n")
    with pytest.raises(CommandError, match="password refused"):
        call_command("autoheal_user", "create", "weak", "--role", "ops", "--password-file", str(weak))
    assert not get_user_model().objects.filter(username="weak").exists()
    good = tmp_path / "good"
    good.write_text(PASSWORD)
    call_command("autoheal_user", "create", "dup", "--role", "ops", "--password-file", str(good), stdout=io.StringIO())
    with pytest.raises(CommandError, match="already exists"):
        call_command("autoheal_user", "create", "dup", "--role", "admin", "--password-file", str(good))
    assert user_roles(get_user_model().objects.get(username="dup")) == {"ops"}


def test_wrong_password_is_refused(client: Any, make_user: Any) -> None:
    make_user("eve", ["admin"])
    response = client.post("/accounts/login/", {"username": "eve", "password": "wrong"})
    assert response.status_code == 200
    assert b"did not match" in response.content
    assert client.get("/audit").status_code in (401, 403)


def test_a_user_without_a_role_is_authenticated_but_refused(client: Any, make_user: Any) -> None:
    client.force_login(make_user("norole", []))
    assert client.get("/audit").status_code == 403


def test_admin_role_opens_the_django_admin_for_autoheal_models(client: Any, make_user: Any) -> None:
    client.force_login(make_user("root", ["admin"]))
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/accounts/apikey/").status_code == 200
    # Users and groups stay with superusers.
    assert client.get("/admin/auth/user/").status_code == 403
    client.force_login(make_user("operator", ["ops"]))
    assert client.get("/admin/").status_code == 302


def test_the_admin_login_goes_through_the_one_login_page(client: Any, make_user: Any) -> None:
    response = client.get("/admin/")
    assert response.status_code == 302
    response = client.get(response["Location"])
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")
    # Signed in without the admin role: the login page explains, it does not bounce back (no loop).
    client.force_login(make_user("opsonly", ["ops"]))
    page = client.get(response["Location"])
    assert page.status_code == 200
    # An ops user is told the page needs the admin role, not asked for a role they already hold.
    assert b"That page needs the <strong>admin</strong> role" in page.content
    assert b"with the <strong>ops</strong> role" in page.content


def test_a_user_without_a_role_is_told_which_roles_open_the_page(client: Any, make_user: Any) -> None:
    client.force_login(make_user("nobody", []))
    page = client.get("/accounts/login/?next=/ops/")
    assert b"which has no role here" in page.content
    assert b"needs the <strong>ops</strong> or <strong>admin</strong> role" in page.content


def test_local_login_form_is_off_when_single_sign_on_is_the_way_in(client: Any, settings: Any, make_user: Any) -> None:
    settings.AUTOHEAL_LOCAL_LOGIN = False
    make_user("legacy", ["admin"])
    page = client.get("/accounts/login/")
    assert b'name="password"' not in page.content
    response = client.post("/accounts/login/", {"username": "legacy", "password": "not-used-Pa55word"})
    assert response.status_code == 403
    assert client.get("/audit").status_code == 401
