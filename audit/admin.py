"""The audit trail in the admin: read-only, and cheap on millions of rows."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet, Value
from django.db.models.functions import StrIndex
from django.http import HttpRequest
from django.utils.functional import cached_property

from audit.filters import ParameterError, filterset_for
from audit.models import AuditAnchor, AuditEvent, AuditExport
from audit.selectors import within_budget
from autoheal_site.admin_base import ReadOnlyAdmin
from autoheal_site.text import visible

# The admin's text search: the newest ADMIN_SEARCH_LIMIT matches when the trigram index finds them
# within SEARCH_BUDGET_MS, otherwise the matches among the newest ADMIN_SEARCH_WINDOW events (the
# /audit API and audit_export search everything, page by page).
ADMIN_SEARCH_LIMIT = 1000
ADMIN_SEARCH_WINDOW = 50_000
SEARCH_BUDGET_MS = 50
# An exact count of a filtered list that takes longer than this falls back to PostgreSQL's estimate.
COUNT_TIMEOUT_MS = 50


class EstimatingPaginator(Paginator):
    """A paginator whose count is exact when cheap and PostgreSQL's estimate otherwise.

    A ``COUNT(*)`` over a million rows costs hundreds of milliseconds on every page view; the
    page links only need an order of magnitude.
    """

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if connection.vendor != "postgresql" or not isinstance(queryset, QuerySet):
            return super().count
        if not queryset.query.where:
            # The whole trail: counting it exactly is the slowest thing a page could do.
            return _estimate(queryset)
        total = within_budget(queryset.count, milliseconds=COUNT_TIMEOUT_MS)
        return total if total is not None else _estimate(queryset)


def _estimate(queryset: QuerySet[Any]) -> int:
    sql, params = queryset.order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


# The /audit API's filters, accepted by the admin's list under the same names and meanings.
API_FILTERS = ("kind", "alertname", "since", "until", "contains")


class ApiFilterChangeList(ChangeList):
    """The admin's list, also filtered by the /audit API's parameters (validated the same way)."""

    def get_filters_params(self, params: Any = None) -> Any:
        lookup_params = super().get_filters_params(params)
        for name in API_FILTERS:
            lookup_params.pop(name, None)
        return lookup_params

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[AuditEvent]:
        queryset = super().get_queryset(request, exclude_parameters)
        query = {name: self.params[name] for name in API_FILTERS if self.params.get(name)}
        if not query:
            return queryset
        try:
            # A position scan within the window: bounded, where the trigram index could recheck
            # most of the table for a rare string made of common trigrams.
            filterset = filterset_for(query, scan=bool(query.get("contains")))
        except ParameterError as exc:
            messages.error(request, f"Filter not applied: {exc.message}")
            return queryset
        if query.get("contains"):
            newest = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
            queryset = queryset.filter(id__gt=newest - ADMIN_SEARCH_WINDOW)
        return filterset.filter_queryset(queryset)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "ts", "kind", "shown_alertname", "shown_target", "policy", "shown_actor", "short_message")
    list_filter = ("kind", ("ts", admin.DateFieldListFilter))
    search_fields = ("search",)
    search_help_text = (
        "Case-insensitive text in alertname, target, message or labels: the newest "
        f"{ADMIN_SEARCH_LIMIT:,} matches, or for a slow search those among the newest {ADMIN_SEARCH_WINDOW:,} events."
    )
    show_full_result_count = False
    paginator = EstimatingPaginator
    list_per_page = 100
    date_hierarchy = None
    ordering = ("-id",)
    exclude = ("search",)
    readonly_fields = (
        "id",
        "ts",
        "kind",
        "shown_alertname",
        "fingerprint",
        "policy",
        "shown_target",
        "shown_message",
        "shown_actor",
        "pretty_data",
        "prev_hash",
        "hash",
    )
    fields = readonly_fields
    change_list_template = "admin/audit/auditevent/change_list.html"

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ApiFilterChangeList

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        values = {name: request.GET.get(name, "") for name in API_FILTERS}
        return super().changelist_view(request, {**(extra_context or {}), "api_filters": values})

    @admin.display(description="message")
    def short_message(self, obj: AuditEvent) -> str:
        return visible(obj.message if len(obj.message) <= 120 else obj.message[:119] + "…")

    @admin.display(description="data")
    def pretty_data(self, obj: AuditEvent) -> str:
        # Line breaks of the indentation are kept; those inside values are escaped by json.dumps.
        return "\n".join(
            visible(line) for line in json.dumps(obj.data, indent=2, sort_keys=True, ensure_ascii=False).split("\n")
        )

    @admin.display(description="alertname", ordering="alertname")
    def shown_alertname(self, obj: AuditEvent) -> str:
        return visible(obj.alertname)

    @admin.display(description="target", ordering="target")
    def shown_target(self, obj: AuditEvent) -> str:
        return visible(obj.target)

    @admin.display(description="message")
    def shown_message(self, obj: AuditEvent) -> str:
        return visible(obj.message)

    @admin.display(description="actor")
    def shown_actor(self, obj: AuditEvent) -> str:
        return visible(obj.actor)

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        return super().get_queryset(request).defer("search")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent], search_term: str
    ) -> tuple[QuerySet[AuditEvent], bool]:
        term = search_term.strip().lower()
        if not term:
            return queryset, False
        # Bounded like the API's search: the trigram index gets a short budget to find the newest
        # matches anywhere; past it, a position scan of the newest events (a rare string made of
        # common trigrams must not make every page recheck most of the table).
        if connection.vendor == "postgresql" and SEARCH_BUDGET_MS > 0:
            found = within_budget(
                lambda: list(
                    AuditEvent.objects.filter(search__contains=term)
                    .order_by("-id")
                    .values_list("id", flat=True)[:ADMIN_SEARCH_LIMIT]
                ),
                milliseconds=SEARCH_BUDGET_MS,
            )
            if found is not None:
                return queryset.filter(id__in=found), False
        newest = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        window = queryset.filter(id__gt=newest - ADMIN_SEARCH_WINDOW)
        return window.alias(found=StrIndex("search", Value(term))).filter(found__gt=0), False


@admin.register(AuditExport)
class AuditExportAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "through_id", "events", "destination")


@admin.register(AuditAnchor)
class AuditAnchorAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "through_id", "through_ts", "removed", "forced")
