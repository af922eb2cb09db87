"""Executors against real things: loopback HTTP servers, real processes, a real dockerd."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import started_at
from remediation.executors import ExecResult, JobSpec, NotAllowed, TargetMissing, command, docker, webhook
from remediation.tests.exec_helpers import drain, events, make_alert, make_job, make_policy


class Recorder:
    """A loopback HTTP server that counts requests and answers with a fixed status."""

    def __init__(self, status: int = 200, location: str = "") -> None:
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length)}
                )
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers() -> Iterator[list[Recorder]]:
    started: list[Recorder] = []
    yield started
    for server in started:
        server.close()


# --- webhook ----------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_webhook_does_not_follow_a_redirect_to_another_address(servers: list[Recorder]):
    elsewhere = Recorder()
    redirecting = Recorder(status=302, location=elsewhere.url + "stolen")
    servers += [elsewhere, redirecting]
    policy = make_policy(action="webhook", params={"url": redirecting.url + "hook", "allow": [redirecting.url]})
    make_job(policy=policy, alert=make_alert())
    drain()
    assert len(redirecting.requests) == 1
    assert elsewhere.requests == []
    failed = events("action_fail")[0]
    assert "302 redirect" in failed.data["error"] and "not followed" in failed.data["error"]
    assert failed.data["output"]["location"] == elsewhere.url + "stolen"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_webhook_posts_the_incident_and_keeps_secret_headers_out_of_the_audit(servers: list[Recorder], monkeypatch):
    # The secret is an environment variable of the worker, as it would be in production.
    monkeypatch.setenv("HOOK_TOKEN", "s3cret-value-123")
    hook = Recorder()
    servers.append(hook)
    policy = make_policy(
        action="webhook",
        params={"url": hook.url + "hook", "allow": [hook.url], "headers": {"Authorization": {"env": "HOOK_TOKEN"}}},
    )
    make_job(policy=policy, alert=make_alert(labels={"alertname": "X", "container": "web"}))
    drain()
    assert len(hook.requests) == 1
    assert hook.requests[0]["headers"]["Authorization"] == "s3cret-value-123"
    assert b'"container": "web"' in hook.requests[0]["body"]
    from audit.models import AuditEvent

    dumped = str([e.as_dict() for e in AuditEvent.objects.all()])
    assert "s3cret-value-123" not in dumped
    assert events("action_ok")[0].data["output"]["status"] == 200


def test_webhook_refuses_urls_that_are_not_allow_listed(settings):
    settings.AUTOHEAL_WEBHOOK_ACTION_ALLOW = ["https://hooks.example.net/"]
    spec = JobSpec(action="webhook", target="", params={"url": "https://evil.example.org/x"})
    with pytest.raises(NotAllowed, match="not allow-listed"):
        webhook.check(spec)


def test_webhook_refuses_a_name_resolving_to_loopback_unless_the_ip_itself_is_listed(servers: list[Recorder]):
    hook = Recorder()
    servers.append(hook)
    by_name = f"http://localhost:{hook.port}/hook"
    spec = JobSpec(action="webhook", target="", params={"url": by_name, "allow": [f"http://localhost:{hook.port}/"]})
    with pytest.raises(NotAllowed, match="internal address"):
        webhook.check(spec)
    with pytest.raises(NotAllowed):
        webhook.execute(spec, timeout=5)
    assert hook.requests == []
    literal = JobSpec(action="webhook", target="", params={"url": hook.url + "hook", "allow": [hook.url]})
    webhook.check(literal)


def test_webhook_refuses_credentials_in_the_url_and_bad_headers():
    with pytest.raises(NotAllowed, match="credentials"):
        webhook.check(JobSpec(action="webhook", target="", params={"url": "http://u:p@127.0.0.1/"}))
    with pytest.raises(NotAllowed, match="invalid header name"):
        webhook.check(
            JobSpec(
                action="webhook",
                target="",
                params={"url": "http://127.0.0.1/", "allow": ["http://127.0.0.1/"], "headers": {"X Bad": "v"}},
            )
        )


# --- command ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["; rm -rf /", "$(id)", "--privileged", "-rf", "a b", "`id`", "x\ny", ""])
def test_command_refuses_unsafe_label_values_before_running_anything(value: str):
    spec = JobSpec(action="command", target="", params={"argv": ["echo", "{{ labels.c }}"]}, labels={"c": value})
    with pytest.raises(NotAllowed):
        command.check(spec)
    with pytest.raises(NotAllowed):
        command.execute(spec, timeout=5)


def test_command_refuses_placeholders_in_the_program_name_and_other_template_syntax():
    with pytest.raises(NotAllowed, match="argv\\[0\\]"):
        command.render_argv(["{{ labels.c }}"], {"c": "sh"})
    with pytest.raises(NotAllowed, match="template syntax"):
        command.render_argv(["echo", "{{ annotations.x }}"], {})
    with pytest.raises(NotAllowed, match="needs the label"):
        command.render_argv(["echo", "{{ labels.missing }}"], {})
    assert command.render_argv(["echo", "--name={{labels.c}}"], {"c": "web-1"}) == ["echo", "--name=web-1"]


def test_command_runs_without_a_shell_so_metacharacters_stay_literal():
    result = command.execute(
        JobSpec(action="command", target="", params={"argv": ["echo", "$(id)", ";", "ls"]}), timeout=5
    )
    assert result.ok and result.output["stdout"] == "$(id) ; ls\n"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_command_timeout_kills_the_whole_process_group(tmp_path: Path):
    pidfile = tmp_path / "child.pid"
    # The shell starts a grandchild; killing only the shell would leave it running.
    script = f"sleep 60 & echo $! > {pidfile}; wait"
    result = command.execute(JobSpec(action="command", target="", params={"argv": ["sh", "-c", script]}), timeout=1)
    assert not result.ok and "timed out" in result.detail
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_command_output_is_truncated_and_the_exit_status_decides():
    result = command.execute(
        JobSpec(
            action="command", target="", params={"argv": ["sh", "-c", "head -c 10000 /dev/zero | tr '\\0' x; exit 3"]}
        ),
        timeout=5,
    )
    assert isinstance(result, ExecResult) and not result.ok
    assert result.output["exit_code"] == 3
    assert len(result.output["stdout"]) < 4200 and "more characters cut" in result.output["stdout"]


def test_command_does_not_pass_the_workers_secrets_in_its_environment(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "do-not-leak")
    result = command.execute(JobSpec(action="command", target="", params={"argv": ["env"]}), timeout=5)
    assert "do-not-leak" not in result.output["stdout"]


# --- docker -----------------------------------------------------------------------------------


@pytest.mark.docker
def test_docker_restart_is_confirmed_by_a_new_start_time_and_health(docker_settings, make_container):
    container = make_container(labels={"autoheal.enable": "true"})
    name = container.name
    time.sleep(1.5)  # the first health check passes
    before = started_at(container)
    spec = JobSpec(action="restart_container", target=name, params={"timeout_seconds": 20})
    docker.check(spec)
    result = docker.execute(spec, timeout=20)
    assert result.ok, result.detail
    assert started_at(container) != before
    assert result.output["started_at_before"] == before and result.output["health"] == "healthy"


@pytest.mark.docker
def test_docker_refuses_a_container_that_did_not_opt_in(docker_settings, make_container):
    container = make_container(labels={"autoheal.enable": "false"})
    before = started_at(container)
    spec = JobSpec(action="restart_container", target=container.name, params={})
    with pytest.raises(NotAllowed, match="has not opted in"):
        docker.check(spec)
    with pytest.raises(NotAllowed):
        docker.execute(spec, timeout=5)
    assert started_at(container) == before


@pytest.mark.docker
def test_docker_allow_pattern_opts_a_container_in_explicitly(docker_settings, make_container):
    container = make_container(name=f"allowed-{os.getpid()}-{time.monotonic_ns() % 100000}", healthy=None)
    docker.check(JobSpec(action="restart_container", target=container.name, params={"allow": ["allowed-*"]}))
    with pytest.raises(NotAllowed):
        docker.check(JobSpec(action="restart_container", target=container.name, params={"allow": ["other-*"]}))


@pytest.mark.docker
def test_docker_never_acts_on_autoheal_itself(docker_settings, make_container):
    container = make_container(labels={"autoheal.enable": "true"})
    docker_settings.AUTOHEAL_SELF_CONTAINER = container.name
    with pytest.raises(NotAllowed, match="Autoheal itself"):
        docker.check(JobSpec(action="restart_container", target=container.name, params={}))


@pytest.mark.docker
def test_docker_restart_that_never_becomes_healthy_is_a_failure(docker_settings, make_container):
    container = make_container(healthy=False)  # no opt-in label: no Docker watcher reacts to it
    spec = JobSpec(action="restart_container", target=container.name, params={"allow": [container.name]})
    result = docker.execute(spec, timeout=3)
    assert not result.ok and not result.transient
    assert "health" in result.detail
    assert result.output["started_at_after"] != result.output["started_at_before"]


@pytest.mark.docker
def test_docker_missing_container_is_a_target_missing_skip_not_a_failure(docker_settings):
    with pytest.raises(TargetMissing, match="no container named") as raised:
        docker.execute(JobSpec(action="restart_container", target="no-such-container-xyz", params={}), timeout=3)
    assert raised.value.reason == "target_missing"


@pytest.mark.docker
def test_docker_stop_and_start_are_confirmed_by_state(docker_settings, make_container):
    container = make_container(labels={"autoheal.enable": "true"}, healthy=None)
    stopped = docker.execute(JobSpec(action="stop_container", target=container.name, params={}), timeout=15)
    assert stopped.ok and stopped.output["running"] is False
    started = docker.execute(JobSpec(action="start_container", target=container.name, params={}), timeout=15)
    assert started.ok and started.output["running"] is True
