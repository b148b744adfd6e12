#!/usr/bin/env bash
# First HTTP-TS figures (engine issue): shardcast with one shard on CPU 0 receives a UDP stream
# from `shardcast-bench ingest` and serves N progressive viewers run by `shardcast-bench ts`
# on CPU 1. Three repetitions at each N; prints one JSON line per run, then the medians.
# Usage: [IO=io_uring|epoll] bench/scripts/http-ts-first.sh [N ...]   (default: 100 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
counts=("$@"); [ ${#counts[@]} -gt 0 ] || counts=(100 1000)
cargo build --release -q -p shardcast -p shardcast-bench
http_port=18190; udp_port=15000
cfg=$(mktemp --suffix .toml); out=$(mktemp)
cat > "$cfg" <<TOML
[server]
listen = "127.0.0.1:$http_port"
cpus = [0]
io = "${IO:-auto}"

[[stream]]
name = "live"
source = "udp://127.0.0.1:$udp_port"
TOML
taskset -c 0 target/release/shardcast serve --api-listen off --config "$cfg" 2>/dev/null & srv=$!
ing=""
cleanup() { kill "$srv" ${ing:+"$ing"} 2>/dev/null || true; wait 2>/dev/null || true; rm -f "$cfg" "$out"; }
trap cleanup EXIT
sleep 1
# 480x272 I_PCM keyframes every second: about 1.9 Mbit/s of content in a 2.6 Mbit/s mux.
taskset -c 1 target/release/shardcast-bench ingest --to "127.0.0.1:$udp_port" --from 127.0.0.1:0 \
  --seconds 3600 --width 480 --height 272 --bitrate 2600000 2>/dev/null & ing=$!
sleep 3
for n in "${counts[@]}"; do
  for rep in 1 2 3; do
    line=$(taskset -c 1 target/release/shardcast-bench ts --url "http://127.0.0.1:$http_port/live.ts" \
      --viewers "$n" --ramp 2 --settle 3 --seconds 20 --server-pid "$srv" --json)
    echo "{\"n\":$n,\"rep\":$rep,\"run\":$line}" | tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
import os
print(f"\nio backend: {os.environ.get('IO', 'auto')}")
print("\n| viewers | server ms per viewer-s (median, min-max) | server+client ms per viewer-s | Mbit/s per viewer | latency p50 / p99 / p99.9 ms (median) | gaps | server RSS MiB |")
print("|---|---|---|---|---|---|---|")
for n in sorted({r["n"] for r in runs}):
    rs = [r["run"] for r in runs if r["n"] == n]
    srv = [r["server_ms_per_viewer_s"] for r in rs]
    both = [(r["server_cpu_s"] + r["client_cpu_s"]) * 1000 / (r["connected"] * r["window_s"]) for r in rs]
    mbit = [r["gbit_per_s"] * 1000 / r["connected"] for r in rs]
    lat = {k: statistics.median(r["latency_us"][k] for r in rs) / 1000 for k in ("p50", "p99", "p999")}
    print(f"| {n} | {statistics.median(srv):.4f} ({min(srv):.4f}-{max(srv):.4f}) | {statistics.median(both):.4f} | "
          f"{statistics.median(mbit):.2f} | {lat['p50']:.1f} / {lat['p99']:.1f} / {lat['p999']:.1f} | "
          f"{sum(r['gaps'] for r in rs)} | {statistics.median(r['server_rss'] for r in rs) / 2**20:.1f} |")
PY
