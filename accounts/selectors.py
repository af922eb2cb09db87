"""Reads of the accounts app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model

from accounts.roles import ADMIN, ROLES


@dataclass(frozen=True)
class UserRow:
    """One person's account as `autoheal_user list` shows it."""

    username: str
    roles: tuple[str, ...]
    active: bool
    single_sign_on: bool
    last_login: datetime | None


def users_list() -> list[UserRow]:
    """Every user except API keys' service users (autoheal_apikey lists those), by name."""
    users = (
        get_user_model()
        .objects.exclude(username__startswith="apikey:")
        .prefetch_related("groups", "identities")
        .order_by("username")
    )
    rows = []
    for user in users:
        roles = {g.name for g in user.groups.all() if g.name in ROLES}
        if user.is_superuser:
            roles.add(ADMIN)
        rows.append(
            UserRow(
                username=user.get_username(),
                roles=tuple(r for r in ROLES if r in roles),
                active=user.is_active,
                single_sign_on=bool(user.identities.all()),
                last_login=user.last_login,
            )
        )
    return rows
