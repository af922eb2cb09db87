"""Alert intake: one webhook v4 delivery in, stored incidents and queued jobs out.

The service stores the delivery and writes its audit events in one transaction, and wakes the
workers only after that transaction commits. Remediation itself never runs here: a job row is the
whole hand-over to the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.services import audit_pending_rows, audit_pending_stored, audit_record_many
from autoheal_site.utc import iso_utc
from fleet.placement import Placer
from remediation import wakeup
from remediation.intake_sql import Stored, incidents_upsert, jobs_insert, pg_jobs_and_events
from remediation.models import Alert, Job
from remediation.payload import Delivery, IncomingAlert, PayloadError, parse_delivery
from remediation.planning import plan_alert
from remediation.policies import policy_rules_at
from remediation.routing import PolicyRule

logger = logging.getLogger(__name__)

__all__ = ["IngestResult", "PayloadError", "alert_ingest"]


@dataclass(frozen=True)
class IngestResult:
    """What one delivery did: alerts that created or changed an incident, repeats, jobs queued."""

    accepted: int
    duplicates: int
    jobs: int

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "jobs": self.jobs}


def _is_audited_duplicate(repeat: int) -> bool:
    """Repeats 1, 2, 4, 8, 16 ... of one incident are audited; the row counts every one exactly.

    Alertmanager re-sends a firing alert every group_interval and repeat_interval, twice with an HA
    pair: one audit row per repeat would bury the trail under identical lines. Doubling the gap
    keeps the first repeats visible, bounds the rows at log2(deliveries) per incident, and the
    incident's ``deliveries`` counter and ``last_received_at`` stay exact.
    """
    return repeat > 0 and repeat & (repeat - 1) == 0


def alert_ingest(*, payload: Mapping[str, Any], source: str = "alertmanager", actor: str = "") -> IngestResult:
    """Store one webhook v4 delivery durably and queue the jobs its new incidents call for.

    One transaction for the whole delivery, a constant number of statements whatever its size
    (``remediation.intake_sql``): one upsert for its incidents, one statement for its jobs and
    audit events (on PostgreSQL with the sealer; two elsewhere), then the commit, after which the
    workers are woken:

    - every alert is one incident per (fingerprint, startsAt), enforced by the database
      (``alert_one_incident``) and safe across processes: the upsert (INSERT ... ON CONFLICT DO
      UPDATE) inserts a new incident or counts the delivery on the existing one and locks it, and
      tells which it was, so of two concurrent deliveries of one alert exactly one sees it new;
    - the first delivery of an incident audits ``alert_received`` and, if it is firing, routes it:
      ``action_queued`` per queued job, ``action_skipped`` (reason ``not_allowed``) for a matching
      policy whose target cannot be rendered, or ``no_policy``;
    - a resolved alert closes its incident (``alert_resolved``) and never creates a job; a stale
      "firing" that arrives after the "resolved" of the same incident never reopens it;
    - repeats count on the incident row; see ``_is_audited_duplicate`` for which are audited.

    Raises PayloadError (nothing stored) for a body that is not a valid v4 payload.
    """
    if source not in Alert.Source.values:
        raise ValueError(f"unknown alert source {source!r}")
    delivery = parse_delivery(payload)
    return _ingest(delivery, source=source, actor=actor or source)


def _new_row(alert: IncomingAlert, *, source: str, now: datetime) -> dict[str, Any]:
    """The column values of the incident this alert opens, if it is new (``deliveries=1``)."""
    resolved = alert.status == Alert.Status.RESOLVED
    return {
        "fingerprint": alert.fingerprint,
        "starts_at": alert.starts_at,
        "alertname": alert.alertname[:200],
        "status": alert.status,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "generator_url": alert.generator_url,
        "ends_at": (alert.ends_at or now) if resolved else None,
        "resolved_at": now if resolved else None,
        "source": source,
        "received_at": now,
        "last_received_at": now,
        "deliveries": 1,
    }


def _ingest(delivery: Delivery, *, source: str, actor: str) -> IngestResult:
    now = timezone.now()
    # A fixed order for inserts and locks, so two deliveries sharing incidents never deadlock.
    alerts = sorted(delivery.alerts, key=lambda a: a.key)
    events: list[dict[str, Any]] = []
    accepted = duplicates = 0
    jobs: list[dict[str, Any]] = []
    with transaction.atomic():
        if delivery.truncated_alerts:
            events.append(_truncated_event(delivery, actor))
        candidates = [_new_row(a, source=source, now=now) for a in alerts]
        # One statement: new incidents inserted, known ones counted and locked, policy version read.
        stored, policy_version = incidents_upsert(candidates)
        fresh_firing: list[tuple[IncomingAlert, int]] = []
        closing: list[Alert] = []
        for alert in alerts:
            known = stored[alert.key]
            base = {"alertname": alert.alertname, "fingerprint": alert.fingerprint, "actor": actor}
            if known.previous_deliveries == 0:
                accepted += 1
                events.append({**base, **_received_event(alert, delivery, source)})
                if alert.status == Alert.Status.RESOLVED:
                    events.append({**base, **_resolved_event(alert.alertname, alert.starts_at, alert.ends_at or now)})
                else:
                    fresh_firing.append((alert, known.pk))
            elif alert.status == Alert.Status.RESOLVED and known.status == Alert.Status.FIRING:
                accepted += 1
                ends_at = alert.ends_at or now
                closing.append(Alert(pk=known.pk, status=Alert.Status.RESOLVED, ends_at=ends_at, resolved_at=now))
                events.append({**base, **_resolved_event(alert.alertname, alert.starts_at, ends_at)})
            else:
                duplicates += 1
                stale = alert.status == Alert.Status.FIRING and known.status == Alert.Status.RESOLVED
                if stale or _is_audited_duplicate(known.previous_deliveries):
                    events.append({**base, **_duplicate_event(alert, known, stale=stale)})
        if closing:
            Alert.objects.bulk_update(closing, ["status", "ends_at", "resolved_at"])
        if fresh_firing:
            rules = policy_rules_at(policy_version)
            placer = Placer()
            for alert, alert_id in fresh_firing:
                jobs.extend(_route(alert, alert_id, rules, events, actor=actor, now=now, placer=placer))
        _store_jobs_and_events(jobs, events)
    return IngestResult(accepted=accepted, duplicates=duplicates, jobs=len(jobs))


def _store_jobs_and_events(jobs: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """Insert the jobs (waking the workers on commit) and the audit events naming them.

    Each incident here is new and locked by this transaction: no job can exist for it yet. The
    workers are woken once it commits (``wakeup.notify_jobs``). On PostgreSQL with the audit sealer
    the jobs and the pending events are one statement (``intake_sql.pg_jobs_and_events``).
    """
    if jobs:
        transaction.on_commit(wakeup.notify_jobs)
    if connection.vendor == "postgresql":
        pending = audit_pending_rows(events)
        if pending is not None:
            for row, event in zip(pending, events, strict=True):
                job = event.get("_job")
                if job is not None:
                    row["_job_alert"], row["_job_policy"] = job["alert_id"], job["policy_id"]
            ids = pg_jobs_and_events(jobs, pending)
            if len(ids) != len(jobs):
                raise RuntimeError(f"{len(jobs)} jobs inserted, {len(ids)} returned")
            audit_pending_stored(pending)
            return
    if jobs:
        models = [Job(**job) for job in jobs]
        jobs_insert(models)
        by_key = {(job.alert_id, job.policy_id): job.pk for job in models}
        for event in events:
            job = event.get("_job")
            if job is not None:
                event["data"]["job"] = by_key[(job["alert_id"], job["policy_id"])]
    for event in events:
        event.pop("_job", None)
    if events:
        audit_record_many(events)


def _route(
    alert: IncomingAlert,
    alert_id: int,
    rules: Sequence[PolicyRule],
    events: list[dict[str, Any]],
    *,
    actor: str,
    now: datetime,
    placer: Placer,
) -> list[dict[str, Any]]:
    base = {"alertname": alert.alertname, "fingerprint": alert.fingerprint, "actor": actor}
    planned = plan_alert(alert.labels, rules)
    if not planned:
        events.append(
            {
                **base,
                "kind": "no_policy",
                "message": f"no enabled policy matches {alert.alertname or 'this alert'}",
                "data": {"labels": alert.labels},
            }
        )
        return []
    jobs = []
    for action in planned:
        rule = action.rule
        if not action.queues:
            events.append(
                {
                    **base,
                    "kind": "action_skipped",
                    "policy": rule.name,
                    "message": f"{rule.name}: no {rule.action}: {action.error}",
                    "data": {
                        "reason": action.skip_reason,
                        "error": action.error,
                        "missing_label": action.missing_label,
                        "template": rule.target.source,
                        "action": rule.action,
                    },
                }
            )
            continue
        # Fleet hook: which host's agent runs the job (fleet.placement), or why none can.
        placement = placer.place(action=rule.action, target=action.target, host=action.host)
        if placement.skip_reason:
            events.append(
                {
                    **base,
                    "kind": "action_skipped",
                    "policy": rule.name,
                    "target": action.target,
                    "message": f"{rule.name}: no {rule.action}: {placement.message}",
                    "data": {
                        "reason": placement.skip_reason,
                        "action": rule.action,
                        "hosts": list(placement.candidates),
                    },
                }
            )
            continue
        job = {
            "policy_id": rule.policy_id,
            "policy_name": rule.name,
            "alert_id": alert_id,
            "action": rule.action,
            "target": action.target,
            "host": placement.host,
            "params": dict(rule.params),
            "dry_run": rule.dry_run,
            "state": Job.State.QUEUED,
            "attempt": 1,
            "queued_at": now,
            "not_before": now,
        }
        jobs.append(job)
        events.append(
            {
                **base,
                "kind": "action_queued",
                "policy": rule.name,
                "target": action.target,
                "message": f"{rule.name}: {rule.action} {action.target}" + (" (dry run)" if rule.dry_run else ""),
                "data": {
                    "action": rule.action,
                    "dry_run": rule.dry_run,
                    "priority": rule.priority,
                    **({"host": placement.host} if placement.host else {}),
                },
                "_job": job,
            }
        )
    return jobs


def _truncated_event(delivery: Delivery, actor: str) -> dict[str, Any]:
    names = {a.alertname for a in delivery.alerts}
    return {
        "kind": "alert_truncated",
        "alertname": names.pop() if len(names) == 1 else "",
        "actor": actor,
        "message": (
            f"Alertmanager left out {delivery.truncated_alerts} alert(s) of this group (its max_alerts); "
            "they were not received"
        ),
        "data": {
            "truncated": delivery.truncated_alerts,
            "received": len(delivery.alerts),
            "receiver": delivery.receiver,
            "group_key": delivery.group_key,
        },
    }


def _received_event(alert: IncomingAlert, delivery: Delivery, source: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": alert.status,
        "starts_at": iso_utc(alert.starts_at),
        "labels": alert.labels,
        "annotations": alert.annotations,
        "generator_url": alert.generator_url,
        "source": source,
        "receiver": delivery.receiver,
    }
    if alert.sanitized or delivery.sanitized:
        # What the database could not hold was stored as U+FFFD: the record says where.
        data["sanitized"] = [*delivery.sanitized, *alert.sanitized]
    return {"kind": "alert_received", "message": f"{alert.alertname or 'alert'} {alert.status}", "data": data}


def _resolved_event(alertname: str, starts_at: datetime, ends_at: datetime) -> dict[str, Any]:
    return {
        "kind": "alert_resolved",
        "message": f"{alertname[:200] or 'alert'} resolved; incident closed",
        "data": {"starts_at": iso_utc(starts_at), "ends_at": iso_utc(ends_at)},
    }


def _duplicate_event(alert: IncomingAlert, known: Stored, *, stale: bool) -> dict[str, Any]:
    delivery_number = known.previous_deliveries + 1
    if stale:
        message = "a firing delivery arrived after the incident resolved; it stays resolved"
    else:
        message = f"delivery {delivery_number} of the same incident; nothing new to do"
    return {
        "kind": "alert_duplicate",
        "message": message,
        "data": {
            "status": alert.status,
            "incident_status": known.status,
            "starts_at": iso_utc(alert.starts_at),
            "deliveries": delivery_number,
            "stale": stale,
        },
    }
