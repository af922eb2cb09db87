"""The notification outbox: what must be told to whom, kept until it was delivered or gave up."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Notification(models.Model):
    """One message for one target. Sending happens later, in the worker, never inline."""

    class State(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    # The audit event it tells about (none for a test notification); with ``target`` it is unique,
    # so reading the same event twice never sends twice.
    event_id = models.BigIntegerField(null=True, blank=True)
    event = models.CharField(max_length=32)
    target = models.CharField(max_length=100)
    title = models.CharField(max_length=250)
    body = models.TextField()
    notify_type = models.CharField(max_length=16, default="info")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_try_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event_id", "target"], name="notification_once_per_event_target"),
        ]
        indexes = [models.Index(fields=["state", "next_try_at"], name="notification_due")]

    def __str__(self) -> str:
        return f"{self.event} -> {self.target} ({self.state})"


class OutboxCursor(models.Model):
    """One row (pk=1): the last audit event id already turned into notifications."""

    last_event_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"outbox cursor at {self.last_event_id}"
