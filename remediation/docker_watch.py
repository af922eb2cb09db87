"""The Docker watcher: health events of opted-in containers become alerts in the normal pipeline.

``health_status: unhealthy`` of a container labelled ``autoheal.enable=true`` is turned into an
Alertmanager-v4-shaped payload (alertname ``ContainerUnhealthy``, labels container / instance /
severity, a fingerprint derived from the labels, startsAt = the event's time) and handed to
``remediation.intake.alert_ingest`` with ``source="docker"``: the same dedupe, policies, guards,
audit and verification as an alert from Alertmanager. ``health_status: healthy`` resolves it.

While an incident is open, a new "unhealthy" (after a restart, health goes starting -> unhealthy
again) is the same incident, as Alertmanager would see a still-firing alert: it is re-delivered
with the original startsAt, so re-attempts follow the budget and backoff of that one incident.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from django.db import close_old_connections

from autoheal_site.utc import iso_utc
from remediation.executors.docker import OPT_IN_LABEL
from remediation.intake import alert_ingest
from remediation.models import Alert

logger = logging.getLogger(__name__)

ALERTNAME = "ContainerUnhealthy"
SEVERITY = "critical"
UNSET_END = "0001-01-01T00:00:00Z"
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit fingerprint of a label set (FNV-1a 64 over the sorted pairs)."""
    value = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name.encode(), b"\xff", labels[name].encode(), b"\xff"):
            for byte in part:
                value ^= byte
                value = (value * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def alert_labels(*, container: str, instance: str, host: str = "") -> dict[str, str]:
    labels = {"alertname": ALERTNAME, "container": container, "instance": instance, "severity": SEVERITY}
    if host:
        # Forwarded by a fleet agent: the host label lets a policy place the job ({{ labels.host }}).
        labels["host"] = host
    return labels


def payload_for(
    *, labels: dict[str, str], status: str, starts_at: datetime, ends_at: datetime | None = None
) -> dict[str, Any]:
    """A webhook v4 body for one container alert, shaped as Alertmanager sends it."""
    alert = {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"container {labels['container']} is unhealthy (Docker health check)"},
        "startsAt": iso_utc(starts_at),
        "endsAt": iso_utc(ends_at) if ends_at else UNSET_END,
        "generatorURL": "",
        "fingerprint": fingerprint(labels),
    }
    return {
        "version": "4",
        "receiver": "docker",
        "status": status,
        "groupKey": f'{{}}:{{container="{labels["container"]}"}}',
        "groupLabels": {"container": labels["container"]},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "",
        "truncatedAlerts": 0,
        "alerts": [alert],
    }


def open_incident_start(labels: Mapping[str, str]) -> datetime | None:
    """startsAt of the container's firing incident, if one is open."""
    return (
        Alert.objects.filter(fingerprint=fingerprint(labels), status=Alert.Status.FIRING)
        .order_by("-starts_at")
        .values_list("starts_at", flat=True)
        .first()
    )


def event_time(event: Mapping[str, Any]) -> datetime:
    nanos = event.get("timeNano")
    if isinstance(nanos, int) and nanos > 0:
        return datetime.fromtimestamp(nanos / 1e9, tz=UTC)
    return datetime.fromtimestamp(float(event.get("time") or time.time()), tz=UTC)


def health_changed(
    *, container: str, health: str, labels: dict[str, str], instance: str, at: datetime, host: str = ""
) -> str:
    """Feed one health change of a container into the pipeline; returns what was done."""
    if (labels or {}).get(OPT_IN_LABEL, "").strip().lower() != "true":
        return "ignored: not opted in"
    alert = alert_labels(container=container, instance=instance, host=host)
    open_start = open_incident_start(alert)
    if health == "unhealthy":
        starts_at = open_start or at
        result = alert_ingest(payload=payload_for(labels=alert, status="firing", starts_at=starts_at), source="docker")
        return f"firing (accepted {result.accepted}, duplicates {result.duplicates}, jobs {result.jobs})"
    if health == "healthy" and open_start is not None:
        alert_ingest(
            payload=payload_for(labels=alert, status="resolved", starts_at=open_start, ends_at=at), source="docker"
        )
        return "resolved"
    return "nothing to do"


