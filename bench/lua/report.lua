-- Prints one machine-readable line at the end of a wrk run (bench/server.py parses it).
-- Defines no request() function, so wrk keeps its prebuilt static request and the -H
-- headers; loading this script costs nothing per request.
--
--   wrk -t2 -c16 -d15s --latency -s bench/lua/report.lua -H "Authorization: ..." URL

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
