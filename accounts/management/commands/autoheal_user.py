"""manage.py autoheal_user: local accounts for the embedded login (no OpenID provider).

    create NAME --role ops|admin [--password-file FILE|-]
    set-password NAME [--password-file FILE|-]
    set-role NAME --role ops|admin
    disable NAME | enable NAME
    list

A password is prompted for without echo, or read from a file (``-`` for stdin), so it is never on
a command line. Every change is audited as ``user_changed`` with the actor (``--actor``, default
``cli:<os user>``); the password never is.
"""

from __future__ import annotations

import getpass
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.roles import ROLES
from accounts.selectors import users_list
from accounts.services import (
    AccountError,
    local_user_create,
    local_user_set_active,
    local_user_set_password,
    local_user_set_role,
)


def _default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (common in containers)
        return "cli"


class Command(BaseCommand):
    help = "Create, list and change local users (password, role, disable/enable); every change audited."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)

        def command(name: str, help_text: str, *, password: bool = False, role: bool = False) -> None:
            cmd = sub.add_parser(name, help=help_text)
            cmd.add_argument("username")
            if role:
                cmd.add_argument("--role", required=True, choices=ROLES)
            if password:
                cmd.add_argument("--password-file", help="read the password from this file, or '-' for stdin")
            cmd.add_argument("--actor", default="", help="who to record in the audit trail (default: cli:<user>)")

        command("create", "create a user", password=True, role=True)
        command("set-password", "set a user's password (their sessions end)", password=True)
        command("set-role", "give a user exactly this role", role=True)
        command("disable", "refuse the user's logins and sessions from now on")
        command("enable", "allow a disabled user again")
        sub.add_parser("list", help="every user with roles, state and last login (never passwords)")

    def _password(self, source: str | None) -> str:
        if source == "-":
            return sys.stdin.readline().rstrip("\r\n")
        if source:
            try:
                with open(source, encoding="utf-8") as handle:
                    return handle.readline().rstrip("\r\n")
            except OSError as exc:
                raise CommandError(f"cannot read the password file: {exc.strerror}") from None
        first = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != first:
            raise CommandError("the two passwords differ")
        return first

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            self._list()
            return
        name = options["username"]
        actor = options.get("actor") or _default_actor()
        try:
            if action == "create":
                password = self._password(options.get("password_file"))
                local_user_create(username=name, role=options["role"], password=password, actor=actor)
                self.stdout.write(f"user {name} created with role {options['role']}")
            elif action == "set-password":
                password = self._password(options.get("password_file"))
                local_user_set_password(username=name, password=password, actor=actor)
                self.stdout.write(f"password of {name} set; their open sessions have ended")
            elif action == "set-role":
                local_user_set_role(username=name, role=options["role"], actor=actor)
                self.stdout.write(f"{name} now has the role {options['role']}")
            else:
                local_user_set_active(username=name, active=action == "enable", actor=actor)
                self.stdout.write(f"{name} {action}d")
        except AccountError as exc:
            raise CommandError(str(exc)) from None

    def _list(self) -> None:
        rows = users_list()
        if not rows:
            self.stdout.write("no users yet: manage.py autoheal_user create NAME --role ops|admin")
            return
        width = max(len("user"), *(len(r.username) for r in rows))
        self.stdout.write(f"{'user':<{width}}  {'roles':<9}  {'state':<8}  {'login':<6}  last login")
        for row in rows:
            roles = ",".join(row.roles) or "-"
            state = "active" if row.active else "disabled"
            login = "sso" if row.single_sign_on else "local"
            last = row.last_login.strftime("%Y-%m-%d %H:%M UTC") if row.last_login else "never"
            self.stdout.write(f"{row.username:<{width}}  {roles:<9}  {state:<8}  {login:<6}  {last}")
