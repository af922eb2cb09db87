"""The engine's state: policies, incidents (alerts), jobs and the runtime switch."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from autoheal_site.text import visible
from remediation.decisions import DEFAULT_COOLDOWN_SECONDS, DEFAULT_MAX_ACTIONS_PER_HOUR, DEFAULT_VERIFY_WITHIN_SECONDS


class Action(models.TextChoices):
    RESTART_CONTAINER = "restart_container", "restart container"
    START_CONTAINER = "start_container", "start container"
    STOP_CONTAINER = "stop_container", "stop container"
    KILL_CONTAINER = "kill_container", "kill container"
    WEBHOOK = "webhook", "call a webhook"
    COMMAND = "command", "run a command"
    LOG_ONLY = "log_only", "only record"


DOCKER_ACTIONS = frozenset(
    {Action.RESTART_CONTAINER, Action.START_CONTAINER, Action.STOP_CONTAINER, Action.KILL_CONTAINER}
)
# Actions that change something outside Autoheal: they count against budgets and the breaker.
DESTRUCTIVE_ACTIONS = frozenset(DOCKER_ACTIONS | {Action.WEBHOOK, Action.COMMAND})


class Mode(models.TextChoices):
    AUTO = "auto"
    APPROVE = "approve"


class SilenceUnknown(models.TextChoices):
    ACT = "act"
    SKIP = "skip"


class Policy(models.Model):
    """What to do when an alert matches: edited in the admin or imported as YAML."""

    name = models.SlugField(max_length=100, unique=True, help_text="Unique; YAML import updates by name.")
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True, default="")
    matchers = models.JSONField(
        default=list,
        help_text='Alertmanager matchers, e.g. ["alertname=\\"ContainerUnhealthy\\"", "severity=~\\"critical|page\\""]',
    )
    action = models.CharField(max_length=32, choices=Action.choices)
    target = models.CharField(max_length=255, default="{{ labels.container }}", blank=True)
    # Fleet placement: the Docker host the target lives on, a label template like the target's.
    # Empty: the host is found by the container's name in the agents' inventories.
    host = models.CharField(max_length=255, default="", blank=True)
    params = models.JSONField(default=dict, blank=True)
    cooldown_seconds = models.PositiveIntegerField(default=DEFAULT_COOLDOWN_SECONDS)
    max_actions_per_hour = models.PositiveIntegerField(default=DEFAULT_MAX_ACTIONS_PER_HOUR)
    dry_run = models.BooleanField(default=False, help_text="Canary mode: record what would happen, do nothing.")
    verify_within_seconds = models.PositiveIntegerField(default=DEFAULT_VERIFY_WITHIN_SECONDS)
    priority = models.IntegerField(default=100, help_text="Lower runs first when several policies match.")
    # People in the loop (approval, Alertmanager silences, notifications, evidence).
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.AUTO)
    approval_timeout_seconds = models.PositiveIntegerField(default=900)
    silence_during_action = models.BooleanField(default=False)
    when_silence_unknown = models.CharField(max_length=4, choices=SilenceUnknown.choices, default=SilenceUnknown.ACT)
    notify = models.JSONField(default=list, blank=True, help_text="Names of configured notification targets.")
    capture_evidence = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name


class Alert(models.Model):
    """One incident: an alert identified by (fingerprint, startsAt), however often it is delivered."""

    class Status(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"

    class Source(models.TextChoices):
        ALERTMANAGER = "alertmanager"
        DOCKER = "docker"

    fingerprint = models.CharField(max_length=64)
    starts_at = models.DateTimeField()
    alertname = models.CharField(max_length=200, db_index=True, default="", blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.FIRING)
    labels = models.JSONField(default=dict)
    annotations = models.JSONField(default=dict, blank=True)
    generator_url = models.TextField(blank=True, default="")
    ends_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.ALERTMANAGER)
    received_at = models.DateTimeField(default=timezone.now)
    last_received_at = models.DateTimeField(default=timezone.now)
    deliveries = models.PositiveIntegerField(default=1)
    resolved_at = models.DateTimeField(null=True, blank=True)
    acked_by = models.CharField(max_length=150, blank=True, default="")
    acked_at = models.DateTimeField(null=True, blank=True)
    ack_note = models.TextField(blank=True, default="")
    escalated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["fingerprint", "starts_at"], name="alert_one_incident"),
        ]
        indexes = [models.Index(fields=["status", "received_at"], name="alert_status_recv")]

    def __str__(self) -> str:
        return visible(f"{self.alertname} {self.fingerprint} @ {self.starts_at:%Y-%m-%dT%H:%M:%SZ}")


class Job(models.Model):
    """One remediation for one (policy, incident): a database constraint makes it unique."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        OK = "ok"
        FAIL = "fail"
        UNKNOWN = "unknown"
        SKIPPED = "skipped"
        AWAITING_APPROVAL = "awaiting_approval"

    class Verify(models.TextChoices):
        NONE = "", "not applicable"
        PENDING = "pending"
        VERIFIED = "verified"
        INEFFECTIVE = "ineffective"

    policy = models.ForeignKey(Policy, null=True, on_delete=models.SET_NULL, related_name="jobs")
    policy_name = models.CharField(max_length=100)
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="jobs")
    action = models.CharField(max_length=32, choices=Action.choices)
    target = models.CharField(max_length=255, blank=True, default="")
    # Fleet placement: the Docker host whose agent runs this job; empty for the central worker.
    host = models.CharField(max_length=100, blank=True, default="", db_index=True)
    params = models.JSONField(default=dict, blank=True)
    dry_run = models.BooleanField(default=False)
    # Which remediation of the incident this is: 1 for the job intake creates, 2, 3... for the
    # re-attempts the worker queues after an ineffective or failed action (budget and backoff).
    attempt = models.PositiveIntegerField(default=1)
    state = models.CharField(max_length=24, choices=State.choices, default=State.QUEUED)
    # How many times this job was claimed (transient failures are retried up to a bound).
    attempts = models.PositiveIntegerField(default=0)
    not_before = models.DateTimeField(default=timezone.now)
    lease_owner = models.CharField(max_length=100, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    skip_reason = models.CharField(max_length=32, blank=True, default="")
    verify_state = models.CharField(max_length=16, choices=Verify.choices, default=Verify.NONE, blank=True)
    verify_deadline = models.DateTimeField(null=True, blank=True)
    false_positive = models.BooleanField(null=True, blank=True)
    # Approve-mode policies: the job waits for a person until approval_expires_at.
    approval_expires_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.CharField(max_length=150, blank=True, default="")
    approved_at = models.DateTimeField(null=True, blank=True)
    approval_reason = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            # One job per (policy, incident) per attempt: intake always creates attempt 1, so a
            # re-delivered alert can never queue a second first job.
            models.UniqueConstraint(fields=["policy", "alert", "attempt"], name="job_one_per_policy_incident"),
        ]
        indexes = [
            models.Index(fields=["state", "not_before"], name="job_state_due"),
            models.Index(fields=["target", "started_at"], name="job_target_started"),
            models.Index(fields=["verify_state", "verify_deadline"], name="job_verify_due"),
        ]

    def __str__(self) -> str:
        return visible(f"job {self.pk} {self.action} {self.target} ({self.state})")


