"""Small guards that sit in front of views the accounts app does not own."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

METRICS_PATH = "/metrics"


class MetricsTokenMiddleware:
    """``/metrics`` needs ``Authorization: Bearer <AUTOHEAL_METRICS_TOKEN>`` when that is set.

    Without the setting the exposition is open, as INTERFACE.md allows: it carries counts and
    alert names, no secrets. Prometheus sends the token with ``authorization.credentials_file``.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        expected = getattr(settings, "AUTOHEAL_METRICS_TOKEN", "")
        if expected and request.path == METRICS_PATH:
            scheme, _, presented = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected.encode()):
                response = JsonResponse({"error": "the metrics need the metrics bearer token"}, status=401)
                response["WWW-Authenticate"] = 'Bearer realm="autoheal-metrics"'
                return response
        return self.get_response(request)


class MalformedRequestMiddleware:
    """Answer 400 to a request whose ``Content-Length`` is not a non-negative integer.

    Django itself treats such a header as 0, but middleware further in (the request metrics)
    would fail with a 500 on it: garbage in a header must never become a server error. A header
    spelt ``Content_Length`` arrives as ``HTTP_CONTENT_LENGTH`` and is read the same way.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for name in ("CONTENT_LENGTH", "HTTP_CONTENT_LENGTH"):
            value = request.META.get(name)
            if value not in (None, "") and not (
                isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()
            ):
                return JsonResponse({"error": "the Content-Length header must be a non-negative integer"}, status=400)
        return self.get_response(request)
