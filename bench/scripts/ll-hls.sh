#!/usr/bin/env bash
# Low-latency HLS, side by side in one run (issue 18):
#
# 1. Latency: hls.js in headless Chromium plays one stream (2 s segments, 200 ms parts) in
#    its low-latency mode and as plain HLS (`?latency=plain`: three segments from the live
#    edge), in turn, three times each; the latency is the playhead's PROGRAM-DATE-TIME (the
#    ingest clock) behind this machine's clock, and hls.js's own estimate, medians over each
#    run's last 30 s.
# 2. Cost: server CPU per viewer-second of N low-latency players (every part, blocking
#    reloads), of N plain HLS players of a stream without parts, and of N plain HLS players of
#    Debian's nginx (sendfile) serving ffmpeg's HLS muxer's output of the same kind of stream.
#
#   CPU 0: the server under test (shardcast with one shard, or nginx with one worker)
#   CPU 1: `shardcast-bench ingest`, ffmpeg for nginx, and the players (or Chromium)
#
# JSON lines to bench/results/ll-hls-DATE.jsonl.
#
# Usage: bench/scripts/ll-hls.sh [N ...]   Environment: SECONDS_MEASURED (20), REPS (3),
#                                          PLAY_SECONDS (45), SKIP_BROWSER=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
counts=("$@"); [ ${#counts[@]} -gt 0 ] || counts=(100 1000)
seconds=${SECONDS_MEASURED:-20}
reps=${REPS:-3}
play=${PLAY_SECONDS:-45}
command -v ffmpeg >/dev/null && [ -x /usr/sbin/nginx ] || { echo "ll-hls.sh needs ffmpeg and nginx" >&2; exit 1; }
cargo build --release -q -p shardcast -p shardcast-bench
bench=target/release/shardcast-bench
sc_port=18321; ng_port=18323; udp_port=15321
work=$(mktemp -d /dev/shm/shardcast-ll.XXXXXX)
mkdir -p "$work/hls" bench/results
out="bench/results/ll-hls-$(date -u +%Y%m%d-%H%M).jsonl"
pids=()
source bench/scripts/common.sh
trap stop_all EXIT

# Three copies of one synthetic stream: with parts, without, and for ffmpeg's HLS muxer.
rate=2600000
taskset -c 1 "$bench" ingest --to "127.0.0.1:$udp_port" --streams 3 --from 127.0.0.1:0 \
  --seconds 100000 --width 480 --height 272 --bitrate "$rate" 2>/dev/null & pids+=($!)

cat > "$work/shardcast.toml" <<TOML
[server]
listen = "127.0.0.1:$sc_port"
cpus = [0]
io = "${IO:-auto}"

[[stream]]
name = "ll"
source = "udp://127.0.0.1:$udp_port"
part_duration = 0.2

[[stream]]
name = "plain"
source = "udp://127.0.0.1:$((udp_port + 1))"
TOML
taskset -c 0 target/release/shardcast serve --api-listen off --config "$work/shardcast.toml" 2>"$work/shardcast.log" & sc=$!; pids+=($sc)

taskset -c 1 ffmpeg -nostdin -v error -i "udp://127.0.0.1:$((udp_port + 2))?fifo_size=1000000&overrun_nonfatal=1" \
  -c copy -f hls -hls_time 2 -hls_list_size 6 -hls_flags delete_segments+temp_file \
  -hls_segment_filename "$work/hls/seg%d.ts" "$work/hls/index.m3u8" 2>"$work/ffmpeg.log" & ff=$!; pids+=($ff)

nginx_conf "listen 127.0.0.1:$ng_port backlog=8192;" "" > "$work/nginx.conf"
taskset -c 0 /usr/sbin/nginx -p "$work" -c "$work/nginx.conf" & ng=$!; pids+=($ng)
sleep 14
ng_worker=$(pgrep -P "$ng" | head -n 1)
[ -n "$ng_worker" ] || { echo "nginx has no worker: $(cat "$work/nginx-error.log")" >&2; exit 1; }

machine=$(machine_json)
echo "{\"machine\":$machine,\"date\":\"$(date -u +%Y-%m-%dT%H:%MZ)\",\"segment_s\":2,\"part_s\":0.2}" > "$out"
cat "$out"

# 1. Latency in hls.js.
if [ -z "${SKIP_BROWSER:-}" ]; then
  [ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm ci --silent)
  for rep in $(seq 1 "$reps"); do
    for mode in low-latency plain; do
      query="engine=hlsjs"; [ "$mode" = plain ] && query="$query&latency=plain"
      taskset -c 1 node tests/browser/play.mjs "http://127.0.0.1:$sc_port/ll.html?$query" "$play" \
        > "$work/play.jsonl" 2>/dev/null || true
      python3 - "$work/play.jsonl" "$mode" "$rep" "$play" <<'PY' | tee -a "$out"
import json, statistics, sys
path, mode, rep, play = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
samples = [json.loads(l) for l in open(path) if l.startswith("{")]
late = [s for s in samples if s["t"] >= play - 30 and s.get("behindWallClock") is not None]
med = lambda k: round(statistics.median(s[k] for s in late), 3) if late else None
print(json.dumps({"protocol": "hls.js", "mode": mode, "rep": rep, "samples": len(late),
                  "behind_wall_clock_s": med("behindWallClock"), "hlsjs_latency_s": med("latency"),
                  "media_errors": sum(len(s["mediaErrors"]) for s in samples)}))
PY
    done
  done
fi

# 2. CPU per viewer-second.

for n in "${counts[@]}"; do
  for rep in $(seq 1 "$reps"); do
    run_hls shardcast-ll "$n" "$rep" hls --low-latency --url "http://127.0.0.1:$sc_port/ll/index.m3u8" --server-pid "$sc"
    run_hls shardcast "$n" "$rep" hls --url "http://127.0.0.1:$sc_port/plain/index.m3u8" --server-pid "$sc"
    run_hls nginx "$n" "$rep" hls --url "http://127.0.0.1:$ng_port/hls/index.m3u8" --server-pid "$ng_worker"
  done
done
echo "results: $out"
python3 bench/scripts/report.py "$out" "$work/plots" || true
