#!/usr/bin/env bash
# What one stream's ingest costs the server over UDP, over TCP, as an HTTP push (issue 16),
# over SRT and over RTMP (issue 17): server CPU per second of ingest with no viewer (packet
# sync, the segmenter and HLS packaging run in all of them), interleaved, REPS repetitions each.
#
#   CPU 0: the server (taskset: its shard, its sources runtime and every other thread)
#   CPU 1: `shardcast-bench ingest`, the same stream at BITRATE, 1316-byte datagrams, or the
#          same 1316 bytes per TCP write to a `tcp://` source listening for an encoder, or per
#          chunk of a chunked PUT to /push/live on the viewers' port (`push://`); for SRT its
#          datagrams go through Debian's srt-live-transmit (1316 bytes per SRT message), for
#          RTMP through ffmpeg (`-c copy -f flv`); their CPU counts as the sender's
#
# Usage: bench/scripts/ingest-cost.sh        Environment: BITRATE (default 20000000),
#        SECONDS_MEASURED (default 20), REPS (default 3), IO (shardcast's backend, default auto),
#        WAYS (default "udp tcp push srt rtmp"), SIZE (the generator's picture, default 1280x720;
#        640x360 below about 14 Mbit/s).
# One JSON line per run goes to bench/results/ingest-cost-DATE.jsonl; the medians and the
# TCP/UDP ratios are printed, of the server's CPU and of the server's and the sender's together
# (on loopback the sender's side does part of the receiving side's kernel work).
set -euo pipefail
cd "$(dirname "$0")/../.."
bitrate=${BITRATE:-20000000}
seconds=${SECONDS_MEASURED:-20}
reps=${REPS:-3}
io=${IO:-auto}
read -r -a ways <<< "${WAYS:-udp tcp push srt rtmp}"
size=${SIZE:-1280x720}
cargo build --release -q -p shardcast -p shardcast-bench
bench=target/release/shardcast-bench
server_bin=target/release/shardcast
port=18601; udp=15601; tcp=15602; srt=15603; rtmp=15604; relay_in=15605
work=$(mktemp -d /tmp/shardcast-ingest-cost.XXXXXX)
out="bench/results/ingest-cost-$(date -u +%Y%m%d-%H%M).jsonl"
mkdir -p bench/results
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for rep in $(seq "$reps"); do
  for over in "${ways[@]}"; do
    source="udp://127.0.0.1:$udp"
    [ "$over" = tcp ] && source="tcp://127.0.0.1:$tcp"
    [ "$over" = push ] && source="push://"
    [ "$over" = srt ] && source="srt://127.0.0.1:$srt"
    [ "$over" = rtmp ] && source="rtmp://127.0.0.1:$rtmp/live"
    cat > "$work/shardcast.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
cpus = [0]
io = "$io"

[[stream]]
name = "live"
source = "$source"
TOML
    taskset -c 0 "$server_bin" serve --api-listen off --config "$work/shardcast.toml" 2>/dev/null &
    server=$!; pids+=("$server")
    until curl -fs -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.2; done
    to="127.0.0.1:$udp"; flag=""
    if [ "$over" = tcp ]; then
      to="127.0.0.1:$tcp"; flag="--tcp"
      until ss -ltn "sport = :$tcp" | grep -q LISTEN; do sleep 0.1; done
    fi
    if [ "$over" = push ]; then
      to="127.0.0.1:$port"; flag="--push /push/live"
      sleep 0.5 # the stream opens to pushes once its shard has started it
    fi
    relay=""
    if [ "$over" = srt ]; then
      sleep 0.5
      taskset -c 1 srt-live-transmit -q "udp://127.0.0.1:$relay_in" \
        "srt://127.0.0.1:$srt?streamid=live" >/dev/null 2>&1 &
      relay=$!; pids+=("$relay"); to="127.0.0.1:$relay_in"
    fi
    if [ "$over" = rtmp ]; then
      until ss -ltn "sport = :$rtmp" | grep -q LISTEN; do sleep 0.1; done
      taskset -c 1 ffmpeg -nostdin -v error -f mpegts -i "udp://127.0.0.1:$relay_in?fifo_size=100000" \
        -c copy -f flv "rtmp://127.0.0.1:$rtmp/live/live" >/dev/null 2>&1 &
      relay=$!; pids+=("$relay"); to="127.0.0.1:$relay_in"
    fi
    # The relay's UDP port is open before the sender starts (else its first datagram is
    # refused, and so is the rest).
    if [ -n "$relay" ]; then
      until ss -lun "sport = :$relay_in" | grep -q ":$relay_in "; do sleep 0.1; done
    fi
    taskset -c 1 "$bench" ingest --to "$to" $flag --seconds $((seconds + 8)) \
      --bitrate "$bitrate" --width "${size%x*}" --height "${size#*x}" >/dev/null 2>&1 &
    sender=$!; pids+=("$sender")
    sleep 4 # the stream settles: first segments sealed, buffers at their size
    senders() { local t; t=$(cpu_ticks "$sender"); [ -z "$relay" ] || t=$((t + $(cpu_ticks "$relay"))); echo "$t"; }
    before=$(cpu_ticks "$server"); sender_before=$(senders); start=$(date +%s.%N)
    sleep "$seconds"
    after=$(cpu_ticks "$server"); sender_after=$(senders); end=$(date +%s.%N)
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
    received=$(curl -fs "http://127.0.0.1:$port/live/index.m3u8" | grep -c '\.ts$' || true)
    wait "$sender" || { echo "the sender failed ($over)" >&2; exit 1; }
    [ -z "$relay" ] || { kill -9 "$relay"; wait "$relay" 2>/dev/null || true; }
    [ "$received" -gt 0 ] || { echo "no segment over $over" >&2; exit 1; }
    kill "$server"; wait "$server" 2>/dev/null || true
    python3 - "$over" "$rep" "$before" "$after" "$start" "$end" "$ticks" "$rss" "$bitrate" "$received" \
      "$sender_before" "$sender_after" <<'PY' | tee -a "$out"
import json, sys
over, rep, before, after, start, end, ticks, rss, bitrate, segments, s_before, s_after = sys.argv[1:]
wall = float(end) - float(start)
cpu_ms = (int(after) - int(before)) * 1000 / int(ticks)
sender_ms = (int(s_after) - int(s_before)) * 1000 / int(ticks)
print(json.dumps({"over": over, "rep": int(rep), "bitrate": int(bitrate), "seconds": round(wall, 2),
                  "server_cpu_ms_per_s": round(cpu_ms / wall, 2),
                  "server_and_sender_cpu_ms_per_s": round((cpu_ms + sender_ms) / wall, 2),
                  "server_rss_kib": int(rss), "segments_listed": int(segments)}))
PY
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print(f"results: {sys.argv[1]}")
for key, what in (("server_cpu_ms_per_s", "server"), ("server_and_sender_cpu_ms_per_s", "server+sender")):
    ways = [o for o in ("udp", "tcp", "push", "srt", "rtmp") if any(r["over"] == o for r in runs)]
    med = {o: statistics.median(r[key] for r in runs if r["over"] == o) for o in ways}
    for o in ways:
        values = [r[key] for r in runs if r["over"] == o]
        print(f"{o}: {med[o]:.2f} ms of {what} CPU per second of ingest (median; {min(values):.2f}-{max(values):.2f})")
    for o in ways[1:]:
        print(f"{what}, {o} / udp: {med[o] / med['udp']:.2f}x")
PY
