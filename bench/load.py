"""Load from a separate process: wrk (Debian) driven by a generated Lua script.

wrk is written in C and spends a few microseconds per request, so on this machine it is not the
bottleneck for a Django server (``client ceiling`` in the table measures it against a trivial
server). Every run is bounded twice: by duration and by a request count.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ID_MARK = "@@ID@@"

_LUA = r"""
local parts = {%(parts)s}
local statics = {%(statics)s}
local limit = %(limit)d
local prefix = "%(prefix)s"
local threads = {}
-- wrk's own duration is the -d bound even when every thread stopped early at the request
-- limit, so each thread keeps its first-request and last-response wall clock times.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } bench_timeval;
int gettimeofday(bench_timeval *tv, void *tz);
]]
local tv = ffi.new("bench_timeval")
local function now_us()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000000 + tonumber(tv.tv_usec)
end

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  accepted = 0
  ok = 0
  bad = 0
  codes = {}
  prepared = {}
  t_first = 0
  t_last = 0
  for i, body in ipairs(statics) do
    prepared[i] = wrk.format(nil, nil, nil, body)
  end
end

function request()
  if t_first == 0 then t_first = now_us() end
  counter = counter + 1
  if #prepared > 0 then
    return prepared[(counter %% #prepared) + 1]
  end
  if #parts == 0 then
    return wrk.format(nil, nil, nil, nil)
  end
  local id = string.format("%%s%%02x%%06x", prefix, tid, counter)
  local buf = {}
  for i, p in ipairs(parts) do
    buf[#buf + 1] = p
    if i < #parts then buf[#buf + 1] = id end
  end
  return wrk.format(nil, nil, nil, table.concat(buf))
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    local n = body and string.match(body, '"accepted":%%s*(%%d+)')
    if n then accepted = accepted + tonumber(n) end
  else
    bad = bad + 1
  end
  codes[status] = (codes[status] or 0) + 1
  t_last = now_us()
  if limit > 0 and ok + bad >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local tok, tbad, tacc = 0, 0, 0
  local allcodes = {}
  local first, last = nil, 0
  for _, t in ipairs(threads) do
    local f = t:get("t_first")
    if f > 0 and (first == nil or f < first) then first = f end
    if t:get("t_last") > last then last = t:get("t_last") end
    tok = tok + t:get("ok")
    tbad = tbad + t:get("bad")
    tacc = tacc + t:get("accepted")
    local c = t:get("codes")
    for k, v in pairs(c) do allcodes[k] = (allcodes[k] or 0) + v end
  end
  local cs = {}
  for k, v in pairs(allcodes) do cs[#cs + 1] = string.format('"%%d":%%d', k, v) end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%%d,"ok":%%d,"bad":%%d,"accepted":%%d,"duration_us":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,' ..
    '"max_us":%%d,"errors":{"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d},"codes":{%%s}}\n',
    summary.requests, tok, tbad, tacc, (first and last > first) and (last - first) or summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(cs, ",")))
end
"""


@dataclass
class LoadResult:
    """What one bounded wrk run saw."""

    requests: int
    ok: int
    bad: int
    accepted: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")


def _lua_str(text: str) -> str:
    level = "=" * 4
    if f"]{level}]" in text:
        raise ValueError("body contains the Lua long-string terminator")
    return f"[{level}[{text}]{level}]"


def wrk(
    url: str,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    template: str | None = None,
    bodies: list[str] | None = None,
    connections: int = 16,
    threads: int = 2,
    seconds: float = 10.0,
    max_requests: int = 0,
    timeout_s: int = 10,
) -> LoadResult:
    """Run wrk against ``url``.

    ``template``: a body where every ``@@ID@@`` becomes an id unique to this request (all-new
    alerts); ``bodies``: fixed bodies sent round robin (duplicates); neither: no body.
    """
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    if not url.startswith(("http://127.0.0.1:", "http://[::1]:", "http://localhost:")):
        raise ValueError("load goes to loopback addresses only")
    parts = template.split(ID_MARK) if template else []
    per_thread = -(-max_requests // threads) if max_requests else 0
    script = _LUA % {
        "parts": ", ".join(_lua_str(p) for p in parts),
        "statics": ", ".join(_lua_str(b) for b in bodies or []),
        "limit": per_thread,
        "prefix": secrets.token_hex(2),
    }
    setup = [f'wrk.method = "{method}"']
    for name, value in (headers or {}).items():
        setup.append(f"wrk.headers[ {_lua_str(name)} ] = {_lua_str(value)}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write("\n".join(setup) + "\n" + script)
        path = Path(handle.name)
    try:
        argv = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={timeout_s}s",
            "-s",
            str(path),
            url,
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    finally:
        path.unlink(missing_ok=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout[-500:]}")
    raw = json.loads(line.removeprefix("BENCHJSON "))
    return LoadResult(
        requests=raw["requests"],
        ok=raw["ok"],
        bad=raw["bad"],
        accepted=raw["accepted"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=raw["errors"],
        codes=raw["codes"],
    )
