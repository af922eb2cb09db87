"""Evidence kept before a destructive Docker action: the container's last logs, State and Health.

A restart destroys the evidence of why the container was sick. Before acting, the last
``LOG_LINES`` log lines (at most ``LOG_BYTES``, the newest kept), ``State`` and ``Health`` with its
last probes' output are recorded as ``evidence_captured`` with ``data.evidence``, after passing
through the same redaction as the logs (tokens, passwords, JWTs are masked). Capturing never
stops the action: a failure to read is recorded as the evidence's ``error``.
"""

from __future__ import annotations

import logging
from typing import Any

from accounts.redact import redact
from audit.services import audit_record
from remediation.executors import JobSpec

logger = logging.getLogger(__name__)

LOG_LINES = 200
LOG_BYTES = 64 * 1024
PROBE_OUTPUT_CHARS = 4096


def _wanted(spec: JobSpec) -> tuple[bool, str]:
    """Whether the job's policy asks for evidence (the default), and the policy's name.

    Evidence belongs to a job's incident: an executor called without a job keeps none.
    """
    from remediation.models import Job

    if spec.job_id is None or spec.capture_evidence is False:
        return False, ""
    row = Job.objects.filter(pk=spec.job_id).values_list("policy__capture_evidence", "policy_name").first()
    if row is None:
        return False, ""
    wanted, policy = row
    return wanted is not False, str(policy)


def _logs(container: Any) -> dict[str, Any]:
    raw = container.logs(stdout=True, stderr=True, tail=LOG_LINES, timestamps=True)
    cut = len(raw) > LOG_BYTES
    text = raw[-LOG_BYTES:].decode("utf-8", errors="replace")
    if cut and "\n" in text:
        text = text.split("\n", 1)[1]  # drop the partial first line
    return {"logs": redact(text), "logs_truncated": cut, "log_lines": text.count("\n")}


def _health(state: dict[str, Any]) -> dict[str, Any] | None:
    health = state.get("Health")
    if not isinstance(health, dict):
        return None
    probes = [
        {
            "start": probe.get("Start"),
            "end": probe.get("End"),
            "exit_code": probe.get("ExitCode"),
            "output": redact(str(probe.get("Output", ""))[:PROBE_OUTPUT_CHARS]),
        }
        for probe in (health.get("Log") or [])
        if isinstance(probe, dict)
    ]
    return {"status": health.get("Status"), "failing_streak": health.get("FailingStreak"), "probes": probes}


def evidence_before_approval(spec: JobSpec) -> None:
    """Evidence for a Docker job that waits for a person, so the approver sees why it is sick.

    Only for a container the action may touch (the executor's read-only check); anything that
    goes wrong here is logged and never stops the approval request.
    """
    from remediation.executors import docker as docker_executor
    from remediation.models import DOCKER_ACTIONS

    if spec.action not in DOCKER_ACTIONS or not _wanted(spec)[0]:
        return
    try:
        docker_executor.check(spec)
        api = docker_executor.client(timeout=30)
        try:
            container = api.containers.get(spec.target)
            evidence_capture(container, spec, stage="before_approval")
        finally:
            api.close()
    except Exception as exc:
        logger.info("job %s: no evidence before approval: %s", spec.job_id, type(exc).__name__)


def evidence_capture(container: Any, spec: JobSpec, *, stage: str = "before_action") -> None:
    """Record the container's evidence in the audit trail before the action (if the policy wants it)."""
    wanted, policy = _wanted(spec)
    if not wanted:
        return
    evidence_record(evidence=evidence_read(container, job_id=spec.job_id), spec=spec, policy=policy, stage=stage)


def evidence_read(container: Any, *, job_id: int | None = None, reload: bool = True) -> dict[str, Any]:
    """The container's evidence, read from Docker only (no database): logs, State, Health, redacted.

    ``reload=False`` for a container object just looked up (its State is current). A failure to
    read is the evidence's ``error``; it never raises for Docker's sake.
    """
    evidence: dict[str, Any] = {"container": str(container.attrs.get("Name", "")).lstrip("/"), "id": container.short_id}
    try:
        if reload:
            container.reload()
        state = dict(container.attrs.get("State") or {})
        evidence["health"] = _health(state)
        state.pop("Health", None)
        evidence["state"] = {k: redact(v) if isinstance(v, str) else v for k, v in state.items()}
        evidence.update(_logs(container))
    except Exception as exc:  # evidence must never stop the repair
        logger.warning("job %s: evidence capture failed: %s", job_id, type(exc).__name__)
        evidence["error"] = redact(f"{type(exc).__name__}: {exc}")[:500]
    return evidence


def evidence_record(
    *, evidence: dict[str, Any], spec: JobSpec, policy: str, stage: str = "before_action", host: str = ""
) -> None:
    """The ``evidence_captured`` audit event of read evidence (``host``: the agent's host that read it)."""
    audit_record(
        kind="evidence_captured",
        message=f"evidence of {evidence.get('container', '')} before {spec.action}"
        + (" (before approval)" if stage == "before_approval" else ""),
        alertname=spec.alertname,
        fingerprint=spec.fingerprint,
        policy=policy,
        target=spec.target,
        data={
            "job": spec.job_id,
            "action": spec.action,
            "stage": stage,
            "evidence": evidence,
            **({"host": host} if host else {}),
        },
    )
