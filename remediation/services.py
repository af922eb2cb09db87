"""Writes of the remediation core's intake: alerts in, queued jobs out; policies in and out.

Each service changes state and writes its audit events in one transaction, and wakes the workers
only after that transaction commits. Remediation itself never runs here: a job row is the whole
hand-over to the workers.
"""

from __future__ import annotations

import functools
import logging
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.services import audit_record_many
from fleet.placement import Placer
from remediation import wakeup
from remediation.matchers import MatcherError
from remediation.models import Alert, Job, Policy
from remediation.payload import Delivery, IncomingAlert, PayloadError, parse_delivery
from remediation.policy_schema import FIELDS, PolicyError, policy_validate
from remediation.routing import PolicyRule, route_alert
from remediation.targets import TemplateError

logger = logging.getLogger(__name__)

__all__ = [
    "IngestResult",
    "PayloadError",
    "PolicyError",
    "PolicyImportError",
    "PolicyImportResult",
    "alert_ingest",
    "policies_export",
    "policies_import",
    "policies_load_yaml",
    "policy_as_data",
    "policy_delete",
    "policy_rules",
    "policy_save",
    "policy_validate",
]


# --- Alerts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestResult:
    """What one delivery did: alerts that created or changed an incident, repeats, jobs queued."""

    accepted: int
    duplicates: int
    jobs: int

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "jobs": self.jobs}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _is_audited_duplicate(repeat: int) -> bool:
    """Repeats 1, 2, 4, 8, 16 ... of one incident are audited; the row counts every one exactly.

    Alertmanager re-sends a firing alert every group_interval and repeat_interval, twice with an HA
    pair: one audit row per repeat would bury the trail under identical lines. Doubling the gap
    keeps the first repeats visible, bounds the rows at log2(deliveries) per incident, and the
    incident's ``deliveries`` counter and ``last_received_at`` stay exact.
    """
    return repeat > 0 and repeat & (repeat - 1) == 0


def policy_rules() -> list[PolicyRule]:
    """The enabled policies as routing rules, one query.

    A row that no longer parses (written around the validation) is left out and logged, so one bad
    policy never makes the webhook lose alerts.
    """
    rules = []
    for policy in Policy.objects.filter(enabled=True):
        try:
            rules.append(
                PolicyRule.build(
                    name=policy.name,
                    matchers=policy.matchers,
                    action=policy.action,
                    target=policy.target,
                    params=policy.params,
                    dry_run=policy.dry_run,
                    priority=policy.priority,
                    enabled=policy.enabled,
                    policy_id=policy.pk,
                    host=policy.host,
                )
            )
        except (MatcherError, TemplateError, TypeError) as exc:
            logger.error("policy %s is invalid and is skipped: %s", policy.name, exc)
    return rules


