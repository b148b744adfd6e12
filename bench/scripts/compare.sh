#!/usr/bin/env bash
# shardcast against Debian's nginx, side by side in one run, on one machine (bench issue).
#
#   CPU 0: the server under test (shardcast with one shard, or nginx with one worker)
#   CPU 1: everything else: `shardcast-bench ingest` (one stream to shardcast, an identical one
#          to ffmpeg), ffmpeg's HLS muxer (-c copy onto tmpfs, -hls_flags temp_file) for nginx,
#          and the viewers (`shardcast-bench hls` / `ts`)
#
# HLS: the same players against shardcast's /live/index.m3u8 and against nginx serving
# ffmpeg's playlist and segments from tmpfs with sendfile on.
# HTTP-TS: viewers of shardcast's /live.ts, and, as the floor nginx has no live equivalent
# for, the same number of viewers reading a static file of the same stream (null packets
# removed, as shardcast removes them) from nginx at the stream's rate (`ts --pace`). Beside
# them, the write floor (`write-floor`, io_uring and epoll): the same live stream, on its own
# copy, written to the same number of viewers at the same write rate (the same flush rule and
# `flush_interval`), with nothing else done (issue 22, part 2).
#
# N = 100, 1000, 5000 (or the arguments); three repetitions, each running every contender
# once, in an order that turns by one place per repetition; the server restarted for none of
# them. One JSON line per run goes to bench/results/compare-DATE.jsonl; bench/scripts/report.py turns it into the tables and the
# SVG plots of bench/RESULTS.md.
#
# Usage: bench/scripts/compare.sh [N ...]      Environment: SECONDS_MEASURED (default 20),
#        REPS (default 3), PROTOCOLS (default "hls ts"), IO (shardcast's backend, default auto),
#        PATTERN (HLS players' requests: keep-alive, the default, one connection per player;
#        or per-request, a new connection for each request with `Connection: close`),
#        BEFORE_BIN (an earlier build of shardcast, measured as `shardcast-before` beside the
#        current one, on its own copy of the stream, each repetition interleaved),
#        FLUSH_MS (shardcast's `flush_interval` and the write floor's, default 20),
#        TS_CONTENDERS (default "shardcast nginx-static floor-uring floor-epoll"),
#        SHMEM (the kernel's shmem_enabled for the run: within_size gives shardcast's segment
#        memfds large folios; put back afterwards), FOLIOS_AB (=1: shardcast measured also as
#        `shardcast-folios`, with within_size, in each repetition), NGINX_TMPFS_HUGE (nginx's
#        files on a tmpfs mounted with this huge= option, e.g. within_size; default: /dev/shm
#        as it is),
#        NGINX_HUGE_AB (=1: nginx measured also as `nginx-huge`, serving a second ffmpeg's
#        segments from a tmpfs with huge=within_size, in each repetition),
#        RATE (the stream's mux rate in bit/s, default 2600000), WIDTH and HEIGHT (its picture,
#        default 480x272: 1.9 Mbit/s carried, null packets aside; 512x272 carries 2.0, 320x180
#        1.0 and needs 1.4 Mbit/s of mux rate).
#
# Each run records the server's resident memory just before its viewers come
# (`server_rss_idle`) beside the one at the end of the window, so that memory per viewer can be
# told from a single N.
set -euo pipefail
cd "$(dirname "$0")/../.."
counts=("$@"); [ ${#counts[@]} -gt 0 ] || counts=(100 1000 5000)
seconds=${SECONDS_MEASURED:-20}
reps=${REPS:-3}
protocols=(${PROTOCOLS:-hls ts})
pattern=${PATTERN:-keep-alive}
case $pattern in
  keep-alive) hls_pattern=() ;;
  per-request) hls_pattern=(--connection-per-request) ;;
  *) echo "PATTERN is keep-alive or per-request, not $pattern" >&2; exit 1 ;;
esac
command -v ffmpeg >/dev/null && [ -x /usr/sbin/nginx ] || {
  echo "compare needs ffmpeg and nginx (apt-get install ffmpeg nginx)" >&2; exit 1; }
