#!/usr/bin/env bash
# The io_uring lifecycle under AddressSanitizer (not part of tests/run.sh: the instrumented
# build alone takes minutes). A server built with -Zsanitizer=address (RUSTC_BOOTSTRAP on the
# stable compiler, or nightly when there is one) and the system allocator serves the demo
# stream to 1000 viewers (500 progressive, 500 HLS) while a UDP stream with a source of its
# own is added and removed through the API 200 times (its ingest socket, buffer ring and
# viewers come and go), then gets SIGTERM. It passes when the server exits 0 and
# AddressSanitizer (LeakSanitizer included) reported nothing.
#
# Environment: CYCLES (default 200), VIEWERS (default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${CYCLES:-200}"
viewers="${VIEWERS:-1000}"
triple=$(rustc -vV | sed -n 's/^host: //p')
work=$(mktemp -d /tmp/shardcast-asan.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building the server with AddressSanitizer ($triple)"
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then toolchain=(+nightly); else export RUSTC_BOOTSTRAP=1; fi
RUSTFLAGS="-Zsanitizer=address" cargo "${toolchain[@]}" build -q -p shardcast \
  --features system-allocator --target "$triple" --target-dir target/asan
cargo build -q --release -p shardcast-bench
server=target/asan/$triple/debug/shardcast
bench=target/release/shardcast-bench

port=$((20000 + RANDOM % 20000)); api=$((port + 1)); udp=$((port + 2))
cat > "$work/shardcast.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[api]
listen = "127.0.0.1:$api"
[[stream]]
name = "demo"
source = "demo:"
TOML
echo "== serving on $port (API $api); ASan reports go to $work/asan.*"
ASAN_OPTIONS="detect_leaks=1:log_path=$work/asan:handle_segv=1" \
  "$server" serve --config "$work/shardcast.toml" --state-dir "$work/state" 2>"$work/server.log" &
server_pid=$!
pids+=("$server_pid")
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.2; done
token=$(cat "$work/state/api-token")
# The players' first request needs a segment.
until curl -fs "http://127.0.0.1:$port/demo/index.m3u8" >/dev/null; do sleep 0.5; done

"$bench" ingest --to "127.0.0.1:$udp" --seconds 100000 >/dev/null 2>&1 &
pids+=($!)
seconds=$((cycles / 2 + 30))
"$bench" ts --url "http://127.0.0.1:$port/demo.ts" --viewers $((viewers / 2)) --seconds "$seconds" --json >"$work/ts.json" 2>"$work/ts.err" &
pids+=($!); ts_pid=$!
"$bench" hls --url "http://127.0.0.1:$port/demo/index.m3u8" --viewers $((viewers / 2)) --seconds "$seconds" --json >"$work/hls.json" 2>"$work/hls.err" &
pids+=($!); hls_pid=$!
sleep 8

echo "== adding and removing a UDP stream $cycles times"
for i in $(seq "$cycles"); do
  curl -fs -X PUT -H "Authorization: Bearer $token" -d "{\"source\": \"udp://127.0.0.1:$udp\", \"window\": $((5 + i % 5))}" \
    "http://127.0.0.1:$api/api/v1/streams/churn" >/dev/null
  # A progressive viewer of it for a moment, cut off when the stream goes.
  curl -s -m 2 "http://127.0.0.1:$port/churn.ts" -o /dev/null &
  sleep 0.2
  curl -fs -X DELETE -H "Authorization: Bearer $token" "http://127.0.0.1:$api/api/v1/streams/churn" >/dev/null
  sleep 0.2
done
wait "$ts_pid" "$hls_pid" || true
echo "== viewers: $(cat "$work/ts.json" "$work/ts.err")"
echo "== players: $(cat "$work/hls.json" "$work/hls.err")"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
reports=$(cat "$work"/asan.* 2>/dev/null || true)
if [ "$status" -ne 0 ] || [ -n "$reports" ]; then
  echo "$reports" | head -n 80
  tail -n 20 "$work/server.log"
  echo "FAILED: exit status $status, $(ls "$work"/asan.* 2>/dev/null | wc -l) AddressSanitizer report(s)"
  exit 1
fi
echo "PASSED: $cycles stream edits under $viewers viewers, SIGTERM, exit 0, no AddressSanitizer report"
