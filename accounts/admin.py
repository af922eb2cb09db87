"""Read-only admin pages for API keys and identities (keys are created with autoheal_apikey)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from accounts.models import ApiKey, Identity


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(_ReadOnly):
    list_display = ["name", "role", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    exclude = ["salt", "key_hash"]


@admin.register(Identity)
class IdentityAdmin(_ReadOnly):
    list_display = ["sub", "issuer", "user", "roles", "last_seen_at"]