flush_ms=${FLUSH_MS:-20}
ts_contenders=" ${TS_CONTENDERS:-shardcast nginx-static floor-uring floor-epoll} "
cargo build --release -q -p shardcast -p shardcast-bench
bench=target/release/shardcast-bench
sc_port=18301; ng_port=18302; udp_port=15301
work=$(mktemp -d /dev/shm/shardcast-compare.XXXXXX)
mkdir -p "$work/hls" bench/results
if [ -n "${NGINX_TMPFS_HUGE:-}" ]; then
  mount -t tmpfs -o "size=1g,huge=$NGINX_TMPFS_HUGE" shardcast-compare "$work/hls"
fi
out="bench/results/compare-$(date -u +%Y%m%d-%H%M).jsonl"
pids=()
source bench/scripts/common.sh
# Large folios for segments in memory (issue 22): SHMEM sets the kernel's shmem_enabled
# (memfds, so shardcast's segments) for the run and puts it back after; NGINX_TMPFS_HUGE
# mounts nginx's directory (ffmpeg's segments) as a tmpfs with that huge= option.
shmem_before=$(shmem_now)
finish() {
  stop_all
  [ -z "${SHMEM:-}${FOLIOS_AB:-}" ] || [ -z "$shmem_before" ] || echo "$shmem_before" > "$thp"
}
trap finish EXIT
if [ -n "${SHMEM:-}" ]; then echo "$SHMEM" > "$thp"; fi

# The stream: I_PCM keyframes every second + AAC, by default 480x272 at 2.6 Mbit/s mux (1.9
# carried).
rate=${RATE:-2600000}
picture=(--width "${WIDTH:-480}" --height "${HEIGHT:-272}")
before_bin=${BEFORE_BIN:-}
# Copies of the stream, to consecutive ports: shardcast, ffmpeg, shardcast-before, and the
# two write floors.
streams=5; [ -z "${NGINX_HUGE_AB:-}" ] || streams=6
taskset -c 1 "$bench" ingest --to "127.0.0.1:$udp_port" --streams "$streams" --from 127.0.0.1:0 \
  --seconds 100000 "${picture[@]}" --bitrate "$rate" 2>/dev/null & pids+=($!)

# shardcast: one shard on CPU 0.
cat > "$work/shardcast.toml" <<TOML
[server]
listen = "127.0.0.1:$sc_port"
cpus = [0]
io = "${IO:-auto}"
flush_interval = $flush_ms
# Every viewer comes from 127.0.0.1: no cap per address (its default, 4096, would refuse
# viewers past it at N = 5000).
max_connections_per_address = 0

[[stream]]
name = "live"
source = "udp://127.0.0.1:$udp_port"
TOML
# Each shardcast keeps its state in its own directory, so that neither touches the host's.
mkdir -p "$work/main"
taskset -c 0 target/release/shardcast serve --api-listen off --config "$work/shardcast.toml" \
  --state-dir "$work/main" 2>"$work/shardcast.log" & sc=$!; pids+=($sc)
if [ -n "$before_bin" ]; then
  mkdir -p "$work/before"
  sed -e "s/:$sc_port\"/:$((sc_port + 2))\"/" -e "s/:$udp_port\"/:$((udp_port + 2))\"/" \
    "$work/shardcast.toml" > "$work/before/shardcast.toml"
  taskset -c 0 "$before_bin" serve --api-listen off --config "$work/before/shardcast.toml" \
    --state-dir "$work/before" 2>"$work/before/shardcast.log" & sc_before=$!; pids+=($sc_before)
fi

# The write floors, on CPU 0 like the servers (each idle but for its own stream when not
# measured, as shardcast is).
taskset -c 0 target/release/write-floor --io uring --listen "127.0.0.1:$((sc_port + 3))" \
  --udp "127.0.0.1:$((udp_port + 3))" --flush-ms "$flush_ms" 2>"$work/floor-uring.log" & floor_uring=$!; pids+=($floor_uring)
taskset -c 0 target/release/write-floor --io epoll --listen "127.0.0.1:$((sc_port + 4))" \
  --udp "127.0.0.1:$((udp_port + 4))" --flush-ms "$flush_ms" 2>"$work/floor-epoll.log" & floor_epoll=$!; pids+=($floor_epoll)

# ffmpeg's HLS muxer onto tmpfs for nginx, from the identical stream.
taskset -c 1 ffmpeg -nostdin -v error -i "udp://127.0.0.1:$((udp_port + 1))?fifo_size=1000000&overrun_nonfatal=1" \
  -c copy -f hls -hls_time 2 -hls_list_size 6 -hls_flags delete_segments+temp_file \
  -hls_segment_filename "$work/hls/seg%d.ts" "$work/hls/index.m3u8" 2>"$work/ffmpeg.log" & ff=$!; pids+=($ff)

