"""Rate limiting shared by every web process: fixed windows counted in the Django cache.

Each caller gets ``AUTOHEAL_RATE_LIMIT`` requests (default 100 per 60 s) per window: an
authenticated caller by user (a session, an API key's service user, a token's subject), an
anonymous one by client IP. The counter is one cache key per caller and window, incremented
atomically in Redis (``INCR``, with the expiry set on first use), so any number of web processes
sharing ``REDIS_URL`` share the budget. A fixed window can let up to twice the limit through
around a window boundary; that is accepted for its cost (one round trip, no per-request history).

Exempt: ``/`` and ``/readyz`` (probes every few seconds), ``/metrics`` (Prometheus scrapes,
optionally behind its own token) and static files. The webhook (``/alert``) has its own, higher
limit ``AUTOHEAL_WEBHOOK_RATE_LIMIT`` per client IP and answers 503 with ``Retry-After`` when over
it: Alertmanager retries 5xx but drops a 4xx delivery. Everything else answers 429.

If the cache is unreachable the request is let through and a warning logged: the limiter guards
capacity, and failing closed would turn a Redis outage into a full outage of the API.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve

logger = logging.getLogger(__name__)

# Route names (see the apps' urls.py): health probes, the Prometheus exposition, the webhook.
EXEMPT_ROUTES = frozenset({"health", "readyz", "prometheus-django-metrics"})
WEBHOOK_ROUTE = "alert-webhook"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _trusted(address: str, networks: Iterable[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def address_is_trusted_proxy(address: str) -> bool:
    """Whether ``address`` (a direct peer) is one of ``AUTOHEAL_TRUSTED_PROXIES``."""
    networks = _networks(tuple(getattr(settings, "AUTOHEAL_TRUSTED_PROXIES", ())))
    return bool(networks) and _trusted(address, networks)


def peer_is_trusted_proxy(request: HttpRequest) -> bool:
    """Whether the direct peer is one of ``AUTOHEAL_TRUSTED_PROXIES``."""
    return address_is_trusted_proxy(request.META.get("REMOTE_ADDR", ""))


def route_name(request: HttpRequest) -> str | None:
    """The name of the route Django resolves this request to (``None`` when none matches).

    Guards key on this, never on ``request.path``: the path also carries the script prefix, and
    what a guard must protect is the view that will run, however the path was spelt.
    """
    cached = request.__dict__.get("_autoheal_route", False)
    if cached is not False:
        return cached
    try:
        name: str | None = resolve(request.path_info).url_name
    except Resolver404:
        name = None
    request.__dict__["_autoheal_route"] = name
    return name


def client_ip(request: HttpRequest) -> str:
    """The caller's address: ``X-Forwarded-For`` is believed only from ``AUTOHEAL_TRUSTED_PROXIES``.

    Walking the header from the right, every hop added by a trusted proxy is skipped; the first
    untrusted address is the client (anything left of it could have been written by the client).
    """
    peer = request.META.get("REMOTE_ADDR", "") or "unknown"
    networks = _networks(tuple(getattr(settings, "AUTOHEAL_TRUSTED_PROXIES", ())))
    if not networks or not _trusted(peer, networks):
        return peer
    candidate = peer
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage from the client side: keep the last address a trusted proxy vouched for
        candidate = hop
        if not _trusted(hop, networks):
            break
    return candidate


def _hit(key: str, window: int) -> int:
    """Count one request under ``key`` and return the count; atomic across processes in Redis."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        # One round trip instead of Django's three (exists, incr, add): INCR and a first-time
        # EXPIRE in one MULTI/EXEC. The window is part of the key, so a counter never outlives it.
        full_key = backend.make_and_validate_key(key)
        # Django's Redis backend keeps its client behind the private ``_cache``; the Django
        # version is pinned, and the fallback below covers any other backend.
        client = backend._cache.get_client(full_key, write=True)  # type: ignore[attr-defined]
        pipe = client.pipeline(transaction=True)
        pipe.incr(full_key)
        pipe.expire(full_key, window + 1, nx=True)
        count, _ = pipe.execute()
        return int(count)
    cache.add(key, 0, timeout=window + 1)
    try:
        return cache.incr(key)
    except ValueError:
        # The key expired between add and incr: this is the first request of a new window.
        cache.set(key, 1, timeout=window + 1)
        return 1


def _caller(request: HttpRequest) -> str:
    from accounts.authentication import OWN_TOKEN_ROUTES, BearerError, bearer_token, bearer_user

    if bearer_token(request) is not None and route_name(request) not in OWN_TOKEN_ROUTES:
        # Bearer callers are counted as their user; a refused token counts against the client's
        # address, so guessing API keys or tokens is rate-limited like any anonymous traffic.
        try:
            bearer: Any = bearer_user(request)
        except BearerError:
            return f"ip{client_ip(request)}"
        return f"u{bearer.pk}"
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"u{user.pk}"
    return f"ip{client_ip(request)}"


class RateLimitMiddleware:
    """Per-caller request limit (see module doc); place after authentication."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        route = route_name(request)
        if route in EXEMPT_ROUTES or (route is None and request.path_info.startswith(settings.STATIC_URL)):
            return self.get_response(request)
        webhook = route == WEBHOOK_ROUTE
        if webhook:
            limit, window = settings.AUTOHEAL_WEBHOOK_RATE_LIMIT
            caller = f"wh{client_ip(request)}"
        else:
            limit, window = settings.AUTOHEAL_RATE_LIMIT
            caller = _caller(request)
        now = time.time()
        slot = int(now // window)
        try:
            count = _hit(f"autoheal:rl:{caller}:{window}:{slot}", window)
        except Exception as exc:  # the cache backend's own errors (Redis down) vary by backend
            logger.warning("rate limit not applied, the cache is unavailable: %s", type(exc).__name__)
            return self.get_response(request)
        if count <= limit:
            return self.get_response(request)
        retry_after = max(1, math.ceil((slot + 1) * window - now))
        if webhook:
            response = JsonResponse(
                {"error": f"webhook rate limit of {limit} per {window}s exceeded; retry later"}, status=503
            )
        else:
            response = JsonResponse(
                {"error": f"rate limit of {limit} requests per {window}s exceeded; retry in {retry_after}s"},
                status=429,
            )
        response["Retry-After"] = str(retry_after)
        return response