def alert_ingest(*, payload: Mapping[str, Any], source: str = "alertmanager", actor: str = "") -> IngestResult:
    """Store one webhook v4 delivery durably and queue the jobs its new incidents call for.

    One transaction for the whole delivery, a constant number of queries whatever its size:

    - every alert is one incident per (fingerprint, startsAt), enforced by the database
      (``alert_one_incident``) and safe across processes: rows are inserted with ON CONFLICT DO
      NOTHING and re-read under a row lock;
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
    seen: dict[tuple[str, datetime], int] = {}
    for index, alert in enumerate(delivery.alerts):
        if alert.key in seen:
            raise PayloadError(f"alerts[{index}]", f"repeats alerts[{seen[alert.key]}] (same fingerprint and startsAt)")
        seen[alert.key] = index
    return _ingest(delivery, source=source, actor=actor or source)


def _new_row(alert: IncomingAlert, *, source: str, now: datetime) -> Alert:
    resolved = alert.status == Alert.Status.RESOLVED
    return Alert(
        fingerprint=alert.fingerprint,
        starts_at=alert.starts_at,
        alertname=alert.alertname[:200],
        status=alert.status,
        labels=alert.labels,
        annotations=alert.annotations,
        generator_url=alert.generator_url,
        ends_at=(alert.ends_at or now) if resolved else None,
        resolved_at=now if resolved else None,
        source=source,
        received_at=now,
        last_received_at=now,
        # 0 marks "inserted by this transaction": a committed row always has 1 or more, and
        # nobody else can see or update this row before we commit.
        deliveries=0,
    )


def _ingest(delivery: Delivery, *, source: str, actor: str) -> IngestResult:
    now = timezone.now()
    # A fixed order for inserts and locks, so two deliveries sharing incidents never deadlock.
    alerts = sorted(delivery.alerts, key=lambda a: a.key)
    events: list[dict[str, Any]] = []
    accepted = duplicates = 0
    jobs: list[Job] = []
    with transaction.atomic():
        if delivery.truncated_alerts:
            events.append(_truncated_event(delivery, actor))
        Alert.objects.bulk_create([_new_row(a, source=source, now=now) for a in alerts], ignore_conflicts=True)
        lookup = functools.reduce(operator.or_, (Q(fingerprint=fp, starts_at=st) for fp, st in (a.key for a in alerts)))
        rows = {
            (row.fingerprint, row.starts_at): row
            for row in Alert.objects.select_for_update().filter(lookup).order_by("fingerprint", "starts_at")
        }
        fresh_firing: list[tuple[IncomingAlert, Alert]] = []
        closing: list[Alert] = []
        for alert in alerts:
            row = rows[alert.key]
            base = {"alertname": alert.alertname, "fingerprint": alert.fingerprint, "actor": actor}
            if row.deliveries == 0:
                accepted += 1
                events.append({**base, **_received_event(alert, delivery, source)})
                if alert.status == Alert.Status.RESOLVED:
                    events.append({**base, **_resolved_event(row)})
                else:
                    fresh_firing.append((alert, row))
            elif alert.status == Alert.Status.RESOLVED and row.status == Alert.Status.FIRING:
                accepted += 1
                row.status = Alert.Status.RESOLVED
                row.ends_at = alert.ends_at or now
                row.resolved_at = now
                closing.append(row)
                events.append({**base, **_resolved_event(row)})
            else:
                duplicates += 1
                stale = alert.status == Alert.Status.FIRING and row.status == Alert.Status.RESOLVED
                if stale or _is_audited_duplicate(row.deliveries):
                    events.append({**base, **_duplicate_event(alert, row, stale=stale)})
        Alert.objects.filter(pk__in=[row.pk for row in rows.values()]).update(
            deliveries=F("deliveries") + 1, last_received_at=now
        )
        if closing:
            Alert.objects.bulk_update(closing, ["status", "ends_at", "resolved_at"])
        if fresh_firing:
            rules = policy_rules()
            placer = Placer()
            for alert, row in fresh_firing:
                jobs.extend(_route(alert, row, rules, events, actor=actor, now=now, placer=placer))
        if jobs:
            # Each incident here is new and locked by this transaction: no job can exist for it yet.
            Job.objects.bulk_create(jobs)
            for event in events:
                job = event.pop("_job", None)
                if job is not None:
                    event["data"]["job"] = job.pk
            transaction.on_commit(wakeup.notify_jobs)
        if events:
            audit_record_many(events)
    return IngestResult(accepted=accepted, duplicates=duplicates, jobs=len(jobs))


def _route(
    alert: IncomingAlert,
    row: Alert,
    rules: Sequence[PolicyRule],
    events: list[dict[str, Any]],
    *,
    actor: str,
    now: datetime,
    placer: Placer,
) -> list[Job]:
    base = {"alertname": alert.alertname, "fingerprint": alert.fingerprint, "actor": actor}
    routes = route_alert(alert.labels, rules)
    if not routes:
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
    for route in routes:
        rule = route.rule
        error = route.error
        if route.target is not None and len(route.target) > 255:
            error = "the rendered target is longer than 255 characters"
        if route.target is None or error:
            events.append(
                {
                    **base,
                    "kind": "action_skipped",
                    "policy": rule.name,
                    "message": f"{rule.name}: no {rule.action}: {error}",
                    "data": {
                        "reason": "not_allowed",
                        "error": error,
                        "missing_label": route.missing_label,
                        "template": rule.target.source,
                        "action": rule.action,
                    },
                }
            )
            continue
        # Fleet hook: which host's agent runs the job (fleet.placement), or why none can.
        placement = placer.place(action=rule.action, target=route.target, host=route.host)
        if placement.skip_reason:
            events.append(
                {
                    **base,
                    "kind": "action_skipped",
                    "policy": rule.name,
                    "target": route.target,
                    "message": f"{rule.name}: no {rule.action}: {placement.message}",
                    "data": {
                        "reason": placement.skip_reason,
                        "action": rule.action,
                        "hosts": list(placement.candidates),
                    },
                }
            )
            continue
        job = Job(
            policy_id=rule.policy_id,
            policy_name=rule.name,
            alert=row,
            action=rule.action,
            target=route.target,
            host=placement.host,
            params=dict(rule.params),
            dry_run=rule.dry_run,
            state=Job.State.QUEUED,
            attempt=1,
            queued_at=now,
            not_before=now,
        )
        jobs.append(job)
        events.append(
            {
                **base,
                "kind": "action_queued",
                "policy": rule.name,
                "target": route.target,
                "message": f"{rule.name}: {rule.action} {route.target}" + (" (dry run)" if rule.dry_run else ""),
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
    return {
        "kind": "alert_received",
        "message": f"{alert.alertname or 'alert'} {alert.status}",
        "data": {
            "status": alert.status,
            "starts_at": _iso(alert.starts_at),
            "labels": alert.labels,
            "annotations": alert.annotations,
            "generator_url": alert.generator_url,
            "source": source,
            "receiver": delivery.receiver,
        },
    }


def _resolved_event(row: Alert) -> dict[str, Any]:
    return {
        "kind": "alert_resolved",
        "message": f"{row.alertname or 'alert'} resolved; incident closed",
        "data": {"starts_at": _iso(row.starts_at), "ends_at": _iso(row.ends_at)},
    }


def _duplicate_event(alert: IncomingAlert, row: Alert, *, stale: bool) -> dict[str, Any]:
    delivery_number = row.deliveries + 1
    if stale:
        message = "a firing delivery arrived after the incident resolved; it stays resolved"
    else:
        message = f"delivery {delivery_number} of the same incident; nothing new to do"
    return {
        "kind": "alert_duplicate",
        "message": message,
        "data": {
            "status": alert.status,
            "incident_status": row.status,
            "starts_at": _iso(alert.starts_at),
            "deliveries": delivery_number,
            "stale": stale,
        },
    }


# --- Policies -------------------------------------------------------------------------------


def policy_as_data(policy: Policy) -> dict[str, Any]:
    """A policy row as the data of INTERFACE.md (the YAML shape), fields in order."""
    return {name: getattr(policy, name) for name in FIELDS}


REDACTED = "[redacted]"


def _shown(name: str, value: Any) -> Any:
    """A field's value as diffs show it: literal webhook header values (credentials) are masked."""
    if name == "params" and isinstance(value, dict) and isinstance(value.get("headers"), dict):
        headers = {k: REDACTED if isinstance(v, str) else v for k, v in value["headers"].items()}
        return {**value, "headers": headers}
    return value


