"""Where the machine's CPU went during a load: seconds of CPU by kind of process, read from /proc.

A throughput figure alone cannot tell "the code waits on something" from "the machine is full".
This sampler reads every process's CPU time (``utime + stime``) before, during and after a load,
and sorts it by what the process is: the web server under test, PostgreSQL, the audit sealer,
workers, Redis, the load generator and the harness. The machine's own busy time (``/proc/stat``)
says how many of its cores were in use. Linux only; elsewhere it reports nothing.

A process that exits during the load keeps the CPU of its last sample (sampled every 0.25 s);
a child the harness ran to completion meanwhile (the load generator, wrk) is counted from the
harness's ``cutime`` (the CPU of the children it has waited for), as ``load``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Order of the report; "other" is whatever else ran on the machine meanwhile.
KINDS = ("web", "postgres", "sealer", "worker", "redis", "load", "harness", "other")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU seconds, waited-for children's CPU seconds) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK, (int(fields[13]) + int(fields[14])) / _TICK


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user time
    return (total - idle) / _TICK, total / _TICK


def _kind(pid: int, web: set[int]) -> str:
    if pid == os.getpid():
        return "harness"
    if pid in web:
        return "web"
    command = _cmdline(pid)
    program = command.split(" ", 1)[0]
    if command.startswith("postgres:") or program.rsplit("/", 1)[-1] == "postgres":
        return "postgres"
    if "audit_seal" in command:
        return "sealer"
    if "autoheal_worker" in command:
        return "worker"
    if "redis-server" in command:
        return "redis"
    if program.rsplit("/", 1)[-1] == "wrk":
        return "load"
    return "other"


@dataclass
class CpuSplit:
    """CPU seconds by kind over a load, and how busy the machine was."""

    seconds: dict[str, float]
    wall: float
    cores_busy: float
    cores: int

    def per(self, count: float, unit: float = 1000.0) -> dict[str, float]:
        """Each kind's CPU per unit of work (ms per item by default)."""
        return {kind: value / count * unit for kind, value in self.seconds.items()} if count else {}

    def summary(self, count: float, what: str) -> str:
        parts = ", ".join(f"{kind} {value:.2f}" for kind, value in self.per(count).items() if value >= 0.005)
        return (
            f"CPU ms per {what}: {parts} (all {sum(self.per(count).values()):.2f}); "
            f"machine busy {self.cores_busy:.2f} of {self.cores} cores"
        )


class CpuSampler:
    """``with CpuSampler(web_pids) as cpu: <load>`` then ``cpu.split``: CPU by kind over the load."""

    def __init__(self, web_pids: list[int] | None = None, every: float = 0.25) -> None:
        self.web_roots = list(web_pids or [])
        self.every = every
        # pid -> (kind, parent pid, CPU seconds)
        self._start: dict[int, tuple[str, int, float]] = {}
        self._last: dict[int, tuple[str, int, float]] = {}
        self._harness_children = 0.0
        self._machine = (0.0, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.split: CpuSplit | None = None

    def _web(self) -> set[int]:
        from bench.procs import _children

        tree = _children()
        found: set[int] = set()
        stack = list(self.web_roots)
        while stack:
            pid = stack.pop()
            if pid not in found:
                found.add(pid)
                stack.extend(tree.get(pid, []))
        return found

    def _snapshot(self) -> dict[int, tuple[str, int, float]]:
        web = self._web()
        seen: dict[int, tuple[str, int, float]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                pid = int(entry)
                stat = _stat(pid)
                if stat is not None:
                    known = self._last.get(pid)
                    seen[pid] = (known[0] if known else _kind(pid, web), stat[0], stat[1])
        return seen

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._last.update(self._snapshot())

    def __enter__(self) -> CpuSampler:
        if os.path.exists("/proc/stat"):
            self._start = self._snapshot()
            self._last = dict(self._start)
            self._harness_children = (_stat(os.getpid()) or (0, 0.0, 0.0))[2]
            self._machine = _machine_busy()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._start:
            return
        self._stop.set()
        self._thread.join()
        self._last.update(self._snapshot())
        busy0, total0 = self._machine
        busy1, total1 = _machine_busy()
        cores = os.cpu_count() or 1
        seconds: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        harness = os.getpid()
        alive = {int(entry) for entry in os.listdir("/proc") if entry.isdigit()}
        for pid, (kind, parent, cpu) in self._last.items():
            if parent == harness and pid not in alive:
                continue  # ran to completion and reaped by the harness: in its cutime, below
            before = self._start.get(pid)
            seconds[kind] += cpu - (before[2] if before and before[0] == kind else 0.0)
        # Children the harness ran to completion meanwhile (the load generator), counted once.
        seconds["load"] += (_stat(harness) or (0, 0.0, 0.0))[2] - self._harness_children
        wall = (total1 - total0) / cores
        self.split = CpuSplit(
            seconds=seconds,
            wall=wall,
            cores_busy=(busy1 - busy0) / wall if wall else 0.0,
            cores=cores,
        )
