"""Small readers for configuration that comes from the environment only.

Every secret may also be given as ``NAME_FILE`` (a path whose content is the value), which is how
Docker and Kubernetes secrets are mounted. Errors name the variable, never its value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(name, default)


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    raw = environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false (got an unrecognised value)")


def env_int(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer") from None


def env_list(name: str, default: str = "", environ: Mapping[str, str] | None = None) -> list[str]:
    raw = env_str(name, default, environ)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name: str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    """Read ``NAME`` or, if unset, the content of the file named by ``NAME_FILE``.

    Trailing newlines are trimmed, as Alertmanager and Docker secrets leave them.
    """
    environ = os.environ if environ is None else environ
    if name in environ:
        return environ[name]
    path = environ.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().rstrip("\r\n")
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE cannot be read: {exc.strerror}") from None
    return default


def env_secret_list(name: str, environ: Mapping[str, str] | None = None) -> list[str]:
    raw = env_secret(name, "", environ)
    return [item.strip() for item in re.split(r"[,\n]", raw) if item.strip()]


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """Parse ``30s``, ``15m``, ``2h`` or ``7d``; raise ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration like 30s, 15m, 2h or 7d: {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_rate(text: str) -> tuple[int, int]:
    """Parse ``100/60s`` into (requests, window seconds)."""
    count, _, window = text.partition("/")
    try:
        requests = int(count)
        seconds = int(parse_duration(window or "60s").total_seconds())
    except ValueError:
        raise ImproperlyConfigured("AUTOHEAL_RATE_LIMIT must look like 100/60s") from None
    if requests <= 0 or seconds <= 0:
        raise ImproperlyConfigured("AUTOHEAL_RATE_LIMIT must be positive, like 100/60s")
    return requests, seconds
