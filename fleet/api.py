"""The agents' HTTP API under ``/api/agent/``, authenticated by each host's token; ``GET /api/agents``.

Views only parse and answer: the work is in :mod:`fleet.handover`. Every agent request names its
host; a token is good for its own host only, so naming (or touching the jobs of) another host is
answered 403 and audited as ``agent_refused``. An unknown or revoked token is answered 401. The
token travels as ``Authorization: Agent <token>``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.roles import IsOps
from fleet import handover
from fleet.selectors import agents_overview
from fleet.tokens import agent_token_authenticate
from remediation.docker_watch import health_changed

MAX_BODY = 1_000_000
MAX_CONTAINERS = 5000
AgentView = Callable[..., HttpResponse]


class BadRequest(ValueError):
    """A body or parameter that is not what the agent API takes (answered 400, nothing changed)."""


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _body(request: HttpRequest) -> dict[str, Any]:
    if len(request.body) > MAX_BODY:
        raise BadRequest(f"the body is larger than {MAX_BODY} bytes")
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _int(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{name} must be a non-negative JSON integer")
    return value


def _str(data: dict[str, Any], name: str, *, limit: int = 255, required: bool = True) -> str:
    value = data.get(name, "" if not required else None)
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise BadRequest(f"{name} must be a{' non-empty' if required else ''} string of at most {limit} characters")
    return value


def _agent_request(request: HttpRequest, methods: tuple[str, ...]) -> tuple[str, dict[str, Any]] | HttpResponse:
    """The token's host and the request's data, or the answer that refuses it (401, 403, 405, 400)."""
    if request.method not in methods:
        return _error(f"use {' or '.join(methods)}", 405)
    # Its own scheme, not Bearer: the site's Bearer tokens (API keys, provider tokens) are
    # a different credential, checked by the accounts middleware before any view runs.
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    token = value.strip() if scheme.lower() == "agent" else ""
    row = agent_token_authenticate(token)
    if row is None:
        response = _error("an agent token (Authorization: Agent ...) that is valid and not revoked is required", 401)
        response["WWW-Authenticate"] = 'Agent realm="autoheal-agent"'
        return response
    try:
        data = _body(request) if request.method in ("POST", "PUT") else dict(request.GET.items())
        host = _str(data, "host", limit=100)
    except BadRequest as exc:
        return _error(str(exc), 400)
    if host != row.host:
        handover.agent_refused(host=row.host, what=f"{request.method} {request.path} for host {host}", other_host=host)
        return _error(f"this token is for host {row.host}, not {host}", 403)
    return row.host, data


def agent_endpoint(methods: tuple[str, ...]) -> Callable[[AgentView], AgentView]:
    """Authenticate the host's token, check the host it names, map service errors to answers."""

    def decorate(view: AgentView) -> AgentView:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            checked = _agent_request(request, methods)
            if isinstance(checked, HttpResponse):
                return checked
            host, data = checked
            try:
                return view(request, host, data, *args, **kwargs)
            except BadRequest as exc:
                return _error(str(exc), 400)
            except handover.Forbidden as exc:
                return _error(str(exc), 403)
            except handover.Conflict as exc:
                return _error(str(exc), 409)

        return wrapper

    return decorate


@agent_endpoint(("POST",))
def hello(request: HttpRequest, host: str, data: dict[str, Any]) -> HttpResponse:
    """The agent starts (or reconnects): version and engine, the poll timing it should use."""
    handover.agent_seen(
        host=host,
        version=_str(data, "version", limit=50, required=False),
        engine=_str(data, "engine", limit=200, required=False),
    )
    return JsonResponse(
        {
            "host": host,
            "poll_seconds": settings.AUTOHEAL_AGENT_POLL_SECONDS,
            "lease_seconds": settings.AUTOHEAL_LEASE_SECONDS,
        }
    )


def _containers(data: dict[str, Any]) -> list[dict[str, Any]]:
    items = data.get("containers")
    if not isinstance(items, list) or len(items) > MAX_CONTAINERS:
        raise BadRequest(f"containers must be a list of at most {MAX_CONTAINERS} objects")
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"containers[{index}] must be an object")
        labels = item.get("labels", {})
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise BadRequest(f"containers[{index}].labels must map strings to strings")
        out.append(
            {
                "name": _str(item, "name"),
                "labels": labels,
                "health": _str(item, "health", limit=32, required=False),
                "state": _str(item, "state", limit=32, required=False),
            }
        )
    return out


@agent_endpoint(("PUT", "POST"))
def inventory(request: HttpRequest, host: str, data: dict[str, Any]) -> HttpResponse:
    """The host's opted-in containers, replaced as a whole (at start and on every change)."""
    agent = handover.agent_inventory_set(host=host, containers=_containers(data))
    return JsonResponse({"host": host, "containers": len(agent.inventory)})


