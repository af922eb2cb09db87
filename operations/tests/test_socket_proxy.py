"""deploy/socket-proxy/haproxy.cfg in front of a real Docker Engine: remediation passes, the rest is refused."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import service_missing, started_at
from remediation.tests.exec_helpers import events, make_policy, spawn_manage, stop_process, wait_until

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "socket-proxy" / "haproxy.cfg"

pytestmark = pytest.mark.docker


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def proxy_url(docker_host: str, tmp_path: Path) -> Iterator[str]:
    """deploy/socket-proxy/haproxy.cfg run by the real haproxy on a free loopback port."""

    if not shutil.which("haproxy"):
        service_missing("haproxy not installed (the deploy gate installs it)")
    if not docker_host.startswith("unix://"):
        service_missing("the socket proxy test needs the Engine on a unix socket")
    port = _free_port()
    env = {
        **os.environ,
        "SOCKET_PROXY_BIND": f"127.0.0.1:{port}",
        "SOCKET_PROXY_DOCKER": docker_host.removeprefix("unix://"),
    }
    log = open(tmp_path / "haproxy.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(["haproxy", "-db", "-f", str(CONFIG)], env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("haproxy did not start: " + (tmp_path / "haproxy.log").read_text())
            time.sleep(0.1)
        yield f"tcp://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def proxied_client(proxy_url: str) -> Iterator[object]:
    import docker

    client = docker.DockerClient(base_url=proxy_url, timeout=30)
    yield client
    client.close()


def test_proxy_lets_autoheal_list_inspect_and_restart_a_container(proxied_client, make_container):
    container = make_container()
    before = started_at(container)
    since = int(time.time()) - 1
    assert proxied_client.info()["Name"]  # the watcher names the engine it watches
    assert container.id in [c.id for c in proxied_client.containers.list()]
    through_proxy = proxied_client.containers.get(container.id)
    assert through_proxy.attrs["State"]["Running"] is True
    through_proxy.restart(timeout=5)
    assert started_at(container) != before
    # The watcher's event stream passes too.
    events = proxied_client.events(since=since, until=int(time.time()) + 1, decode=True)
    assert any(e.get("Action") == "restart" and e.get("id") == container.id for e in events)
    through_proxy.stop(timeout=5)
    through_proxy.start()
    through_proxy.kill(signal="SIGKILL")
    container.reload()
    assert container.attrs["State"]["Running"] is False


def test_proxy_refuses_create_exec_and_everything_else(proxied_client, make_container, docker_client):
    import docker

    container = make_container()
    before = len(docker_client.containers.list(all=True))
    image = os.environ.get("AUTOHEAL_TEST_IMAGE", "autoheal-test-busybox:latest")
    refusals = [
        lambda: proxied_client.containers.create(image, ["true"]),
        lambda: proxied_client.api.exec_create(container.id, ["id"]),
        lambda: proxied_client.images.list(),
        lambda: proxied_client.api.remove_container(container.id, force=True),
        lambda: proxied_client.df(),
        lambda: proxied_client.api.get_archive(container.id, "/etc/passwd"),
    ]
    for call in refusals:
        with pytest.raises(docker.errors.APIError) as refused:
            call()
        assert refused.value.status_code == 403
    # An encoded slash does not smuggle exec past the path rules.
    response = proxied_client.api._post(f"{proxied_client.api.base_url}/containers/{container.id}%2Fexec/json")
    assert response.status_code == 403
    assert len(docker_client.containers.list(all=True)) == before
    container.reload()
    assert container.attrs["State"]["Running"] is True


def test_proxy_lets_the_evidence_read_a_containers_logs(proxied_client, make_container):
    container = make_container(command=["sh", "-c", "echo evidence-line && exec sleep 100000"], healthy=None)
    for _ in range(50):  # the line is written just after the container starts
        if b"evidence-line" in proxied_client.api.logs(container.id, tail=200):
            break
        time.sleep(0.1)
    assert b"evidence-line" in proxied_client.api.logs(container.id, tail=200)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_watcher_and_worker_heal_a_container_through_the_proxy_alone(proxy_url, make_container, tmp_path):
    """The proxy's allow-list is enough for the real watcher and worker: nothing else reaches dockerd."""
    container = make_container(labels={"autoheal.enable": "true"})
    # Only this container: the engine may hold other opted-in containers, which are not ours to restart.
    make_policy(
        name="restart-unhealthy",
        matchers=['alertname="ContainerUnhealthy"', f'container="{container.name}"'],
        action="restart_container",
        params={"timeout_seconds": 20},
        verify_within_seconds=60,
    )
    wait_until(lambda: container.reload() or container.attrs["State"]["Health"]["Status"] == "healthy", timeout=30)
    before = started_at(container)
    env = {"DOCKER_HOST": proxy_url}
    watcher = spawn_manage(["autoheal_watch_docker"], env=env, log=tmp_path / "watcher.log")
    worker = spawn_manage(["autoheal_worker", "--name", "proxied"], env=env, log=tmp_path / "worker.log")
    try:
        container.exec_run(["rm", "-f", "/tmp/healthy"])
        wait_until(lambda: events("action_verified"), timeout=90)
    finally:
        stop_process(watcher)
        stop_process(worker)
    assert started_at(container) != before
    assert [e.target for e in events("action_ok")] == [container.name]
    logs = (tmp_path / "watcher.log").read_text(errors="replace") + (tmp_path / "worker.log").read_text(
        errors="replace"
    )
    assert "403" not in logs and "APIError" not in logs, logs[-3000:]
    # And it all went through the proxy: its log shows the watcher's stream and the worker's restart.
    proxy_log = wait_until(lambda: _with_events(tmp_path / "haproxy.log"), timeout=15)
    assert f"/containers/{container.id}/restart" in proxy_log


def _with_events(log: Path) -> str:
    text = log.read_text(errors="replace")
    return text if re.search(r'"GET (/v[0-9.]+)?/events[ ?]', text) else ""
