"""Docker actions: restart, start, stop and kill a container through the Docker Engine API.

Safety by construction:
- the container must opt in with the label ``autoheal.enable=true``, or its name must match one of
  the policy's explicit ``params.allow`` name patterns (shell-style, e.g. ``web-*``);
- Autoheal never acts on itself: neither on ``AUTOHEAL_SELF_CONTAINER`` nor on the container this
  process runs in (found from /proc);
- an action is confirmed by the container's state, not by the API call: a restart needs
  ``State.StartedAt`` to change and the health to return (``healthy``, or running when the
  container has no health check) within the timeout.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from django.conf import settings

from remediation.executors import ExecResult, JobSpec, NotAllowed, TargetMissing, timeout_for
from remediation.models import Action

OPT_IN_LABEL = "autoheal.enable"
DEFAULT_STOP_TIMEOUT = 10
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
_POLL = 0.2


def client(*, timeout: float = 60) -> docker.DockerClient:
    """A client for settings.DOCKER_HOST (or the environment's Docker defaults when unset)."""
    if settings.DOCKER_HOST:
        return docker.DockerClient(base_url=settings.DOCKER_HOST, timeout=int(timeout))
    return docker.from_env(timeout=int(timeout))


@functools.cache
def own_container_ids() -> frozenset[str]:
    """Container ids this process runs in, as the kernel shows them (empty outside a container)."""
    found: set[str] = set()
    for name in ("/proc/self/cgroup", "/proc/self/mountinfo"):
        try:
            text = Path(name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        found.update(_CONTAINER_ID.findall(text))
    return frozenset(found)


def is_self(container_id: str, name: str) -> bool:
    """True when the container is Autoheal itself."""
    me = (settings.AUTOHEAL_SELF_CONTAINER or "").strip().lstrip("/")
    if me and (name == me or (len(me) >= 12 and container_id.startswith(me))):
        return True
    return container_id in own_container_ids()


def opted_in(labels: dict[str, str] | None, name: str, allow: list[str]) -> bool:
    """The opt-in rule: the label ``autoheal.enable=true`` or an explicit allow-list pattern."""
    if (labels or {}).get(OPT_IN_LABEL, "").strip().lower() == "true":
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in allow)


def _allow_patterns(spec: JobSpec) -> list[str]:
    allow = spec.params.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(p, str) and p for p in allow):
        raise NotAllowed("params.allow must be a list of container name patterns")
    return allow


def _stop_timeout(spec: JobSpec) -> int:
    raw = spec.params.get("stop_timeout_seconds", DEFAULT_STOP_TIMEOUT)
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= 300:
        raise NotAllowed("params.stop_timeout_seconds must be an integer between 0 and 300")
    return raw


def _guard(spec: JobSpec, container: Any) -> None:
    name = str(container.attrs.get("Name", "")).lstrip("/")
    if is_self(container.id, name):
        raise NotAllowed(f"container {name} is Autoheal itself: Autoheal never acts on itself")
    labels = container.attrs.get("Config", {}).get("Labels") or {}
    if not opted_in(labels, name, _allow_patterns(spec)):
        raise NotAllowed(
            f"container {name} has not opted in (label {OPT_IN_LABEL}=true) and no params.allow pattern matches it"
        )


def check(spec: JobSpec) -> None:
    """Read-only: refuse targets that did not opt in, or Autoheal's own container."""
    if not spec.target:
        raise NotAllowed("the policy's target rendered to an empty container name")
    _allow_patterns(spec)
    _stop_timeout(spec)
    timeout_for(spec)
    api = client(timeout=30)
    try:
        container = _lookup(api, spec.target)
    finally:
        api.close()
    _guard(spec, container)


def _lookup(api: docker.DockerClient, target: str) -> Any:
    """The container ``target`` names; TargetMissing when none does or an id prefix names several."""
    try:
        return api.containers.get(target)
    except docker.errors.NotFound:
        raise TargetMissing(f"no container named {target}") from None
    except docker.errors.APIError as exc:
        # "Multiple IDs found with provided prefix": a 400 on newer engines, a 500 on older ones.
        if "multiple ids found" in str(exc.explanation or "").lower():
            raise TargetMissing(
                f"{target} is an id prefix of several containers: name one", reason="ambiguous_target"
            ) from None
        raise


