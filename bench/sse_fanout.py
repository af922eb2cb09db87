"""Live stream fan-out: N SSE clients on one daphne process, a separate writer process, Redis.

``python -m bench.sse_fanout`` (``--quick`` for a short smoke run). Starts everything on loopback:
its own PostgreSQL database (``<bench database>_sse``, recreated), daphne on a socket bound to
port 0, client processes holding N ``GET /events`` streams (asyncio, raw sockets), and a writer
process that records audit events at a fixed rate, each in its own transaction, like the worker.

For each rate it reports, from commit to receipt on the client: p50, p99, max; events lost (an id
written but not received by some client; must be 0); duplicates; deliveries per second; the
web process's peak RSS. Baseline in the same run: the same stream with 1 client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import db
from bench.procs import ROOT, RssSampler, Started, _listening_socket, _popen, server_env

MAX_CLIENTS = 2000
MAX_SECONDS = 60
ID_LINE = re.compile(rb"\nid: (\d+)\n")


# --- Client process ---------------------------------------------------------------------------


async def _client(port: int, cookie: str, ids: list[int], times: list[float], opened: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
            f"Cookie: sessionid={cookie}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    buf = b""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            now = time.monotonic()
            buf += data
            if not opened.is_set() and b"stream-open" in buf:
                opened.set()
            # Frames are whole inside a chunk; the chunk-size lines between them never match.
            for match in ID_LINE.finditer(buf):
                ids.append(int(match.group(1)))
                times.append(now)
            cut = buf.rfind(b"\n")
            buf = buf[cut:] if cut >= 0 else buf
    finally:
        writer.close()


async def _clients_main(port: int, cookie: str, count: int, out: Path) -> None:
    receipts: list[tuple[list[int], list[float]]] = [([], []) for _ in range(count)]
    opened = [asyncio.Event() for _ in range(count)]
    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(_client(port, cookie, *receipts[i], opened[i])))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not flood the accept queue
    await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), timeout=60)
    print("ready", flush=True)
    # Run until the parent closes stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for task in tasks:
        task.cancel()
    out.write_text(json.dumps(receipts))


# --- Writer process ---------------------------------------------------------------------------


def _writer_main(rate: float, seconds: float, out: Path) -> None:
    import django

    django.setup()
    from django.db import transaction

    from audit.models import AuditEvent
    from audit.sealer import SealerLoop, audit_seal_all
    from audit.services import audit_record

    # With the sealer (PostgreSQL) an event gets its id when it is chained: this process seals its
    # own events as a worker would, so the latency measured includes the seal.
    sealer = SealerLoop()
    sealer.start()
    committed_by_message: list[tuple[str, float]] = []
    run = secrets.token_hex(4)  # messages unique to this run: ids are looked up by message below
    total = int(rate * seconds)
    start = time.monotonic()
    for i in range(total):
        # Paced on a fixed schedule so a slow write does not lower the rate that follows.
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamp: list[float] = []
        message = f"bench {run} {i}"
        with transaction.atomic():
            # Registered before audit_record's own hook, so it runs first: the time of the commit.
            transaction.on_commit(lambda stamp=stamp: stamp.append(time.monotonic()))
            audit_record(kind="action_ok", alertname="BenchAlert", target=f"c-{i % 20}", message=message)
        committed_by_message.append((message, stamp[0]))
    elapsed = time.monotonic() - start
    sealer.stop()
    audit_seal_all(wait=30.0)
    ids = dict(
        AuditEvent.objects.filter(alertname="BenchAlert", message__in=[m for m, _ in committed_by_message]).values_list(
            "message", "id"
        )
    )
    committed = [(ids[m], t) for m, t in committed_by_message if m in ids]
    out.write_text(json.dumps({"committed": committed, "elapsed": elapsed}))


# --- Orchestration ----------------------------------------------------------------------------


@dataclass
class Result:
    clients: int
    rate: float
    written: int
    deliveries: int
    lost: int
    duplicates: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    delivered_per_s: float
    rss_mb: float
    web_cpu_pct: float
    clients_cpu_pct: float
    load: float


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_web(env: dict[str, str], logdir: Path, processes: int) -> Started:
    # Several daphne processes accept on one inherited socket (the kernel spreads the clients), as
    # several stream replicas behind the gateway would; each has its own Redis subscription.
    sock = _listening_socket()
    fd = sock.fileno()
    log = logdir / "daphne.log"
    argv = [sys.executable, "-m", "daphne", "--fd", str(fd), "autoheal_site.asgi:application"]
    procs = [_popen(argv, env, log, (fd,)) for _ in range(processes)]
    started = Started(f"daphne-x{processes}", procs, sock.getsockname()[1], log, [sock])
    deadline = time.monotonic() + 30
    import http.client

    while time.monotonic() < deadline:
        if not started.alive():
            raise RuntimeError(f"daphne exited:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", started.port, timeout=2)
            conn.request("GET", "/events")
            status = conn.getresponse().status
            conn.close()
            if status == 401:
                return started
        except OSError:
            pass
        time.sleep(0.2)
    started.stop()
    raise RuntimeError("daphne did not answer")


def _run_one(
    web: Started, env: dict[str, str], cookie: str, clients: int, rate: float, seconds: float, procs: int, tmp: Path
) -> Result:
    per_proc = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    per_proc = [n for n in per_proc if n > 0]
    client_procs = []
    outs = []
    for i, n in enumerate(per_proc):
        out = tmp / f"clients-{clients}-{rate}-{i}.json"
        outs.append(out)
        client_procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.sse_fanout", "_clients", str(web.port), cookie, str(n), str(out)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        )
    try:
        for proc in client_procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if b"ready" not in line:
                raise RuntimeError("a client process did not connect")
        writer_out = tmp / f"writer-{clients}-{rate}.json"
        web_cpu_before = sum(_cpu_seconds(pid) for pid in web.pids)
        clients_cpu_before = sum(_cpu_seconds(p.pid) for p in client_procs)
        with RssSampler(web) as rss:
            subprocess.run(
                [sys.executable, "-m", "bench.sse_fanout", "_writer", str(rate), str(seconds), str(writer_out)],
                cwd=ROOT,
                env=env,
                check=True,
                timeout=seconds * 3 + 60,
            )
            web_cpu = sum(_cpu_seconds(pid) for pid in web.pids) - web_cpu_before
            clients_cpu = sum(_cpu_seconds(p.pid) for p in client_procs) - clients_cpu_before
            load = os.getloadavg()[0]
            time.sleep(3)  # let the last events reach every client
    finally:
        for proc in client_procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in client_procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    written = json.loads(writer_out.read_text())
    commit_at = {int(i): float(t) for i, t in written["committed"]}
    latencies: list[float] = []
    lost = duplicates = deliveries = 0
    for out in outs:
        for ids, times in json.loads(out.read_text()):
            seen: set[int] = set()
            for event_id, received in zip(ids, times, strict=True):
                if event_id in seen:
                    duplicates += 1
                    continue
                seen.add(event_id)
                if event_id in commit_at:
                    deliveries += 1
                    latencies.append((received - commit_at[event_id]) * 1000)
            lost += len(set(commit_at) - seen)
    return Result(
        clients=clients,
        rate=rate,
        written=len(commit_at),
        deliveries=deliveries,
        lost=lost,
        duplicates=duplicates,
        p50_ms=_percentile(latencies, 0.5),
        p99_ms=_percentile(latencies, 0.99),
        max_ms=max(latencies) if latencies else float("nan"),
        delivered_per_s=deliveries / float(written["elapsed"]),
        rss_mb=rss.peak,
        web_cpu_pct=100 * web_cpu / float(written["elapsed"]),
        clients_cpu_pct=100 * clients_cpu / float(written["elapsed"]),
        load=load,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500, help=f"SSE clients (at most {MAX_CLIENTS})")
    parser.add_argument("--rates", default="50,100", help="events per second, comma list")
    parser.add_argument("--seconds", type=float, default=20, help=f"writing time per rate (at most {MAX_SECONDS})")
    parser.add_argument("--web-procs", type=int, default=1, help="daphne processes sharing the socket (1-4)")
    parser.add_argument("--client-procs", type=int, default=2, help="processes the clients are spread over")
    parser.add_argument("--quick", action="store_true", help="100 clients, 50 events/s, 5 s")
    args = parser.parse_args(argv)
    clients = max(1, min(args.clients, MAX_CLIENTS))
    seconds = max(1.0, min(args.seconds, MAX_SECONDS))
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.quick:
        clients, seconds, rates = 100, 5.0, [50.0]

    # A database of its own for this run (named after its pid, dropped at the end), so two runs at
    # once, this one alone and one started by ``bench.run``, never drop each other's.
    url = f"{db.db_url()}_sse_{os.getpid()}"
    redis_url = db.redis_url()
    db.recreate_database(url)
    try:
        return _measure(args, url, redis_url, clients, seconds, rates)
    finally:
        with contextlib.suppress(Exception):  # Django may not be set up if the start failed
            from django.db import connections

            connections.close_all()
        _drop_database(url)


def _drop_database(url: str) -> None:
    import psycopg

    admin_url, name = db._maintenance_url(url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _measure(
    args: argparse.Namespace, url: str, redis_url: str, clients: int, seconds: float, rates: list[float]
) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="autoheal-sse-bench-"))
    # As production runs daphne: with the bounded connection pool (a reconnect storm of hundreds
    # of consoles would otherwise open a connection per request before each stream starts).
    env = server_env(
        {
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "AUTOHEAL_DATA_DIR": str(tmp),
            "AUTOHEAL_DB_POOL": "1",
            "AUTOHEAL_DB_POOL_SIZE": "8",
        }
    )
    env["AUTOHEAL_AUDIT_JSONL"] = str(tmp / "audit.jsonl")
    db.migrate(env)
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "AUTOHEAL_DATA_DIR", "DJANGO_SETTINGS_MODULE")})
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.test import Client

    user = User.objects.create_user(username="bench-ops", password=None)
    user.groups.add(Group.objects.get_or_create(name="ops")[0])
    browser = Client()
    browser.force_login(user)
    cookie = browser.cookies["sessionid"].value

    results: list[Result] = []
    web = _start_web(env, tmp, max(1, min(args.web_procs, 4)))
    try:
        for rate in rates:
            results.append(_run_one(web, env, cookie, 1, rate, seconds, 1, tmp))
            results.append(_run_one(web, env, cookie, clients, rate, seconds, args.client_procs, tmp))
    finally:
        web.stop()
    print()
    print(f"Live stream fan-out: {web.name}, Redis doorbell, {seconds:.0f} s per row, {os.cpu_count()} CPUs")
    print(
        "| clients | events/s | written | deliveries | lost | dup | p50 ms | p99 ms | max ms | delivered/s | web RSS MiB | web CPU % | clients CPU % | load avg |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.clients} | {r.rate:.0f} | {r.written} | {r.deliveries} | {r.lost} | {r.duplicates} | "
            f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.1f} | {r.delivered_per_s:,.0f} | {r.rss_mb:.0f} | {r.web_cpu_pct:.0f} | "
            f"{r.clients_cpu_pct:.0f} | {r.load:.1f} |"
        )
    failed = [r for r in results if r.lost or r.duplicates]
    return 1 if failed else 0


def _dispatch(argv: list[str]) -> Any:
    if argv and argv[0] == "_clients":
        port, cookie, count, out = argv[1:5]
        return asyncio.run(_clients_main(int(port), cookie, int(count), Path(out)))
    if argv and argv[0] == "_writer":
        rate, seconds, out = argv[1:4]
        return _writer_main(float(rate), float(seconds), Path(out))
    return main(argv)


if __name__ == "__main__":
    sys.exit(_dispatch(sys.argv[1:]) or 0)
