"""The fleet in the admin: agents (deletable once a host is retired) and tokens, read-only.

Tokens are created and revoked with ``manage.py autoheal_agent_token`` so that each change is
audited; the admin only shows them.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from fleet.models import Agent, AgentToken


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("host", "version", "engine", "last_seen", "inventory_at")
    readonly_fields = ("host", "version", "engine", "first_seen", "last_seen", "inventory", "inventory_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AgentToken)
class AgentTokenAdmin(admin.ModelAdmin):
    list_display = ("id", "host", "prefix", "created_at", "created_by", "last_used_at", "revoked_at")
    readonly_fields = ("host", "prefix", "created_at", "created_by", "last_used_at", "revoked_at")
    exclude = ("token_hash",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
