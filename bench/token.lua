-- wrk script for the token benchmark (bench/run.py drives it).
--
-- Parameters come from the environment, so one script serves every case:
--   BENCH_METHOD         GET (default) or POST
--   BENCH_AUTHORIZATION  value of the Authorization header (unset: anonymous)
--   BENCH_BODY           POST body, sent as application/x-www-form-urlencoded
--
-- Every response whose status is not 200 is counted (wrk itself only counts >= 400),
-- and the first one is kept for the report. done() prints "BENCH <key> <value>" lines
-- that run.py parses: requests, duration (us), latency percentiles (us), socket
-- errors, non-200 responses.

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local authorization = os.getenv("BENCH_AUTHORIZATION")
if authorization ~= nil and authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end
local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non200 = 0
  first_bad = ""
end

function response(status, headers, response_body)
  if status ~= 200 then
    non200 = non200 + 1
    if first_bad == "" then
      local text = string.sub(response_body or "", 1, 200)
      first_bad = tostring(status) .. " " .. string.gsub(text, "[\r\n]", " ")
    end
  end
end

function done(summary, latency, requests)
  local bad, first = 0, ""
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non200") or 0)
    local seen = thread:get("first_bad") or ""
    if first == "" then first = seen end
  end
  local e = summary.errors
  io.write(string.format("BENCH requests %d\n", summary.requests))
  io.write(string.format("BENCH duration_us %d\n", summary.duration))
  io.write(string.format("BENCH non200 %d\n", bad))
  io.write(string.format("BENCH socket_errors %d\n", e.connect + e.read + e.write + e.timeout))
  io.write(string.format("BENCH timeouts %d\n", e.timeout))
  io.write(string.format("BENCH p50_us %d\n", latency:percentile(50)))
  io.write(string.format("BENCH p90_us %d\n", latency:percentile(90)))
  io.write(string.format("BENCH p99_us %d\n", latency:percentile(99)))
  io.write(string.format("BENCH mean_us %d\n", latency.mean))
  io.write(string.format("BENCH max_us %d\n", latency.max))
  io.write("BENCH first_bad " .. first .. "\n")
end
