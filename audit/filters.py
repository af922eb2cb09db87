"""The /audit filters (django-filter), shared by the API and ``audit_export``.

Each filter is one documented parameter. A time bound becomes the id bound it is equivalent to
(timestamps never go backwards along the ids: ``audit_record_many`` and ``audit_import`` keep it
so), found with one top-1 read of the (ts, id) index; every page query then stays a backwards
range read of an index ending in id.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet, Value
from django.db.models.functions import StrIndex
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.models import ALL_KINDS, AuditEvent
from autoheal_site.env import parse_duration

DEFAULT_N = 200
MAX_N = 5000
MAX_TEXT = 200
PARAMETERS = ("kind", "alertname", "since", "until", "contains", "n", "cursor")


class ParameterError(ValueError):
    """A query parameter with a bad value; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


class KindListField(forms.CharField):
    """A comma list of audit kinds, each one of the vocabulary."""

    def clean(self, value: Any) -> list[str] | None:
        text = super().clean(value)
        if not text:
            return None
        kinds = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [kind for kind in kinds if kind not in ALL_KINDS]
        if unknown:
            raise forms.ValidationError(
                f"unknown kind {unknown[0][:40]!r}; known kinds: {', '.join(ALL_KINDS)}", code="invalid"
            )
        return list(dict.fromkeys(kinds))


class TimeBoundField(forms.CharField):
    """An ISO 8601 time (a time without a zone is UTC) or a duration back from now (30s, 15m, 2h, 7d)."""

    def clean(self, value: Any) -> datetime | None:
        text = super().clean(value)
        if not text:
            return None
        try:
            return timezone.now() - parse_duration(text)
        except ValueError:
            pass
        except OverflowError:
            # 999999999d or 10**20 s: a valid shape, but further back than any time there is.
            raise forms.ValidationError("the duration reaches back beyond year 1", code="out_of_range") from None
        try:
            parsed = parse_datetime(text.replace(" ", "+") if "T" in text else text)
        except ValueError:
            parsed = None
        if parsed is None:
            raise forms.ValidationError(
                "expected an ISO 8601 time like 2026-01-31T12:00:00Z or a duration like 30s, 15m, 2h, 7d",
                code="invalid",
            )
        try:
            # In UTC, as it is compared: 9999-12-31T23:59:59-23:59 is past the last representable time.
            return parsed.astimezone(UTC) if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)
        except OverflowError:
            raise forms.ValidationError("the time is outside years 1 to 9999 in UTC", code="out_of_range") from None


class KindFilter(django_filters.Filter):
    field_class = KindListField


class TimeBoundFilter(django_filters.Filter):
    field_class = TimeBoundField


