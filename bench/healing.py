"""Docker healing through the watcher, on the private dockerd: no Alertmanager involved.

``unhealthy -> restarted`` is read from the Docker daemon's own event stream (``health_status:
unhealthy`` to the container's next ``restart`` event), so neither Autoheal's clock nor its audit
is trusted for the figure. A container that never becomes healthy then runs for a bounded time
under a policy whose budget is scaled down, to show the budget stops the restarts.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from typing import Any

from bench import db
from bench.context import Context
from bench.procs import start_manage
from bench.report import Row

BUDGET = 3
BUDGET_COOLDOWN = 2
HEALTH = {
    "test": ["CMD-SHELL", "test -f /tmp/healthy"],
    "interval": 1_000_000_000,
    "timeout": 1_000_000_000,
    "retries": 1,
    "start_period": 0,
}


def _policies() -> None:
    from remediation.models import Action, Policy

    Policy.objects.update_or_create(
        name="bench-heal",
        defaults={
            "matchers": ['alertname="ContainerUnhealthy"', 'container=~"bench-heal-.*"'],
            "action": Action.RESTART_CONTAINER,
            "target": "{{ labels.container }}",
            "cooldown_seconds": 0,
            "max_actions_per_hour": 1000,
            "params": {"timeout_seconds": 10},
        },
    )
    Policy.objects.update_or_create(
        name="bench-never-healthy",
        defaults={
            "matchers": ['alertname="ContainerUnhealthy"', 'container=~"bench-never-.*"'],
            "action": Action.RESTART_CONTAINER,
            "target": "{{ labels.container }}",
            # Scaled down so a bounded run reaches the budget: the budget is per hour, the
            # cooldown only spaces the restarts until the budget is spent.
            "cooldown_seconds": BUDGET_COOLDOWN,
            "max_actions_per_hour": BUDGET,
            "params": {"timeout_seconds": 10},
        },
    )


def _container(client: Any, image: str, name: str, healthy: bool) -> Any:
    start = "touch /tmp/healthy && " if healthy else ""
    return client.containers.run(
        image,
        ["sh", "-c", f"{start}exec sleep 100000"],
        name=name,
        labels={"autoheal.enable": "true"},
        detach=True,
        init=True,
        network_mode="none",
        healthcheck=HEALTH,
    )


def _wait_health(container: Any, status: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs["State"].get("Health", {}).get("Status") == status:
            return True
        time.sleep(0.1)
    return False


class EventWatch:
    """Follows the daemon's live event stream for one container name, from before it exists.

    Live, not a query of past events afterwards: the daemon keeps only its last 256 events, and
    every health check adds three (exec_create, exec_start, exec_die), so they roll over in
    seconds when several containers run.
    """

    def __init__(self, client: Any, name: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._stream = client.events(
            decode=True, since=time.time() - 1, filters={"container": name, "type": "container"}
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends with an error when closed
            for event in self._stream:
                if not str(event.get("status", "")).startswith("exec_"):
                    self.events.append(event)

    def close(self) -> None:
        self._stream.close()
        self._thread.join(timeout=5)


def _heal_span(events: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(unhealthy event, restart event) daemon times in seconds since the epoch."""
    unhealthy = next((e for e in events if e.get("status") == "health_status: unhealthy"), None)
    if unhealthy is None:
        return None
    after = [e for e in events if e["timeNano"] > unhealthy["timeNano"] and e.get("status") in ("restart", "start")]
    restart = next((e for e in after if e["status"] == "restart"), None) or next(iter(after), None)
    if restart is None:
        return None
    return unhealthy["timeNano"] / 1e9, restart["timeNano"] / 1e9


def _action_started(name: str) -> float | None:
    """When the worker recorded action_started for this container (audit, same machine clock)."""
    from audit.models import AuditEvent

    ts = AuditEvent.objects.filter(kind="action_started", target=name).order_by("id").values_list("ts", flat=True)
    first = ts.first()
    return first.timestamp() if first else None


