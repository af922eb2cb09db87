"""The Alertmanager webhook v4 body: checked and turned into plain values. Pure.

Strict where a wrong value would change what Autoheal does (version, status, labels, times,
fingerprint) and lenient about what it only records (receiver, groupKey, annotations' presence).
Every error names the field as a path, e.g. ``alerts[2].startsAt: not an RFC 3339 time``.

Any string Alertmanager can send is accepted. What a database cannot hold is replaced by U+FFFD
before anything is stored or matched: U+0000 (PostgreSQL refuses it in text and jsonb) and lone
surrogates such as an escaped ``\\ud800`` (not encodable as UTF-8, for any database). The paths of
the fields that were changed travel with the alert (``IncomingAlert.sanitized``) and are recorded
on its ``alert_received`` event, so matching, target rendering and the audit all see one value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

# RFC 3339: date, "T", time, optional fraction of any length (Alertmanager sends nanoseconds),
# and "Z" or a numeric offset.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)
MAX_FINGERPRINT = 64
REPLACEMENT = "\ufffd"
# U+0000 and the surrogate range: what no database column (and no UTF-8 encoder) can hold.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` with U+0000 and lone surrogates replaced by U+FFFD; every other character kept."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


class _Sanitized:
    """Collects the paths of the fields whose value had to be made storable."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def text(self, value: str, field: str) -> str:
        clean = storable(value)
        if clean != value:
            self.paths.append(storable(field))
        return clean


class PayloadError(ValueError):
    """A body that is not a valid webhook v4 payload; ``str()`` starts with the field's path."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


@dataclass(frozen=True)
class IncomingAlert:
    """One alert of a delivery. ``ends_at`` is None when Alertmanager left it unset."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str
    fingerprint: str
    # Paths of the fields whose stored value differs from the delivery (see ``storable``).
    sanitized: tuple[str, ...] = ()

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def key(self) -> tuple[str, datetime]:
        """What identifies the incident: the same key is the same incident however often sent."""
        return (self.fingerprint, self.starts_at)


@dataclass(frozen=True)
class Delivery:
    """One webhook request's content."""

    receiver: str
    status: str
    group_key: str
    truncated_alerts: int
    alerts: tuple[IncomingAlert, ...]
    # Paths of the delivery-level fields (receiver, groupKey) that had to be made storable.
    sanitized: tuple[str, ...] = ()


def parse_rfc3339(text: str) -> datetime | None:
    """Parse an RFC 3339 time to an aware UTC datetime; None for Go's zero time (``0001-01-01``).

    Fractions beyond microseconds are cut (Python's precision): two starts of one fingerprint less
    than a microsecond apart are taken as the same incident. Raises ValueError otherwise.
    """
    found = _RFC3339.match(text)
    if not found:
        raise ValueError("not an RFC 3339 time like 2026-11-20T10:11:12.123456789Z")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = found.groups()
    if year == "0001" and month == "01" and day == "01":
        return None
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        offset = timedelta(0)
        if not zulu:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            if off_h > "23" or off_m > "59":
                raise ValueError
            if sign == "-":
                offset = -offset
        value = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=UTC)
    except ValueError:
        raise ValueError("not a valid date and time") from None
    return value - offset


def _string_map(value: Any, field: str, clean: _Sanitized) -> dict[str, str]:
    if not isinstance(value, dict):
        raise PayloadError(field, "must be an object of strings")
    result: dict[str, str] = {}
    for key, item in value.items():
        where = f"{field}.{storable(key)}"
        if not isinstance(item, str):
            raise PayloadError(where, f"must be a string, not {_json_type(item)}")
        name = clean.text(key, f"{field}.{key}")
        if name in result:
            raise PayloadError(where, "is the same name as another one once U+0000 is replaced by U+FFFD")
        result[name] = clean.text(item, f"{field}.{key}")
    return result


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def _optional_string(data: dict[str, Any], key: str, field: str, clean: _Sanitized) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError(field, f"must be a string, not {_json_type(value)}")
    return clean.text(value, field)


def _time(data: dict[str, Any], key: str, field: str, *, required: bool) -> datetime | None:
    if key not in data:
        if required:
            raise PayloadError(field, "is missing")
        return None
    value = data[key]
    if not isinstance(value, str):
        raise PayloadError(field, f"must be an RFC 3339 time string, not {_json_type(value)}")
    try:
        parsed = parse_rfc3339(value)
    except ValueError as exc:
        raise PayloadError(field, str(exc)) from None
    if parsed is None and required:
        raise PayloadError(field, "is the zero time (0001-01-01): an alert must have a start")
    return parsed


def _alert(data: Any, index: int) -> IncomingAlert:
    where = f"alerts[{index}]"
    if not isinstance(data, dict):
        raise PayloadError(where, f"must be an object, not {_json_type(data)}")
    status = data.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"{where}.status", "must be firing or resolved")
    if "labels" not in data:
        raise PayloadError(f"{where}.labels", "is missing")
    clean = _Sanitized()
    labels = _string_map(data["labels"], f"{where}.labels", clean)
    annotations = _string_map(data.get("annotations") or {}, f"{where}.annotations", clean)
    starts_at = _time(data, "startsAt", f"{where}.startsAt", required=True)
    assert starts_at is not None
    ends_at = _time(data, "endsAt", f"{where}.endsAt", required=False)
    fingerprint = data.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint.strip():
        raise PayloadError(f"{where}.fingerprint", "must be a non-empty string")
    if len(fingerprint) > MAX_FINGERPRINT:
        raise PayloadError(f"{where}.fingerprint", f"is longer than {MAX_FINGERPRINT} characters")
    fingerprint = clean.text(fingerprint, f"{where}.fingerprint")
    generator_url = _optional_string(data, "generatorURL", f"{where}.generatorURL", clean)
    return IncomingAlert(
        status=status,
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=generator_url,
        fingerprint=fingerprint,
        sanitized=tuple(clean.paths),
    )


def parse_delivery(data: Any) -> Delivery:
    """Check a decoded webhook body; raise PayloadError naming the first field that is wrong."""
    if not isinstance(data, dict):
        raise PayloadError("", f"the body must be a JSON object, not {_json_type(data)}")
    version = data.get("version")
    if version != "4":
        raise PayloadError("version", 'must be "4" (Alertmanager webhook format v4)')
    status = data.get("status", "firing")
    if status not in ("firing", "resolved"):
        raise PayloadError("status", "must be firing or resolved")
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts", "must be a list" if "alerts" in data else "is missing")
    if not alerts:
        raise PayloadError("alerts", "is empty: a delivery carries at least one alert")
    truncated = data.get("truncatedAlerts", 0)
    if truncated is None:
        truncated = 0
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError("truncatedAlerts", "must be a whole number, 0 or more")
    clean = _Sanitized()
    parsed = tuple(_alert(item, index) for index, item in enumerate(alerts))
    seen: dict[tuple[str, datetime], int] = {}
    for index, alert in enumerate(parsed):
        if alert.key in seen:
            raise PayloadError(f"alerts[{index}]", f"repeats alerts[{seen[alert.key]}] (same fingerprint and startsAt)")
        seen[alert.key] = index
    return Delivery(
        receiver=_optional_string(data, "receiver", "receiver", clean),
        status=status,
        group_key=_optional_string(data, "groupKey", "groupKey", clean),
        truncated_alerts=truncated,
        alerts=parsed,
        sanitized=tuple(clean.paths),
    )
