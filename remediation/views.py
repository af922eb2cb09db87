"""Public probes: the health JSON and readiness."""

from __future__ import annotations

from django.db import connection
from django.db.utils import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from remediation import selectors


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    try:
        return JsonResponse(selectors.health_status())
    except DatabaseError:
        return JsonResponse({"service": "autoheal", "error": "database unavailable"}, status=503)


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return JsonResponse({"ready": False, "error": "database unavailable"}, status=503)
    return JsonResponse({"ready": True})
