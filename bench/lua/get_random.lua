-- GETs of random names among N stored secrets: PREFIX .. i .. SUFFIX with i drawn
-- uniformly in [0, N) for every request, so that with N large most reads miss the
-- server's cache and reach the store.
--
--   wrk -t2 -c16 -d10s --latency -s bench/lua/get_random.lua \
--       -H "Authorization: Bearer ks_..." http://127.0.0.1:PORT \
--       -- /api/secrets/acme/bench_ /value 1000000 SEED
--
-- PREFIX, SUFFIX  the path around the index (names are PREFIX0 .. PREFIX{N-1})
-- N               how many names exist
-- SEED            seeds each thread's generator (plus the thread's number), so two wrk
--                 processes started in the same second draw different names
--
-- Headers come from -H: wrk.format() with nil headers keeps wrk.headers. The summary
-- line at the end is report.lua's done(), loaded from this script's own folder.

local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
dofile(here .. "report.lua")

local next_id = 0

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
end

local prefix, suffix, n = "/", "", 1

function init(args)
   prefix = args[1] or prefix
   suffix = args[2] or suffix
   n = tonumber(args[3] or "1")
   -- tid is set by setup() on this thread's Lua state before init runs
   math.randomseed(tonumber(args[4] or "1") + (tid or 0) * 7919)
end

function request()
   return wrk.format("GET", prefix .. math.random(0, n - 1) .. suffix)
end
