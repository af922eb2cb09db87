"""A policy as data: defaults, field checks and the YAML shape of docs/interface.md.

``policy_validate`` is the one place that says what a valid policy is; the admin form, the YAML
import and the services all go through it, so a policy that passes one passes all. Besides its
shape, a policy must stay within what the operator allows in the environment (programs, webhook
URL prefixes, secrets; see remediation/trust.py): that is read from the settings.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from remediation.decisions import DEFAULT_COOLDOWN_SECONDS, DEFAULT_MAX_ACTIONS_PER_HOUR, DEFAULT_VERIFY_WITHIN_SECONDS
from remediation.matchers import MatcherError, parse_matchers
from remediation.models import DOCKER_ACTIONS, Action
from remediation.targets import TemplateError, compile_template
from remediation.trust import command_program, secret_name, webhook_prefix

# Field order of docs/interface.md; export writes them in this order.
DEFAULTS: dict[str, Any] = {
    "name": None,
    "enabled": True,
    "description": "",
    "matchers": None,
    "action": None,
    "target": "{{ labels.container }}",
    "host": "",
    "params": {},
    "cooldown_seconds": DEFAULT_COOLDOWN_SECONDS,
    "max_actions_per_hour": DEFAULT_MAX_ACTIONS_PER_HOUR,
    "dry_run": False,
    "verify_within_seconds": DEFAULT_VERIFY_WITHIN_SECONDS,
    "priority": 100,
}
# People in the loop: approval, Alertmanager silences, notifications and evidence.
HUMAN_DEFAULTS: dict[str, Any] = {
    "mode": "auto",
    "approval_timeout_seconds": 900,
    "silence_during_action": False,
    "when_silence_unknown": "act",
    "notify": [],
    "capture_evidence": True,
}
DEFAULTS.update(HUMAN_DEFAULTS)
FIELDS = tuple(DEFAULTS)
REQUIRED = ("name", "matchers", "action")
_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")
_INT_MAX = 2**31 - 1
# The parameters each action takes, and their bounds: the executors enforce the same at run time;
# checking them here turns a typo into an error when the policy is saved, not when it first fires.
_PARAMS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(DOCKER_ACTIONS, ("allow", "timeout_seconds", "stop_timeout_seconds")),
    Action.WEBHOOK: ("url", "headers", "timeout_seconds", "allow"),
    Action.COMMAND: ("argv", "timeout_seconds"),
    Action.LOG_ONLY: (),
}
MAX_TIMEOUT_SECONDS = 600
MAX_STOP_TIMEOUT_SECONDS = 300
MAX_ARGV = 64


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


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item.strip() for item in value)


def _header_value(value: Any) -> bool:
    """A literal string, or ``{env: NAME}`` naming an environment variable that holds the secret."""
    if isinstance(value, str):
        return "\n" not in value and "\r" not in value
    return isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str) and bool(value["env"])


def _operator_problem(action: str, params: dict[str, Any]) -> str | None:
    """What the operator's environment settings refuse in these parameters (remediation/trust.py)."""
    from django.conf import settings

    try:
        if action == Action.COMMAND:
            command_program(params["argv"][0], allow=settings.AUTOHEAL_COMMAND_ALLOW, path=os.environ.get("PATH"))
        elif action == Action.WEBHOOK:
            for value in params.get("headers", {}).values():
                if isinstance(value, dict):
                    secret_name(value["env"], allow=settings.AUTOHEAL_ACTION_SECRETS)
            webhook_prefix(params["url"], operator=settings.AUTOHEAL_WEBHOOK_ACTION_ALLOW, policy=params.get("allow"))
    except ValueError as exc:
        return str(exc)
    return None