def healing(ctx: Context) -> None:
    host = os.environ.get("AUTOHEAL_TEST_DOCKER_HOST") or ctx.env.get("AUTOHEAL_TEST_DOCKER_HOST")
    if not host:
        ctx.note("healing: no private dockerd (scripts/services.sh up failed?); not measured")
        return
    from django.core.management import get_commands

    if "autoheal_watch_docker" not in get_commands():
        ctx.note("healing: manage.py autoheal_watch_docker does not exist yet; not measured")
        ctx.add(Row("docker healing", "not measured", None, "", note="watcher missing"))
        return
    import docker

    db.truncate_state()
    _policies()
    client = docker.DockerClient(base_url=host, timeout=30)
    image = ctx.env.get("AUTOHEAL_TEST_IMAGE", "autoheal-test-busybox:latest")
    env = dict(
        ctx.env,
        DOCKER_HOST=host,
        AUTOHEAL_SELF_CONTAINER="",
        # Scaled so a bounded run isolates the per-target budget: ten heal trials would otherwise
        # trip the global circuit breaker (10 actions per 10 min), and the 10 s doubling backoff
        # alone would space a never-healthy container's restarts beyond the run.
        AUTOHEAL_CIRCUIT_MAX_ACTIONS="1000",
        AUTOHEAL_BACKOFF_BASE_SECONDS="1",
        AUTOHEAL_BACKOFF_MAX_SECONDS="2",
    )
    watcher = start_manage("watcher", ["autoheal_watch_docker"], env, ctx.logdir)
    worker = start_manage("worker-docker", ["autoheal_worker"], env, ctx.logdir)
    created: list[Any] = []
    try:
        time.sleep(2.0)
        for proc in (watcher, worker):
            if not proc.alive():
                ctx.note(f"healing: {proc.name} exited at start; see {proc.log}")
                return
        trials = 3 if ctx.quick else 10
        times: list[float] = []
        to_action: list[float] = []
        failed = 0
        for _ in range(trials):
            name = f"bench-heal-{uuid.uuid4().hex[:8]}"
            watch = EventWatch(client, name)
            try:
                container = _container(client, image, name, healthy=True)
                created.append(container)
                if not _wait_health(container, "healthy", 10):
                    failed += 1
                    continue
                container.exec_run(["rm", "-f", "/tmp/healthy"])
                deadline = time.monotonic() + 20
                span = None
                while time.monotonic() < deadline and span is None:
                    time.sleep(0.2)
                    span = _heal_span(list(watch.events))
            finally:
                watch.close()
            if span is None:
                failed += 1
                continue
            times.append(span[1] - span[0])
            started_at = _action_started(name)
            if started_at is not None:
                to_action.append(started_at - span[0])
        if times:
            ordered = sorted(times)
            p50 = ordered[len(ordered) // 2] if len(ordered) % 2 else sum(ordered[len(ordered) // 2 - 1 :][:2]) / 2
            ctx.add(
                Row(
                    "docker healing",
                    f"unhealthy -> restarted, p50 of {len(times)} trials (daemon events)",
                    p50,
                    "s",
                    baseline="docker-autoheal, 5 s poll (issue)",
                    baseline_value=3.15,
                    target="p50 < 0.4 s",
                    met=p50 < 0.4 and failed == 0,
                    note=f"max {max(times):.2f} s, min {min(times):.2f} s, {failed} not healed in 20 s",
                )
            )
            if to_action:
                ordered = sorted(to_action)
                ctx.add(
                    Row(
                        "docker healing",
                        "of which: unhealthy event -> action_started (watcher, intake, worker wake-up)",
                        ordered[len(ordered) // 2],
                        "s",
                        note=f"max {max(to_action):.2f} s; the rest is the restart and its confirmation",
                    )
                )
        else:
            ctx.add(Row("docker healing", "unhealthy -> restarted", None, "s", note=f"{failed} trials, none healed"))
        _restart_alone(ctx, client, image, created, 3 if ctx.quick else 10)
        _budget(ctx, client, image, created)
    finally:
        for container in created:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        worker.stop()
        watcher.stop()
        client.close()


def _restart_alone(ctx: Context, client: Any, image: str, created: list[Any], count: int) -> None:
    """The baseline: the same kind of container restarted straight through the API, no Autoheal."""
    container = _container(client, image, f"bench-plain-{uuid.uuid4().hex[:8]}", healthy=True)
    created.append(container)
    _wait_health(container, "healthy", 10)
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        container.restart(timeout=10)
        times.append(time.perf_counter() - t0)
    ordered = sorted(times)
    ctx.add(
        Row(
            "docker healing",
            "baseline: the restart alone (docker restart through the API)",
            ordered[len(ordered) // 2],
            "s",
            note=f"max {max(times):.2f} s, {count} restarts",
        )
    )


def _budget(ctx: Context, client: Any, image: str, created: list[Any]) -> None:
    seconds = 20 if ctx.quick else 45
    name = f"bench-never-{uuid.uuid4().hex[:8]}"
    watch = EventWatch(client, name)
    try:
        container = _container(client, image, name, healthy=False)
        created.append(container)
        time.sleep(seconds)
    finally:
        watch.close()
    events = list(watch.events)
    restarts = sum(1 for e in events if e.get("status") == "restart")
    from audit.models import AuditEvent

    skipped = AuditEvent.objects.filter(kind="action_skipped", target=name, data__reason="budget").count()
    escalated = AuditEvent.objects.filter(kind="incident_escalated", target=name).count()
    unhealthy = sum(1 for e in events if e.get("status") == "health_status: unhealthy")
    ctx.add(
        Row(
            "docker healing",
            f"never-healthy container: restarts in {seconds} s (budget {BUDGET}/h, cooldown {BUDGET_COOLDOWN} s)",
            restarts,
            "restarts",
            baseline="docker-autoheal: 11/min",
            baseline_value=11 * seconds / 60,
            target=f"<= {BUDGET} (then none for the rest of the hour)",
            met=restarts <= BUDGET,
            note=f"{unhealthy} unhealthy events; {skipped} jobs skipped for the budget, {escalated} escalations; so {BUDGET}/h vs 660/h",
        )
    )
