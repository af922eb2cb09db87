"""The whole loop with the real binaries, all on loopback.

A tiny app exposes ``app_healthy`` for a real container; it flips to 0, Prometheus's rule fires,
the real Alertmanager (configured from deploy/alertmanager/alertmanager.yml) POSTs it to a live
Autoheal web process with the Bearer token from a credentials_file, a worker process restarts the
container (StartedAt changes), the app reports healthy again, the alert resolves and the audit
shows ``action_verified``. Prometheus also scrapes Autoheal with the shipped rules loaded, and
Autoheal's own alerts stay quiet.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from django.db import connection

from audit.models import AuditEvent
from conftest import started_at
from remediation.models import Policy

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DEADLINE_SECONDS = 120  # the whole loop normally takes 15-30 s

pytestmark = [pytest.mark.postgres, pytest.mark.docker, pytest.mark.prometheus, pytest.mark.alertmanager]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], *, timeout: float, logs: Callable[[], str]) -> Any:
    """Poll until ``check`` returns something truthy; fail with the processes' logs otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            result = check()
            if result:
                return result
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}\n{logs()}")


class Processes:
    """Child processes started by this test, each stopped by its own PID."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **kwargs)
        self.started.append((name, proc, log))
        return proc

    def logs(self) -> str:
        parts = []
        for name, proc, log in self.started:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            parts.append(f"--- {name} (pid {proc.pid}, exit {proc.poll()}) ---\n{tail}")
        return "\n".join(parts)

    def stop_all(self) -> None:
        for _, proc, _ in reversed(self.started):
            if proc.poll() is None:
                proc.terminate()
        for _, proc, _ in reversed(self.started):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


class FlippingApp:
    """A loopback /metrics target: ``app_healthy`` is 0 once broken, until the container restarts."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.broken_since: str | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def break_it(self) -> None:
        self.broken_since = started_at(self.container)

    def healthy(self) -> bool:
        # The app recovers because it was restarted: any start after the break heals it.
        return self.broken_since is None or started_at(self.container) != self.broken_since

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                value = 1 if app.healthy() else 0
                body = (
                    "# HELP app_healthy 1 when the app works.\n# TYPE app_healthy gauge\n"
                    f'app_healthy{{container="{app.container.name}"}} {value}\n'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def __enter__(self) -> FlippingApp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Sink:
    """A loopback receiver standing in for people's notification channels; keeps what it gets."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                sink.received.append({"path": self.path, "body": json.loads(self.rfile.read(length) or b"{}")})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def alertnames(self, receiver: str) -> set[str]:
        return {
            alert["labels"].get("alertname", "")
            for delivery in self.received
            if delivery["path"] == f"/{receiver}"
            for alert in delivery["body"].get("alerts", [])
        }

    def __enter__(self) -> Sink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def alertmanager_config(*, autoheal_url: str, token_file: Path, sink_port: int) -> dict[str, Any]:
    """The shipped routing tree, pointed at loopback: Autoheal's webhook and a local sink for people."""
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    config["global"] = {"resolve_timeout": "5m"}
    for receiver in config["receivers"]:
        if receiver["name"] == "autoheal-webhook":
            webhook = receiver["webhook_configs"][0]
            webhook["url"] = f"{autoheal_url}/alert"
            webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
        else:
            receiver.pop("email_configs", None)
            receiver["webhook_configs"] = [
                {"url": f"http://127.0.0.1:{sink_port}/{receiver['name']}", "send_resolved": True}
            ]

    def fast(route: dict[str, Any]) -> None:
        # Deliver and re-deliver within a second so resolution reaches Autoheal quickly.
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
        for child in route.get("routes", []):
            fast(child)

    fast(config["route"])
    return config


def prometheus_config(
    *, app_port: int, autoheal_port: int, am_port: int, rules: list[Path], metrics_token_file: Path
) -> dict[str, Any]:
    shipped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    autoheal_job = next(job for job in shipped["scrape_configs"] if job["job_name"] == "autoheal")
    autoheal_job["static_configs"][0]["targets"] = [f"127.0.0.1:{autoheal_port}"]
    # The shipped job sends the metrics token from the compose secret's path; here from a file of the test.
    autoheal_job["authorization"]["credentials_file"] = str(metrics_token_file)
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rules],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [
            {"job_name": "app", "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]},
            autoheal_job,
        ],
    }


