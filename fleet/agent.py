"""The agent on a Docker host: pulls its host's jobs from the central, acts locally, reports back.

It needs no database and only connects out (HTTP or HTTPS to the central web). Three loops:

* jobs (the main thread): long-poll for a job placed on this host, run the executor's read-only
  check, ask the central to start it (every guard is decided there), run the existing executor
  (Docker or command: it acts and confirms, StartedAt and health), renew the lease while it runs,
  and report the outcome. The long poll asks for the job already started: the central decides every
  guard under its switch lock when it hands the job over, so the answer carries the go (one round
  trip). Before a Docker action whose policy asks for it, the container's evidence (logs, State,
  Health) is read here and sent to the central's audit trail. A report is written to the state
  directory's spool (one file each, atomically) before it is sent and removed once the central
  answers, so a report survives the central being away and the agent being restarted (reports
  are idempotent by job, attempt and claim, so a resend is never applied twice);
* health: the same Docker watcher as ``autoheal_watch_docker``, its events forwarded to the
  central's intake instead of this process's;
* inventory: the host's opted-in containers (names, labels, health), sent at start and whenever
  a container event changes them.

Every network failure is retried with a capped exponential backoff. SIGTERM lets the current
action finish and be reported, then the agent exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from accounts.redact import redact
from remediation.docker_watch import DockerWatcher
from remediation.evidence import evidence_read
from remediation.executors import ExecResult, JobSpec, NotAllowed, executor_for
from remediation.executors.docker import OPT_IN_LABEL
from remediation.models import DOCKER_ACTIONS

logger = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
INVENTORY_REFRESH_SECONDS = 60.0
# Container events that can change the inventory (names, labels, health, presence).
INVENTORY_EVENTS = ("create", "start", "die", "destroy", "rename", "health_status", "update", "stop", "restart")


DEFAULT_STATE_DIR = "/var/lib/autoheal-agent"
EVIDENCE_TIMEOUT = 5.0


class ReportSpool:
    """Outcomes not yet acknowledged by the central, one JSON file each in the state directory.

    A file is written to a temporary name, flushed to disk and renamed into place, so a crash never
    leaves half a report; it is removed once the central has answered. Its name is the job, attempt
    and claim (never anything secret); the central takes a report once per (job, attempt, claim),
    so a report sent again after a restart is recognised and never applied twice. Without a
    directory, reports are kept in memory only.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._memory: dict[str, tuple[int, dict[str, Any]]] = {}
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = directory / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")  # fails now (clearly) rather than when a report must be kept
            probe.unlink()

    @staticmethod
    def key(job_id: int, body: dict[str, Any]) -> str:
        return f"report-{int(job_id)}-{int(body['attempt'])}-{int(body['claim'])}"

    def add(self, job_id: int, body: dict[str, Any]) -> str:
        key = self.key(job_id, body)
        if self.directory is None:
            self._memory[key] = (job_id, body)
            return key
        final = self.directory / f"{key}.json"
        temporary = self.directory / f".{key}.{os.getpid()}.tmp"
        data = json.dumps({"job": job_id, "body": body}).encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, final)
        self._sync_directory()
        return key

    def pending(self) -> list[tuple[str, int, dict[str, Any]]]:
        """(key, job, body) of every unacknowledged report, oldest first."""
        if self.directory is None:
            return [(key, job_id, body) for key, (job_id, body) in self._memory.items()]
        files = sorted(self.directory.glob("report-*.json"), key=lambda path: (path.stat().st_mtime_ns, path.name))
        out = []
        for path in files:
            try:
                item = json.loads(path.read_bytes())
                out.append((path.stem, int(item["job"]), dict(item["body"])))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # Kept aside for a person to look at, never silently dropped nor retried forever.
                logger.error("report file %s cannot be read (%s); kept as .bad", path.name, type(exc).__name__)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
        return out

    def remove(self, key: str) -> None:
        if self.directory is None:
            self._memory.pop(key, None)
            return
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{key}.json").unlink()
        self._sync_directory()

    def __len__(self) -> int:
        return len(self.pending())

    def _sync_directory(self) -> None:
        assert self.directory is not None  # only called with a directory
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Stopping(BaseException):
    """Raised in the main thread by SIGTERM while it waits for work (no action in progress)."""


