-- Blind writes cycling through N key names, for keysafe and OpenBao KV v2 alike.
--
--   wrk -t2 -c16 -d15s --latency -s bench/lua/put_cycle.lua \
--       -H "Authorization: Bearer ks_..." -H "Content-Type: application/json" \
--       http://127.0.0.1:PORT -- METHOD PATH_PREFIX KIND [NKEYS]
--
-- METHOD       PUT (keysafe) or POST (OpenBao)
-- PATH_PREFIX  e.g. /api/secrets/acme/bench_w_   or  /v1/secret/data/k
-- KIND         keysafe -> body {"secret_value": "..."}
--              kv2     -> body {"data": {"value": "..."}}
-- NKEYS        how many key names to cycle through (default 1000): PATH_PREFIX0..N-1
--
-- Every request carries a fresh value (so every write is a real change). Headers come
-- from -H: wrk.format() is called with nil headers, which keeps wrk.headers.
-- Each wrk thread starts at its own offset in the key ring.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local method, prefix, kind = "PUT", "/", "keysafe"
local nkeys = 1000
local counter = 0
local pad = string.rep("x", 40)

function init(args)
   method = args[1] or method
   prefix = args[2] or prefix
   kind = args[3] or kind
   nkeys = tonumber(args[4] or "1000")
   -- tid is set by setup() on this thread's Lua state before init runs
   counter = (tid or 0) * 7919
end

function request()
   counter = counter + 1
   local i = counter % nkeys
   local value = "sk-bench-" .. (tid or 0) .. "-" .. counter .. "-" .. pad
   local body
   if kind == "kv2" then
      body = '{"data":{"value":"' .. value .. '"}}'
   else
      body = '{"secret_value":"' .. value .. '"}'
   end
   return wrk.format(method, prefix .. i, nil, body)
end

-- The same report line as report.lua (kept in step by hand; it is ten lines).
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
      "\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d," ..
      "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"p999_us\":%d," ..
      "\"max_us\":%d,\"mean_us\":%.1f}\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean))
end
