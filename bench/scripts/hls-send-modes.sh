#!/usr/bin/env bash
# HLS segment send modes side by side (HLS issue): shardcast with one shard on CPU 0 receives a
# UDP stream from `shardcast-bench ingest` and serves N HLS players run by
# `shardcast-bench hls` on CPU 1, once per `segment_send` mode and io backend. Three
# repetitions at each N. Server CPU is utime+stime of all its threads; ksoftirqd/0 is counted
# apart (zero-copy completions and loopback delivery can run there instead of in the server).
# Prints one JSON line per run, then a table of medians.
# Usage: [IO="io_uring epoll"] [MODES="copy sendfile zerocopy"] [SECONDS=20] \
#        bench/scripts/hls-send-modes.sh [N ...]   (default: 100 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
counts=("$@"); [ ${#counts[@]} -gt 0 ] || counts=(100 1000)
backends=(${IO:-io_uring epoll})
modes=(${MODES:-copy sendfile zerocopy})
seconds=${SECONDS_MEASURED:-20}
cargo build --release -q -p shardcast -p shardcast-bench
http_port=18191; udp_port=15001
cfg=$(mktemp --suffix .toml); out=$(mktemp)
srv=""; ing=""
cleanup() { kill ${srv:+"$srv"} ${ing:+"$ing"} 2>/dev/null || true; wait 2>/dev/null || true; rm -f "$cfg" "$out"; }
trap cleanup EXIT
softirq_pid=$(pgrep -x ksoftirqd/0 || true)
softirq_ticks() { [ -n "$softirq_pid" ] && awk '{print $14+$15}' "/proc/$softirq_pid/stat" || echo 0; }
# 480x272 I_PCM keyframes every second: about 1.9 Mbit/s of content in a 2.6 Mbit/s mux.
taskset -c 1 target/release/shardcast-bench ingest --to "127.0.0.1:$udp_port" --from 127.0.0.1:0 \
  --seconds 36000 --width 480 --height 272 --bitrate 2600000 2>/dev/null & ing=$!
for io in "${backends[@]}"; do
  for mode in "${modes[@]}"; do
    [ "$io" = epoll ] && [ "$mode" = zerocopy ] && continue   # zerocopy is io_uring only
    cat > "$cfg" <<TOML
[server]
listen = "127.0.0.1:$http_port"
cpus = [0]
io = "$io"
segment_send = "$mode"

[[stream]]
name = "live"
source = "udp://127.0.0.1:$udp_port"
playlist_segments = 6
TOML
    taskset -c 0 target/release/shardcast serve --api-listen off --config "$cfg" 2>/dev/null & srv=$!
    sleep 9   # three segments before the first player
    for n in "${counts[@]}"; do
      for rep in 1 2 3; do
        before=$(softirq_ticks)
        line=$(taskset -c 1 target/release/shardcast-bench hls --url "http://127.0.0.1:$http_port/live/index.m3u8" \
          --viewers "$n" --ramp 4 --settle 4 --seconds "$seconds" --server-pid "$srv" --json)
        after=$(softirq_ticks)
        echo "{\"io\":\"$io\",\"mode\":\"$mode\",\"n\":$n,\"rep\":$rep,\"softirq_ticks\":$((after - before)),\"run\":$line}" | tee -a "$out"
      done
    done
    kill "$srv"; wait "$srv" 2>/dev/null || true; srv=""
  done
done
python3 - "$out" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
tck = float(sys.argv[2])
med = statistics.median
print("\n| io | segment_send | viewers | server s/GiB (median, min-max) | server+client s/GiB | ksoftirqd/0 s/GiB | server ms per viewer-s | fetch p99 ms | missed / late / 404 |")
print("|---|---|---|---|---|---|---|---|---|")
keys = []
for r in runs:
    k = (r["io"], r["mode"], r["n"])
    if k not in keys:
        keys.append(k)
for io, mode, n in keys:
    rs = [r for r in runs if (r["io"], r["mode"], r["n"]) == (io, mode, n)]
    gib = [r["run"]["bytes"] / 2**30 for r in rs]
    srv = [r["run"]["server_cpu_s"] / g for r, g in zip(rs, gib)]
    both = [(r["run"]["server_cpu_s"] + r["run"]["client_cpu_s"]) / g for r, g in zip(rs, gib)]
    soft = [r["softirq_ticks"] / tck / g for r, g in zip(rs, gib)]
    per = [r["run"]["server_ms_per_viewer_s"] for r in rs]
    p99 = [r["run"]["fetch_us"]["p99"] / 1000 for r in rs]
    bad = [sum(r["run"][k] for k in ("missed",)) for r in rs]
    late = [r["run"]["late"] for r in rs]
    nf = [r["run"]["listed_404"] for r in rs]
    print(f"| {io} | {mode} | {n} | {med(srv):.3f} ({min(srv):.3f}-{max(srv):.3f}) | {med(both):.3f} | {med(soft):.3f} | "
          f"{med(per):.4f} | {med(p99):.1f} | {sum(bad)} / {sum(late)} / {sum(nf)} |")
PY
