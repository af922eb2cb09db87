"""Agent tokens: created (shown once), listed, revoked; each change audited. Only hashes are kept."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from fleet.models import AgentToken

TOKEN_PREFIX = "ahag_"  # noqa: S105 - a public marker that tells agent tokens apart, not a secret
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class TokenError(ValueError):
    """A token request that cannot be applied (bad host name, unknown token)."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def host_check(host: str) -> str:
    """A host name as the fleet accepts it: 1 to 100 letters, digits, dots, hyphens, underscores."""
    if not isinstance(host, str) or not HOST_NAME.match(host):
        raise TokenError(
            "the host name must be 1 to 100 letters, digits, '.', '-' or '_', starting with a letter or digit"
        )
    return host


@dataclass(frozen=True)
class CreatedToken:
    """The new row and the token itself, which exists nowhere else once this is printed."""

    row: AgentToken
    token: str


def agent_token_create(*, host: str, actor: str) -> CreatedToken:
    """A new token for one host's agent; audited as ``agent_token_changed`` (never the token)."""
    host = host_check(host)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        row = AgentToken.objects.create(
            host=host, prefix=token[: len(TOKEN_PREFIX) + 6], token_hash=token_hash(token), created_by=actor[:150]
        )
        audit_record(
            kind="agent_token_changed",
            actor=actor,
            message=f"agent token {row.prefix}… created for host {host}",
            data={"operation": "created", "host": host, "token_id": row.pk, "prefix": row.prefix},
        )
    return CreatedToken(row=row, token=token)


def agent_token_revoke(*, token_id: int, actor: str) -> AgentToken:
    """Revoke a token: its agent is refused (401) from the next request on."""
    with transaction.atomic():
        row = AgentToken.objects.select_for_update().filter(pk=token_id).first()
        if row is None:
            raise TokenError(f"no agent token has the id {token_id}")
        if row.revoked_at is None:
            row.revoked_at = timezone.now()
            row.save(update_fields=["revoked_at"])
            audit_record(
                kind="agent_token_changed",
                actor=actor,
                message=f"agent token {row.prefix}… of host {row.host} revoked",
                data={"operation": "revoked", "host": row.host, "token_id": row.pk, "prefix": row.prefix},
            )
    return row


def agent_token_authenticate(token: str) -> AgentToken | None:
    """The live token row for a presented token, or None (unknown or revoked)."""
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    row = AgentToken.objects.filter(token_hash=token_hash(token), revoked_at=None).first()
    if row is not None:
        AgentToken.objects.filter(pk=row.pk).update(last_used_at=timezone.now())
    return row
