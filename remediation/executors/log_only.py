"""log_only: the policy only records that it matched; nothing outside Autoheal changes."""

from __future__ import annotations

from remediation.executors import ExecResult, JobSpec


def check(spec: JobSpec) -> None:
    """Always allowed: nothing is touched."""


def execute(spec: JobSpec, *, timeout: float) -> ExecResult:
    """Record the match; the audit event is the whole effect."""
    return ExecResult(ok=True, detail=f"recorded {spec.alertname or 'alert'} for {spec.target or 'no target'}")
