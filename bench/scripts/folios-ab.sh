#!/usr/bin/env bash
# Segments in 4 KiB pages against large folios, in one shardcast process (issue 22): the
# kernel's shmem_enabled switched between `never` (A) and `within_size` (B) in ABBA blocks,
# each measurement taken after the window's segments have turned over (a segment's memfd
# takes its folios when it is written). One stream, N HLS players; shard on CPU 0, stream
# and players on CPU 1. The setting is put back as it was.
#
# Usage: bench/scripts/folios-ab.sh [N]     Environment: BLOCKS (default 3), SECONDS_MEASURED
# (default 20). Prints one JSON line per measurement to bench/results/folios-ab-DATE.jsonl,
# then the medians and each block's B/A ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-100}; blocks=${BLOCKS:-3}; seconds=${SECONDS_MEASURED:-20}
cargo build --release -q -p shardcast -p shardcast-bench
bench=target/release/shardcast-bench
work=$(mktemp -d /dev/shm/shardcast-folios.XXXXXX)
out="bench/results/folios-ab-$(date -u +%Y%m%d-%H%M).jsonl"
pids=()
source bench/scripts/common.sh
before=$(shmem_now)
finish() { stop_all; echo "$before" > "$thp"; }
trap finish EXIT
cat > "$work/shardcast.toml" <<TOML
[server]
listen = "127.0.0.1:18701"
cpus = [0]
max_connections_per_address = 0

[[stream]]
name = "live"
source = "udp://127.0.0.1:15701"
TOML
taskset -c 1 "$bench" ingest --to 127.0.0.1:15701 --seconds 100000 --width 480 --height 272 \
  --bitrate 2600000 >/dev/null 2>&1 & pids+=($!)
taskset -c 0 target/release/shardcast serve --api-listen off --config "$work/shardcast.toml" \
  --state-dir "$work" 2>"$work/shardcast.log" & sc=$!; pids+=($sc)
sleep 10
for _ in $(seq "$blocks"); do
  for mode in never within_size within_size never; do
    echo "$mode" > "$thp"
    sleep 16
    line=$(taskset -c 1 "$bench" hls --url http://127.0.0.1:18701/live/index.m3u8 --viewers "$n" \
      --ramp 4 --settle 4 --seconds "$seconds" --json --server-pid "$sc")
    echo "{\"shmem_enabled\":\"$mode\",\"n\":$n,\"run\":$line}" | tee -a "$out"
    sleep 2
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cpu = lambda r: r["run"]["server_ms_per_viewer_s"]
for mode in ("never", "within_size"):
    v = [cpu(r) for r in rows if r["shmem_enabled"] == mode]
    print(f"{mode}: {statistics.median(v):.4f} ms per viewer-second (median of {len(v)}, {min(v):.4f}-{max(v):.4f})")
for i in range(0, len(rows) - 3, 4):
    block = rows[i:i + 4]
    a = sum(cpu(r) for r in block if r["shmem_enabled"] == "never")
    b = sum(cpu(r) for r in block if r["shmem_enabled"] == "within_size")
    print(f"block {i // 4 + 1}: within_size / never {b / a:.3f}")
PY
echo "results: $out"
