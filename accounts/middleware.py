"""Small guards that sit in front of views the accounts app does not own."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from accounts.ratelimit import peer_is_trusted_proxy

METRICS_PATH = "/metrics"


class UntrustedProxyHeadersMiddleware:
    """Drop ``X-Forwarded-Proto`` unless the direct peer is in ``AUTOHEAL_TRUSTED_PROXIES``.

    Django believes ``SECURE_PROXY_SSL_HEADER`` from any peer; a client reaching the web process
    directly could otherwise claim HTTPS and receive secure-only cookies over plain HTTP. It runs
    before SecurityMiddleware, the first reader of ``request.is_secure()``.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "HTTP_X_FORWARDED_PROTO" in request.META and not peer_is_trusted_proxy(request):
            del request.META["HTTP_X_FORWARDED_PROTO"]
        return self.get_response(request)


class MetricsTokenMiddleware:
    """``/metrics`` needs ``Authorization: Bearer <AUTOHEAL_METRICS_TOKEN>`` when that is set.

    Without the setting the exposition is open, as docs/interface.md allows: it carries counts and
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
    """Header hygiene in front of everything that reads ``Content-Length``.

    - A header spelt ``Content_Length`` (or ``Content_Type``) arrives as ``HTTP_CONTENT_LENGTH``
      and Django would show it as ``Content-Length``; a real one is always ``CONTENT_LENGTH``. The
      underscore spelling is only ever a spoof, so it is dropped, as nginx and gunicorn do.
    - A real ``Content-Length`` that is not a non-negative integer gets a 400: Django reads it as
      0, but the request metrics would fail on it with a 500.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for spoof in ("HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"):
            if spoof in request.META:
                del request.META[spoof]
                request.__dict__.pop("headers", None)  # HttpRequest.headers is cached from META
        value = str(request.META.get("CONTENT_LENGTH") or "0").strip()
        if not (value.isascii() and value.isdigit()):
            return JsonResponse({"error": "the Content-Length header must be a non-negative integer"}, status=400)
        return self.get_response(request)
