"""Policies in and out: save, delete, import and export, each audited in its own transaction.

Also the enabled policies as routing rules, the one read that intake and the simulator share.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.db import transaction

from audit.services import audit_record_many
from remediation.matchers import MatcherError
from remediation.models import Policy
from remediation.policy_schema import FIELDS, PolicyError, policy_validate
from remediation.routing import PolicyRule
from remediation.targets import TemplateError

logger = logging.getLogger(__name__)

__all__ = [
    "PolicyError",
    "PolicyImportError",
    "PolicyImportResult",
    "PolicySaveResult",
    "policies_export",
    "policies_import",
    "policies_load_yaml",
    "policy_as_data",
    "policy_delete",
    "policy_rule",
    "policy_rules",
    "policy_rules_at",
    "policy_save",
    "policy_validate",
]


def policy_rule(policy: Policy, *, enabled: bool | None = None) -> PolicyRule:
    """One policy row as a routing rule (``enabled`` overrides the row's); MatcherError, TemplateError."""
    return PolicyRule.build(
        name=policy.name,
        matchers=policy.matchers,
        action=policy.action,
        target=policy.target,
        params=policy.params,
        dry_run=policy.dry_run,
        priority=policy.priority,
        enabled=policy.enabled if enabled is None else enabled,
        policy_id=policy.pk,
        host=policy.host,
    )


def policy_rules() -> list[PolicyRule]:
    """The enabled policies as routing rules, one query.

    A row that no longer parses (written around the validation) is left out and logged, so one bad
    policy never makes the webhook lose alerts.
    """
    rules = []
    for policy in Policy.objects.filter(enabled=True):
        try:
            rules.append(policy_rule(policy))
        except (MatcherError, TemplateError, TypeError) as exc:
            logger.error("policy %s is invalid and is skipped: %s", policy.name, exc)
    return rules


# This process's rules and the policies' version they were read at (see ``policy_rules_at``).
_cached_rules: tuple[str, tuple[PolicyRule, ...]] | None = None


def policy_rules_at(version: str | None) -> tuple[PolicyRule, ...]:
    """The enabled policies as routing rules, from this process's cache while ``version`` holds.

    ``version`` is a digest of the policy rows' versions that the caller read in one of its own
    statements (``remediation.intake_sql``): any committed save, delete, import or edit by any
    process changes it, so a stale cache is never used. The rules are read after the version, so
    they are never older than it. ``None`` (no version available) reads them every time.
    """
    global _cached_rules
    cached = _cached_rules
    if version is not None and cached is not None and cached[0] == version:
        return cached[1]
    rules = tuple(policy_rules())
    if version is not None:
        _cached_rules = (version, rules)
    return rules


def policy_as_data(policy: Policy) -> dict[str, Any]:
    """A policy row as the data of docs/interface.md (the YAML shape), fields in order."""
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
    """Every policy as the YAML of docs/interface.md, by priority then name; import reads it back."""
    policies = [policy_as_data(p) for p in Policy.objects.order_by("priority", "name")]
    return yaml.safe_dump(
        {"policies": policies}, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000
    )
