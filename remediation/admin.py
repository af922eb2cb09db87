"""Admin: policies are edited here (validated and audited by the services); alerts and jobs are read-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from remediation.models import Alert, Job, Policy
from remediation.policy_schema import FIELDS, PolicyError, policy_validate
from remediation.services import policy_delete, policy_save


class PolicyForm(forms.ModelForm):
    """The policy form: one matcher per line; every field checked by ``policy_validate``."""

    matchers = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text='One Alertmanager matcher per line, e.g. alertname="ContainerUnhealthy" or severity=~"critical|page".',
    )

    class Meta:
        model = Policy
        fields = list(FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and not self.is_bound:
            self.initial["matchers"] = "\n".join(self.instance.matchers)
        self.validated: dict[str, Any] | None = None

    def clean_matchers(self) -> list[str]:
        text = self.cleaned_data.get("matchers") or ""
        return [line.strip() for line in text.splitlines() if line.strip()]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        data = {name: cleaned.get(name) for name in FIELDS}
        if data["params"] is None:
            data["params"] = {}
        try:
            self.validated = policy_validate(data)
        except PolicyError as exc:
            for field, problem in exc.errors.items():
                self.add_error(field if field in self.fields else None, problem)
            return cleaned
        cleaned.update(self.validated)
        return cleaned


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    """Saving and deleting go through the services, which audit ``policy_changed`` with a diff."""

    form = PolicyForm
    list_display = ["name", "enabled", "action", "target", "priority", "dry_run", "cooldown_seconds", "updated_at"]
    list_filter = ["enabled", "action", "dry_run"]
    search_fields = ["name", "description"]
    ordering = ["priority", "name"]

    def save_model(self, request: HttpRequest, obj: Policy, form: Any, change: bool) -> None:
        assert form.validated is not None
        saved = policy_save(policy_data=form.validated, actor=request.user.get_username(), instance=obj, source="admin")
        obj.pk = saved.policy.pk

    def delete_model(self, request: HttpRequest, obj: Policy) -> None:
        policy_delete(policy=obj, actor=request.user.get_username(), source="admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Policy]) -> None:
        for policy in queryset:
            policy_delete(policy=policy, actor=request.user.get_username(), source="admin")


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(_ReadOnlyAdmin):
    """Incidents as received; changed only by intake and the workers."""

    list_display = ["alertname", "fingerprint", "status", "starts_at", "deliveries", "last_received_at", "source"]
    list_filter = ["status", "source"]
    search_fields = ["alertname", "fingerprint"]
    date_hierarchy = "received_at"


@admin.register(Job)
class JobAdmin(_ReadOnlyAdmin):
    """Remediation jobs; their life is the workers' business."""

    list_display = ["id", "policy_name", "action", "target", "state", "attempt", "dry_run", "queued_at", "finished_at"]
    list_filter = ["state", "action", "dry_run"]
    search_fields = ["policy_name", "target"]
    list_select_related = ["alert"]