class DockerWatcher:
    """Follows the Docker events stream; reconnects (resuming from the last event) when it drops."""

    def __init__(
        self,
        *,
        client_factory: Callable[[], Any],
        labels: list[str] | None = None,
        reconnect_max: float = 30.0,
        on_health: Callable[..., str] | None = None,
    ) -> None:
        self.client_factory = client_factory
        # Where a health change goes: the intake in this process, or (a fleet agent) the central's.
        self.on_health = on_health or health_changed
        # Docker label filters (KEY or KEY=VALUE) on top of the opt-in label, to scope one watcher
        # to, say, one compose project.
        self.label_filters = [f"{OPT_IN_LABEL}=true", *(labels or [])]
        self.reconnect_max = reconnect_max
        self.stop_event = threading.Event()
        self._stream: Any = None
        self.instance = ""

    def stop(self) -> None:
        self.stop_event.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:
                logger.debug("closing the events stream failed", exc_info=True)

    def scan(self, client: Any) -> int:
        """Catch up with containers already unhealthy or healthy again (at start, after a reconnect)."""
        done = 0
        now = datetime.now(tz=UTC)
        for container in client.containers.list(filters={"label": self.label_filters}):
            health = ((container.attrs.get("State") or {}).get("Health") or {}).get("Status", "")
            if health in ("unhealthy", "healthy"):
                outcome = self.on_health(
                    container=container.name, health=health, labels=container.labels, instance=self.instance, at=now
                )
                if outcome.startswith(("firing", "resolved")):
                    done += 1
        return done

    def events(self, client: Any, *, since: float) -> Iterator[dict[str, Any]]:
        """The health events from ``since`` on (whole seconds: a few may repeat, which is harmless)."""
        self._stream = client.events(
            decode=True,
            since=int(since),
            filters={"type": "container", "event": "health_status", "label": self.label_filters},
        )
        if self.stop_event.is_set():
            self._stream.close()
        yield from self._stream

    def handle(self, event: Mapping[str, Any]) -> str:
        status = str(event.get("status") or event.get("Action") or "")
        if not status.startswith("health_status:"):
            return "ignored"
        health = status.split(":", 1)[1].strip()
        actor = event.get("Actor") or {}
        attributes = dict(actor.get("Attributes") or {})
        name = attributes.get("name", "")
        at = event_time(event)
        close_old_connections()
        outcome = self.on_health(container=name, health=health, labels=attributes, instance=self.instance, at=at)
        logger.info("container %s %s: %s", name, health, outcome)
        return outcome

    def run_forever(self) -> None:
        delay = 1.0
        while not self.stop_event.is_set():
            client = None
            try:
                client = self.client_factory()
                self.instance = str(client.info().get("Name", "")) or "docker"
                # The stream starts where the scan started: an event between the scan's snapshot
                # and the subscription is replayed by the engine instead of lost.
                scan_started = time.time()
                self.scan(client)
                delay = 1.0
                for event in self.events(client, since=scan_started):
                    if self.stop_event.is_set():
                        break
                    self.handle(event)
                if not self.stop_event.is_set():
                    # The engine ended the stream (restart, proxy timeout): reconnect, without spinning.
                    logger.warning("Docker events stream ended; reconnecting")
                    self.stop_event.wait(0.5)
            except Exception as exc:
                if self.stop_event.is_set():
                    break
                logger.warning("Docker events stream lost (%s); reconnecting in %.0fs", type(exc).__name__, delay)
                self.stop_event.wait(delay)
                delay = min(self.reconnect_max, delay * 2)
            finally:
                if client is not None:
                    client.close()
                close_old_connections()