E2E_RULES = {
    "groups": [
        {
            "name": "app",
            "rules": [
                {
                    "alert": "AppUnhealthy",
                    "expr": "app_healthy == 0",
                    "labels": {"severity": "critical", "remediate": "true"},
                    "annotations": {"summary": "the app in {{ $labels.container }} is unhealthy"},
                }
            ],
        }
    ]
}


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


def autoheal_env(tmp_path: Path, *, token: str, docker_host: str) -> dict[str, str]:
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOHEAL_", "REDIS_URL", "DATABASE_URL"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "autoheal_site.settings",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "AUTOHEAL_DATA_DIR": str(tmp_path / "data"),
            "AUTOHEAL_WEBHOOK_TOKENS": token,
            "AUTOHEAL_WORKER_POLL_SECONDS": "1",
            "AUTOHEAL_SELF_CONTAINER": "",
            "AUTOHEAL_RATE_LIMIT": "100000/60s",
            "DOCKER_HOST": docker_host,
        }
    )
    return env


def audit_kinds(alertname: str) -> list[str]:
    return list(AuditEvent.objects.filter(alertname=alertname).order_by("id").values_list("kind", flat=True))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_alert_from_prometheus_restarts_the_container_and_is_verified_when_it_resolves(
    tmp_path: Path, processes: Processes, make_container: Any, docker_host: str
) -> None:
    container = make_container(labels={"autoheal.enable": "true"})
    before = started_at(container)
    Policy.objects.create(
        name="restart-unhealthy-app",
        matchers=['alertname="AppUnhealthy"', 'severity="critical"'],
        action="restart_container",
        target="{{ labels.container }}",
        cooldown_seconds=300,
        max_actions_per_hour=3,
        verify_within_seconds=90,
    )
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "webhook-token"
    token_file.write_text(token + "\n")
    env = autoheal_env(tmp_path, token=token, docker_host=docker_host)
    # /metrics refuses a scrape without the token, as in the compose deployment.
    metrics_token_file = tmp_path / "metrics-token"
    metrics_token_file.write_text(secrets.token_urlsafe(24) + "\n")
    env["AUTOHEAL_METRICS_TOKEN_FILE"] = str(metrics_token_file)
    web_port, prom_port, am_port = free_port(), free_port(), free_port()
    autoheal = f"http://127.0.0.1:{web_port}"
    prom = f"http://127.0.0.1:{prom_port}"

    with FlippingApp(container) as app, Sink() as sink:
        processes.start(
            "web",
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port), "autoheal_site.asgi:application"],
            cwd=ROOT,
            env=env,
        )
        processes.start("worker", [sys.executable, "manage.py", "autoheal_worker", "--name", "e2e"], cwd=ROOT, env=env)
        wait_for(
            "Autoheal to answer",
            lambda: requests.get(f"{autoheal}/readyz", timeout=2).status_code == 200,
            timeout=30,
            logs=processes.logs,
        )

        am_file = tmp_path / "alertmanager.yml"
        am_file.write_text(
            yaml.safe_dump(alertmanager_config(autoheal_url=autoheal, token_file=token_file, sink_port=sink.port))
        )
        processes.start(
            "alertmanager",
            [
                "prometheus-alertmanager",
                f"--config.file={am_file}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
        )
        rules = tmp_path / "app.rules.yml"
        rules.write_text(yaml.safe_dump(E2E_RULES))
        prom_file = tmp_path / "prometheus.yml"
        prom_file.write_text(
            yaml.safe_dump(
                prometheus_config(
                    app_port=app.port,
                    autoheal_port=web_port,
                    am_port=am_port,
                    rules=[DEPLOY / "prometheus" / "rules" / "autoheal.rules.yml", rules],
                    metrics_token_file=metrics_token_file,
                )
            )
        )
        processes.start(
            "prometheus",
            [
                "prometheus",
                f"--config.file={prom_file}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--rules.alert.resend-delay=1s",
            ],
        )

        def query(expr: str) -> list[dict[str, Any]]:
            answer = requests.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5).json()
            return answer["data"]["result"] if answer.get("status") == "success" else []

        wait_for(
            "Prometheus to scrape the app and Autoheal",
            lambda: len(query('up{job=~"app|autoheal"} == 1')) == 2,
            timeout=30,
            logs=processes.logs,
        )

        app.break_it()

        restarted = wait_for(
            "the worker to restart the container",
            lambda: started_at(container) != before and "action_ok" in audit_kinds("AppUnhealthy"),
            timeout=DEADLINE_SECONDS,
            logs=processes.logs,
        )
        assert restarted
        wait_for(
            "the alert to resolve and the fix to be verified",
            lambda: "action_verified" in audit_kinds("AppUnhealthy"),
            timeout=DEADLINE_SECONDS,
            logs=processes.logs,
        )

        kinds = audit_kinds("AppUnhealthy")
        story = [
            k
            for k in kinds
            if k in ("alert_received", "action_queued", "action_started", "action_ok", "action_verified")
        ]
        assert story == ["alert_received", "action_queued", "action_started", "action_ok", "action_verified"], kinds
        assert "alert_resolved" in kinds
        assert kinds.count("action_ok") == 1, "exactly one restart"
        verified = AuditEvent.objects.filter(alertname="AppUnhealthy", kind="action_verified").get()
        assert verified.target == container.name
        assert verified.data["time_to_remediate_seconds"] > 0

        # Prometheus watched Autoheal all along: its metrics show the work and its own alerts are quiet.
        wait_for(
            "Autoheal's metrics to show the verified action",
            lambda: query(
                'autoheal_verifications_total{job="autoheal",alertname="AppUnhealthy",result="verified"} == 1'
            ),
            timeout=30,
            logs=processes.logs,
        )
        assert query('autoheal_actions_total{job="autoheal",alertname="AppUnhealthy",result="ok"} == 1')
        assert query("autoheal:heartbeat:age_seconds < 300")
        # The signal behind AutohealNoEvents15m is alive (its history guard aside): events and
        # deliveries kept coming.
        assert query(
            'sum without (kind, code) (max without (instance) (increase({__name__=~"autoheal_event_total|'
            'autoheal_webhook_requests_total", job="autoheal"}[15m]))) > 0'
        )
        alerts = requests.get(f"{prom}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
        assert "AutohealNoEvents15m" not in firing
        assert not {name for name in firing if name.startswith("Autoheal")} - {"AutohealHeartbeat"}, firing
        assert "AppUnhealthy" not in firing
        groups = requests.get(f"{prom}/api/v1/rules", timeout=5).json()["data"]["groups"]
        unhealthy_rules = [r["name"] for g in groups for r in g["rules"] if r.get("health") != "ok"]
        assert not unhealthy_rules, unhealthy_rules

        # The routing tree did what the config says: the heartbeat reached Autoheal, people heard
        # about the app's alert too, and none of Autoheal's own alerts went back into Autoheal.
        wait_for(
            "the heartbeat alert to reach Autoheal",
            lambda: AuditEvent.objects.filter(alertname="AutohealHeartbeat", kind="alert_received").exists(),
            timeout=30,
            logs=processes.logs,
        )
        assert "AppUnhealthy" in sink.alertnames("ops-notify")
        assert "AutohealHeartbeat" not in sink.alertnames("ops-notify")
    assert started_at(container) != before
