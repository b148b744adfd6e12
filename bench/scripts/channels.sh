#!/usr/bin/env bash
# An IPTV-style host (performance issue, part 3): CHANNELS multicast channels of BITRATE each,
# one group per channel (239.1.1.1, .2, ... on one port, over loopback), and one HLS player on
# each of the first VIEWED channels; the rest have no viewer. Side by side in the same run with
# the floor: `shardcast-bench sink` joins the same groups and reads and drops every datagram
# (one epoll_wait per wake-up, one recvfrom per datagram), nothing else.
#
#   CPU 0: the server (shardcast with one shard, or the sink)
#   CPU 1: `shardcast-bench ingest --groups` (every channel from one thread, spread evenly over
#          a datagram's time, as independent sources are) and the players
#
# Measured per run: the server's CPU (utime+stime of all its threads) per second, its RSS, the
# kernel's UDP drops (RcvbufErrors in /proc/net/snmp) and backlog drops (/proc/net/softnet_stat)
# over the window; the players' missed segments and fetch p99. The idle channel's cost is
# estimated as (server - sink) / CHANNELS, all channels counted as idle: an upper bound, since
# the viewed ones also serve their player.
#
# PROFILE=off|general: with `general`, the tuning profile's UDP settings (net.core.rmem_max,
# netdev_max_backlog) are set for the run and put back after it.
#
# Usage: bench/scripts/channels.sh    Environment: CHANNELS (100), VIEWED (50), BITRATE
#        (2500000), SECONDS_MEASURED (20), REPS (3), IO (auto), PROFILE (general),
#        SHARDCAST_EXTRA (lines added to [server], e.g. "gather = 0"), SERVER_BIN (another
#        shardcast binary to measure, e.g. a build of an earlier commit).
# One JSON line per run goes to bench/results/channels-DATE.jsonl; medians are printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
channels=${CHANNELS:-100}
viewed=${VIEWED:-50}
bitrate=${BITRATE:-2500000}
seconds=${SECONDS_MEASURED:-20}
reps=${REPS:-3}
profile=${PROFILE:-general}
cargo build --release -q -p shardcast -p shardcast-bench
bench=target/release/shardcast-bench
server_bin=${SERVER_BIN:-target/release/shardcast}
port=18701; group=239.1.1.1; mport=15701
work=$(mktemp -d /tmp/shardcast-channels.XXXXXX)
out="bench/results/channels-$(date -u +%Y%m%d-%H%M).jsonl"
mkdir -p bench/results
pids=()
added_route=0
restore=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for r in "${restore[@]}"; do sysctl -q -w "$r" >/dev/null || true; done
  if [ "$added_route" = 1 ]; then
    ip route del 224.0.0.0/4 dev lo 2>/dev/null || true
    ip link set lo multicast off
  fi
  rm -rf "$work"
}
trap cleanup EXIT
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
udp_drops() { awk '/^Udp:/ { if (n++) print $6 }' /proc/net/snmp; }
backlog_drops() { python3 -c 'print(sum(int(l.split()[1], 16) for l in open("/proc/net/softnet_stat")))'; }

# Multicast over loopback (see README): the route needs `src`, or source-specific joins fail.
if ! ip route show table all 224.0.0.0/4 | grep -q 'dev lo'; then
  ip link set lo multicast on
  ip route add 224.0.0.0/4 dev lo src 127.0.0.1
  added_route=1
fi
if [ "$profile" != off ]; then
  for key in net.core.rmem_max net.core.netdev_max_backlog; do
    want=$(awk -F' *= *' -v k="$key" '$1 == k {print $2}' "tuning/$profile.conf")
    [ -n "$want" ] || continue
    restore+=("$key=$(sysctl -n "$key")")
    sysctl -q -w "$key=$want"
  done
fi

# The channels' content: a 480x272 stream (H.264 + AAC) at BITRATE, 60 s, looped by the sender.
"$bench" generate --seconds 60 --width 480 --height 272 --bitrate "$bitrate" -o "$work/channel.ts"
{
  printf '[server]\nlisten = "127.0.0.1:%s"\ncpus = [0]\nio = "%s"\n%s\n' \
    "$port" "${IO:-auto}" "${SHARDCAST_EXTRA:-}"
  for i in $(seq 1 "$channels"); do
    printf '\n[[stream]]\nname = "ch%d"\nsource = "udp://239.1.1.%d:%d?iface=127.0.0.1"\n' "$i" "$i" "$mport"
  done
} > "$work/shardcast.toml"
taskset -c 1 "$bench" ingest --to "$group:$mport" --groups --streams "$channels" --from 127.0.0.1:0 \
  --file "$work/channel.ts" --bitrate "$bitrate" --seconds 100000 2>"$work/ingest.err" &
sender=$!; pids+=("$sender")

