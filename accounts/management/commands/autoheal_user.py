"""manage.py autoheal_user create NAME --role ops|admin [--password-file FILE|-]

A local account for the embedded login (no OpenID provider). The password is prompted for, or
read from a file (``-`` for stdin) so scripts never put it on a command line.
"""

from __future__ import annotations

import getpass
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.roles import ROLES
from accounts.services import AccountError, local_user_create


class Command(BaseCommand):
    help = "Create a local user in the ops or admin role."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a user")
        create.add_argument("username")
        create.add_argument("--role", required=True, choices=ROLES)
        create.add_argument("--password-file", help="read the password from this file, or '-' for stdin")

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
        password = self._password(options.get("password_file"))
        try:
            user = local_user_create(username=options["username"], role=options["role"], password=password)
        except AccountError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"user {user.get_username()} created with role {options['role']}")
