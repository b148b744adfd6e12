#!/usr/bin/env bash
# What re-emitting a stream over UDP costs (issue 21): server CPU per second with no
# re-emission, with OUTPUTS re-emissions (push = ["udp://…"], paced by the PCRs, 7 packets per
# datagram), and the peer an operator would reach for: one ffmpeg copying the same input to
# as many UDP outputs with its tee muxer (-c copy, no pacing of its own). Interleaved, REPS
# repetitions each.
#
#   CPU 0: the server (shardcast, every thread; or the ffmpeg relay)
#   CPU 1: `shardcast-bench ingest` at BITRATE in 1316-byte datagrams, and the sinks: OUTPUTS
#          UDP sockets bound and never read (the kernel drops what they are sent)
#
# Usage: bench/scripts/reemit-cost.sh       Environment: BITRATE (default 5000000), OUTPUTS
#        (default 10), SECONDS_MEASURED (default 15), REPS (default 3), SIZE (default 640x360).
# One JSON line per run goes to bench/results/reemit-cost-DATE.jsonl; the medians, the cost
# per re-emission and the ratio to ffmpeg are printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
bitrate=${BITRATE:-5000000}
outputs=${OUTPUTS:-10}
seconds=${SECONDS_MEASURED:-15}
reps=${REPS:-3}
size=${SIZE:-640x360}
cargo build --release -q -p shardcast -p shardcast-bench
bench=target/release/shardcast-bench
server_bin=target/release/shardcast
port=18701; udp=15701; first_out=16701
work=$(mktemp -d /tmp/shardcast-reemit-cost.XXXXXX)
out="bench/results/reemit-cost-$(date -u +%Y%m%d-%H%M).jsonl"
mkdir -p bench/results
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The sinks: bound, never read.
taskset -c 1 python3 -c "
import socket, time
s = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range($outputs)]
for i, x in enumerate(s): x.bind(('127.0.0.1', $first_out + i))
time.sleep(100000)" &
pids+=("$!")
targets=(); tee=()
for i in $(seq 0 $((outputs - 1))); do
  targets+=("\"udp://127.0.0.1:$((first_out + i))\"")
  tee+=("[f=mpegts]udp://127.0.0.1:$((first_out + i))?pkt_size=1316")
done
push=$(IFS=,; echo "${targets[*]}")
tee_out=$(IFS='|'; echo "${tee[*]}")
for rep in $(seq "$reps"); do
  for way in none shardcast ffmpeg; do
    if [ "$way" = ffmpeg ]; then
      taskset -c 0 ffmpeg -nostdin -v error -f mpegts \
        -i "udp://127.0.0.1:$udp?fifo_size=1000000&overrun_nonfatal=1" \
        -map 0 -c copy -f tee "$tee_out" >/dev/null 2>&1 &
      server=$!; pids+=("$server")
      until ss -lun "sport = :$udp" | grep -q ":$udp "; do sleep 0.1; done
    else
      list="[]"
      [ "$way" = shardcast ] && list="[$push]"
      cat > "$work/shardcast.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
cpus = [0]

[[stream]]
name = "live"
source = "udp://127.0.0.1:$udp"
push = $list
TOML
      taskset -c 0 "$server_bin" serve --api-listen off --config "$work/shardcast.toml" 2>/dev/null &
      server=$!; pids+=("$server")
      until curl -fs -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.2; done
    fi
    taskset -c 1 "$bench" ingest --to "127.0.0.1:$udp" --seconds $((seconds + 8)) \
      --bitrate "$bitrate" --width "${size%x*}" --height "${size#*x}" >/dev/null 2>&1 &
    sender=$!; pids+=("$sender")
    sleep 4 # settled: the pushes started at the first access point
    before=$(cpu_ticks "$server"); start=$(date +%s.%N)
    sleep "$seconds"
    after=$(cpu_ticks "$server"); end=$(date +%s.%N)
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
    wait "$sender" || { echo "the sender failed ($way)" >&2; exit 1; }
    # (ffmpeg ignores SIGTERM once its input is silent.)
    if [ "$way" = ffmpeg ]; then kill -9 "$server"; else kill "$server"; fi
    wait "$server" 2>/dev/null || true
    python3 - "$way" "$rep" "$before" "$after" "$start" "$end" "$ticks" "$rss" "$bitrate" "$outputs" <<'PY' | tee -a "$out"
import json, sys
way, rep, before, after, start, end, ticks, rss, bitrate, outputs = sys.argv[1:]
wall = float(end) - float(start)
cpu_ms = (int(after) - int(before)) * 1000 / int(ticks)
print(json.dumps({"way": way, "rep": int(rep), "bitrate": int(bitrate), "outputs": int(outputs),
                  "seconds": round(wall, 2), "server_cpu_ms_per_s": round(cpu_ms / wall, 2),
                  "server_rss_kib": int(rss)}))
PY
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
n = runs[0]["outputs"]
med = {w: statistics.median(r["server_cpu_ms_per_s"] for r in runs if r["way"] == w)
       for w in ("none", "shardcast", "ffmpeg")}
print(f"results: {sys.argv[1]}")
for w, v in med.items():
    values = [r["server_cpu_ms_per_s"] for r in runs if r["way"] == w]
    print(f"{w}: {v:.2f} ms of CPU per second (median; {min(values):.2f}-{max(values):.2f})")
print(f"shardcast, per re-emission: {(med['shardcast'] - med['none']) / n:.2f} ms/s")
print(f"shardcast with {n} re-emissions / ffmpeg tee to {n}: {med['shardcast'] / med['ffmpeg']:.2f}x")
PY
