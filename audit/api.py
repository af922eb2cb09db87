"""``GET /audit``: the audit trail, newest first, filtered, with cursor pagination."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse, QueryDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.roles import IsOps
from audit.filters import DEFAULT_N, MAX_N, ParameterError, check_parameters, encode_cursor, filterset_for, page_params
from audit.models import ALL_KINDS
from audit.selectors import audit_page
from autoheal_site.text import json_line_safe

_EVENT = inline_serializer(
    name="AuditEvent",
    fields={
        "id": serializers.IntegerField(),
        "ts": serializers.DateTimeField(help_text="UTC, ISO 8601"),
        "kind": serializers.ChoiceField(choices=ALL_KINDS),
        "alertname": serializers.CharField(),
        "fingerprint": serializers.CharField(),
        "policy": serializers.CharField(),
        "target": serializers.CharField(),
        "message": serializers.CharField(),
        "actor": serializers.CharField(),
        "data": serializers.DictField(),
    },
)
_PAGE = inline_serializer(
    name="AuditPage",
    fields={
        "events": serializers.ListField(child=_EVENT),
        "count": serializers.IntegerField(help_text="Events in this answer (no total is computed)."),
        "next": serializers.URLField(allow_null=True, help_text="The next (older) page, or null at the end."),
    },
)
_ERROR = inline_serializer(
    name="ParameterError",
    fields={"error": serializers.CharField(), "parameter": serializers.CharField()},
)
_TIME = "ISO 8601 time (UTC if it has no zone) or a duration back from now: 30s, 15m, 2h, 7d."


class AuditView(APIView):
    """The audit trail for operators (ops and admin roles)."""

    permission_classes = [IsOps]

    @extend_schema(
        operation_id="audit_list",
        summary="Audit events, newest first",
        description=(
            "Filters combine with AND. A `contains` search that the index cannot answer quickly "
            "reads a bounded window of events per answer: such an answer may hold fewer than `n` "
            "events (even none) and still have a `next` link; follow it to search further back."
        ),
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, description="Comma list of: " + ", ".join(ALL_KINDS)),
            OpenApiParameter("alertname", OpenApiTypes.STR, description="Exact alert name."),
            OpenApiParameter("since", OpenApiTypes.STR, description="Events at or after this time. " + _TIME),
            OpenApiParameter("until", OpenApiTypes.STR, description="Events at or before this time. " + _TIME),
            OpenApiParameter(
                "contains",
                OpenApiTypes.STR,
                description="Case-insensitive substring of alertname, target, message or labels (name=value).",
            ),
            OpenApiParameter(
                "n", OpenApiTypes.INT, description=f"Events per answer, 1 to {MAX_N} (default {DEFAULT_N})."
            ),
            OpenApiParameter("cursor", OpenApiTypes.STR, description="Opaque; taken from a previous answer's `next`."),
        ],
        responses={
            200: _PAGE,
            400: OpenApiResponse(_ERROR, description="A parameter has a bad value; `parameter` names it."),
            403: OpenApiResponse(description="Not logged in, or without the ops or admin role."),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        query = request.query_params
        try:
            check_parameters(query)
            page_spec = page_params(query)
            filterset = filterset_for(query)
            page = audit_page(filterset=filterset, page=page_spec)
        except ParameterError as exc:
            return Response({"error": exc.message, "parameter": exc.parameter}, status=400)
        # The events arrive as JSON text (written by the database on PostgreSQL): the answer is
        # assembled around them rather than decoded and encoded again.
        tail = json.dumps({"count": len(page.events), "next": self._next_url(request, page.next_before)})
        # DEL, C1 controls and U+2028/U+2029 from alert labels go out escaped too (same JSON value).
        body = json_line_safe('{"events":[' + ",".join(page.events) + "]," + tail[1:])
        return HttpResponse(body.encode("utf-8"), content_type="application/json")

    @staticmethod
    def _next_url(request: Request, before_id: int | None) -> str | None:
        if before_id is None:
            return None
        params: Any = QueryDict(mutable=True)
        params.update(request.query_params)
        params["cursor"] = encode_cursor(before_id)
        return request.build_absolute_uri(request.path) + "?" + params.urlencode()
