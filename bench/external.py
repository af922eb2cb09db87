"""Benchmarks owned by their features, run from here so one command measures everything."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from bench.context import Context
from bench.procs import ROOT
from bench.report import Row


def _quick_args(module: str, fallback: list[str]) -> list[str]:
    """``--quick`` when the module has it, otherwise its own smaller-size options."""
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return ["--quick"] if "--quick" in out.stdout else fallback


def _run_module(ctx: Context, module: str, label: str, quick_fallback: list[str]) -> None:
    if importlib.util.find_spec(module) is None:
        ctx.note(f"{label}: {module} does not exist yet; not measured")
        ctx.add(Row(label, "not measured", None, "", note=f"{module} missing"))
        return
    argv = [sys.executable, "-m", module]
    if ctx.quick:
        argv += _quick_args(module, quick_fallback)
    # It picks its own database; never hand it the one this run recreates.
    env = {k: v for k, v in ctx.env.items() if k != "AUTOHEAL_BENCH_DATABASE_URL"}
    print("  " + " ".join(argv[1:]), flush=True)
    # Its own table goes straight to the terminal; it starts and stops what it needs itself.
    proc = subprocess.run(argv, cwd=ROOT, env=env, check=False, timeout=1800)
    if proc.returncode != 0:
        ctx.note(f"{label}: {module} exited with {proc.returncode}")
    ctx.add(Row(label, f"see the table printed by {module}", None, "", note=f"exit {proc.returncode}"))


def audit_api(ctx: Context) -> None:
    _run_module(ctx, "bench.audit_api", "audit API", ["--events", "100000", "--repeat", "10"])


def sse_fanout(ctx: Context) -> None:
    _run_module(ctx, "bench.sse_fanout", "SSE fan-out", [])
