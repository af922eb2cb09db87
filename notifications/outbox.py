"""The durable outbox: audit events become notifications, delivered by the worker through Apprise.

Nothing here runs inside the webhook or an action: the events are read from the audit trail (which
is written in the same transaction as each state change, so nothing committed is missed; the
chain lock serialises writers until commit, so ids become visible in order and a cursor over
them skips nothing), turned
into one outbox row per target, and sent one at a time by a worker step. A failed send is retried
with exponential backoff; every attempt is audited (``notification_sent`` or
``notification_failed``) with the target's name and its URL masked.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.redact import redact
from audit.models import AuditEvent
from audit.services import audit_record
from notifications.models import Notification, OutboxCursor
from notifications.targets import EVENTS, NotifyConfigError, Target, configured_targets, mask_url

logger = logging.getLogger(__name__)

ENQUEUE_BATCH = 200
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 3600
# A delivery in progress holds its row this long; a worker that died mid-send frees it after.
SENDING_LEASE = timedelta(seconds=120)
# Events about an incident go only to the policy's ``notify`` targets (all when it names none).
GLOBAL_EVENTS = frozenset({"circuit_opened", "circuit_closed", "kill_switch_changed"})
_TYPES = {
    "approval_requested": "warning",
    "action_ok": "success",
    "action_failed": "failure",
    "action_verified": "success",
    "action_ineffective": "warning",
    "incident_escalated": "failure",
    "circuit_opened": "failure",
    "circuit_closed": "success",
    "kill_switch_changed": "warning",
    "test": "info",
}


def _targets() -> list[Target]:
    try:
        return configured_targets()
    except NotifyConfigError as exc:
        logger.error("notifications: %s", exc)
        return []


def _policy_targets(policy_name: str) -> list[str] | None:
    from remediation.models import Policy

    names = Policy.objects.filter(name=policy_name).values_list("notify", flat=True).first()
    return list(names) if names else None


def _link(event: AuditEvent) -> str:
    base = settings.AUTOHEAL_PUBLIC_URL.rstrip("/")
    job = (event.data or {}).get("job")
    return f"{base}/ops/#job-{job}" if isinstance(job, int) else f"{base}/ops/"


def _message(name: str, event: AuditEvent) -> tuple[str, str]:
    what = " ".join(part for part in (event.alertname, event.target and f"on {event.target}") if part)
    title = f"Autoheal: {name.replace('_', ' ')}" + (f": {what}" if what else "")
    lines = [event.message or name.replace("_", " ")]
    if event.policy:
        lines.append(f"Policy: {event.policy}")
    if event.actor:
        lines.append(f"By: {event.actor}")
    lines.append(f"Details (after login): {_link(event)}")
    return title[:250], "\n".join(lines)


def notifications_enqueue(*, batch: int = ENQUEUE_BATCH) -> int:
    """Turn new audit events into outbox rows; returns how many rows were added."""
    targets = _targets()
    with transaction.atomic():
        cursor, created = OutboxCursor.objects.select_for_update().get_or_create(pk=1)
        if created:
            # Start from now: a fresh installation does not notify about its history.
            cursor.last_event_id = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
            cursor.save(update_fields=["last_event_id"])
            return 0
        events = list(
            AuditEvent.objects.filter(id__gt=cursor.last_event_id, kind__in=tuple(EVENTS)).order_by("id")[:batch]
        )
        if not events:
            return 0
        added = 0
        for event in events:
            name = EVENTS[event.kind]
            chosen = None if name in GLOBAL_EVENTS or not event.policy else _policy_targets(event.policy)
            title, body = _message(name, event)
            for target in targets:
                if not target.wants(name) or (chosen is not None and target.name not in chosen):
                    continue
                try:
                    with transaction.atomic():
                        Notification.objects.create(
                            event_id=event.pk,
                            event=name,
                            target=target.name,
                            title=title,
                            body=body,
                            notify_type=_TYPES.get(name, "info"),
                        )
                    added += 1
                except IntegrityError:
                    continue
        cursor.last_event_id = events[-1].pk
        cursor.save(update_fields=["last_event_id"])
    return added


def notification_test(*, actor: str) -> int:
    """Queue a test message for every configured target (the ``/ops/`` button); returns how many."""
    now = timezone.now()
    targets = configured_targets()
    for target in targets:
        Notification.objects.create(
            event="test",
            target=target.name,
            title="Autoheal: test notification",
            body=f"A test notification sent by {actor} from {settings.AUTOHEAL_PUBLIC_URL.rstrip('/')}/ops/ at {now:%Y-%m-%d %H:%M:%S} UTC.",
            notify_type="info",
        )
    return len(targets)


def _claim(now: datetime) -> Notification | None:
    with transaction.atomic():
        due = Notification.objects.filter(state=Notification.State.PENDING, next_try_at__lte=now).order_by(
            "next_try_at", "id"
        )
        if connection.vendor == "postgresql":
            due = due.select_for_update(skip_locked=True)
        row = due.first()
        if row is None:
            return None
        # The lease: another worker will not take it while it is being sent.
        row.attempts += 1
        row.next_try_at = now + SENDING_LEASE
        row.save(update_fields=["attempts", "next_try_at"])
    return row


def _send(url: str, row: Notification) -> tuple[bool, str]:
    """Send through Apprise; (ok, what went wrong with secrets masked)."""
    import apprise

    sender = apprise.Apprise()
    if not sender.add(url):
        return False, "not a valid notification URL"
    with apprise.LogCapture(level=logging.WARNING) as captured:
        ok = bool(sender.notify(title=row.title, body=row.body, notify_type=row.notify_type))
        log_text = captured.getvalue()
    if ok:
        return True, ""
    detail = log_text.strip().splitlines()[-1] if log_text.strip() else "the service did not accept the message"
    return False, redact(detail.replace(url, mask_url(url)))[:500]


def notification_deliver_one(*, now: datetime | None = None) -> bool:
    """Send one due notification; True when there was one (sent or not)."""
    now = now or timezone.now()
    if notifications_enqueue() > 0:
        return True
    row = _claim(now)
    if row is None:
        return False
    target = next((t for t in _targets() if t.name == row.target), None)
    if target is None:
        ok, error, masked = False, f"no notification target named {row.target!r} is configured", ""
    else:
        masked = mask_url(target.url)
        try:
            ok, error = _send(target.url, row)
        except Exception as exc:  # a plugin bug must not stop the worker; it is retried
            ok, error = False, redact(f"{type(exc).__name__}: {exc}".replace(target.url, masked))[:500]
    _record(row=row, ok=ok, error=error, masked=masked, now=timezone.now())
    return True


def _record(*, row: Notification, ok: bool, error: str, masked: str, now: datetime) -> None:
    data: dict[str, Any] = {
        "notification": row.pk,
        "event": row.event,
        "audit_event": row.event_id,
        "target": row.target,
        "url": masked,
        "attempt": row.attempts,
    }
    with transaction.atomic():
        if ok:
            Notification.objects.filter(pk=row.pk).update(state=Notification.State.SENT, sent_at=now, last_error="")
            audit_record(kind="notification_sent", message=f"{row.event} sent to {row.target}", data=data)
            return
        final = row.attempts >= MAX_ATTEMPTS
        wait = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (row.attempts - 1))
        Notification.objects.filter(pk=row.pk).update(
            state=Notification.State.FAILED if final else Notification.State.PENDING,
            next_try_at=now + timedelta(seconds=wait),
            last_error=error,
        )
        data.update({"error": error, "will_retry": not final, "retry_in_seconds": None if final else wait})
        audit_record(
            kind="notification_failed",
            message=f"{row.event} to {row.target} failed: {error}" + ("" if final else f"; retrying in {wait}s"),
            data=data,
        )