def _moment(value: Any) -> datetime:
    if not isinstance(value, str):
        raise BadRequest("at must be an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest("at must be an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise BadRequest("at must carry a time zone")
    return moment.astimezone(UTC)


@agent_endpoint(("POST",))
def health_event(request: HttpRequest, host: str, data: dict[str, Any]) -> HttpResponse:
    """A Docker health event on the host, into the same intake as the central Docker watcher."""
    health = _str(data, "health", limit=32)
    if health not in ("unhealthy", "healthy"):
        raise BadRequest("health must be unhealthy or healthy")
    labels = data.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise BadRequest("labels must map strings to strings")
    handover.agent_seen(host=host)
    outcome = health_changed(
        container=_str(data, "container"),
        health=health,
        labels=labels,
        instance=host,
        at=_moment(data.get("at")),
        host=host,
    )
    return JsonResponse({"outcome": outcome}, status=202)


def _poll_params(data: dict[str, Any]) -> tuple[float, bool]:
    try:
        wait = float(data.get("wait", settings.AUTOHEAL_AGENT_POLL_SECONDS))
    except ValueError:
        raise BadRequest("wait must be a number of seconds") from None
    start = data.get("start", "0")
    if start not in ("0", "1"):
        raise BadRequest("start must be 0 or 1")
    return max(0.0, min(wait, float(settings.AUTOHEAL_AGENT_POLL_SECONDS))), start == "1"


@csrf_exempt
async def job_next(request: HttpRequest) -> HttpResponse:
    """Long poll: the next job placed on the host (200), or 204 after ``wait`` seconds without one.

    Asynchronous, so a waiting poll holds no thread, and one whose agent has gone away is cancelled
    while it waits instead of taking a job nobody will hear about. ``start=1``: the job comes
    started when the guards allow (``go``), decided under the switch lock at the hand-over.
    """
    checked = await sync_to_async(_agent_request)(request, ("GET",))
    if isinstance(checked, HttpResponse):
        return checked
    host, data = checked
    try:
        wait, start = _poll_params(data)
    except BadRequest as exc:
        return _error(str(exc), 400)
    found = await handover.agent_job_next_async(host=host, wait_seconds=wait, start=start)
    if found is None:
        return HttpResponse(status=204)
    return JsonResponse(found.as_dict())


@agent_endpoint(("POST",))
def job_start(request: HttpRequest, host: str, data: dict[str, Any], job_id: int) -> HttpResponse:
    return JsonResponse(handover.agent_job_start(host=host, job_id=job_id, claim=_int(data, "claim")))


@agent_endpoint(("POST",))
def job_refuse(request: HttpRequest, host: str, data: dict[str, Any], job_id: int) -> HttpResponse:
    reason = data.get("reason", "not_allowed")
    if reason not in handover.REFUSAL_REASONS:
        raise BadRequest(f"reason must be one of {', '.join(handover.REFUSAL_REASONS)}")
    state = handover.agent_job_refuse(
        host=host, job_id=job_id, claim=_int(data, "claim"), detail=_str(data, "detail", limit=4000), reason=reason
    )
    return JsonResponse({"state": state})


@agent_endpoint(("POST",))
def job_heartbeat(request: HttpRequest, host: str, data: dict[str, Any], job_id: int) -> HttpResponse:
    if not handover.agent_job_heartbeat(host=host, job_id=job_id, claim=_int(data, "claim")):
        return _error(f"job {job_id} is no longer leased to this agent", 409)
    return JsonResponse({"renewed": True})


def _evidence(data: dict[str, Any], *, required: bool) -> dict[str, Any] | None:
    evidence = data.get("evidence")
    if evidence is None and not required:
        return None
    if not isinstance(evidence, dict):
        raise BadRequest("evidence must be an object")
    try:
        return handover.evidence_clean(evidence)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


@agent_endpoint(("POST",))
def job_evidence(request: HttpRequest, host: str, data: dict[str, Any], job_id: int) -> HttpResponse:
    """The evidence the agent read before its Docker action, recorded as ``evidence_captured``."""
    if data.get("stage", "before_action") != "before_action":
        raise BadRequest("stage must be before_action")
    evidence = _evidence(data, required=True) or {}
    recorded = handover.agent_job_evidence(host=host, job_id=job_id, claim=_int(data, "claim"), evidence=evidence)
    return JsonResponse({"recorded": recorded, "duplicate": not recorded}, status=201 if recorded else 200)


@agent_endpoint(("POST",))
def job_report(request: HttpRequest, host: str, data: dict[str, Any], job_id: int) -> HttpResponse:
    ok = data.get("ok")
    transient = data.get("transient", False)
    if not isinstance(ok, bool) or not isinstance(transient, bool):
        raise BadRequest("ok and transient must be true or false")
    output = data.get("output", {})
    if not isinstance(output, dict):
        raise BadRequest("output must be an object")
    duration = data.get("duration_seconds")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0):
        raise BadRequest("duration_seconds must be a non-negative number")
    result = handover.agent_job_report(
        host=host,
        job_id=job_id,
        attempt=_int(data, "attempt"),
        claim=_int(data, "claim"),
        ok=ok,
        transient=transient,
        detail=_str(data, "detail", limit=4000, required=False),
        output=output,
        duration_seconds=float(duration) if duration is not None else None,
        evidence=_evidence(data, required=False),
    )
    return JsonResponse({"disposition": result.disposition, "duplicate": result.duplicate, "state": result.state})


class AgentsView(APIView):
    """``GET /api/agents``: the fleet's agents as the central sees them (ops role)."""

    permission_classes = [IsOps]

    @extend_schema(
        responses=inline_serializer(
            "Agents",
            {
                "agents": serializers.ListField(
                    child=inline_serializer(
                        "Agent",
                        {
                            "host": serializers.CharField(),
                            "version": serializers.CharField(),
                            "last_seen": serializers.DateTimeField(),
                            "containers": serializers.IntegerField(),
                            "jobs_in_flight": serializers.IntegerField(),
                            "connected": serializers.BooleanField(),
                        },
                    )
                )
            },
        )
    )
    def get(self, request: Request) -> Response:
        return Response({"agents": [row.as_dict() for row in agents_overview()]})
