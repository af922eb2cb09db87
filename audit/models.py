"""The audit trail: append-only, hash-chained events."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from autoheal_site.text import dumps_compact, visible
from autoheal_site.utc import iso_utc

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
# Not in the stable vocabulary's first list but needed by the product; documented in docs/interface.md.
# People in the loop: approvals, Alertmanager silences, evidence before acting, notifications.
HUMAN_KINDS = (
    "approval_requested",
    "approval_granted",
    "approval_denied",
    "silence_unknown",
    "silence_created",
    "silence_expired",
    "evidence_captured",
    "notification_sent",
    "notification_failed",
)
# The fleet: agent tokens created or revoked, an agent refused for another host's work.
FLEET_KINDS = ("agent_token_changed", "agent_refused")
EXTRA_KINDS = (
    "incident_escalated",
    "false_positive_marked",
    "apikey_changed",
    "user_changed",
    *HUMAN_KINDS,
    *FLEET_KINDS,
)
ALL_KINDS = KINDS + EXTRA_KINDS


class AppendOnlyError(RuntimeError):
    """Raised when application code tries to change or delete an audit event."""


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    """Queries over the trail; refuses bulk changes so nothing rewrites history by accident."""

    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("audit events are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit events are append-only; use manage.py audit_prune")


def search_text(*, alertname: str, target: str, message: str, data: dict[str, Any]) -> str:
    """The lowercased text that ``contains`` searches: alertname, target, message and labels.

    Labels (``data.labels`` of alert events) appear as ``name=value`` pairs, so both a value and
    a ``name=value`` pair can be searched for.
    """
    parts = [alertname, target, message]
    labels = data.get("labels") if isinstance(data, dict) else None
    if isinstance(labels, dict):
        parts.append(" ".join(f"{key}={value}" for key, value in sorted(labels.items())))
    return "\n".join(parts).lower()


class AuditEvent(models.Model):
    """One thing Autoheal saw or did. Written only by ``audit.services.audit_record``.

    Timestamps never go backwards in id order (the writer guarantees it), so a time bound can be
    turned into an id bound; ``search`` is derived text for ``contains`` (trigram-indexed on
    PostgreSQL) and is not part of the event's JSON or hash.
    """

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
    search = models.TextField(blank=True, default="", editable=False)

    objects = AuditEventQuerySet.as_manager()
    # Set by the writer that chains the event (``body_json``); never a column.
    _body_json: str

    class Meta:
        ordering = ["-id"]
        # Newest first by id everywhere: each filter has an index ending in id so a page is an
        # index range read backwards, never a sort of every match. The trigram index on
        # ``search`` is PostgreSQL-only and lives in migration 0002.
        indexes = [
            models.Index(fields=["ts", "id"], name="audit_ts_id"),
            models.Index(fields=["kind", "-id"], name="audit_kind_id"),
            models.Index(fields=["alertname", "-id"], name="audit_alertname_id"),
            models.Index(fields=["alertname", "kind", "-id"], name="audit_alertname_kind_id"),
            models.Index(fields=["fingerprint", "-id"], name="audit_fingerprint_id"),
        ]

    def __str__(self) -> str:
        return visible(f"{self.id} {self.kind} {self.alertname}")

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise AppendOnlyError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit events are append-only; use manage.py audit_prune")

    def as_dict(self) -> dict[str, Any]:
        """The event as docs/interface.md shows it (the hash fields are for audit_verify)."""
        return {"id": self.id, **self.body()}

    def body(self) -> dict[str, Any]:
        """``as_dict()`` without the id: what the hash covers (``audit.services.HASHED_FIELDS``)."""
        return {
            "ts": iso_utc(self.ts),
            "kind": self.kind,
            "alertname": self.alertname,
            "fingerprint": self.fingerprint,
            "policy": self.policy,
            "target": self.target,
            "message": self.message,
            "actor": self.actor,
            "data": self.data,
        }

    def body_json(self) -> str:
        """``body()`` as compact JSON, in the same key order. The writer that chains an event
        stores this text on it (``audit.services.chain_events``), so the table's INSERT, the JSONL
        mirror and the live stream reuse one encoding instead of making three more."""
        cached = self.__dict__.get("_body_json")
        return cached if cached is not None else dumps_compact(self.body())

    def as_json(self) -> str:
        """``as_dict()`` as compact JSON text (what the mirror and the stream carry)."""
        return (
            '{"id":'
            + (str(self.id) if isinstance(self.id, int) else dumps_compact(self.id))
            + ","
            + self.body_json()[1:]
        )


class AuditExport(models.Model):
    """A completed export that covered every event up to ``through_id``: what prune may remove."""

    created_at = models.DateTimeField(default=timezone.now)
    through_id = models.BigIntegerField()
    events = models.BigIntegerField()
    destination = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["-through_id"]

    def __str__(self) -> str:
        return f"export through {self.through_id} at {self.created_at:%Y-%m-%d %H:%M}"


class AuditAnchor(models.Model):
    """Where the chain continues after a prune: the hash of the last removed event.

    ``audit_verify`` accepts a first remaining event whose ``prev_hash`` is the genesis hash or
    the ``through_hash`` of an anchor below it, so a pruned trail stays verifiable.
    """

    created_at = models.DateTimeField(default=timezone.now)
    through_id = models.BigIntegerField()
    through_hash = models.CharField(max_length=64)
    through_ts = models.DateTimeField()
    removed = models.BigIntegerField()
    forced = models.BooleanField(default=False)

    class Meta:
        ordering = ["-through_id"]

    def __str__(self) -> str:
        return f"pruned through {self.through_id} ({self.removed} events)"


class AuditPending(models.Model):
    """An audit event its writer has committed but the sealer has not yet placed in the chain.

    Writers only INSERT here, without any lock, so they never wait on each other. The sealer
    (``audit.sealer.audit_seal``) moves committed rows into :class:`AuditEvent`, in the order it
    finds them, assigning the chain position (the event id), the hash and the final timestamp, and
    deletes them here in the same transaction: a row is in exactly one of the two tables.
    """

    ts = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=32)
    alertname = models.CharField(max_length=200, blank=True, default="")
    fingerprint = models.CharField(max_length=64, blank=True, default="")
    policy = models.CharField(max_length=100, blank=True, default="")
    target = models.CharField(max_length=255, blank=True, default="")
    message = models.TextField(blank=True, default="")
    actor = models.CharField(max_length=150, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"pending {self.id} {self.kind}"
