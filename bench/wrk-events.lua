-- wrk script for the event scenarios of bench/run.sh. Configured through the environment:
--
--   BENCH_MODE=get|put     get: GET the URL's path (manifest pulls);
--                          put: PUT BENCH_BODY_FILE to /v2/BENCH_REPO/manifests/<new tag>, a new
--                               tag for every request (BENCH_TAG_PREFIX-<thread>-<n>)
--   BENCH_BODY_FILE=F      the manifest to PUT
--   BENCH_CONTENT_TYPE=T   its media type (Content-Type of the PUT; Accept of the GET)
--   BENCH_REPO=name        repository of the PUTs
--   BENCH_TAG_PREFIX=p     prefix of the pushed tags (unique per run and target)
--   BENCH_RATE=R           requests per second *per thread* (0 or unset: as fast as possible).
--                          Run with -c equal to -t (one connection per thread) for an exact rate:
--                          each request waits for its slot on a fixed schedule (open-loop pacing
--                          for a closed-loop tool; latency is measured from the send, as usual).
--   BENCH_STOP_AFTER=N     each thread stops after N responses (0 or unset: run for -d)
--
-- At the end it prints `bench-status <code> <count>` lines (every status seen), so that the caller
-- can count successful PUTs/GETs exactly.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local mode, body, ctype, repo, prefix, interval, stop_after, next_at
local n, responses = 0, 0
statuses = {} -- global: done() reads it with thread:get()

function init(args)
  mode = os.getenv("BENCH_MODE") or "get"
  ctype = os.getenv("BENCH_CONTENT_TYPE") or "application/vnd.oci.image.manifest.v1+json"
  repo = os.getenv("BENCH_REPO") or "bench/push"
  prefix = (os.getenv("BENCH_TAG_PREFIX") or "t") .. "-" .. tostring(tid)
  local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0
  interval = rate > 0 and 1000 / rate or nil
  stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "0") or 0
  if mode == "put" then
    local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
    body = f:read("*a")
    f:close()
  end
end

function request()
  if mode == "put" then
    n = n + 1
    return wrk.format("PUT", "/v2/" .. repo .. "/manifests/" .. prefix .. "-" .. n,
      { ["Content-Type"] = ctype }, body)
  end
  return wrk.format("GET", nil, { ["Accept"] = ctype })
end

function delay()
  if not interval then
    return 0
  end
  local now = now_ms()
  if not next_at or now - next_at > 50 * interval then
    next_at = now -- first request, or far behind: do not burst to catch up
  end
  local d = next_at - now
  next_at = next_at + interval
  return d > 0 and d or 0
end

function response(status, headers, body)
  responses = responses + 1
  statuses[status] = (statuses[status] or 0) + 1
  if stop_after > 0 and responses >= stop_after then
    wrk.thread:stop()
  end
end

-- the per-thread `statuses` tables are read back with thread:get()
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s or {}) do
      total[k] = (total[k] or 0) + v
    end
  end
  for k, v in pairs(total) do
    io.write(string.format("bench-status %s %d\n", tostring(k), v))
  end
end
