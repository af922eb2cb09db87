"""Wake idle workers when new jobs commit, so no worker polls for seconds."""

from __future__ import annotations

import threading

_local_event = threading.Event()


def notify_jobs() -> None:
    """Tell workers that jobs are ready (call from ``transaction.on_commit``)."""
    _local_event.set()


def wait_for_jobs(timeout: float) -> bool:
    """Block up to ``timeout`` seconds for a notification; True if one came."""
    fired = _local_event.wait(timeout)
    _local_event.clear()
    return fired
