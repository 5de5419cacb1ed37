"""Drive ``lms-activity serve`` with wrk (a C load generator: its own CPU stays small on a shared machine).

The webhook phase needs a new signature per request, which wrk's Lua cannot compute: the requests are signed
beforehand into a file that the script's Lua reads and sends in turn (the timestamps stay within the service's
5-minute tolerance for a run of a few minutes). Paced connections wait an exponential gap averaging
``1 / rate`` seconds before each request (wrk's ``delay()``); latency is counted from the send.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from standardwebhooks.webhooks import Webhook

LUA = r"""
local threads = {}
function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  fivexx, other = 0, 0
  requests = {}
  local mode, path, count, rate = args[1], args[2], tonumber(args[3]), tonumber(args[4])
  mean_delay = rate > 0 and 1000 / rate or 0
  math.randomseed(7 + index)
  if mode == "webhook" then
    local n, i = 0, 0
    for line in io.lines(path) do
      if n % count == index then
        local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
        i = i + 1
        requests[i] = wrk.format("POST", "/webhooks/lms", {
          ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
          ["content-type"] = "application/json"}, body)
      end
      n = n + 1
    end
  else
    requests[1] = wrk.format("GET", path, {["Authorization"] = "Bearer " .. args[5]})
  end
  next_request = 1
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end

function delay()
  if mean_delay == 0 then return 0 end
  return -math.log(1 - math.random()) * mean_delay
end

function response(status, headers, body)
  if status >= 500 then fivexx = fivexx + 1 elseif status >= 300 then other = other + 1 end
end

function done(summary, latency, requests)
  local f, o = 0, 0
  for _, t in ipairs(threads) do f = f + t:get("fivexx"); o = o + t:get("other") end
  local e = summary.errors
  io.write(string.format(
    '\nRESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"fivexx": %d, "other_status": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    f, o, e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def available() -> bool:
    return shutil.which("wrk") is not None


def signed_requests(path: Path, secret: str, count: int) -> None:
    """``count`` signed ``attempt.changed`` webhooks, one per line: id, timestamp, signature, body."""
    hook, now = Webhook(secret), dt.datetime.now(dt.UTC)
    with path.open("w") as out:
        for i in range(count):
            wid, body = f"msg_{uuid.uuid4().hex}", json.dumps({"type": "attempt.changed", "data": {"id": i}})
            out.write(f"{wid}\t{int(now.timestamp())}\t{hook.sign(wid, now, body)}\t{body}\n")


def run(
    base: str,
    *,
    mode: str,
    clients: int,
    seconds: float,
    rate: float,
    token: str = "",
    secret: str = "",
    threads: int = 2,
) -> WrkResult:
    """One wrk phase: ``mode`` ``webhook`` (signed POSTs) or ``events`` (``GET /api/v1/events?limit=50``)."""
    with tempfile.TemporaryDirectory(prefix="lms_wrk_") as tmp:
        script, data = Path(tmp) / "load.lua", Path(tmp) / "webhooks.tsv"
        script.write_text(LUA)
        if mode == "webhook":  # unique for ~4,000 req/s; beyond, repeats are answered 200, recorded once
            signed_requests(data, secret, min(300_000, max(20_000, int(seconds * 4000))))
        target = str(data) if mode == "webhook" else "/api/v1/events?limit=50"
        command = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{int(seconds)}s", "--timeout", "30s", "--latency"]
        command += ["-s", str(script), base, "--", mode, target, str(threads), str(rate), token]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    data_ = json.loads(line.removeprefix("RESULT "))
    errors = {k: data_[k] for k in ("fivexx", "other_status", "connect", "read", "write", "timeout") if data_[k]}
    return WrkResult(
        requests=data_["requests"],
        seconds=data_["duration_us"] / 1e6,
        p50_ms=data_["p50_us"] / 1000,
        p99_ms=data_["p99_us"] / 1000,
        max_ms=data_["max_us"] / 1000,
        errors={("5xx" if k == "fivexx" else k): v for k, v in errors.items()},
    )
