#!/usr/bin/env bash
# Where a lone stream's fixed cost goes (issue 22, part 1): shardcast with one UDP stream of
# BITRATE and VIEWERS HLS players (default none), each of its threads' CPU (the scheduler's
# run time, /proc/PID/task/TID/schedstat, to the nanosecond) and voluntary wake-ups
# (voluntary_ctxt_switches) over SECONDS_MEASURED, per second. Interleaved over the VARIANTS,
# REPS repetitions each.
#
#   CPU 0: the server (taskset: every thread of it)
#   CPU 1: `shardcast-bench ingest` (the stream) and `shardcast-bench hls` (the players)
#
# VARIANTS: one per line, `LABEL|BINARY|EXTRA` (EXTRA: a line added to [server]). Default: the
# build of this tree. For before and after, add a line with a build of an earlier commit.
#
# Usage: bench/scripts/wakeups.sh     Environment: VIEWERS (0), BITRATE (2600000),
#        SECONDS_MEASURED (20), REPS (3), IO (auto), VARIANTS.
# One JSON line per run and thread name goes to bench/results/wakeups-DATE.jsonl; the medians
# per variant and thread name are printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
viewers=${VIEWERS:-0}
bitrate=${BITRATE:-2600000}
seconds=${SECONDS_MEASURED:-20}
reps=${REPS:-3}
variants=${VARIANTS:-shardcast|target/release/shardcast|}
cargo build --release -q -p shardcast -p shardcast-bench
bench=target/release/shardcast-bench
sc_port=18501; udp_port=15501
work=$(mktemp -d /dev/shm/shardcast-wakeups.XXXXXX)
mkdir -p bench/results
out="bench/results/wakeups-$(date -u +%Y%m%d-%H%M).jsonl"
pids=()
source bench/scripts/common.sh
trap stop_all EXIT

taskset -c 1 "$bench" ingest --to "127.0.0.1:$udp_port" --streams 1 --from 127.0.0.1:0 \
  --seconds 100000 --width 480 --height 272 --bitrate "$bitrate" 2>/dev/null & pids+=($!)

# Per thread of $1: "TID NAME RUN_NS WAKEUPS".
threads() {
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s %s %s\n' "${t##*/}" "$(tr ' ' _ < "$t/comm")" "$(cut -d' ' -f1 "$t/schedstat")" \
      "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")"
  done 2>/dev/null | sort
}

run() {  # label binary extra rep
  local label=$1 binary=$2 extra=$3 rep=$4 sc players="" t0 t1
  printf '[server]\nlisten = "127.0.0.1:%s"\ncpus = [0]\nio = "%s"\n%s\n\n[[stream]]\nname = "live"\nsource = "udp://127.0.0.1:%s"\n' \
    "$sc_port" "${IO:-auto}" "$extra" "$udp_port" > "$work/shardcast.toml"
  taskset -c 0 "$binary" serve --api-listen off --config "$work/shardcast.toml" \
    --state-dir "$work" 2>"$work/shardcast.log" & sc=$!
  # The stream's rate is known after a second; a segment or two are out after four.
  sleep 4
  if [ "$viewers" -gt 0 ]; then
    taskset -c 1 "$bench" hls --url "http://127.0.0.1:$sc_port/live/index.m3u8" \
      --viewers "$viewers" --ramp 2 --settle 2 --seconds $((seconds + 4)) >/dev/null 2>&1 & players=$!
    sleep 4
  fi
  threads "$sc" > "$work/before"; t0=$(date +%s.%N)
  sleep "$seconds"
  threads "$sc" > "$work/after"; t1=$(date +%s.%N)
  [ -z "$players" ] || wait "$players" || true
  kill "$sc"; wait "$sc" 2>/dev/null || true
  join "$work/before" "$work/after" | awk -v d="$(echo "$t1 - $t0" | bc)" -v label="$label" -v rep="$rep" \
    -v viewers="$viewers" -v bitrate="$bitrate" \
    '$2 == $5 { printf "{\"variant\":\"%s\",\"rep\":%d,\"viewers\":%d,\"bitrate\":%d,\"thread\":\"%s\",\"tid\":%d,\"cpu_ms_per_s\":%.3f,\"wakeups_per_s\":%.1f}\n", label, rep, viewers, bitrate, $2, $1, ($6 - $3) / 1e6 / d, ($7 - $4) / d }' \
    | tee -a "$out"
  sleep 1
}

for rep in $(seq 1 "$reps"); do
  while IFS='|' read -r label binary extra; do
    [ -n "$label" ] || continue
    run "$label" "$binary" "$extra" "$rep"
  done <<< "$variants"
done
echo "results: $out"
python3 - "$out" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = [json.loads(line) for line in open(sys.argv[1])]
# Threads of one name (a runtime's workers) are summed within a run.
per = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
for r in runs:
    cell = per[(r["variant"], r["thread"])][r["rep"]]
    cell[0] += r["cpu_ms_per_s"]
    cell[1] += r["wakeups_per_s"]
totals = defaultdict(lambda: defaultdict(float))
for (variant, thread), reps in per.items():
    for rep, (cpu, _) in reps.items():
        totals[variant][rep] += cpu
for variant in dict.fromkeys(r["variant"] for r in runs):
    whole = sorted(totals[variant].values())
    print(f"{variant}: {statistics.median(whole):.2f} ms CPU per second in all (median; "
          f"{whole[0]:.2f}-{whole[-1]:.2f})")
    for (v, thread), reps in sorted(per.items()):
        if v != variant:
            continue
        cpu = statistics.median(c for c, _ in reps.values())
        wakeups = statistics.median(w for _, w in reps.values())
        if cpu or wakeups:
            print(f"  {thread}: {cpu:.2f} ms/s, {wakeups:.1f} wake-ups/s")
PY
