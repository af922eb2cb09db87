"""manage.py autoheal_user: set-password, set-role, disable/enable and list, each change audited."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from accounts.roles import user_roles
from accounts.services import apikey_create
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery-staple-7"
NEW_PASSWORD = "tangerine-ladder-quartz-19"


def user_cmd(*args: str, stdin: str | None = None, monkeypatch: Any = None) -> str:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    out = io.StringIO()
    call_command("autoheal_user", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def olga(monkeypatch: Any) -> Any:
    user_cmd("create", "olga", "--role", "ops", "--password-file", "-", stdin=PASSWORD + "\n", monkeypatch=monkeypatch)
    return get_user_model().objects.get(username="olga")


def events(action: str) -> list[AuditEvent]:
    return [e for e in AuditEvent.objects.filter(kind="user_changed").order_by("id") if e.data["action"] == action]


def test_create_is_audited_with_its_actor(olga: Any) -> None:
    (event,) = events("created")
    assert event.target == "olga" and event.actor.startswith("cli")
    assert event.data["role"] == "ops"


def test_set_password_ends_sessions_and_only_the_new_password_works(client: Any, olga: Any, monkeypatch: Any) -> None:
    client.force_login(olga)
    assert client.get("/console").status_code == 200

    out = user_cmd(
        "set-password",
        "olga",
        "--password-file",
        "-",
        "--actor",
        "cli:root",
        stdin=NEW_PASSWORD + "\n",
        monkeypatch=monkeypatch,
    )

    assert NEW_PASSWORD not in out
    assert client.get("/console").status_code == 302  # the old session is over
    assert client.post("/accounts/login/", {"username": "olga", "password": PASSWORD}).status_code == 200
    assert client.post("/accounts/login/", {"username": "olga", "password": NEW_PASSWORD}).status_code == 302
    (event,) = events("password_set")
    assert event.actor == "cli:root"
    assert not any(NEW_PASSWORD in str(e.data) + e.message for e in AuditEvent.objects.all())


def test_a_weak_password_is_refused_and_changes_nothing(olga: Any, monkeypatch: Any) -> None:
    before = AuditEvent.objects.count()
    with pytest.raises(CommandError, match="password refused"):
        user_cmd("set-password", "olga", "--password-file", "-", stdin="olga\n", monkeypatch=monkeypatch)
    olga.refresh_from_db()
    assert olga.check_password(PASSWORD)
    assert AuditEvent.objects.count() == before


def test_set_role_gives_exactly_that_role_and_audits_old_and_new(olga: Any) -> None:
    user_cmd("set-role", "olga", "--role", "admin", "--actor", "cli:lead")
    olga = get_user_model().objects.get(username="olga")
    assert user_roles(olga) == {"admin"} and olga.is_staff
    (event,) = events("role_set")
    assert (event.actor, event.data["old"], event.data["new"]) == ("cli:lead", ["ops"], ["admin"])

    user_cmd("set-role", "olga", "--role", "admin")  # already so: nothing to record
    assert len(events("role_set")) == 1


def test_disable_refuses_login_and_the_open_session_then_enable_restores(client: Any, olga: Any) -> None:
    client.force_login(olga)
    assert client.get("/console").status_code == 200

    user_cmd("disable", "olga")

    assert client.get("/console").status_code == 302
    assert client.post("/accounts/login/", {"username": "olga", "password": PASSWORD}).status_code == 200
    user_cmd("enable", "olga")
    assert client.post("/accounts/login/", {"username": "olga", "password": PASSWORD}).status_code == 302
    assert [e.data["action"] for e in AuditEvent.objects.filter(kind="user_changed").order_by("id")] == [
        "created",
        "disabled",
        "enabled",
    ]


def test_list_shows_people_roles_and_state_but_no_api_key_users(olga: Any) -> None:
    apikey_create(name="ci", role="ops", created_by="test")
    user_cmd("disable", "olga")
    out = user_cmd("list")
    lines = out.splitlines()
    assert lines[0].split() == ["user", "roles", "state", "login", "last", "login"]
    assert lines[1].split()[:4] == ["olga", "ops", "disabled", "local"]
    assert "apikey:ci" not in out
    assert "pbkdf2" not in out


@pytest.mark.parametrize(
    "args",
    [["set-role", "nobody", "--role", "ops"], ["disable", "nobody"], ["set-role", "apikey:ci", "--role", "admin"]],
)
def test_unknown_users_and_api_key_users_are_refused_and_nothing_is_audited(args: list[str]) -> None:
    apikey_create(name="ci", role="ops", created_by="test")
    before = AuditEvent.objects.count()
    with pytest.raises(CommandError):
        user_cmd(*args)
    assert AuditEvent.objects.count() == before
    assert user_roles(get_user_model().objects.get(username="apikey:ci")) == {"ops"}


def _read_until(fd: int, text: bytes, seen: bytearray, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never saw {text!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            assert chunk, f"terminal closed before {text!r}: {bytes(seen)!r}"
            seen.extend(chunk)


def test_prompted_password_is_never_echoed(tmp_path: Path) -> None:
    """Typed on a real terminal (a pseudo-terminal), the password does not appear on it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOHEAL_", "DJANGO_", "DATABASE_URL"))}
    env["AUTOHEAL_DATA_DIR"] = str(tmp_path)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    subprocess.run(
        [*manage, "autoheal_user", "create", "olga", "--role", "ops", "--password-file", "-"],
        cwd=ROOT,
        env=env,
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=120,
    )
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*manage, "autoheal_user", "set-password", "olga"],
        cwd=ROOT,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,  # the pseudo-terminal becomes its controlling terminal, as for a person
    )
    os.close(follower)
    seen = bytearray()
    try:
        _read_until(leader, b"Password: ", seen)
        os.write(leader, NEW_PASSWORD.encode() + b"\n")
        _read_until(leader, b"Password (again): ", seen)
        os.write(leader, NEW_PASSWORD.encode() + b"\n")
        _read_until(leader, b"sessions have ended", seen)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    assert NEW_PASSWORD.encode() not in seen
    check = subprocess.run(
        [
            *manage,
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model as g; "
            f"print(g().objects.get(username='olga').check_password({NEW_PASSWORD!r}))",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.stdout.strip().splitlines()[-1] == "True", check.stdout + check.stderr