# NGINX_HUGE_AB: a second ffmpeg, from a sixth copy of the stream, onto a tmpfs mounted with
# huge=within_size, which the same nginx serves as `nginx-huge` (/hls-huge/).
if [ -n "${NGINX_HUGE_AB:-}" ]; then
  mkdir -p "$work/hls-huge"
  mount -t tmpfs -o size=1g,huge=within_size shardcast-compare-huge "$work/hls-huge"
  taskset -c 1 ffmpeg -nostdin -v error -i "udp://127.0.0.1:$((udp_port + 5))?fifo_size=1000000&overrun_nonfatal=1" \
    -c copy -f hls -hls_time 2 -hls_list_size 6 -hls_flags delete_segments+temp_file \
    -hls_segment_filename "$work/hls-huge/seg%d.ts" "$work/hls-huge/index.m3u8" 2>"$work/ffmpeg-huge.log" & pids+=($!)
fi

# The static file for the HTTP-TS floor: 120 s of the same stream without null packets.
"$bench" generate --seconds 120 "${picture[@]}" --bitrate "$rate" -o "$work/full.ts"
static_bps=$(python3 - "$work/full.ts" "$work/static.ts" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
keep = bytearray()
for i in range(0, len(data) - 187, 188):
    p = data[i:i + 188]
    if ((p[1] & 0x1F) << 8 | p[2]) != 0x1FFF:
        keep += p
open(sys.argv[2], "wb").write(keep)
print(len(keep) * 8 // 120)
PY
)
rm -f "$work/full.ts"

# nginx: one worker on CPU 0, sendfile, files from tmpfs.
nginx_conf "listen 127.0.0.1:$ng_port backlog=8192;" > "$work/nginx.conf"
taskset -c 0 /usr/sbin/nginx -p "$work" -c "$work/nginx.conf" & ng=$!; pids+=($ng)
sleep 12   # segments on both sides
ng_worker=$(pgrep -P "$ng" | head -n 1)
[ -n "$ng_worker" ] || { echo "nginx has no worker: $(cat "$work/nginx-error.log")" >&2; exit 1; }

machine=$(python3 - <<'PY'
import json, os, platform
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(json.dumps({"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release()}))
PY
)
echo "{\"machine\":$machine,\"date\":\"$(date -u +%Y-%m-%dT%H:%MZ)\",\"rate\":$rate,\"picture\":\"${WIDTH:-480}x${HEIGHT:-272}\",\"static_bps\":$static_bps,\"pattern\":\"$pattern\",\"flush_ms\":$flush_ms,\"shmem_enabled\":\"$(shmem_now)\",\"nginx_tmpfs_huge\":\"${NGINX_TMPFS_HUGE:-never}\"}" > "$out"

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() {  # protocol contender n rep -- bench args
  local protocol=$1 contender=$2 n=$3 rep=$4; shift 4
  local ramp=$(( n >= 5000 ? 10 : 4 ))
  local line ff0 ff1 t0 t1 pid="" idle=null a
  # The server's pid follows --server-pid in the bench arguments.
  for a in "$@"; do [ "$pid" != next ] || pid=$a; [ "$a" != --server-pid ] || pid=next; done
  idle=$(awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$pid/status" 2>/dev/null || echo null)
  # ffmpeg does nginx's segmenting; its CPU is recorded beside, never added to nginx's.
  ff0=$(ticks "$ff"); t0=$(date +%s.%N)
  if line=$(taskset -c 1 "$bench" "$@" --viewers "$n" --ramp "$ramp" --settle 4 --seconds "$seconds" --json 2>"$work/bench.err"); then
    ff1=$(ticks "$ff"); t1=$(date +%s.%N)
    local seg_ms
    seg_ms=$(python3 -c "import sys; print(round(($ff1 - $ff0) / $(getconf CLK_TCK) * 1000 / ($t1 - $t0), 2))")
    echo "{\"protocol\":\"$protocol\",\"contender\":\"$contender\",\"n\":$n,\"rep\":$rep,\"ffmpeg_ms_per_s\":$seg_ms,\"server_rss_idle\":${idle:-null},\"run\":$line}" | tee -a "$out"
  else
    echo "{\"protocol\":\"$protocol\",\"contender\":\"$contender\",\"n\":$n,\"rep\":$rep,\"error\":$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read().strip()))' "$work/bench.err")}" | tee -a "$out"
  fi
  sleep 2
}

# FOLIOS_AB: the same shardcast measured twice per repetition, as `shardcast` with
# shmem_enabled as SHMEM leaves it and as `shardcast-folios` with within_size; before each
# run the setting is switched if it must be, then the segments in the window are left to turn
# over (a segment's memfd takes its folios when it is written).
folios_for() {
  local want=${shmem_run:-never}
  [ "$1" != shardcast-folios ] || want=within_size
  if [ "$(shmem_now)" != "$want" ]; then
    echo "$want" > "$thp"
    sleep 16
  fi
}
shmem_run=$(shmem_now)

# One repetition runs every contender once; the order turns by one place each repetition, so
# that no contender always comes first (just after the pause) or last.
rotate() {  # rep contender... -> the contenders, starting at (rep - 1) mod count
  local rep=$1; shift
  local k=$(( (rep - 1) % $# )) i
  for i in $(seq 0 $(( $# - 1 ))); do
    local j=$(( (i + k) % $# + 1 ))
    echo "${!j}"
  done
}
for protocol in "${protocols[@]}"; do
  if [ "$protocol" = hls ]; then
    contenders=(shardcast nginx); [ -z "$before_bin" ] || contenders+=(shardcast-before)
    [ -z "${FOLIOS_AB:-}" ] || contenders+=(shardcast-folios)
    [ -z "${NGINX_HUGE_AB:-}" ] || contenders+=(nginx-huge)
  else
    contenders=()
    for c in shardcast nginx-static floor-uring floor-epoll; do
      [[ $ts_contenders != *" $c "* ]] || contenders+=("$c")
    done
    [ -z "$before_bin" ] || contenders+=(shardcast-before)
  fi
  for n in "${counts[@]}"; do
    for rep in $(seq 1 "$reps"); do
      for contender in $(rotate "$rep" "${contenders[@]}"); do
        [ -z "${FOLIOS_AB:-}" ] || folios_for "$contender"
        case $protocol/$contender in
          hls/shardcast) run hls shardcast "$n" "$rep" hls --url "http://127.0.0.1:$sc_port/live/index.m3u8" --server-pid "$sc" "${hls_pattern[@]}" ;;
          hls/nginx-huge) run hls nginx-huge "$n" "$rep" hls --url "http://127.0.0.1:$ng_port/hls-huge/index.m3u8" --server-pid "$ng_worker" "${hls_pattern[@]}" ;;
          hls/nginx) run hls nginx "$n" "$rep" hls --url "http://127.0.0.1:$ng_port/hls/index.m3u8" --server-pid "$ng_worker" "${hls_pattern[@]}" ;;
          hls/shardcast-folios) run hls shardcast-folios "$n" "$rep" hls --url "http://127.0.0.1:$sc_port/live/index.m3u8" --server-pid "$sc" "${hls_pattern[@]}" ;;
          hls/shardcast-before) run hls shardcast-before "$n" "$rep" hls --url "http://127.0.0.1:$((sc_port + 2))/live/index.m3u8" --server-pid "$sc_before" "${hls_pattern[@]}" ;;
          ts/shardcast) run ts shardcast "$n" "$rep" ts --url "http://127.0.0.1:$sc_port/live.ts" --server-pid "$sc" ;;
          ts/nginx-static) run ts nginx-static "$n" "$rep" ts --url "http://127.0.0.1:$ng_port/static.ts" --pace "$static_bps" --server-pid "$ng_worker" ;;
          ts/floor-uring) run ts floor-uring "$n" "$rep" ts --url "http://127.0.0.1:$((sc_port + 3))/live.ts" --server-pid "$floor_uring" ;;
          ts/floor-epoll) run ts floor-epoll "$n" "$rep" ts --url "http://127.0.0.1:$((sc_port + 4))/live.ts" --server-pid "$floor_epoll" ;;
          ts/shardcast-before) run ts shardcast-before "$n" "$rep" ts --url "http://127.0.0.1:$((sc_port + 2))/live.ts" --server-pid "$sc_before" ;;
        esac
      done
    done
  done
done
echo "results: $out"
python3 bench/scripts/report.py "$out"