def _diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Changed fields as {field: {old, new}}, safe for the audit trail and terminal output."""
    names = FIELDS if old is None else [name for name in FIELDS if old[name] != new[name]]
    return {
        name: {"old": None if old is None else _shown(name, old[name]), "new": _shown(name, new[name])}
        for name in names
    }


def _apply(policy: Policy, data: Mapping[str, Any]) -> None:
    for name in FIELDS:
        setattr(policy, name, data[name])


def _changed_event(*, name: str, operation: str, changes: dict[str, Any], actor: str, source: str) -> dict[str, Any]:
    fields = ", ".join(changes) if operation == "updated" else ""
    return {
        "kind": "policy_changed",
        "policy": name,
        "actor": actor,
        "message": f"policy {name} {operation}" + (f": {fields}" if fields else ""),
        "data": {"operation": operation, "changes": changes, "source": source},
    }


@dataclass(frozen=True)
class PolicySaveResult:
    """The saved policy and what changed (empty when nothing did: then nothing was audited)."""

    policy: Policy
    operation: str
    changes: dict[str, Any]


def policy_save(
    *, policy_data: Mapping[str, Any], actor: str, instance: Policy | None = None, source: str = "admin"
) -> PolicySaveResult:
    """Create or update one policy (an existing ``instance`` is updated, which allows renames).

    Validates first (PolicyError, nothing changed); a save that changes nothing writes no audit
    event; otherwise ``policy_changed`` with the actor and each changed field's old and new value.
    """
    data = policy_validate(policy_data)
    with transaction.atomic():
        if instance is not None and instance.pk is not None:
            policy = Policy.objects.select_for_update().get(pk=instance.pk)
            before: dict[str, Any] | None = policy_as_data(policy)
        else:
            # A new instance handed in (the admin's) becomes the saved row, so it gets its pk.
            policy = instance if instance is not None else Policy()
            before = None
        if Policy.objects.filter(name=data["name"]).exclude(pk=policy.pk).exists():
            raise PolicyError({"name": "another policy already has this name"}, data["name"])
        changes = _diff(before, data)
        operation = "created" if before is None else "updated"
        if changes:
            _apply(policy, data)
            policy.save()
            audit_record_many(
                [_changed_event(name=policy.name, operation=operation, changes=changes, actor=actor, source=source)]
            )
    return PolicySaveResult(policy=policy, operation=operation if changes else "unchanged", changes=changes)


def policy_delete(*, policy: Policy, actor: str, source: str = "admin") -> None:
    """Delete a policy and audit it; its jobs keep their policy name."""
    with transaction.atomic():
        before = policy_as_data(policy)
        name = policy.name
        policy.delete()
        changes = {field_name: {"old": _shown(field_name, value), "new": None} for field_name, value in before.items()}
        audit_record_many([_changed_event(name=name, operation="deleted", changes=changes, actor=actor, source=source)])


class PolicyImportError(ValueError):
    """A policy file that cannot be imported; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass
