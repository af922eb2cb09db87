"""Executors: one module per action kind behind one small interface.

Each executor module offers two functions:

- ``check(spec) -> None``: read-only; raises :class:`NotAllowed` when the target or the parameters
  may not be acted on (a container that did not opt in, a URL not allow-listed, an unsafe label in
  a command), :class:`TargetMissing` when the target does not exist or is ambiguous. The worker calls it before ``action_started`` and also in dry-run, so a dry run
  reports what a real run would refuse.
- ``execute(spec, *, timeout) -> ExecResult``: do the action and confirm it. Never raises for an
  expected failure: the result says whether it worked and whether a retry could help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from remediation.models import Action

OUTPUT_LIMIT = 4096
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 600.0


class NotAllowed(Exception):
    """The action may not run on this target with these parameters (audited as not_allowed)."""

    reason = "not_allowed"


class TargetMissing(NotAllowed):
    """The target does not exist (``target_missing``) or names several (``ambiguous_target``).

    A skip, not a failure: nothing ran, so it is not retried, starts no cooldown and is not counted
    by the circuit breaker (a mistyped alert must not stop remediation everywhere).
    """

    def __init__(self, message: str, *, reason: str = "target_missing") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class JobSpec:
    """What an executor needs to know: plain data copied from the job and its incident."""

    action: str
    target: str
    params: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    alertname: str = ""
    fingerprint: str = ""
    job_id: int | None = None
    # Evidence before a Docker action: None lets the job's policy decide (read from the database);
    # False keeps none (a fleet agent has no database to record it in).
    capture_evidence: bool | None = None


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one action; ``transient`` failures may be retried with backoff."""

    ok: bool
    transient: bool = False
    detail: str = ""
    output: dict[str, Any] = field(default_factory=dict)


def truncate(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """Keep audit events small: long output is cut, and says so."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit} more characters cut]"


def timeout_for(spec: JobSpec, default: float = DEFAULT_TIMEOUT) -> float:
    """The action's timeout from ``params.timeout_seconds``, bounded."""
    raw = spec.params.get("timeout_seconds", default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise NotAllowed("params.timeout_seconds must be a number of seconds") from None
    if not 0 < value <= MAX_TIMEOUT:
        raise NotAllowed(f"params.timeout_seconds must be between 0 and {int(MAX_TIMEOUT)}")
    return value


def executor_for(action: str) -> ModuleType:
    """The executor module for an action kind; NotAllowed for an unknown kind."""
    from remediation.executors import command, docker, log_only, webhook

    if action in (Action.RESTART_CONTAINER, Action.START_CONTAINER, Action.STOP_CONTAINER, Action.KILL_CONTAINER):
        return docker
    table: dict[str, ModuleType] = {Action.WEBHOOK: webhook, Action.COMMAND: command, Action.LOG_ONLY: log_only}
    if action not in table:
        raise NotAllowed(f"unknown action {action!r}")
    return table[action]
