"""manage.py autoheal_agent_token create|list|revoke: the per-host tokens of the fleet's agents."""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from fleet.models import AgentToken
from fleet.tokens import TokenError, agent_token_create, agent_token_revoke


class Command(BaseCommand):
    help = "Create (printed once), list or revoke the per-host tokens agents authenticate with."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="operation", required=True)
        create = sub.add_parser("create", help="create a token for one host and print it once")
        create.add_argument("--host", required=True)
        sub.add_parser("list", help="list tokens (id, host, prefix, created, last used, revoked)")
        revoke = sub.add_parser("revoke", help="revoke a token by its id")
        revoke.add_argument("token_id", type=int)
        for p in (create, revoke):
            p.add_argument("--actor", default="", help="who does this, for the audit trail (default: the OS user)")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = f"cli:{options.get('actor') or getpass.getuser()}"
        try:
            if options["operation"] == "create":
                created = agent_token_create(host=options["host"], actor=actor)
                self.stderr.write(
                    f"token {created.row.pk} for host {created.row.host}; it is shown only this once, store it now:"
                )
                self.stdout.write(created.token)
            elif options["operation"] == "revoke":
                row = agent_token_revoke(token_id=options["token_id"], actor=actor)
                self.stdout.write(f"token {row.pk} of host {row.host} revoked")
            else:
                for row in AgentToken.objects.all():
                    revoked = row.revoked_at.isoformat() if row.revoked_at else "-"
                    used = row.last_used_at.isoformat() if row.last_used_at else "never"
                    self.stdout.write(
                        f"{row.pk}\t{row.host}\t{row.prefix}…\tcreated {row.created_at.isoformat()}\t"
                        f"last used {used}\trevoked {revoked}"
                    )
        except TokenError as exc:
            raise CommandError(str(exc)) from None
