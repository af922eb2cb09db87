"""POST /alert: Alertmanager's webhook. Authenticate, bound, parse, store, answer 202.

A plain Django view (no DRF) so the hot path stays small. It answers only after the delivery is
committed, and never runs a remediation itself: the workers pick the queued jobs up. Alertmanager
retries 5xx answers only, so a database outage is a 503 (retried, nothing lost) and a bad body a
400 (not retried, it would never get better). A value the database refuses is such a bad body,
not an outage: ``remediation.dberrors`` tells the two apart.

What a rejected request leaves behind: a 401 adds no row anywhere (it only moves the counter
``autoheal_webhook_requests_total{code="401"}`` and is logged without the token), so an
unauthenticated client cannot fill the audit trail or the database. A 400 or 413 from a client holding a valid token is audited as
``webhook_rejected`` with the reason, never the body or the token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from audit import metrics
from audit.services import audit_record
from remediation.dberrors import DatabaseFault, database_fault, database_problem
from remediation.intake import alert_ingest
from remediation.payload import PayloadError

logger = logging.getLogger(__name__)

UNCONFIGURED_MESSAGE = (
    "this server has no webhook token configured: set AUTOHEAL_WEBHOOK_TOKENS (or AUTOHEAL_WEBHOOK_TOKENS_FILE) "
    "and give Alertmanager the same token"
)
UNAUTHORIZED_MESSAGE = (
    "missing or invalid webhook token: send 'Authorization: Bearer <token>' "
    "(Alertmanager http_config.authorization) or Basic auth with the token as password"
)


def _presented_token(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


def token_valid(header: str, tokens: list[str]) -> bool:
    """Whether the Authorization header carries one of ``tokens`` (constant-time, all compared)."""
    presented = _presented_token(header)
    if presented is None:
        return False
    given = presented.encode("utf-8")
    valid = False
    # Compare against every token, without stopping at the first hit, so the time taken does not
    # tell which token (or how much of one) matched.
    for token in tokens:
        valid |= hmac.compare_digest(given, token.encode("utf-8"))
    return valid


def _answer(status: int, body: dict[str, Any], **headers: str) -> JsonResponse:
    response = JsonResponse(body, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _reject(request: HttpRequest, status: int, reason: str, data: dict[str, Any]) -> JsonResponse:
    try:
        audit_record(
            kind="webhook_rejected",
            actor="alertmanager",
            message=f"POST /alert answered {status}: {reason}"[:500],
            data={"status": status, "reason": reason[:1000], "remote": request.META.get("REMOTE_ADDR", ""), **data},
        )
    except (DatabaseError, InterfaceError):
        # The client's request is still wrong; the answer must say so even if the record fails.
        logger.exception("could not audit a rejected webhook request")
    return _answer(status, {"error": reason})


def _handle(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return _answer(405, {"error": "POST an Alertmanager webhook v4 payload here"}, Allow="POST")
    tokens = settings.AUTOHEAL_WEBHOOK_TOKENS
    if not tokens:
        logger.warning("POST /alert refused: no webhook token is configured")
        return _answer(401, {"error": UNCONFIGURED_MESSAGE}, WWW_Authenticate='Bearer realm="autoheal"')
    if not token_valid(request.headers.get("Authorization", ""), tokens):
        logger.warning("POST /alert refused: missing or invalid token from %s", request.META.get("REMOTE_ADDR", ""))
        return _answer(401, {"error": UNAUTHORIZED_MESSAGE}, WWW_Authenticate='Bearer realm="autoheal"')

    limit = settings.AUTOHEAL_WEBHOOK_MAX_BYTES
    too_large = f"the body is larger than {limit} bytes (AUTOHEAL_WEBHOOK_MAX_BYTES); lower max_alerts in Alertmanager"
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _reject(request, 400, "Content-Length is not a number", {})
    if declared > limit:
        return _reject(request, 413, too_large, {"content_length": declared, "limit": limit})
    # Read at most one byte past the limit: a body sent without (or with a lying) Content-Length is
    # bounded by what is actually read.
    body = request.read(limit + 1)
    if len(body) > limit:
        return _reject(request, 413, too_large, {"limit": limit})

    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return _reject(request, 400, "the body is not UTF-8 JSON", {"bytes": len(body)})
    except ValueError as exc:
        return _reject(request, 400, f"the body is not JSON: {exc}", {"bytes": len(body)})

    try:
        result = alert_ingest(payload=payload, source="alertmanager", actor="alertmanager")
    except PayloadError as exc:
        return _reject(request, 400, str(exc), {"field": exc.field, "bytes": len(body)})
    except (DatabaseError, InterfaceError) as exc:
        fault = database_fault(exc)
        if fault is DatabaseFault.DATA:
            # This body fails the same way every time: a 400 (not retried), never a retry loop.
            logger.warning("POST /alert: the database refused the delivery's data: %s", database_problem(exc))
            field = _refused_field(payload)
            reason = f"{field}: the database refused a value of this delivery: {database_problem(exc)}"
            return _reject(request, 400, reason, {"field": field, "bytes": len(body)})
        if fault is DatabaseFault.DEFECT:
            raise
        logger.exception("POST /alert: database unavailable; Alertmanager will retry")
        # Drop a broken connection now so the next request (Alertmanager's retry) reconnects.
        connection.close_if_unusable_or_obsolete()
        return _answer(503, {"error": "database unavailable"}, Retry_After="5")
    return _answer(202, result.as_dict())


class _TrialOver(Exception):
    """Ends a trial ingest: everything it did is rolled back."""


def _refused_field(payload: Any) -> str:
    """The first alert of a refused delivery that the database refuses on its own, e.g. ``alerts[3]``.

    Each alert is ingested alone inside a transaction that is always rolled back (nothing is
    stored, no worker is woken): only on this rare path, so a many-alert delivery names its culprit.
    """
    alerts = payload.get("alerts") if isinstance(payload, dict) else None
    if not isinstance(alerts, list) or len(alerts) <= 1:
        return "alerts[0]"
    for index, alert in enumerate(alerts):
        try:
            with transaction.atomic():
                alert_ingest(payload={**payload, "alerts": [alert]}, source="alertmanager", actor="alertmanager")
                raise _TrialOver
        except _TrialOver:
            continue
        except (DatabaseError, InterfaceError) as exc:
            if database_fault(exc) is DatabaseFault.DATA:
                return f"alerts[{index}]"
            break
    return "alerts"


@csrf_exempt
def alert_webhook(request: HttpRequest) -> JsonResponse:
    """The Alertmanager receiver: 202 after commit, 400/401/413 for bad requests, 503 if the database is down."""
    try:
        response = _handle(request)
    except Exception:
        # A defect, not a bad request: answer 5xx so Alertmanager keeps the alert and retries.
        logger.exception("POST /alert failed; the delivery was not stored")
        response = _answer(500, {"error": "internal error: the delivery was not stored; Alertmanager will retry"})
    metrics.count_webhook_request(response.status_code)
    return response
