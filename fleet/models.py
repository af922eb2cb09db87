"""The fleet's state: per-host agent tokens, the agents seen, and the reports they sent."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AgentToken(models.Model):
    """A per-host credential of an agent; only its SHA-256 is stored, the token is shown once."""

    host = models.CharField(max_length=100, db_index=True)
    # The first characters of the token, to tell tokens apart in ``list`` (never enough to use it).
    prefix = models.CharField(max_length=12)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150, blank=True, default="")
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host", "created_at"]

    def __str__(self) -> str:
        return f"agent token {self.prefix}… for {self.host}"


class Agent(models.Model):
    """One Docker host's agent as the central last saw it: version, inventory, last contact."""

    host = models.CharField(max_length=100, unique=True)
    version = models.CharField(max_length=50, blank=True, default="")
    engine = models.CharField(max_length=200, blank=True, default="")
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    # [{"name", "labels", "health"}] of the host's opted-in containers, as the agent reported them.
    inventory = models.JSONField(default=list, blank=True)
    inventory_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host"]

    def __str__(self) -> str:
        return f"agent {self.host}"

    @property
    def container_names(self) -> list[str]:
        return [str(item.get("name", "")) for item in self.inventory if isinstance(item, dict)]


class AgentReport(models.Model):
    """An action's outcome as an agent reported it: one row per job and claim, whatever the resends.

    The unique constraint makes a report idempotent: an agent that lost the network re-sends until
    it hears back, and the second copy is recognised and never applied again.
    """

    job = models.ForeignKey("remediation.Job", on_delete=models.CASCADE, related_name="agent_reports")
    host = models.CharField(max_length=100)
    attempt = models.PositiveIntegerField()
    claim = models.PositiveIntegerField()
    received_at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    detail = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict, blank=True)
    # What the central did with it: applied, late (after the lease expired) or ignored.
    disposition = models.CharField(max_length=16)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "attempt", "claim"], name="agent_report_once"),
        ]

    def __str__(self) -> str:
        return f"report of job {self.job_id} attempt {self.attempt} from {self.host}"
