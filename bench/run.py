"""``make bench`` / ``python -m bench.run``: every benchmark, one table.

Starts what it needs on loopback (its own PostgreSQL database ``autoheal_bench``, Redis db 8, web
servers, workers and the watcher as subprocesses on free ports, the private dockerd of
``scripts/services.sh up``), runs bounded loads, and prints each figure beside its same-run
baseline. ``--quick`` is a short smoke run; ``--only NAME`` runs one scenario (repeatable).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import db
from bench.context import Context
from bench.procs import ROOT, SERVERS
from bench.report import machine, render, save

DEFAULT_SERVER = "gunicorn-gthread-2x4"


def _scenarios() -> dict[str, Callable[[Context], None]]:
    from bench import external, healing, ingest, latency, profile_webhook, serving, storm

    return {
        "client": serving.client_ceiling,
        "serving": serving.serving,
        "ingest": ingest.ingest,
        "audit_write": ingest.audit_write,
        "latency": latency.latency,
        "healing": healing.healing,
        "storm": storm.storm,
        "profile": profile_webhook.profile,
        "audit_api": external.audit_api,
        "sse": external.sse_fanout,
    }


def _base_env(data_dir: Path) -> dict[str, str]:
    env = {
        "DATABASE_URL": db.db_url(),
        "REDIS_URL": db.redis_url(),
        "AUTOHEAL_DATA_DIR": str(data_dir),
        "AUTOHEAL_AUDIT_JSONL": str(data_dir / "audit.jsonl"),
        # Under ASGI each request thread would otherwise hold its own connection; the pool bounds
        # them per process. gunicorn sync workers use it too (one connection kept per worker).
        "AUTOHEAL_DB_POOL": "1",
        "AUTOHEAL_DB_POOL_SIZE": "8",
    }
    return env


def _docker_env() -> dict[str, str]:
    """DOCKER_HOST of the private dockerd (``scripts/services.sh up`` starts it if needed)."""
    subprocess.run([str(ROOT / "scripts" / "services.sh"), "up"], cwd=ROOT, check=False)
    out = subprocess.run(
        [str(ROOT / "scripts" / "services.sh"), "env"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if name in ("AUTOHEAL_TEST_DOCKER_HOST", "AUTOHEAL_TEST_IMAGE"):
            env[name] = value
    return env


def _loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return handle.read().split()[0]


def main(argv: list[str] | None = None) -> int:
    names = list(_scenarios())
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (3 s loads, fewer configurations)")
    parser.add_argument("--only", action="append", choices=names, help="run only this scenario (repeatable)")
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, choices=list(SERVERS), help="web server for the non-serving scenarios"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    chosen = args.only or names

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = ROOT / "var" / "bench" / stamp
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = _base_env(data_dir)
    if any(n in chosen for n in ("healing", "latency", "storm")):
        env.update(_docker_env())

    print(f"bench: database {db.db_url()} (recreated), Redis {db.redis_url()}, logs in {workdir}", flush=True)
    db.recreate_database(env["DATABASE_URL"])
    db.flush_redis(env["REDIS_URL"])
    from bench.procs import server_env

    full_env = server_env(env)
    # The harness itself uses the same settings (counting rows, writing probes, profiling).
    os.environ.update(full_env)
    db.migrate(full_env)
    import django

    django.setup()
    from bench.procs import start_manage

    # Events written by web processes (and the harness's probes) join the audit chain even in
    # scenarios that run no worker; with a worker running, whichever finds the election free seals.
    # A process of its own (``manage.py audit_seal``, the dedicated sealer), not a thread here: the
    # harness measures latencies (the audit write probe, the alert -> action clock), and a sealer
    # thread would make them wait on this process's GIL while it chains a batch.
    sealer = start_manage("sealer", ["audit_seal"], full_env, workdir / "logs")

    ctx = Context(quick=args.quick, env=full_env, logdir=workdir / "logs", server=args.server)
    scenarios = _scenarios()
    began = time.monotonic()
    for name in chosen:
        print(f"\n== {name}", flush=True)
        t0 = time.monotonic()
        load_before = _loadavg()
        try:
            scenarios[name](ctx)
        except Exception as exc:
            traceback.print_exc()
            ctx.note(f"{name} failed: {exc.__class__.__name__}: {exc}")
        ctx.facts.setdefault("load", {})[name] = f"{load_before} -> {_loadavg()}"
        print(f"   ({time.monotonic() - t0:.0f} s, load average {ctx.facts['load'][name]})", flush=True)

    sealer.stop()
    meta = {
        "when": stamp,
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "server": args.server,
        "notes": ctx.notes,
        "seconds": round(time.monotonic() - began),
        "load_average_per_scenario": ctx.facts.get("load", {}),
    }
    print("\n" + render(ctx.rows))
    if ctx.notes:
        print("\nnotes:\n" + "\n".join(f"- {n}" for n in ctx.notes))
    print(
        "\nload average (1 min) before -> after each scenario: "
        + ", ".join(f"{k} {v}" for k, v in ctx.facts.get("load", {}).items())
    )
    print("\nmachine: " + ", ".join(f"{k} {v}" for k, v in meta["machine"].items()))  # type: ignore[union-attr]
    out = args.out or workdir / "results.json"
    save(out, ctx.rows, meta)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
