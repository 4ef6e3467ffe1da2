-- wrk script for benchmarks/bench.py: POST each pre-encoded body exactly once, then stop.
--
-- wrk -t T -c C -d <timeout> -s bench.lua URL -- <bodies prefix> <path> <content type> <out dir> T
--
-- Thread k reads "<bodies prefix><k>", one JSON body a line, and sends each line once. When
-- a thread has its last response it stops; the last thread to finish interrupts wrk (SIGINT),
-- so that wrk's run time, and its coordinated-omission correction, end with the last response.
-- done() writes "<out dir>/result.txt": timings on CLOCK_MONOTONIC (Python's time.monotonic),
-- latency percentiles, wrk's error counts, non-202 statuses, and one "ok <id> <version>" line
-- per document that a 202 body acknowledged ("-" as version when the body has none).

local ffi = require("ffi")
ffi.cdef([[
struct bench_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clock_id, struct bench_timespec *tp);
int getpid(void);
int kill(int pid, int sig);
]])

local CLOCK_MONOTONIC, SIGINT = 1, 2
local IDLE_MS = 3600000
local timespec = ffi.new("struct bench_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

-- Setup and done run in wrk's main Lua state; the rest in each thread's own state.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  out_dir, threads_count = args[4], tonumber(args[5])
  requests = {}
  local headers = { ["Content-Type"] = args[3] }
  for line in io.lines(args[1] .. id) do
    requests[#requests + 1] = wrk.format("POST", args[2], headers, line)
  end
  idle_request = wrk.format("GET", "/health")
  total, reserved, sent, extra, responses = #requests, 0, 0, 0, 0
  first_send, last_response, finished = 0, 0, false
  accepted, statuses = {}, {}
  init_cpu = os.clock()
end

-- Every request passes here first: a connection sends only while unsent bodies remain, then
-- idles, so the last responses are not slowed down by requests outside the measurement.
function delay()
  if reserved < total then
    reserved = reserved + 1
    return 0
  end
  return IDLE_MS
end

function request()
  if sent < reserved then
    sent = sent + 1
    if sent == 1 then
      first_send = now()
    end
    return requests[sent]
  end
  -- Unreserved calls: wrk's start-up check of the script (reserved == 0; the string is parsed,
  -- not sent), or a reconnect after a socket error. Never repeat or skip a document for them.
  if reserved > 0 then
    extra = extra + 1
  end
  return idle_request
end

local function all_threads_finished()
  local marker = io.open(out_dir .. "/finished." .. id, "w")
  marker:close()
  for k = 1, threads_count do
    local other = io.open(out_dir .. "/finished." .. k, "r")
    if other == nil then
      return false
    end
    other:close()
  end
  return true
end

local function finish()
  finished = true
  last_response = now()
  wrk.thread:stop()
  if all_threads_finished() then
    ffi.C.kill(ffi.C.getpid(), SIGINT)
  end
end

function response(status, headers, body)
  responses = responses + 1
  if status == 202 then
    local found = 0
    for doc_id, version in body:gmatch('"id":"([%x%-]+)","version":(%d+)') do
      accepted[#accepted + 1] = doc_id .. " " .. version
      found = found + 1
    end
    if found == 0 then
      for doc_id in body:gmatch('"id":"([%x%-]+)"') do
        accepted[#accepted + 1] = doc_id .. " -"
      end
    end
  else
    statuses[status] = (statuses[status] or 0) + 1
  end
  if not finished and sent == total and responses == total + extra then
    finish()
  end
end

local function gather(name, pick)
  local value = nil
  for _, thread in ipairs(threads) do
    local current = thread:get(name)
    if current ~= nil and current ~= 0 then
      value = value == nil and current or pick(value, current)
    end
  end
  return value or 0
end

local function sum(name)
  local value = 0
  for _, thread in ipairs(threads) do
    value = value + (thread:get(name) or 0)
  end
  return value
end

function done(summary, latency, _)
  local out = io.open(threads[1]:get("out_dir") .. "/result.txt", "w")
  local function stat(name, value)
    out:write(string.format("%s %.9f\n", name, value))
  end
  stat("first_send", gather("first_send", math.min))
  stat("last_response", gather("last_response", math.max))
  stat("init_cpu", gather("init_cpu", math.max))
  stat("total", sum("total"))
  stat("sent", sum("sent"))
  stat("responses", sum("responses"))
  stat("extra", sum("extra"))
  for _, thread in ipairs(threads) do
    stat("finished", thread:get("finished") and 1 or 0)
  end
  stat("p50_us", latency:percentile(50))
  stat("p99_us", latency:percentile(99))
  stat("max_us", latency.max)
  for name, count in pairs(summary.errors) do
    stat("error_" .. name, count)
  end
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      out:write(string.format("status %d %d\n", status, count))
    end
    for _, line in ipairs(thread:get("accepted")) do
      out:write("ok ", line, "\n")
    end
  end
  out:close()
end
