"""manage.py autoheal_apikey create --name N --role ops|admin | list | revoke N"""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import ApiKey
from accounts.roles import ROLES
from accounts.services import AccountError, apikey_create, apikey_revoke


def _operator() -> str:
    """Who ran the command, for the audit trail (the OS account; there is no web user here)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


class Command(BaseCommand):
    help = "Create, list and revoke API keys for scripts and CI (Authorization: Bearer <key>)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key and print it once")
        create.add_argument("--name", required=True)
        create.add_argument("--role", required=True, choices=ROLES)
        sub.add_parser("list", help="list keys (never the keys themselves)")
        revoke = sub.add_parser("revoke", help="revoke a key at once")
        revoke.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["action"] == "create":
                key, secret = apikey_create(name=options["name"], role=options["role"], created_by=_operator())
                self.stderr.write(f"API key {key.name} ({key.role}) created. It is shown once; store it now:")
                self.stdout.write(secret)
            elif options["action"] == "revoke":
                key = apikey_revoke(name=options["name"], actor=_operator())
                self.stdout.write(f"API key {key.name} revoked")
            else:
                self._list()
        except AccountError as exc:
            raise CommandError(str(exc)) from None

    def _list(self) -> None:
        rows = [("NAME", "ROLE", "PREFIX", "CREATED", "LAST USED", "REVOKED")]
        for key in ApiKey.objects.all():
            rows.append(
                (
                    key.name,
                    key.role,
                    f"ahk_{key.prefix}",
                    key.created_at.strftime("%Y-%m-%d %H:%M"),
                    key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "-",
                    key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
