"""The two roles: ``ops`` (read, ack) and ``admin`` (everything, including the switch).

A role is membership of the Django group of the same name, whether the user logged in locally,
through OIDC (groups synced from the roles claim at each login), or by API key or JWT.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission

OPS = "ops"
ADMIN = "admin"
ROLES = (OPS, ADMIN)


def user_roles(user: Any) -> set[str]:
    """The roles a user holds; empty for anonymous users and users with neither group."""
    if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return set()
    cached = getattr(user, "_autoheal_roles", None)
    if cached is not None:
        return set(cached)
    roles = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    if getattr(user, "is_superuser", False):
        roles.add(ADMIN)
    user._autoheal_roles = frozenset(roles)
    return roles


def is_ops(user: Any) -> bool:
    """Ops or admin: may read the audit, the stream and the console, and ack."""
    return bool(user_roles(user) & {OPS, ADMIN})


def is_admin(user: Any) -> bool:
    return ADMIN in user_roles(user)


class IsOps(BasePermission):
    """DRF permission: the ops or the admin role."""

    message = "This needs the ops or admin role."

    def has_permission(self, request: Any, view: Any) -> bool:
        return is_ops(request.user)


class OpsReadAdminWrite(BasePermission):
    """DRF permission: safe methods for ops and admin, changes for admin only."""

    message = "Reading needs the ops or admin role; changing needs admin."

    def has_permission(self, request: Any, view: Any) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return is_ops(request.user)
        return is_admin(request.user)