class AuditEventFilter(django_filters.FilterSet):
    """The filters of ``GET /audit`` and ``manage.py audit_export``."""

    kind = KindFilter(method="filter_kind", help_text="Comma list of audit kinds.")
    alertname = django_filters.CharFilter(field_name="alertname", max_length=MAX_TEXT, help_text="Exact alert name.")
    since = TimeBoundFilter(method="filter_since", help_text="Events at or after: ISO 8601, or 30s/15m/2h/7d ago.")
    until = TimeBoundFilter(method="filter_until", help_text="Events at or before: ISO 8601, or 30s/15m/2h/7d ago.")
    contains = django_filters.CharFilter(
        method="filter_contains",
        max_length=MAX_TEXT,
        help_text="Case-insensitive text in alertname, target, message or labels.",
    )

    class Meta:
        model = AuditEvent
        fields = ["kind", "alertname", "since", "until", "contains"]

    def __init__(self, *args: Any, scan: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # ``scan``: answer ``contains`` without the trigram index (see audit.selectors).
        self.scan = scan
        # The id range the time bounds imply; the cursor and the search window stay inside it.
        self.lowest_id: int | None = None
        self.highest_id: int | None = None
        self.empty = False
        self.searching = False

    def filter_kind(self, queryset: QuerySet[AuditEvent], name: str, value: list[str] | None) -> QuerySet[AuditEvent]:
        if not value:
            return queryset
        return queryset.filter(kind=value[0]) if len(value) == 1 else queryset.filter(kind__in=value)

    def filter_since(self, queryset: QuerySet[AuditEvent], name: str, value: datetime | None) -> QuerySet[AuditEvent]:
        if value is None:
            return queryset
        first = AuditEvent.objects.filter(ts__gte=value).order_by("ts", "id").values_list("id", flat=True).first()
        if first is None:
            self.empty = True
            return queryset.none()
        self.lowest_id = first
        # Timestamps never go backwards along the ids, so "at or after since" is exactly "from
        # this id on". Repeating the ts condition would only mislead the planner: it would take
        # the two for independent and expect a handful of rows.
        return queryset.filter(id__gte=first)

    def filter_until(self, queryset: QuerySet[AuditEvent], name: str, value: datetime | None) -> QuerySet[AuditEvent]:
        if value is None:
            return queryset
        last = AuditEvent.objects.filter(ts__lte=value).order_by("-ts", "-id").values_list("id", flat=True).first()
        if last is None:
            self.empty = True
            return queryset.none()
        self.highest_id = last
        return queryset.filter(id__lte=last)

    def filter_contains(self, queryset: QuerySet[AuditEvent], name: str, value: str) -> QuerySet[AuditEvent]:
        if not value:
            return queryset
        self.searching = True
        if self.scan:
            # Position search: no index can serve it, so PostgreSQL reads the id range it is
            # given (the search window) instead of rechecking every trigram candidate.
            return queryset.alias(found=StrIndex("search", Value(value.lower()))).filter(found__gt=0)
        # ``search`` is stored lowercased, so a plain LIKE is case-insensitive and can use the
        # trigram index (ILIKE on an expression could not).
        return queryset.filter(search__contains=value.lower())


@dataclass(frozen=True)
class PageParams:
    """``n`` and ``cursor`` of a request, validated."""

    n: int
    before_id: int | None


def encode_cursor(before_id: int) -> str:
    """An opaque cursor: continue with the events whose id is below ``before_id``."""
    return base64.urlsafe_b64encode(f"v1:{before_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        version, _, number = text.partition(":")
        before_id = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ParameterError("cursor", "not a cursor given by a previous answer's next link") from None
    if version != "v1" or before_id <= 0:
        raise ParameterError("cursor", "not a cursor given by a previous answer's next link")
    return before_id


def page_params(query: Any) -> PageParams:
    """Validate ``n`` (1..5000, default 200) and ``cursor``; raise ParameterError naming the bad one."""
    raw_n = query.get("n")
    if raw_n in (None, ""):
        n = DEFAULT_N
    else:
        try:
            n = int(raw_n)
        except ValueError:
            raise ParameterError("n", f"n must be a whole number from 1 to {MAX_N}") from None
        if not 1 <= n <= MAX_N:
            raise ParameterError("n", f"n must be a whole number from 1 to {MAX_N}")
    cursor = query.get("cursor")
    return PageParams(n=n, before_id=decode_cursor(cursor) if cursor else None)


def check_parameters(query: Any) -> None:
    """Refuse parameters that are not documented: a typo must not silently widen the answer."""
    for name in query:
        if name not in PARAMETERS:
            raise ParameterError(name, f"unknown parameter {name[:40]!r}; known: {', '.join(PARAMETERS)}")


def filterset_for(query: Any, *, scan: bool = False) -> AuditEventFilter:
    """A validated filter set for ``query``, or ParameterError naming the first bad parameter."""
    filterset = AuditEventFilter(query, queryset=AuditEvent.objects.all(), scan=scan)
    if not filterset.is_valid():
        for name in AuditEventFilter.Meta.fields:
            if name in filterset.errors:
                raise ParameterError(name, f"{name}: {' '.join(filterset.errors[name])}")
        name, messages = next(iter(filterset.errors.items()))
        raise ParameterError(name, f"{name}: {' '.join(messages)}")
    return filterset
