"""Operator pages. Views parse the request, call a selector and render; nothing else."""

from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.shortcuts import render
from django.templatetags.static import static
from django.views.decorators.http import require_GET

from accounts.roles import is_ops
from audit.models import ALL_KINDS
from audit.streams.frames import StreamFilter, StreamRequestError
from audit.streams.storage import stream_backlog

# Rows rendered with the page, so it is never empty before the first live event.
CONSOLE_BACKLOG = 100


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """``GET /favicon.ico``: the icon, for browsers and pages (the admin's) that ask the root."""
    return HttpResponsePermanentRedirect(static("dashboard/favicon.svg"))


@require_GET
def console(request: HttpRequest) -> HttpResponse:
    """``GET /console``: the live audit events as a table, newest on top (ops and admin)."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not is_ops(request.user):
        raise PermissionDenied("The console needs the ops or admin role.")
    kind = request.GET.get("kind", "")
    alertname = request.GET.get("alertname", "")
    context = {"kinds": ALL_KINDS, "kind": kind, "alertname": alertname, "events": [], "through": 0, "error": ""}
    try:
        stream_filter = StreamFilter.parse(kind=kind, alertname=alertname)
    except StreamRequestError as exc:
        context["error"] = str(exc)
        return render(request, "dashboard/console.html", context, status=400)
    context["events"], context["through"] = stream_backlog(limit=CONSOLE_BACKLOG, stream_filter=stream_filter)
    context["stream_query"] = stream_filter.as_query()
    return render(request, "dashboard/console.html", context)
