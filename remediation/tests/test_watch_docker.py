"""The Docker watcher: health events become alerts in the same pipeline, and heal with no Alertmanager."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import started_at
from remediation import docker_watch
from remediation.models import Alert, Job
from remediation.payload import parse_delivery
from remediation.tests.exec_helpers import events, make_policy, spawn_manage, stop_process, wait_until

T0 = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)


def test_the_payload_is_a_valid_webhook_v4_body_with_a_label_derived_fingerprint():
    labels = docker_watch.alert_labels(container="web", instance="host-1")
    delivery = parse_delivery(docker_watch.payload_for(labels=labels, status="firing", starts_at=T0))
    (alert,) = delivery.alerts
    assert alert.labels == {
        "alertname": "ContainerUnhealthy",
        "container": "web",
        "instance": "host-1",
        "severity": "critical",
    }
    assert alert.starts_at == T0 and alert.ends_at is None
    assert alert.fingerprint == docker_watch.fingerprint(labels)
    other = docker_watch.fingerprint(docker_watch.alert_labels(container="db", instance="host-1"))
    assert len(alert.fingerprint) == 16 and other != alert.fingerprint
    resolved = parse_delivery(
        docker_watch.payload_for(labels=labels, status="resolved", starts_at=T0, ends_at=T0 + timedelta(seconds=5))
    )
    assert resolved.alerts[0].ends_at == T0 + timedelta(seconds=5)


@pytest.mark.django_db
def test_unhealthy_opens_one_incident_repeats_join_it_and_healthy_resolves_it():
    make_policy(matchers=['alertname="ContainerUnhealthy"'], action="log_only")
    opted = {"autoheal.enable": "true"}
    first = docker_watch.health_changed(container="web", health="unhealthy", labels=opted, instance="h", at=T0)
    again = docker_watch.health_changed(
        container="web", health="unhealthy", labels=opted, instance="h", at=T0 + timedelta(seconds=30)
    )
    assert first.startswith("firing (accepted 1") and "jobs 1" in first
    assert "duplicates 1" in again
    incident = Alert.objects.get()
    assert (incident.source, incident.starts_at, incident.status) == ("docker", T0, "firing")
    assert (
        docker_watch.health_changed(
            container="web", health="healthy", labels=opted, instance="h", at=T0 + timedelta(seconds=60)
        )
        == "resolved"
    )
    incident.refresh_from_db()
    assert incident.status == "resolved" and incident.ends_at == T0 + timedelta(seconds=60)
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_containers_that_did_not_opt_in_raise_no_alert():
    outcome = docker_watch.health_changed(container="db", health="unhealthy", labels={"x": "y"}, instance="h", at=T0)
    assert outcome == "ignored: not opted in"
    assert not Alert.objects.exists()


@pytest.mark.postgres
@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_the_watcher_heals_an_unhealthy_container_with_no_alertmanager(make_container, docker_settings, tmp_path: Path):
    make_policy(
        name="restart-unhealthy",
        matchers=['alertname="ContainerUnhealthy"', 'severity=~"critical|page"'],
        action="restart_container",
        params={"timeout_seconds": 20},
        verify_within_seconds=60,
    )
    scope = f"watch-{uuid.uuid4().hex[:8]}"  # this test's containers only, on a shared engine
    healing = make_container(labels={"autoheal.enable": "true", "test.scope": scope})
    bystander = make_container(labels={"team": "web", "test.scope": scope})
    wait_until(lambda: healing.reload() or healing.attrs["State"]["Health"]["Status"] == "healthy", timeout=20)
    before, bystander_before = started_at(healing), started_at(bystander)
    watcher = spawn_manage(["autoheal_watch_docker", "--label", f"test.scope={scope}"], log=tmp_path / "watcher.log")
    worker = spawn_manage(["autoheal_worker", "--name", "watch-test"], log=tmp_path / "worker.log")
    try:
        time.sleep(1.5)  # the watcher is following the stream
        healing.exec_run(["rm", "-f", "/tmp/healthy"])
        bystander.exec_run(["rm", "-f", "/tmp/healthy"])
        wait_until(lambda: events("action_verified"), timeout=60)
    finally:
        codes = (stop_process(watcher), stop_process(worker))
    assert codes == (0, 0)  # SIGTERM stops both cleanly
    assert started_at(healing) != before
    assert started_at(bystander) == bystander_before
    incident = Alert.objects.get()
    assert (incident.source, incident.labels["container"], incident.status) == ("docker", healing.name, "resolved")
    verified = events("action_verified")[0]
    assert verified.target == healing.name and verified.data["time_to_remediate_seconds"] > 0
    assert len(events("action_started")) == 1


class SocketProxy:
    """A unix-socket forwarder to dockerd that the test can cut, as a network blip would."""

    def __init__(self, path: Path, upstream: str) -> None:
        import socket
        import threading

        self.path, self.upstream = str(path), upstream
        self.accepted = 0
        self.connections: list[socket.socket] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(16)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            self.accepted += 1
            self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()

    def cut(self) -> None:
        import socket

        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.connections = []

    def close(self) -> None:
        self.cut()
        self.server.close()


@pytest.mark.postgres
@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_the_watcher_reconnects_when_the_events_stream_drops(make_container, docker_host, tmp_path: Path):
    make_policy(matchers=['alertname="ContainerUnhealthy"'], action="log_only")
    scope = f"watch-{uuid.uuid4().hex[:8]}"
    container = make_container(labels={"autoheal.enable": "true", "test.scope": scope})
    wait_until(lambda: container.reload() or container.attrs["State"]["Health"]["Status"] == "healthy", timeout=20)
    proxy = SocketProxy(
        Path("/tmp") / f"ah-proxy-{os.getpid()}-{time.monotonic_ns()}.sock", docker_host.removeprefix("unix://")
    )
    watcher = spawn_manage(
        ["autoheal_watch_docker", "--label", f"test.scope={scope}"],
        env={"DOCKER_HOST": f"unix://{proxy.path}"},
        log=tmp_path / "watcher.log",
    )
    try:
        wait_until(lambda: proxy.accepted >= 3, timeout=20)  # info, scan, events stream
        time.sleep(0.5)
        before = proxy.accepted
        proxy.cut()
        wait_until(lambda: proxy.accepted > before + 2, timeout=20)  # connected again
        time.sleep(0.5)
        container.exec_run(["rm", "-f", "/tmp/healthy"])
        wait_until(lambda: Alert.objects.filter(source="docker").exists(), timeout=30)
    finally:
        stop_process(watcher)
        proxy.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(proxy.path)
    assert Alert.objects.get().labels["container"] == container.name
    assert "reconnecting" in (tmp_path / "watcher.log").read_text()