measure() { # measure PID CONTENDER REP
  local pid=$1 contender=$2 rep=$3
  local before udp0 backlog0 start after udp1 backlog1 end rss
  before=$(cpu_ticks "$pid"); udp0=$(udp_drops); backlog0=$(backlog_drops); start=$(date +%s.%N)
  sleep "$seconds"
  after=$(cpu_ticks "$pid"); udp1=$(udp_drops); backlog1=$(backlog_drops); end=$(date +%s.%N)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  echo "$contender $rep $before $after $start $end $rss $((udp1 - udp0)) $((backlog1 - backlog0))"
}

for rep in $(seq "$reps"); do
  # The floor.
  taskset -c 0 "$bench" sink --first "$group:$mport" --groups --channels "$channels" \
    --seconds $((seconds + 6)) > "$work/sink.json" &
  sink=$!; pids+=("$sink")
  sleep 3
  read -r -a floor <<< "$(measure "$sink" sink "$rep")"
  wait "$sink"
  # shardcast, the players on the first VIEWED channels.
  taskset -c 0 "$server_bin" serve --api-listen off --config "$work/shardcast.toml" 2>"$work/shardcast.log" &
  server=$!; pids+=("$server")
  until curl -fs -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.2; done
  until curl -fs -o /dev/null "http://127.0.0.1:$port/ch$channels/index.m3u8"; do sleep 0.5; done
  # The players start a tenth of a second apart (50 processes starting at once on the sender's
  # CPU would hold it up for longer than the sender may fall behind), and each measures from
  # before the server's window to after it. The window starts once every stream's view is
  # full (10 s of chunks by default): before that, memory is still being taken.
  players=()
  for i in $(seq 1 "$viewed"); do
    taskset -c 1 "$bench" hls --url "http://127.0.0.1:$port/ch$i/index.m3u8" --viewers 1 --ramp 1 \
      --settle 1 --seconds $((seconds + 18)) --json > "$work/player$i.json" 2>/dev/null &
    players+=($!)
    sleep 0.1
  done
  sleep 10
  read -r -a served <<< "$(measure "$server" shardcast "$rep")"
  for p in "${players[@]}"; do wait "$p" || true; done
  kill "$server"; wait "$server" 2>/dev/null || true
  python3 - "$out" "$ticks" "$channels" "$viewed" "$bitrate" "$work" "${floor[*]}" "${served[*]}" <<'PY'
import glob, json, os, sys
out, ticks, channels, viewed, bitrate, work, floor, served = sys.argv[1:]
players = []
for path in glob.glob(os.path.join(work, "player*.json")):
    try:
        players.append(json.loads(open(path).read().strip().splitlines()[-1]))
    except (ValueError, IndexError):
        players.append(None)
for line in (floor, served):
    contender, rep, before, after, start, end, rss, udp, backlog = line.split()
    wall = float(end) - float(start)
    cpu_ms = (int(after) - int(before)) * 1000 / int(ticks) / wall
    run = {"contender": contender, "rep": int(rep), "channels": int(channels), "bitrate": int(bitrate),
           "seconds": round(wall, 2), "cpu_ms_per_s": round(cpu_ms, 2), "rss_kib": int(rss),
           "udp_drops": int(udp), "backlog_drops": int(backlog)}
    if contender == "shardcast":
        run["viewed"] = int(viewed)
        run["players_reported"] = sum(p is not None for p in players)
        run["missed"] = sum(p.get("missed", 0) for p in players if p)
        run["segments"] = sum(p.get("segments", 0) for p in players if p)
        run["fetch_p99_ms_max"] = max((p["fetch_us"]["p99"] / 1000 for p in players if p), default=None)
    print(json.dumps(run))
    open(out, "a").write(json.dumps(run) + "\n")
PY
  rm -f "$work"/player*.json
done
grep -q . "$work/ingest.err" && { echo "the sender said:" >&2; cat "$work/ingest.err" >&2; }
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = lambda c, k: statistics.median(r[k] for r in runs if r["contender"] == c)
n = runs[0]["channels"]
print(f"results: {sys.argv[1]}")
for c in ("sink", "shardcast"):
    vals = [r["cpu_ms_per_s"] for r in runs if r["contender"] == c]
    print(f"{c}: {med(c, 'cpu_ms_per_s'):.1f} ms CPU per second (median; {min(vals):.1f}-{max(vals):.1f}), "
          f"RSS {med(c, 'rss_kib') / 1024:.1f} MiB, UDP drops {sum(r['udp_drops'] for r in runs if r['contender'] == c)}, "
          f"backlog drops {sum(r['backlog_drops'] for r in runs if r['contender'] == c)}")
s, f = med("shardcast", "cpu_ms_per_s"), med("sink", "cpu_ms_per_s")
print(f"shardcast / sink: {s / f:.2f}x; per channel: shardcast {s / n:.2f} ms/s, sink {f / n:.2f} ms/s, "
      f"shardcast above the sink {(s - f) / n:.2f} ms/s")
PY
