#!/usr/bin/env bash
# Two builds of shardcast side by side, interleaved in one run: what a change costs on the
# data path. Same layout as compare.sh (server on CPU 0 with one shard; ingest and viewers on
# CPU 1), the same 2.6 Mbit/s stream, N viewers of each protocol, REPS repetitions of A then B.
#
# Usage: bench/scripts/ab.sh OLD_BINARY NEW_BINARY [N]
#        Environment: SECONDS_MEASURED (default 20), REPS (default 3), PROTOCOLS ("ts hls").
# Prints one JSON line per run (build, protocol, rep, the bench's report) and the medians.
set -euo pipefail
cd "$(dirname "$0")/../.."
old=$1; new=$2; n=${3:-1000}
seconds=${SECONDS_MEASURED:-20}
reps=${REPS:-3}
protocols=(${PROTOCOLS:-ts hls})
cargo build --release -q -p shardcast-bench
bench=target/release/shardcast-bench
port=18501; udp=15501
work=$(mktemp -d /tmp/shardcast-ab.XXXXXX)
out="bench/results/ab-$(date -u +%Y%m%d-%H%M).jsonl"
mkdir -p bench/results
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/shardcast.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
cpus = [0]

[[stream]]
name = "live"
source = "udp://127.0.0.1:$udp"
TOML
taskset -c 1 "$bench" ingest --to "127.0.0.1:$udp" --seconds 100000 --width 480 --height 272 \
  --bitrate 2600000 >/dev/null 2>&1 &
pids+=($!)
for rep in $(seq "$reps"); do
  for build in old new; do
    binary=$old; [ "$build" = new ] && binary=$new
    for protocol in "${protocols[@]}"; do
      taskset -c 0 "$binary" serve --api-listen off --config "$work/shardcast.toml" 2>/dev/null &
      server=$!
      until curl -fs "http://127.0.0.1:$port/live/index.m3u8" >/dev/null; do sleep 0.5; done
      path=/live.ts; [ "$protocol" = hls ] && path=/live/index.m3u8
      line=$(taskset -c 1 "$bench" "$protocol" --url "http://127.0.0.1:$port$path" --viewers "$n" \
        --ramp 4 --settle 4 --seconds "$seconds" --server-pid "$server" --json 2>/dev/null)
      echo "{\"build\":\"$build\",\"protocol\":\"$protocol\",\"rep\":$rep,\"run\":$line}" | tee -a "$out"
      kill "$server"; wait "$server" 2>/dev/null || true
    done
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
for protocol in sorted({r["protocol"] for r in runs}):
    ms = {}
    for build in ("old", "new"):
        vals = [r["run"]["server_ms_per_viewer_s"] for r in runs if r["protocol"] == protocol and r["build"] == build]
        ms[build] = statistics.median(vals)
        extra = ""
        if protocol == "ts":
            p99 = statistics.median(r["run"]["latency_us"]["p99"] / 1000 for r in runs if r["protocol"] == protocol and r["build"] == build)
            extra = f", p99 latency {p99:.1f} ms"
        print(f"{protocol} {build}: server {ms[build]:.4f} ms per viewer-second (median of {vals}){extra}")
    print(f"{protocol}: new over old {ms['new'] / ms['old']:.2f}x")
PY
