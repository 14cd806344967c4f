-- A signed GitHub push delivery with a unique X-GitHub-Delivery per request
-- (a repeated id would take the cheaper duplicate path). Reads the body and
-- signature written by examples/seed_local.rs from BENCH_DIR.
local dir = os.getenv("BENCH_DIR")
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local body = slurp(dir .. "/payload.json")
local sig = slurp(dir .. "/signature.txt")
local fixed_id = os.getenv("BENCH_FIXED_DELIVERY")
-- An empty value is truthy in Lua; it means "unique ids".
if fixed_id == "" then fixed_id = nil end
local threads = 0
local counter = 0

function setup(thread)
  threads = threads + 1
  thread:set("prefix", "t" .. threads .. "-" .. tostring(os.time()))
end

-- BENCH_ACCEPTED_DIR set: every delivery id answered 202 is appended (and
-- flushed) to <dir>/<thread prefix>.ids, for the kill -9 check.
local accepted_dir = os.getenv("BENCH_ACCEPTED_DIR")
if accepted_dir == "" then accepted_dir = nil end
local accepted_log = nil

function init(args)
  -- set per thread by setup(); a global, so thread:set reaches it
  prefix = prefix or "t"
  if accepted_dir then
    accepted_log = assert(io.open(accepted_dir .. "/" .. prefix .. ".ids", "a"))
  end
end

function request()
  counter = counter + 1
  local id = fixed_id or (prefix .. "-" .. counter)
  return wrk.format("POST", "/webhook", {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "push",
    ["X-GitHub-Delivery"] = id,
    ["X-GitHub-Hook-ID"] = "109948940",
    ["User-Agent"] = "GitHub-Hookshot/bench",
    ["X-Hub-Signature-256"] = sig,
  }, body)
end

local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if accepted_log and status == 202 then
    local id = body:match('"delivery":"([^"]*)"')
    if id then
      accepted_log:write(id, "\n")
      accepted_log:flush()
    end
  end
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
