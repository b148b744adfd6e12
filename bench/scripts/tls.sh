#!/usr/bin/env bash
# HLS over TLS, side by side in one run (TLS issue): shardcast plain, shardcast over TLS
# (rustls in user space, encrypting from the shared segments), Debian's nginx plain (sendfile)
# and nginx over TLS (OpenSSL; without kTLS nginx cannot sendfile through TLS).
#
#   CPU 0: the server under test (shardcast with one shard, or nginx with one worker)
#   CPU 1: `shardcast-bench ingest`, ffmpeg's HLS muxer for nginx, and the players
#          (`shardcast-bench hls`, over https with the test CA for the TLS contenders)
#
# One certificate for both (ECDSA P-256, a test CA made here with openssl), TLS 1.3; the
# players are rustls clients and offer the same suites to both, so both encrypt with the same
# cipher (the run records which). N = 100, 1000 (or the arguments), three repetitions, each
# contender in turn. JSON lines to bench/results/tls-DATE.jsonl; tables by report.py.
#
# Usage: bench/scripts/tls.sh [N ...]     Environment: SECONDS_MEASURED (default 20), REPS (3).
set -euo pipefail
cd "$(dirname "$0")/../.."
counts=("$@"); [ ${#counts[@]} -gt 0 ] || counts=(100 1000)
seconds=${SECONDS_MEASURED:-20}
reps=${REPS:-3}
command -v ffmpeg >/dev/null && [ -x /usr/sbin/nginx ] && command -v openssl >/dev/null || {
  echo "tls.sh needs ffmpeg, nginx and openssl" >&2; exit 1; }
cargo build --release -q -p shardcast -p shardcast-bench
bench=target/release/shardcast-bench
sc_port=18311; sc_tls=18312; ng_port=18313; ng_tls=18314; udp_port=15311
work=$(mktemp -d /dev/shm/shardcast-tls.XXXXXX)
mkdir -p "$work/hls" bench/results
out="bench/results/tls-$(date -u +%Y%m%d-%H%M).jsonl"
pids=()
source bench/scripts/common.sh
trap stop_all EXIT

# The test CA and one certificate for 127.0.0.1.
(
  cd "$work"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 2 -subj "/CN=shardcast bench CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
    -subj "/CN=127.0.0.1" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' > ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -extfile ext -out server.pem 2>/dev/null
  cat server.pem ca.pem > chain.pem
)

rate=2600000
taskset -c 1 "$bench" ingest --to "127.0.0.1:$udp_port" --streams 2 --from 127.0.0.1:0 \
  --seconds 100000 --width 480 --height 272 --bitrate "$rate" 2>/dev/null & pids+=($!)

cat > "$work/shardcast.toml" <<TOML
[server]
listen = "127.0.0.1:$sc_port"
cpus = [0]
io = "${IO:-auto}"
tls = { listen = "127.0.0.1:$sc_tls", cert = "$work/chain.pem", key = "$work/server.key" }

[[stream]]
name = "live"
source = "udp://127.0.0.1:$udp_port"
TOML
taskset -c 0 target/release/shardcast serve --api-listen off --config "$work/shardcast.toml" 2>"$work/shardcast.log" & sc=$!; pids+=($sc)

taskset -c 1 ffmpeg -nostdin -v error -i "udp://127.0.0.1:$((udp_port + 1))?fifo_size=1000000&overrun_nonfatal=1" \
  -c copy -f hls -hls_time 2 -hls_list_size 6 -hls_flags delete_segments+temp_file \
  -hls_segment_filename "$work/hls/seg%d.ts" "$work/hls/index.m3u8" 2>"$work/ffmpeg.log" & ff=$!; pids+=($ff)

nginx_conf "listen 127.0.0.1:$ng_port backlog=8192; listen 127.0.0.1:$ng_tls ssl backlog=8192;" "ssl_certificate $work/chain.pem; ssl_certificate_key $work/server.key; ssl_protocols TLSv1.2 TLSv1.3;" > "$work/nginx.conf"
taskset -c 0 /usr/sbin/nginx -p "$work" -c "$work/nginx.conf" & ng=$!; pids+=($ng)
sleep 12
ng_worker=$(pgrep -P "$ng" | head -n 1)
[ -n "$ng_worker" ] || { echo "nginx has no worker: $(cat "$work/nginx-error.log")" >&2; exit 1; }

# Which cipher each TLS contender uses with a TLS 1.3 client offering rustls's defaults.
cipher() { openssl s_client -connect "127.0.0.1:$1" -tls1_3 \
  -ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256 </dev/null 2>/dev/null \
  | awk '/^New, /{print $NF; exit}'; }
machine=$(machine_json)
echo "{\"machine\":$machine,\"date\":\"$(date -u +%Y-%m-%dT%H:%MZ)\",\"cipher_shardcast\":\"$(cipher $sc_tls)\",\"cipher_nginx\":\"$(cipher $ng_tls)\"}" > "$out"
cat "$out"


for n in "${counts[@]}"; do
  for rep in $(seq 1 "$reps"); do
    run_hls shardcast "$n" "$rep" hls --url "http://127.0.0.1:$sc_port/live/index.m3u8" --server-pid "$sc"
    run_hls shardcast-tls "$n" "$rep" hls --url "https://127.0.0.1:$sc_tls/live/index.m3u8" --ca "$work/ca.pem" --server-pid "$sc"
    run_hls nginx "$n" "$rep" hls --url "http://127.0.0.1:$ng_port/hls/index.m3u8" --server-pid "$ng_worker"
    run_hls nginx-tls "$n" "$rep" hls --url "https://127.0.0.1:$ng_tls/hls/index.m3u8" --ca "$work/ca.pem" --server-pid "$ng_worker"
  done
done
echo "results: $out"
python3 bench/scripts/report.py "$out" "$work/plots"
