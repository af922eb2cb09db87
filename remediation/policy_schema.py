"""A policy as data: defaults, field checks and the YAML shape of INTERFACE.md. Pure.

``policy_validate`` is the one place that says what a valid policy is; the admin form, the YAML
import and the services all go through it, so a policy that passes one passes all.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from remediation.matchers import MatcherError, parse_matchers
from remediation.models import DOCKER_ACTIONS, Action
from remediation.targets import TemplateError, compile_template

# Field order of INTERFACE.md; export writes them in this order.
DEFAULTS: dict[str, Any] = {
    "name": None,
    "enabled": True,
    "description": "",
    "matchers": None,
    "action": None,
    "target": "{{ labels.container }}",
    "params": {},
    "cooldown_seconds": 300,
    "max_actions_per_hour": 3,
    "dry_run": False,
    "verify_within_seconds": 300,
    "priority": 100,
}
FIELDS = tuple(DEFAULTS)
REQUIRED = ("name", "matchers", "action")
_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")
_INT_MAX = 2**31 - 1
_PARAMS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(DOCKER_ACTIONS, ("allow", "timeout_seconds")),
    Action.WEBHOOK: ("url", "headers", "timeout_seconds"),
    Action.COMMAND: ("argv", "timeout_seconds"),
    Action.LOG_ONLY: (),
}


class PolicyError(ValueError):
    """An invalid policy; ``errors`` maps each wrong field to what is wrong with it."""

    def __init__(self, errors: dict[str, str], name: str = "") -> None:
        self.errors = errors
        self.name = name
        where = f"policy {name!r}: " if name else ""
        super().__init__(where + "; ".join(f"{field}: {problem}" for field, problem in errors.items()))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(errors: dict[str, str], field: str, value: Any, *, minimum: int) -> None:
    if not _is_int(value):
        errors[field] = "must be a whole number"
    elif not minimum <= value <= _INT_MAX:
        errors[field] = f"must be between {minimum} and {_INT_MAX}"


def _check_params(errors: dict[str, str], action: str, params: Any) -> None:
    if not isinstance(params, dict):
        errors["params"] = "must be a mapping (for example {} or {timeout_seconds: 30})"
        return
    allowed = _PARAMS.get(action, ())
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        errors["params"] = f"{action} does not take {', '.join(unknown)} (it takes: {known})"
        return
    if "timeout_seconds" in params:
        timeout = params["timeout_seconds"]
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
            errors["params"] = "timeout_seconds must be a number of seconds above 0 and at most 3600"
            return
    if action in DOCKER_ACTIONS and "allow" in params:
        allow = params["allow"]
        if not isinstance(allow, list) or not all(isinstance(p, str) and p.strip() for p in allow):
            errors["params"] = "allow must be a list of container name patterns"
    elif action == Action.WEBHOOK:
        url = params.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            errors["params"] = "webhook needs url: an http:// or https:// address"
        elif "headers" in params and not (
            isinstance(params["headers"], dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in params["headers"].items())
        ):
            errors["params"] = "headers must map header names to string values"
    elif action == Action.COMMAND:
        argv = params.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
            errors["params"] = "command needs argv: a non-empty list of non-empty strings (no shell)"
            return
        for index, item in enumerate(argv):
            try:
                compile_template(item)
            except TemplateError as exc:
                errors["params"] = f"argv[{index}]: {exc}"
                return


def policy_validate(data: Mapping[str, Any]) -> dict[str, Any]:
    """Check a policy given as data and return it complete (defaults filled, fields in order).

    Raises PolicyError listing every wrong field, each with a message a person can act on.
    """
    if not isinstance(data, Mapping):
        raise PolicyError({"policy": "must be a mapping of fields (name, matchers, action, ...)"})
    errors: dict[str, str] = {}
    unknown = [key for key in data if key not in DEFAULTS]
    for key in unknown:
        errors[str(key)] = f"unknown field (known fields: {', '.join(FIELDS)})"
    for key in REQUIRED:
        if data.get(key) in (None, "", []):
            errors[key] = "is required"
    values = {key: copy.deepcopy(data.get(key, default)) for key, default in DEFAULTS.items()}
    name = values["name"]
    if "name" not in errors and (not isinstance(name, str) or not _NAME.match(name) or len(name) > 100):
        errors["name"] = "must be 1 to 100 letters, digits, hyphens or underscores"
    for key in ("enabled", "dry_run"):
        if not isinstance(values[key], bool):
            errors[key] = "must be true or false"
    if not isinstance(values["description"], str):
        errors["description"] = "must be text"
    if "matchers" not in errors:
        matchers = values["matchers"]
        if not isinstance(matchers, list):
            errors["matchers"] = "must be a list of matchers, e.g. ['alertname=\"ContainerUnhealthy\"']"
        else:
            try:
                parse_matchers(matchers)
            except MatcherError as exc:
                errors["matchers"] = str(exc)
    action = values["action"]
    if "action" not in errors and action not in Action.values:
        errors["action"] = f"must be one of {', '.join(Action.values)}"
    target = values["target"]
    if not isinstance(target, str):
        errors["target"] = "must be a template string like '{{ labels.container }}'"
    else:
        try:
            compile_template(target)
        except TemplateError as exc:
            errors["target"] = str(exc)
        else:
            if len(target) > 255:
                errors["target"] = "must be at most 255 characters"
            elif action in DOCKER_ACTIONS and not target.strip():
                errors["target"] = f"{action} needs a target naming the container, e.g. '{{{{ labels.container }}}}'"
    if action in Action.values:
        _check_params(errors, action, values["params"])
    for key in ("cooldown_seconds", "max_actions_per_hour", "verify_within_seconds"):
        _check_int(errors, key, values[key], minimum=0)
    _check_int(errors, "priority", values["priority"], minimum=-_INT_MAX)
    if errors:
        raise PolicyError(errors, name if isinstance(name, str) else "")
    return values
