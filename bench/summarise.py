"""One line from a `streambench --json` result (used by bench/campaign.sh).

argv: the JSON object, then the CPU ticks (1/100 s) streamd used during the run."""
import json
import sys

r = json.loads(sys.argv[1])
lat = r.get("latency_ms") or {}
cores = int(sys.argv[2]) / 100 / r["seconds"]
s = "%.0f MB/s, %.0fk rec/s" % (r["mb_per_sec"], r["records_per_sec"] / 1000)
if lat:
    s += ", latency ms p50 %.2f p99 %.2f p99.9 %.2f p99.99 %.2f max %.2f" % (
        lat["p50"], lat["p99"], lat["p99_9"], lat["p99_99"], lat["max"])
s += ", errors %d, streamd cpu %.2f cores" % (r["errors"], cores)
print(s)