class CentralError(Exception):
    """The central answered with an error the agent cannot fix by retrying (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Backoff:
    """Capped exponential backoff with jitter, reset after a success."""

    def __init__(self, start: float = BACKOFF_START, cap: float = BACKOFF_MAX) -> None:
        self.start = start
        self.cap = cap
        self.current = start

    def next(self) -> float:
        delay = self.current
        self.current = min(self.cap, self.current * 2)
        return delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret

    def reset(self) -> None:
        self.current = self.start


class Central:
    """The central's agent API, as seen from one host."""

    def __init__(self, *, server: str, host: str, token: str, timeout: float = 10.0) -> None:
        self.server = server.rstrip("/")
        self.host = host
        self.timeout = timeout
        self._local = threading.local()
        self._token = token

    def _session(self) -> requests.Session:
        # One session (connection pool) per thread: requests' Session is not thread-safe.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["Authorization"] = f"Agent {self._token}"
            self._local.session = session
        return session

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None

    def call(self, method: str, path: str, *, body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """One request; CentralError for a 4xx, requests' exceptions (retryable) for the rest."""
        url = f"{self.server}/api/agent/{path}"
        if method == "GET":
            response = self._session().get(
                url, params={"host": self.host, **(body or {})}, timeout=timeout or self.timeout
            )
        else:
            response = self._session().request(
                method, url, json={"host": self.host, **(body or {})}, timeout=timeout or self.timeout
            )
        if response.status_code == 204:
            return None
        if 400 <= response.status_code < 500 and response.status_code != 429:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text[:200]
            raise CentralError(response.status_code, str(message))
        response.raise_for_status()
        return response.json()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def inventory_of(client: Any) -> list[dict[str, Any]]:
    """The host's opted-in containers as the central keeps them, sorted by name."""
    items = []
    for container in client.containers.list(all=True, filters={"label": f"{OPT_IN_LABEL}=true"}):
        state = container.attrs.get("State") or {}
        items.append(
            {
                "name": container.name,
                "labels": {str(k): str(v) for k, v in (container.labels or {}).items()},
                "health": str((state.get("Health") or {}).get("Status", "")),
                "state": str(state.get("Status", "")),
            }
        )
    return sorted(items, key=lambda item: item["name"])


class FleetAgent:
    """One host's agent; ``run_forever`` until ``stop``."""

    def __init__(
        self,
        *,
        central: Central,
        docker_factory: Callable[[], Any],
        version: str,
        poll_seconds: float = 20.0,
        spool: ReportSpool | None = None,
    ) -> None:
        self.central = central
        self.host = central.host
        self.docker_factory = docker_factory
        self.version = version
        self.poll_seconds = poll_seconds
        self.lease_seconds = 60.0
        self.stop_event = threading.Event()
        self.busy = False
        # Outcomes not yet acknowledged by the central, re-sent before the next poll (and after a
        # restart: the spool is on disk).
        self.spool = spool if spool is not None else ReportSpool(None)
        self.watcher = DockerWatcher(client_factory=docker_factory, on_health=self.forward_health)
        self._inventory_sent: list[dict[str, Any]] | None = None
        self._inventory_wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- health events and inventory ----------------------------------------------------------

    def forward_health(
        self, *, container: str, health: str, labels: dict[str, str], instance: str, at: datetime
    ) -> str:
        """The watcher's health change, into the central's intake (retried until it is accepted)."""
        if labels.get(OPT_IN_LABEL, "").strip().lower() != "true":
            return "ignored: not opted in"
        self._inventory_wake.set()
        if health not in ("unhealthy", "healthy"):
            return "nothing to do"
        body = {"container": container, "health": health, "labels": labels, "at": _iso(at)}
        answer = self._retrying(lambda: self.central.call("POST", "events", body=body))
        return str((answer or {}).get("outcome", "forwarded"))

    def inventory_send(self, *, force: bool = False) -> bool:
        client = self.docker_factory()
        try:
            items = inventory_of(client)
        finally:
            client.close()
        if not force and items == self._inventory_sent:
            return False
        self.central.call("PUT", "inventory", body={"containers": items})
        self._inventory_sent = items
        logger.info("inventory sent: %d opted-in container(s)", len(items))
        return True

    def _inventory_loop(self) -> None:
        backoff = Backoff()
        last_full = 0.0
        while not self.stop_event.is_set():
            try:
                force = time.monotonic() - last_full > INVENTORY_REFRESH_SECONDS
                self.inventory_send(force=force)
                if force:
                    last_full = time.monotonic()
                backoff.reset()
                self._inventory_wake.wait(INVENTORY_REFRESH_SECONDS / 4)
                self._inventory_wake.clear()
                # Let a burst of container events settle into one inventory.
                self.stop_event.wait(0.1)
            except CentralError as exc:
                logger.error("the central refused the inventory: %s", exc)
                self.stop_event.wait(backoff.next())
            except Exception as exc:
                logger.warning("inventory not sent (%s); retrying", type(exc).__name__)
                self.stop_event.wait(backoff.next())

    def _events_loop(self) -> None:
        """Container events (not only health) wake the inventory loop."""
        backoff = Backoff()
        while not self.stop_event.is_set():
            client = None
            try:
                client = self.docker_factory()
                stream = client.events(
                    decode=True,
                    filters={"type": "container", "event": list(INVENTORY_EVENTS), "label": f"{OPT_IN_LABEL}=true"},
                )
                self._events_stream = stream
                backoff.reset()
                for _ in stream:
                    if self.stop_event.is_set():
                        break
                    self._inventory_wake.set()
            except Exception as exc:
                if self.stop_event.is_set():
                    break
                logger.warning("Docker events lost (%s); reconnecting", type(exc).__name__)
                self.stop_event.wait(backoff.next())
            finally:
                if client is not None:
                    client.close()

    # --- jobs ---------------------------------------------------------------------------------

    def _retrying(self, call: Callable[[], Any], *, until_stopped: bool = False) -> Any:
        """Retry a call on network errors and 5xx with backoff; a 4xx is final (CentralError)."""
        backoff = Backoff()
        while True:
            try:
                return call()
            except CentralError:
                raise
            except requests.RequestException as exc:
                if until_stopped and self.stop_event.is_set():
                    raise
                delay = backoff.next()
                logger.warning("the central is unreachable (%s); retrying in %.1fs", type(exc).__name__, delay)
                time.sleep(delay)

    def flush_reports(self) -> None:
        """Deliver the outcomes the central has not acknowledged yet, oldest first."""
        for key, job_id, body in self.spool.pending():
            try:
                answer = self.central.call("POST", f"jobs/{job_id}/report", body=body)
                logger.info("job %s reported: %s", job_id, answer)
            except CentralError as exc:
                # Refused for good (another host's job, a bad body): resending cannot help.
                logger.error("the report of job %s was refused: %s", job_id, exc)
            self.spool.remove(key)

    def report(self, job_id: int, body: dict[str, Any]) -> None:
        """Keep an outcome in the spool until the central acknowledges it (flush_reports)."""
        self.spool.add(job_id, body)

    def run_job(self, job: dict[str, Any]) -> None:
        """Check, start (under the central's guards), act, confirm and report one handed-over job.

        A job handed over with ``go`` was started by the central at hand-over; otherwise (an older
        central) the agent asks for the start after its check.
        """
        job_id, claim = int(job["job"]), int(job["claim"])
        spec = JobSpec(
            action=job["action"],
            target=job["target"],
            params=dict(job.get("params") or {}),
            labels=dict(job.get("labels") or {}),
            alertname=job.get("alertname", ""),
            fingerprint=job.get("fingerprint", ""),
            job_id=job_id,
            # The executor never reads the policy here (no database): the agent reads the evidence
            # itself below and sends it to the central, which records it.
            capture_evidence=False,
        )
        self.lease_seconds = float(job.get("lease_seconds") or self.lease_seconds)
        base = {"claim": claim, "attempt": int(job["attempt"])}
        started_at_handover = job.get("go") is True
        try:
            executor = executor_for(spec.action)
            executor.check(spec)
        except NotAllowed as exc:
            refusal = {"claim": claim, "detail": str(exc), "reason": exc.reason}
            try:
                self._retrying(lambda: self.central.call("POST", f"jobs/{job_id}/refuse", body=refusal))
            except CentralError as refused:
                # The job is no longer ours (its lease ran out): nothing ran, nothing to do.
                logger.warning("job %s: the refusal was not taken: %s", job_id, refused)
            logger.info("job %s refused here: %s", job_id, exc)
            return
        except Exception as exc:
            logger.warning("job %s: check failed: %s", job_id, type(exc).__name__)
            self.report(
                job_id, {**base, "ok": False, "transient": True, "detail": f"check failed: {exc}", "output": {}}
            )
            return
        if not started_at_handover:
            try:
                answer = self._retrying(
                    lambda: self.central.call("POST", f"jobs/{job_id}/start", body={"claim": claim})
                )
            except CentralError as exc:
                # 409: the hand-over lease ran out (this agent was slow or away) and the job went
                # back to the queue: nothing ran here, so there is nothing to report.
                logger.warning("job %s not started: %s", job_id, exc)
                return
            if not answer or not answer.get("go"):
                logger.info("job %s not started: %s", job_id, (answer or {}).get("reason"))
                return
        heartbeat = threading.Thread(target=self._heartbeat, args=(job_id, claim), daemon=True)
        done = threading.Event()
        self._heartbeat_done = done
        heartbeat.start()
        sending: threading.Thread | None = None
        unsent: dict[str, Any] = {}
        if job.get("capture_evidence") and spec.action in DOCKER_ACTIONS:
            # Read before the action (it is the sick state's evidence); sent while the action runs.
            evidence = self.evidence_read(job_id=job_id, target=spec.target)
            unsent["evidence"] = evidence

            def send() -> None:
                try:
                    if self.evidence_send(job_id=job_id, claim=claim, evidence=evidence):
                        unsent.clear()
                finally:
                    self.central.close()

            sending = threading.Thread(target=send, name="agent-evidence", daemon=True)
            sending.start()
        started = time.monotonic()
        try:
            result = executor.execute(spec, timeout=float(job.get("timeout_seconds") or 30.0))
        except NotAllowed as exc:
            result = ExecResult(ok=False, detail=f"refused at execution time: {exc}")
        except Exception as exc:
            logger.exception("job %s: executor raised", job_id)
            result = ExecResult(ok=False, detail=f"executor error: {type(exc).__name__}: {exc}")
        finally:
            done.set()
            heartbeat.join(timeout=5)
        if sending is not None:
            sending.join(timeout=EVIDENCE_TIMEOUT + 1)
        # Evidence the central has not confirmed travels with the report (recorded once either way).
        left_over = unsent.get("evidence")
        self.report(
            job_id,
            {
                **base,
                "ok": result.ok,
                "transient": result.transient,
                "detail": result.detail,
                "output": result.output,
                "duration_seconds": round(time.monotonic() - started, 3),
                **({"evidence": left_over} if left_over is not None else {}),
            },
        )

    def evidence_read(self, *, job_id: int, target: str) -> dict[str, Any]:
        """The container's evidence (logs, State, Health, redacted); a failure is its ``error``."""
        try:
            client = self.docker_factory()
            try:
                return evidence_read(client.containers.get(target), job_id=job_id, reload=False)
            finally:
                client.close()
        except Exception as exc:
            logger.warning("job %s: evidence not read: %s", job_id, type(exc).__name__)
            return {"container": target, "error": redact(f"{type(exc).__name__}: {exc}")[:500]}

    def evidence_send(self, *, job_id: int, claim: int, evidence: dict[str, Any]) -> bool:
        """Send the evidence to the central; True once it answered (recorded, a duplicate or refused)."""
        body = {"claim": claim, "stage": "before_action", "evidence": evidence}
        try:
            self.central.call("POST", f"jobs/{job_id}/evidence", body=body, timeout=EVIDENCE_TIMEOUT)
        except CentralError as exc:
            logger.warning("job %s: the central refused the evidence: %s", job_id, exc)
        except requests.RequestException as exc:
            logger.warning("job %s: evidence not delivered (%s); it goes with the report", job_id, type(exc).__name__)
            return False
        return True

    def _heartbeat(self, job_id: int, claim: int) -> None:
        """Renew the job's lease while the action runs (own session: this is another thread)."""
        interval = max(0.5, self.lease_seconds / 3)
        while not self._heartbeat_done.wait(interval):
            try:
                self.central.call("POST", f"jobs/{job_id}/heartbeat", body={"claim": claim}, timeout=interval)
            except Exception as exc:
                logger.warning("lease of job %s not renewed (%s)", job_id, type(exc).__name__)
        self.central.close()

    def hello(self) -> None:
        client = self.docker_factory()
        try:
            engine = str(client.version().get("Version", ""))
        finally:
            client.close()
        answer = self.central.call("POST", "hello", body={"version": self.version, "engine": engine})
        self.poll_seconds = float(answer.get("poll_seconds") or self.poll_seconds)
        self.lease_seconds = float(answer.get("lease_seconds") or self.lease_seconds)

    def poll_once(self) -> bool:
        """One long poll; True if a job was run."""
        job = self.central.call(
            "GET", "jobs/next", body={"wait": self.poll_seconds, "start": 1}, timeout=self.poll_seconds + 15
        )
        if job is None:
            return False
        self.busy = True
        try:
            self.run_job(job)
            self.flush_reports()
        finally:
            self.busy = False
        return True

    def start_background(self) -> None:
        for name, target in (
            ("watcher", self.watcher.run_forever),
            ("inventory", self._inventory_loop),
            ("events", self._events_loop),
        ):
            thread = threading.Thread(target=target, name=f"agent-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def run_forever(self) -> None:
        with contextlib.suppress(Stopping):
            self._loop()
        self.shutdown()

    def _loop(self) -> None:
        backoff = Backoff()
        connected = False
        while not self.stop_event.is_set():
            try:
                if not connected:
                    self.hello()
                    connected = True
                    logger.info("connected to %s as host %s", self.central.server, self.host)
                    if not self._threads:
                        self.start_background()
                    self._inventory_wake.set()
                self.busy = True
                self.flush_reports()
                self.busy = False
                self.poll_once()
                backoff.reset()
            except CentralError as exc:
                if exc.status == 401:
                    logger.error("the central refused this agent's token: %s", exc)
                else:
                    logger.error("the central refused a request: %s", exc)
                self.busy = False
                connected = False
                self.stop_event.wait(backoff.next())
            except Exception as exc:
                self.busy = False
                if self.stop_event.is_set():
                    break
                delay = backoff.next()
                logger.warning("lost the central (%s); reconnecting in %.1fs", type(exc).__name__, delay)
                connected = False
                self.stop_event.wait(delay)

    def request_stop(self) -> None:
        """SIGTERM: finish the action in progress and its report, then exit; interrupt a wait."""
        self.stop_event.set()
        self._inventory_wake.set()
        self.watcher.stop()
        if not self.busy:
            raise Stopping()

    def shutdown(self) -> None:
        self.watcher.stop()
        stream = getattr(self, "_events_stream", None)
        if stream is not None:
            try:
                stream.close()
            except Exception:
                logger.debug("closing the events stream failed", exc_info=True)
        # Outcomes still unsent get a last, bounded try; the spool keeps them for the next start.
        if len(self.spool):
            try:
                self.flush_reports()
            except Exception:
                where = f"kept in {self.spool.directory}" if self.spool.directory else "lost (no state directory)"
                logger.warning("%d report(s) could not be delivered before exit: %s", len(self.spool), where)
        logger.info("agent of host %s stopped", self.host)