class SwitchManager(models.Manager["Switch"]):
    """The one place that knows the switch is a single row: read it, lock it, or filter on it."""

    def singleton(self) -> models.QuerySet[Switch]:
        """The single row as a queryset (for conditional updates and exists checks)."""
        return self.filter(pk=Switch.SINGLETON_PK)

    def current(self) -> Switch | None:
        """The row, or None while nobody has changed anything (the defaults apply)."""
        return self.singleton().first()

    def current_or_default(self) -> Switch:
        """The row, or an unsaved row holding the defaults."""
        return self.current() or Switch(pk=Switch.SINGLETON_PK)

    def locked(self) -> Switch:
        """The row under a row lock (created first if needed): call inside a transaction."""
        self.get_or_create(pk=Switch.SINGLETON_PK)
        return self.select_for_update().get(pk=Switch.SINGLETON_PK)


class Switch(models.Model):
    """The runtime kill switch, pause and circuit breaker: one row (``SINGLETON_PK``).

    The environment floors (AUTOHEAL_ENABLED, AUTOHEAL_DRY_RUN) can never be loosened by it. Read
    and lock it through ``Switch.objects`` (:class:`SwitchManager`), never by its pk.
    """

    SINGLETON_PK = 1

    enabled = models.BooleanField(default=True)
    dry_run = models.BooleanField(default=False)
    paused_until = models.DateTimeField(null=True, blank=True)
    circuit_open = models.BooleanField(default=False)
    circuit_opened_at = models.DateTimeField(null=True, blank=True)
    circuit_reason = models.CharField(max_length=255, blank=True, default="")
    # After the cool-off the open circuit lets one probe action through; its outcome closes the
    # circuit or opens it again. Actions before circuit_reset_at no longer count against it.
    circuit_half_open = models.BooleanField(default=False)
    circuit_reset_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.CharField(max_length=150, blank=True, default="")

    objects = SwitchManager()

    def __str__(self) -> str:
        return "runtime switch"


class ActionSilence(models.Model):
    """An Alertmanager silence Autoheal created while it repairs; expired when the job is done."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="silences")
    silence_id = models.CharField(max_length=64)
    alertmanager = models.CharField(max_length=255)
    ends_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["expired_at"], name="action_silence_open")]

    def __str__(self) -> str:
        return f"silence {self.silence_id} for job {self.job_id}"
