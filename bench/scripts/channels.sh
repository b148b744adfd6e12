#!/usr/bin/env bash
# An IPTV-style host (performance issue, part 3): CHANNELS multicast channels of BITRATE each,
# one group per channel (239.1.1.1, .2, ... on one port, over loopback), and one HLS player on
# each of the first VIEWED channels; the rest have no viewer. Side by side in the same run with
# the floor: `shardcast-bench sink` joins the same groups and reads and drops every datagram
# (one epoll_wait per wake-up, one recvfrom per datagram), nothing else; once reading at each
# wake-up, once waiting a millisecond after it first (as shardcast's `gather` does); SINK_GATHERS
# lists the waits in ms (default "0 1"; add 20 for the floor of reading on a 20 ms tick, as
# shardcast's `ingest_interval` does for streams only HLS players watch).
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
# VARIANTS: the shardcast contenders, one per line, `LABEL|BINARY|EXTRA` (EXTRA: a line added to
# [server]); each repetition runs the sink and then each of them, interleaved. Default: the
# build of this tree, `shardcast|target/release/shardcast|`. For before and after, add a line
# with a build of an earlier commit; for a setting, the same binary with `gather = 0`.
#
# Usage: bench/scripts/channels.sh    Environment: CHANNELS (100), VIEWED (50), BITRATE
#        (2500000), SECONDS_MEASURED (20), REPS (3), IO (auto), PROFILE (general), VARIANTS,
#        SINK_GATHERS.
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
variants=${VARIANTS:-shardcast|target/release/shardcast|}
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
trap "exit 1" INT TERM
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
config() { # config EXTRA-LINE > FILE (an EXTRA of `io = ...` replaces IO)
  local io="io = \"${IO:-auto}\"" extra=$1
  case "$extra" in io*) io=$extra; extra="" ;; esac
  printf '[server]\nlisten = "127.0.0.1:%s"\ncpus = [0]\n%s\n%s\n' "$port" "$io" "$extra"
  for i in $(seq 1 "$channels"); do
    printf '\n[[stream]]\nname = "ch%d"\nsource = "udp://239.1.1.%d:%d?iface=127.0.0.1"\n' "$i" "$i" "$mport"
  done
}
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

serve() { # serve LABEL BINARY EXTRA REP: one run of a shardcast variant, its line to $out
  local label=$1 binary=$2 extra=$3 rep=$4
  config "$extra" > "$work/shardcast.toml"
  taskset -c 0 "$binary" serve --api-listen off --config "$work/shardcast.toml" 2>"$work/shardcast.log" &
  server=$!; pids+=("$server")
  until curl -fs -o /dev/null "http://127.0.0.1:$port/ch$channels/index.m3u8"; do
    kill -0 "$server" 2>/dev/null || { echo "shardcast ($label) stopped:" >&2; tail -n 3 "$work/shardcast.log" >&2; exit 1; }
    sleep 0.5
  done
  # The players start a tenth of a second apart (50 processes starting at once on the sender's
  # CPU would hold it up for longer than the sender may fall behind), and each measures from
  # before the server's window to after it. The window starts once every stream's view is
  # full (10 s of chunks by default): before that, memory is still being taken.
  local players=() i p
  for i in $(seq 1 "$viewed"); do
    taskset -c 1 "$bench" hls --url "http://127.0.0.1:$port/ch$i/index.m3u8" --viewers 1 --ramp 1 \
      --settle 1 --seconds $((seconds + 18)) --json > "$work/player$i.json" 2>/dev/null &
    players+=($!)
    sleep 0.1
  done
  sleep 10
  local served
  served=$(measure "$server" "$label" "$rep")
  for p in "${players[@]}"; do wait "$p" || true; done
  kill "$server"; wait "$server" 2>/dev/null || true
  record "$served" "$extra"
  rm -f "$work"/player*.json
}

record() { # record "MEASURE-LINE" [EXTRA]: the run as JSON, with the players' counts if any
  python3 - "$out" "$ticks" "$channels" "$viewed" "$bitrate" "$work" "$1" "${2:-}" <<'PY'
import glob, json, os, sys
out, ticks, channels, viewed, bitrate, work, line, extra = sys.argv[1:]
contender, rep, before, after, start, end, rss, udp, backlog = line.split()
wall = float(end) - float(start)
cpu_ms = (int(after) - int(before)) * 1000 / int(ticks) / wall
run = {"contender": contender, "rep": int(rep), "channels": int(channels), "bitrate": int(bitrate),
       "seconds": round(wall, 2), "cpu_ms_per_s": round(cpu_ms, 2), "rss_kib": int(rss),
       "udp_drops": int(udp), "backlog_drops": int(backlog)}
paths = glob.glob(os.path.join(work, "player*.json"))
if paths:
    players = []
    for path in paths:
        try:
            players.append(json.loads(open(path).read().strip().splitlines()[-1]))
        except (ValueError, IndexError):
            players.append(None)
    run["extra"] = extra
    run["viewed"] = int(viewed)
    run["players_reported"] = sum(p is not None for p in players)
    run["missed"] = sum(p.get("missed", 0) for p in players if p)
    run["segments"] = sum(p.get("segments", 0) for p in players if p)
    run["fetch_p99_ms_max"] = max((p["fetch_us"]["p99"] / 1000 for p in players if p), default=None)
print(json.dumps(run))
open(out, "a").write(json.dumps(run) + "\n")
PY
}

for rep in $(seq "$reps"); do
  # The floor: reading as each datagram comes, and gathering for a millisecond per wake-up
  # (as shardcast's default `gather`).
  for gather in ${SINK_GATHERS:-0 1}; do
    label=sink; [ "$gather" = 0 ] || label=sink-gather$gather
    taskset -c 0 "$bench" sink --first "$group:$mport" --groups --channels "$channels" \
      --gather-ms "$gather" --seconds $((seconds + 6)) > "$work/sink.json" &
    sink=$!; pids+=("$sink")
    sleep 3
    floor=$(measure "$sink" "$label" "$rep")
    wait "$sink"
    record "$floor"
  done
  # Each shardcast variant, the players on the first VIEWED channels.
  while IFS='|' read -r label binary extra; do
    [ -n "$label" ] || continue
    serve "$label" "$binary" "$extra" "$rep"
  done <<< "$variants"
done
grep -q . "$work/ingest.err" && { echo "the sender said:" >&2; cat "$work/ingest.err" >&2; }
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
n = runs[0]["channels"]
print(f"results: {sys.argv[1]}")
contenders = list(dict.fromkeys(r["contender"] for r in runs))
med = {}
for c in contenders:
    mine = [r for r in runs if r["contender"] == c]
    vals = [r["cpu_ms_per_s"] for r in mine]
    med[c] = statistics.median(vals)
    line = (f"{c}: {med[c]:.1f} ms CPU per second (median; {min(vals):.1f}-{max(vals):.1f}), "
            f"{med[c] / n:.2f} per channel, RSS {statistics.median(r['rss_kib'] for r in mine) / 1024:.1f} MiB, "
            f"UDP drops {sum(r['udp_drops'] for r in mine)}, backlog drops {sum(r['backlog_drops'] for r in mine)}")
    if not c.startswith("sink"):
        line += f", missed {sum(r.get('missed', 0) for r in mine)} of {sum(r.get('segments', 0) for r in mine)} segments"
        for floor in (f for f in contenders if f.startswith("sink")):
            if floor in med:
                line += (f"; {med[c] / med[floor]:.2f}x {floor}, "
                         f"{(med[c] - med[floor]) / n:.2f} ms/s per channel above it")
    print(line)
PY