def _params_problem(action: str, params: Any) -> str | None:
    if not isinstance(params, dict):
        return "must be a mapping (for example {} or {timeout_seconds: 30})"
    allowed = _PARAMS.get(action, ())
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        return f"{action} does not take {', '.join(unknown)} (it takes: {', '.join(allowed) or 'no parameters'})"
    timeout = params.get("timeout_seconds", 1)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        return f"timeout_seconds must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS}"
    if action in DOCKER_ACTIONS:
        stop = params.get("stop_timeout_seconds", 0)
        if not _is_int(stop) or not 0 <= stop <= MAX_STOP_TIMEOUT_SECONDS:
            return f"stop_timeout_seconds must be a whole number from 0 to {MAX_STOP_TIMEOUT_SECONDS}"
        if "allow" in params and not _string_list(params["allow"]):
            return "allow must be a list of container name patterns, e.g. [web-*]"
    elif action == Action.WEBHOOK:
        url = params.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            return "webhook needs url: an http:// or https:// address with a host"
        if parts.username or parts.password:
            return "url must not carry credentials; put them in headers as {env: VARIABLE_NAME}"
        headers = params.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and _header_value(v) for k, v in headers.items()
        ):
            return "headers must map header names to a one-line string or {env: VARIABLE_NAME}"
        if "allow" in params and not _string_list(params["allow"]):
            return "allow must be a list of URL prefixes, e.g. ['https://hooks.example/']"
    elif action == Action.COMMAND:
        argv = params.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
            return "command needs argv: a non-empty list of non-empty strings (no shell)"
        if len(argv) > MAX_ARGV:
            return f"argv has more than {MAX_ARGV} items"
        if any(mark in argv[0] for mark in ("{{", "}}", "{%", "%}")):
            return "argv[0] must be the literal program, without placeholders"
        for index, item in enumerate(argv):
            try:
                compile_template(item)
            except TemplateError as exc:
                return f"argv[{index}]: {exc}"
    return _operator_problem(action, params)


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
    host = values["host"]
    if not isinstance(host, str):
        errors["host"] = "must be a template string like '{{ labels.host }}', or empty"
    else:
        try:
            compile_template(host)
        except TemplateError as exc:
            errors["host"] = str(exc)
        else:
            if len(host) > 255:
                errors["host"] = "must be at most 255 characters"
    if action in Action.values and (problem := _params_problem(action, values["params"])):
        errors["params"] = problem
    for key in ("cooldown_seconds", "max_actions_per_hour", "verify_within_seconds"):
        _check_int(errors, key, values[key], minimum=0)
    _check_int(errors, "priority", values["priority"], minimum=-_INT_MAX)
    _check_human_fields(errors, values)
    if errors:
        raise PolicyError(errors, name if isinstance(name, str) else "")
    return values


def _check_human_fields(errors: dict[str, str], values: Mapping[str, Any]) -> None:
    """The approval, silence, notification and evidence fields."""
    if values["mode"] not in ("auto", "approve"):
        errors["mode"] = "must be auto or approve"
    _check_int(errors, "approval_timeout_seconds", values["approval_timeout_seconds"], minimum=1)
    if values["when_silence_unknown"] not in ("act", "skip"):
        errors["when_silence_unknown"] = "must be act or skip"
    for key in ("silence_during_action", "capture_evidence"):
        if not isinstance(values[key], bool):
            errors[key] = "must be true or false"
    notify = values["notify"]
    if not isinstance(notify, list) or not all(isinstance(n, str) and _NAME.match(n) for n in notify):
        errors["notify"] = "must be a list of notification target names (not URLs), e.g. [oncall, chat]"
    elif notify and (problem := _unconfigured_targets(notify)):
        errors["notify"] = problem


def _unconfigured_targets(names: list[str]) -> str | None:
    """A policy may only name targets that the operator configured in AUTOHEAL_NOTIFY_URLS: a typo
    would otherwise silently notify nobody. The message names targets, never their URLs."""
    from notifications.targets import NotifyConfigError, configured_targets

    try:
        configured = [t.name for t in configured_targets()]
    except NotifyConfigError as exc:
        return str(exc)
    unknown = [n for n in names if n not in configured]
    if not unknown:
        return None
    known = ", ".join(configured) if configured else "none"
    return f"names the notification target {unknown[0]!r}, which AUTOHEAL_NOTIFY_URLS does not configure (configured: {known})"
