#!/usr/bin/env bash
# Flame graphs of shardcast's serving paths (performance issue, part 5). One shard on CPU 0
# (io_uring unless IO says otherwise), the stream (`shardcast-bench ingest`, as compare.sh
# sends it) and N viewers on CPU 1; once the viewers have settled, `perf record` samples the
# server's threads for SECONDS_PROFILED with DWARF call graphs, and inferno folds the stacks
# into bench/flame/LABEL-PROTOCOL-N.svg. The heaviest functions by self time (perf report,
# children not counted) go to bench/flame/LABEL-PROTOCOL-N.top.txt.
#
# Usage: bench/scripts/flame.sh LABEL [SHARDCAST_BINARY]
#        Environment: N (1000), PROTOCOLS ("hls ts"), SECONDS_PROFILED (10), FREQ (499), IO.
# Needs perf (apt-get install linux-perf) and inferno (cargo install inferno).
set -euo pipefail
cd "$(dirname "$0")/../.."
label=${1:?usage: flame.sh LABEL [SHARDCAST_BINARY]}
bin=${2:-target/release/shardcast}
n=${N:-1000}
seconds=${SECONDS_PROFILED:-10}
freq=${FREQ:-499}
protocols=(${PROTOCOLS:-hls ts})
command -v perf >/dev/null || { echo "flame.sh needs perf (apt-get install linux-perf)" >&2; exit 1; }
command -v inferno-flamegraph >/dev/null || {
  echo "flame.sh needs inferno (cargo install inferno)" >&2; exit 1; }
cargo build --release -q -p shardcast -p shardcast-bench
bench=target/release/shardcast-bench
port=18501; udp_port=15501
work=$(mktemp -d /dev/shm/shardcast-flame.XXXXXX)
mkdir -p bench/flame
pids=()
source bench/scripts/common.sh
trap stop_all EXIT

cat > "$work/shardcast.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
cpus = [0]
io = "${IO:-auto}"
max_connections_per_address = 0

[[stream]]
name = "live"
source = "udp://127.0.0.1:$udp_port"
TOML
taskset -c 1 "$bench" ingest --to "127.0.0.1:$udp_port" --from 127.0.0.1:0 --seconds 100000 \
  --width 480 --height 272 --bitrate 2600000 2>/dev/null & pids+=($!)
taskset -c 0 "$bin" serve --api-listen off --config "$work/shardcast.toml" --state-dir "$work" \
  2>"$work/shardcast.log" & sc=$!; pids+=($sc)
sleep 8   # segments

for protocol in "${protocols[@]}"; do
  ramp=$(( n >= 5000 ? 10 : 4 ))
  if [ "$protocol" = hls ]; then
    args=(hls --url "http://127.0.0.1:$port/live/index.m3u8")
  else
    args=(ts --url "http://127.0.0.1:$port/live.ts")
  fi
  taskset -c 1 "$bench" "${args[@]}" --viewers "$n" --ramp "$ramp" --settle 4 \
    --seconds $((seconds + 6)) --server-pid "$sc" >"$work/load.txt" 2>&1 & load=$!
  sleep $((ramp + 6))
  perf record -q -F "$freq" --call-graph dwarf,16384 -p "$sc" -o "$work/perf.data" -- sleep "$seconds" 2>/dev/null
  wait "$load" || { echo "the load failed:"; cat "$work/load.txt"; exit 1; } >&2
  name="bench/flame/$label-$protocol-$n"
  perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf > "$work/folded"
  inferno-flamegraph --title "shardcast $label: $protocol, $n viewers, one shard ($(date -u +%Y-%m-%d))" \
    --width 1600 < "$work/folded" > "$name.svg"
  {
    echo "# $label ($bin, tree $(git describe --always --dirty 2>/dev/null)), $protocol, $n viewers, $(date -u +%Y-%m-%dT%H:%MZ)"
    tail -n 4 "$work/load.txt"
    echo
    perf report -i "$work/perf.data" --no-children -g none --sort symbol --stdio -q --percent-limit 0.7 2>/dev/null \
      | grep -v '^$' | grep -v '^ *|' | grep -v '^ *-' | head -n 40
  } > "$name.top.txt"
  echo "wrote $name.svg and $name.top.txt"
  rm -f "$work/perf.data"
  sleep 3
done