def _state(container: Any) -> tuple[str, bool, str]:
    container.reload()
    state = container.attrs.get("State", {})
    health = (state.get("Health") or {}).get("Status", "")
    return str(state.get("StartedAt", "")), bool(state.get("Running")), str(health)


def execute(spec: JobSpec, *, timeout: float) -> ExecResult:
    """Run the Docker action and wait, up to ``timeout`` seconds, for its confirmation."""
    stop_timeout = _stop_timeout(spec)
    api = client(timeout=timeout + stop_timeout + 30)
    try:
        container = _lookup(api, spec.target)
        # Re-checked at execution time: labels can change between check() and now.
        _guard(spec, container)
        before, _, _ = _state(container)
        if spec.action == Action.RESTART_CONTAINER:
            container.restart(timeout=stop_timeout)
        elif spec.action == Action.START_CONTAINER:
            container.start()
        elif spec.action == Action.STOP_CONTAINER:
            container.stop(timeout=stop_timeout)
        elif spec.action == Action.KILL_CONTAINER:
            container.kill()
        else:
            return ExecResult(ok=False, detail=f"not a Docker action: {spec.action}")
        return _confirm(spec, container, before=before, timeout=timeout)
    except NotAllowed:
        raise
    except docker.errors.NotFound:
        # Removed while the action ran: the action did not happen on anything.
        raise TargetMissing(f"no container named {spec.target}") from None
    except docker.errors.APIError as exc:
        # A 5xx means the engine could not do it now; a 4xx (conflict, bad request) will not
        # improve with a retry.
        return ExecResult(
            ok=False, transient=bool(exc.is_server_error()), detail=f"Docker API error: {exc.explanation or exc}"
        )
    except requests.exceptions.ReadTimeout:
        # The request reached the engine: the action may have happened, so it is not retried.
        return ExecResult(ok=False, detail="Docker did not answer in time; the action may or may not have happened")
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        return ExecResult(ok=False, transient=_unreachable(exc), detail=f"cannot reach Docker: {type(exc).__name__}")
    finally:
        api.close()


def _unreachable(exc: Exception) -> bool:
    """True only when the request never reached the engine (safe to retry)."""
    text = str(exc)
    return any(
        marker in text for marker in ("Connection refused", "No such file or directory", "Name or service not known")
    )


def _confirm(spec: JobSpec, container: Any, *, before: str, timeout: float) -> ExecResult:
    deadline = time.monotonic() + timeout
    started, running, health = before, False, ""
    while True:
        started, running, health = _state(container)
        outcome = _confirmed(spec.action, before=before, started=started, running=running, health=health)
        if outcome or time.monotonic() >= deadline:
            break
        time.sleep(_POLL)
    output = {
        "container": str(container.attrs.get("Name", "")).lstrip("/"),
        "id": container.short_id,
        "started_at_before": before,
        "started_at_after": started,
        "running": running,
        "health": health or "none",
    }
    if outcome:
        return ExecResult(ok=True, detail=_done(spec.action, health), output=output)
    return ExecResult(
        ok=False, detail=_not_confirmed(spec.action, before, started, running, health, timeout), output=output
    )


def _confirmed(action: str, *, before: str, started: str, running: bool, health: str) -> bool:
    healthy = running and health in ("", "healthy")
    if action == Action.RESTART_CONTAINER:
        return started != before and healthy
    if action == Action.START_CONTAINER:
        return healthy
    return not running


def _done(action: str, health: str) -> str:
    verbs: dict[str, str] = {
        Action.RESTART_CONTAINER: "restarted",
        Action.START_CONTAINER: "started",
        Action.STOP_CONTAINER: "stopped",
        Action.KILL_CONTAINER: "killed",
    }
    verb = verbs.get(action, action)
    return (
        f"{verb}; health {health}" if health and action in (Action.RESTART_CONTAINER, Action.START_CONTAINER) else verb
    )


def _not_confirmed(action: str, before: str, started: str, running: bool, health: str, timeout: float) -> str:
    if action == Action.RESTART_CONTAINER and started == before:
        return f"State.StartedAt did not change within {timeout:g}s: the restart is not confirmed"
    if action in (Action.RESTART_CONTAINER, Action.START_CONTAINER):
        return f"the container is {'running' if running else 'not running'} with health {health or 'none'} after {timeout:g}s"
    return f"the container is still running after {timeout:g}s"
