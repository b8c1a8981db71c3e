"""wrk, twice over: closed loop for throughput, and paced (open loop) for latency against offered rate.

wrk has no ``-R``. The paced mode is a Lua script in the spirit of wrk2: one connection per wrk
thread, each thread sending on a fixed schedule (``rate / threads`` per second, staggered). A
request that could not leave on time, because its connection was still waiting for the previous
answer, is timed from its scheduled start, not from when it left: a saturated server shows its
queue in the latency instead of hiding it (coordinated omission). Timestamps come from
``clock_gettime`` through LuaJIT's FFI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.webhooks import HttpRequest

RESULT_MARK = "BENCH_RESULT "

_REQUEST_LUA = """
local body_file = io.open({body_path}, "rb")
local body = body_file:read("*a")
body_file:close()
wrk.method = {method}
wrk.path = {path}
{headers}
if #body > 0 then wrk.body = body end
"""

_CLOSED_LUA = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{mark}{{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

_PACED_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec;
int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local rate = {rate}
local threads = {{}}
local counter = 0
function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local n = {threads}
  interval = 1000000 * n / rate
  request_text = wrk.format()
  samples = {{}}
  count = 0
  bad = 0
  next_at = nil
  sent_at = nil
  scheduled = nil
end

function delay()
  if next_at == nil then return 0 end
  local wait = next_at - now_us()
  if wait <= 0 then return 0 end
  return math.floor(wait / 1000)
end

function request()
  local now = now_us()
  if next_at == nil then next_at = now + interval * index / {threads} end
  scheduled = next_at
  sent_at = now
  next_at = next_at + interval
  return request_text
end

function response(status, headers, body)
  local now = now_us()
  if sent_at ~= nil then
    local start = sent_at
    if sent_at - scheduled > 1000 then start = scheduled end
    count = count + 1
    samples[count] = now - start
    if status >= 400 then bad = bad + 1 end
    sent_at = nil
  end
end

function done(summary, latency, requests)
  local all = {{}}
  local bad_total = 0
  for _, t in ipairs(threads) do
    local s = t:get("samples")
    for i = 1, #s do all[#all + 1] = s[i] end
    bad_total = bad_total + t:get("bad")
  end
  table.sort(all)
  local function pct(p)
    if #all == 0 then return 0 end
    local i = math.max(1, math.ceil(#all * p / 100))
    return all[i]
  end
  local e = summary.errors
  io.write(string.format('{mark}{{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    #all, summary.duration, e.connect, e.read, e.write, bad_total, e.timeout,
    pct(50), pct(90), pct(99), pct(100)))
end
"""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: int
    """Socket errors, timeouts and non-2xx/3xx answers."""
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk not found: `apt-get install -y wrk` (make bench installs it)")
    return found


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def request_lua(request: HttpRequest, folder: Path) -> str:
    body_path = folder / "body.bin"
    body_path.write_bytes(request.body)
    headers = "\n".join(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in request.headers.items())
    return _REQUEST_LUA.format(
        body_path=_lua_string(str(body_path)),
        method=_lua_string(request.method),
        path=_lua_string(request.path),
        headers=headers,
    )


def _parse(stdout: str) -> WrkResult:
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            data = json.loads(line[len(RESULT_MARK) :])
            errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
            return WrkResult(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                errors=errors,
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                max_ms=data["max_us"] / 1000,
            )
    raise RuntimeError(f"no result from wrk:\n{stdout[-2000:]}")


def _run(url: str, script: str, threads: int, connections: int, duration_s: float) -> WrkResult:
    with tempfile.TemporaryDirectory(prefix="silo-bench-") as tmp:
        path = Path(tmp) / "script.lua"
        path.write_text(script)
        argv = [
            wrk_binary(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            "--timeout",
            "10s",
            "-s",
            str(path),
            url,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration_s + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]}")
    return _parse(done.stdout)


def closed_loop(base_url: str, request: HttpRequest, duration_s: float, connections: int = 32) -> WrkResult:
    """As many requests as ``connections`` keep-alive connections can do: throughput."""
    with tempfile.TemporaryDirectory(prefix="silo-bench-") as tmp:
        script = request_lua(request, Path(tmp)) + _CLOSED_LUA.format(mark=RESULT_MARK)
        return _run(base_url + request.path, script, 1, connections, duration_s)


def paced(base_url: str, request: HttpRequest, rate: float, duration_s: float, threads: int = 48) -> WrkResult:
    """``rate`` requests/s offered on a fixed schedule (open loop): latency at that load."""
    with tempfile.TemporaryDirectory(prefix="silo-bench-") as tmp:
        script = request_lua(request, Path(tmp)) + _PACED_LUA.format(mark=RESULT_MARK, rate=rate, threads=threads)
        return _run(base_url + request.path, script, threads, threads, duration_s)
