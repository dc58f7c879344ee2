-- wrk script for the token benchmark (bench/run.py drives it).
--
-- Parameters come from the environment, so one script serves every case:
--   BENCH_METHOD         GET (default) or POST
--   BENCH_AUTHORIZATION  value of the Authorization header (unset: anonymous)
--   BENCH_BODY           POST body, sent as application/x-www-form-urlencoded
--   BENCH_AUTHORIZATION_FILE
--                        a file of Authorization values, one a line (case g: a new
--                        OIDC token for every request). Each request takes the next
--                        value, each wrk thread its own share of the lines (thread i of
--                        n: lines i, i+n, ...); once a thread's share is used up it
--                        starts over and counts every such request in pool_wrapped
--                        (run.py reports them as errors: those tokens were not new).
--   BENCH_THREADS        wrk's thread count (to split the file's lines)
--
-- Every response whose status is not 200 is counted (wrk itself only counts >= 400),
-- and the first one is kept for the report. done() prints "BENCH <key> <value>" lines
-- that run.py parses: requests, duration (us), latency percentiles (us), socket
-- errors, non-200 responses, requests past the end of the pool.

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

local pool_file = os.getenv("BENCH_AUTHORIZATION_FILE")
if pool_file == "" then pool_file = nil end

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)  -- 0-based, before this thread is added
  table.insert(threads, thread)
end

function init(args)
  non200 = 0
  first_bad = ""
  pool_wrapped = 0
  if pool_file ~= nil then
    -- this thread's share of the file: lines thread_index + 1, + 1 + n, ...
    local n = tonumber(os.getenv("BENCH_THREADS") or "1") or 1
    local index = thread_index or 0
    pool, pool_next = {}, 1
    local line_number = 0
    for line in io.lines(pool_file) do
      if line ~= "" then
        if line_number % n == index then pool[#pool + 1] = line end
        line_number = line_number + 1
      end
    end
    if #pool == 0 then error("no Authorization values for this thread in " .. pool_file) end
  end
end

-- Defined only with a pool: without request(), wrk sends one pre-built request.
if pool_file ~= nil then
  function request()
    if pool_next > #pool then
      pool_wrapped = pool_wrapped + 1
    end
    wrk.headers["Authorization"] = pool[(pool_next - 1) % #pool + 1]
    pool_next = pool_next + 1
    return wrk.format()
  end
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
  local bad, first, wrapped = 0, "", 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non200") or 0)
    wrapped = wrapped + (thread:get("pool_wrapped") or 0)
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
  io.write(string.format("BENCH pool_wrapped %d\n", wrapped))
  io.write("BENCH first_bad " .. first .. "\n")
end
