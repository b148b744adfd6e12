#!/usr/bin/env bash
# A soak of the whole server (hardening issue; not part of the test command: it takes an hour).
#
#   CPU 0: shardcast (one shard, io auto), with its API
#   CPU 1: `shardcast-bench ingest` (the stream, restarted every RESTART seconds),
#          500 progressive viewers and 500 HLS players of it (`shardcast-bench ts` / `hls`,
#          for the whole run), and every EDIT seconds a stream edit through the API (a second
#          stream created, changed or removed in turn)
#
# Every 30 s the server's RSS, open file descriptors and HLS segment bytes go to a CSV line;
# at the end the viewers' reports (gaps, disconnections), the stream's counters (the source's
# own continuity breaks, which every progressive viewer sees at each restart, beside the
# server's drops and skips) and a summary of the samples after the warm-up (the first WARMUP
# seconds): min, max, and (max - min) / median for each.
# Results go to bench/results/soak-DATE.{csv,txt}.
#
# Usage: bench/scripts/soak.sh     Environment: DURATION (s, default 3600), EDIT (s, default
#        60), RESTART (s, default 600), WARMUP (s, default 300), VIEWERS (default 1000).
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${DURATION:-3600}
edit=${EDIT:-60}
restart=${RESTART:-600}
warmup=${WARMUP:-300}
viewers=${VIEWERS:-1000}
cargo build --release -q -p shardcast -p shardcast-bench
server=target/release/shardcast
bench=target/release/shardcast-bench
port=18401; api=18402; udp=15401
work=$(mktemp -d /tmp/shardcast-soak.XXXXXX)
mkdir -p bench/results
stamp=$(date -u +%Y%m%d-%H%M)
csv="bench/results/soak-$stamp.csv"
txt="bench/results/soak-$stamp.txt"
pids=()
source bench/scripts/common.sh
trap stop_all EXIT

cat > "$work/shardcast.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
cpus = [0]

[api]
listen = "127.0.0.1:$api"

[[stream]]
name = "live"
source = "udp://127.0.0.1:$udp"
TOML
"$server" serve --config "$work/shardcast.toml" --state-dir "$work/state" 2>"$work/server.log" &
server_pid=$!
pids+=("$server_pid")
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.2; done
token=$(cat "$work/state/api-token")

ingest() {
  taskset -c 1 "$bench" ingest --to "127.0.0.1:$udp" --seconds 100000 --width 480 --height 272 \
    --bitrate 2600000 >/dev/null 2>&1 &
  ingest_pid=$!
  pids+=("$ingest_pid")
}
ingest
until curl -fs "http://127.0.0.1:$port/live/index.m3u8" >/dev/null; do sleep 0.5; done

measured=$((duration - 10))
taskset -c 1 "$bench" ts --url "http://127.0.0.1:$port/live.ts" --viewers $((viewers / 2)) \
  --ramp 5 --settle 5 --seconds "$measured" --json >"$work/ts.json" 2>/dev/null &
ts_pid=$!; pids+=("$ts_pid")
taskset -c 1 "$bench" hls --url "http://127.0.0.1:$port/live/index.m3u8" --viewers $((viewers / 2)) \
  --ramp 5 --settle 5 --seconds "$measured" --json >"$work/hls.json" 2>/dev/null &
hls_pid=$!; pids+=("$hls_pid")

segment_bytes() {
  curl -fs "http://127.0.0.1:$api/metrics" |
    awk '/^shardcast_stream_segment_bytes\{stream="live"\}/ { print $2 }'
}
echo "seconds,rss_kib,fds,segment_bytes" >"$csv"
started=$(date +%s)
next_edit=$edit; next_restart=$restart; next_sample=0; edits=0; restarts=0
while :; do
  now=$(( $(date +%s) - started ))
  [ "$now" -ge "$duration" ] && break
  if [ "$now" -ge "$next_sample" ]; then
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status")
    fds=$(ls "/proc/$server_pid/fd" | wc -l)
    echo "$now,$rss,$fds,$(segment_bytes)" >>"$csv"
    next_sample=$((next_sample + 30))
  fi
  if [ "$now" -ge "$next_edit" ]; then
    # Create, change, remove a second stream in turn (the watched one is left alone).
    case $((edits % 3)) in
      0|1) curl -fs -X PUT -H "Authorization: Bearer $token" \
             -d "{\"source\": \"demo:\", \"window\": $((5 + edits % 7))}" \
             "http://127.0.0.1:$api/api/v1/streams/other" >/dev/null ;;
      2) curl -fs -X DELETE -H "Authorization: Bearer $token" \
           "http://127.0.0.1:$api/api/v1/streams/other" >/dev/null ;;
    esac
    edits=$((edits + 1)); next_edit=$((next_edit + edit))
  fi
  if [ "$now" -ge "$next_restart" ]; then
    kill "$ingest_pid"; wait "$ingest_pid" 2>/dev/null || true
    ingest
    restarts=$((restarts + 1)); next_restart=$((next_restart + restart))
  fi
  sleep 1
done
wait "$ts_pid" "$hls_pid" || true
# What the source itself broke: a restarted sender starts its continuity counters afresh, and
# every progressive viewer sees that break too. Viewer gaps beyond these would be the server's.
source_counters=$(curl -fs "http://127.0.0.1:$api/metrics" |
  awk '/^shardcast_stream_(continuity_errors|kernel_drops|fanout_drops|lag_skips|segments_dropped)_total\{stream="live"\}/ {
         sub(/^shardcast_stream_/, "", $1); sub(/_total.*/, "", $1); printf "%s %s, ", $1, $2 }')

{
  echo "soak: $duration s, $viewers viewers ($((viewers / 2)) progressive, $((viewers / 2)) HLS), $edits stream edits, $restarts source restarts"
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(date -u +%F)"
  echo "progressive viewers: $(cat "$work/ts.json")"
  echo "HLS players: $(cat "$work/hls.json")"
  echo "source and server counters of the stream: ${source_counters%, }"
  python3 - "$csv" "$warmup" <<'PY'
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if int(r["seconds"]) >= int(sys.argv[2])]
for key in ("rss_kib", "fds", "segment_bytes"):
    values = [int(r[key]) for r in rows if r[key]]
    if not values:
        continue
    low, high, median = min(values), max(values), statistics.median(values)
    spread = (high - low) / median * 100 if median else 0
    print(f"{key} after warm-up ({len(values)} samples): min {low}, max {high}, median {median:.0f}, spread {spread:.1f}%")
    # Growth, apart from the swing of the edited stream coming and going: the first third's
    # median against the last third's, and the least-squares slope per hour.
    third = max(1, len(values) // 3)
    first, last = statistics.median(values[:third]), statistics.median(values[-third:])
    seconds = [int(r["seconds"]) for r in rows if r[key]]
    mean_t, mean_v = statistics.mean(seconds), statistics.mean(values)
    denominator = sum((t - mean_t) ** 2 for t in seconds) or 1
    slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(seconds, values)) / denominator * 3600
    change = (last - first) / first * 100 if first else 0
    print(f"{key} trend: first third median {first:.0f}, last third {last:.0f} ({change:+.1f}%), slope {slope:+.0f} per hour")
PY
} | tee "$txt"