class PolicyImportResult:
    """What an import did (or, with dry_run, would do)."""

    dry_run: bool
    created: list[str] = field(default_factory=list)
    updated: dict[str, dict[str, Any]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


def policies_load_yaml(text: str) -> list[Any]:
    """Parse YAML text into its documents; raise PolicyImportError for text that is not YAML."""
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise PolicyImportError([f"the file is not valid YAML{where}: {problem}"]) from None


def _collect(documents: Iterable[Any]) -> list[dict[str, Any]]:
    problems: list[str] = []
    valid: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for doc_index, document in enumerate(documents):
        where_doc = f"document {doc_index + 1}"
        if not isinstance(document, dict) or set(document) != {"policies"}:
            problems.append(f"{where_doc}: must be a mapping with one key, policies: [...]")
            continue
        items = document["policies"]
        if not isinstance(items, list):
            problems.append(f"{where_doc}: policies must be a list")
            continue
        for index, item in enumerate(items):
            label = item.get("name") if isinstance(item, dict) else None
            where = f"policies[{index}]" + (f" ({label})" if isinstance(label, str) else "")
            try:
                data = policy_validate(item)
            except PolicyError as exc:
                problems.extend(f"{where}: {f}: {p}" for f, p in exc.errors.items())
                continue
            if data["name"] in names:
                problems.append(f"{where}: the name {data['name']!r} is also used by {names[data['name']]}")
                continue
            names[data["name"]] = where
            valid.append(data)
    if problems:
        raise PolicyImportError(problems)
    return valid


def policies_import(*, documents: Iterable[Any], actor: str, dry_run: bool = False) -> PolicyImportResult:
    """Create or update policies by name from YAML documents (``policies_load_yaml``).

    Everything is validated before anything changes: any problem raises PolicyImportError listing
    all of them, and the database is untouched. Policies the documents do not name are left as they
    are (import never deletes). Re-importing the same file changes nothing and audits nothing; each
    created or changed policy is audited as ``policy_changed`` with the actor and the field diff.
    """
    wanted = _collect(documents)
    result = PolicyImportResult(dry_run=dry_run)
    with transaction.atomic():
        existing = {p.name: p for p in Policy.objects.select_for_update().filter(name__in=[d["name"] for d in wanted])}
        events = []
        for data in wanted:
            policy = existing.get(data["name"])
            changes = _diff(policy_as_data(policy) if policy else None, data)
            if not changes:
                result.unchanged.append(data["name"])
                continue
            if policy is None:
                result.created.append(data["name"])
                operation = "created"
                policy = Policy()
            else:
                result.updated[data["name"]] = changes
                operation = "updated"
            if not dry_run:
                _apply(policy, data)
                policy.save()
                events.append(
                    _changed_event(
                        name=data["name"], operation=operation, changes=changes, actor=actor, source="import"
                    )
                )
        if events:
            audit_record_many(events)
    return result


def policies_export() -> str:
    """Every policy as the YAML of INTERFACE.md, by priority then name; import reads it back."""
    policies = [policy_as_data(p) for p in Policy.objects.order_by("priority", "name")]
    return yaml.safe_dump(
        {"policies": policies}, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000
    )
