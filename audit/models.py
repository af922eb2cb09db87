"""The audit trail: append-only, hash-chained events."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from django.db import models
from django.utils import timezone

KINDS = (
    "alert_received",
    "alert_duplicate",
    "alert_resolved",
    "alert_truncated",
    "webhook_rejected",
    "no_policy",
    "action_queued",
    "action_dry_run",
    "action_started",
    "action_ok",
    "action_fail",
    "action_retry",
    "action_unknown",
    "action_skipped",
    "action_verified",
    "action_ineffective",
    "circuit_open",
    "circuit_closed",
    "ack",
    "switch_changed",
    "policy_changed",
)
# Not in the stable vocabulary's first list but needed by the product; documented in INTERFACE.md.
EXTRA_KINDS = ("incident_escalated", "false_positive_marked", "apikey_changed")
ALL_KINDS = KINDS + EXTRA_KINDS


class AppendOnlyError(RuntimeError):
    """Raised when application code tries to change or delete an audit event."""


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("audit events are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit events are append-only; use manage.py audit_prune")


class AuditEvent(models.Model):
    """One thing Autoheal saw or did. Written only by ``audit.services.audit_record``."""

    ts = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=32, choices=[(k, k) for k in ALL_KINDS])
    alertname = models.CharField(max_length=200, blank=True, default="")
    fingerprint = models.CharField(max_length=64, blank=True, default="")
    policy = models.CharField(max_length=100, blank=True, default="")
    target = models.CharField(max_length=255, blank=True, default="")
    message = models.TextField(blank=True, default="")
    actor = models.CharField(max_length=150, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True, default="")
    hash = models.CharField(max_length=64, blank=True, default="")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["ts"], name="audit_ts"),
            models.Index(fields=["kind", "-id"], name="audit_kind_id"),
            models.Index(fields=["alertname", "-id"], name="audit_alertname_id"),
            models.Index(fields=["fingerprint", "-id"], name="audit_fingerprint_id"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.kind} {self.alertname}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise AppendOnlyError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit events are append-only; use manage.py audit_prune")

    def as_dict(self) -> dict[str, Any]:
        """The event as INTERFACE.md shows it (the hash fields are for audit_verify)."""
        return {
            "id": self.id,
            "ts": self.ts.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "kind": self.kind,
            "alertname": self.alertname,
            "fingerprint": self.fingerprint,
            "policy": self.policy,
            "target": self.target,
            "message": self.message,
            "actor": self.actor,
            "data": self.data,
        }
