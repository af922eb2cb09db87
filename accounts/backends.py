"""Django admin permissions that follow the Autoheal roles instead of per-model permission rows."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import BaseBackend

from accounts.roles import is_admin

# The apps whose admin pages the admin role may use. Users, groups and sessions stay with
# superusers: roles come from the identity provider or the autoheal_user command, not from here.
ADMIN_ROLE_APPS = frozenset({"remediation", "audit", "dashboard", "accounts", "observability", "operations"})


class RolePermissionBackend(BaseBackend):
    """Grants the admin role every permission on Autoheal's own apps; authenticates nobody."""

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return is_admin(user_obj) and perm.partition(".")[0] in ADMIN_ROLE_APPS

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return is_admin(user_obj) and app_label in ADMIN_ROLE_APPS
