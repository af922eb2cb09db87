"""Admin: policies are edited here (validated and audited by the services); alerts and jobs are read-only."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from autoheal_site.admin_base import ReadOnlyAdmin
from autoheal_site.text import visible
from remediation.matchers import MatcherError
from remediation.models import Alert, Job, Policy
from remediation.payload import PayloadError
from remediation.policies import policy_delete, policy_save
from remediation.policy_review import policy_history, policy_try
from remediation.policy_schema import FIELDS, PolicyError, policy_validate
from remediation.targets import TemplateError


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


class PolicyTryForm(forms.Form):
    """A pasted Alertmanager webhook body for "try this policy"."""

    payload = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 16, "cols": 100, "spellcheck": "false"}),
        help_text="An Alertmanager webhook v4 JSON body, as Alertmanager would POST it to /alert.",
    )

    def clean_payload(self) -> Any:
        text = self.cleaned_data["payload"]
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"This is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
            ) from None
        if not isinstance(payload, dict):
            raise forms.ValidationError("Paste the whole webhook body: a JSON object with an alerts list.")
        return payload


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    """Saving and deleting go through the services, which audit ``policy_changed`` with a diff."""

    form = PolicyForm
    list_display = ["name", "enabled", "action", "target", "priority", "dry_run", "cooldown_seconds", "updated_at"]
    list_filter = ["enabled", "action", "dry_run"]
    search_fields = ["name", "description"]
    ordering = ["priority", "name"]
    change_form_template = "admin/remediation/policy/change_form.html"

    def get_urls(self) -> list[URLPattern]:
        try_url = path(
            "<path:object_id>/try/", self.admin_site.admin_view(self.try_view), name="remediation_policy_try"
        )
        return [try_url, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        policy = self.get_object(request, unquote(object_id))
        history = policy_history(policy=policy) if policy is not None else []
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "policy_history": history})

    def try_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Run a pasted payload through the simulator (touching nothing) and show each decision."""
        policy = self.get_object(request, unquote(object_id))
        if policy is None:
            raise Http404(f"There is no policy with id {object_id}.")
        if not self.has_view_or_change_permission(request, policy):
            raise PermissionDenied
        form = PolicyTryForm(request.POST if request.method == "POST" else None)
        trial, error = None, ""
        if form.is_bound and form.is_valid():
            try:
                trial = policy_try(policy=policy, payload=form.cleaned_data["payload"])
            except PayloadError as exc:
                error = f"This is not an Alertmanager webhook v4 payload: {exc}"
            except (MatcherError, TemplateError) as exc:
                error = f"The saved policy no longer parses; fix it first: {exc}"
        context = {
            **self.admin_site.each_context(request),
            "title": f"Try policy {policy.name}",
            "opts": self.opts,
            "original": policy,
            "form": form,
            "trial": trial,
            "error": error,
        }
        return TemplateResponse(
            request, "admin/remediation/policy/try.html", context, status=400 if form.is_bound and not trial else 200
        )

    def save_model(self, request: HttpRequest, obj: Policy, form: Any, change: bool) -> None:
        assert form.validated is not None
        saved = policy_save(policy_data=form.validated, actor=request.user.get_username(), instance=obj, source="admin")
        obj.pk = saved.policy.pk

    def delete_model(self, request: HttpRequest, obj: Policy) -> None:
        policy_delete(policy=obj, actor=request.user.get_username(), source="admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Policy]) -> None:
        for policy in queryset:
            policy_delete(policy=policy, actor=request.user.get_username(), source="admin")


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    """Incidents as received; changed only by intake and the workers."""

    list_display = [
        "shown_alertname",
        "shown_fingerprint",
        "status",
        "starts_at",
        "deliveries",
        "last_received_at",
        "source",
    ]
    list_filter = ["status", "source"]
    search_fields = ["alertname", "fingerprint"]
    date_hierarchy = "received_at"
    exclude = ["alertname", "fingerprint", "labels", "annotations", "generator_url"]
    readonly_fields = [
        "shown_alertname",
        "shown_fingerprint",
        "shown_labels",
        "shown_annotations",
        "shown_generator_url",
    ]

    @admin.display(description="alertname", ordering="alertname")
    def shown_alertname(self, obj: Alert) -> str:
        return visible(obj.alertname)

    @admin.display(description="fingerprint", ordering="fingerprint")
    def shown_fingerprint(self, obj: Alert) -> str:
        return visible(obj.fingerprint)

    @admin.display(description="labels")
    def shown_labels(self, obj: Alert) -> str:
        return visible(json.dumps(obj.labels, sort_keys=True, ensure_ascii=False))

    @admin.display(description="annotations")
    def shown_annotations(self, obj: Alert) -> str:
        return visible(json.dumps(obj.annotations, sort_keys=True, ensure_ascii=False))

    @admin.display(description="generator URL")
    def shown_generator_url(self, obj: Alert) -> str:
        return visible(obj.generator_url)


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    """Remediation jobs; their life is the workers' business."""

    list_display = [
        "id",
        "policy_name",
        "action",
        "shown_target",
        "state",
        "attempt",
        "dry_run",
        "queued_at",
        "finished_at",
    ]
    list_filter = ["state", "action", "dry_run"]
    search_fields = ["policy_name", "target"]
    list_select_related = ["alert"]

    @admin.display(description="target", ordering="target")
    def shown_target(self, obj: Job) -> str:
        return visible(obj.target)
