#!/usr/bin/env bash
# The HLS proxy, side by side in one run (issue 19): N HLS players of one live stream served
# by an origin, through
#
#   shardcast   its HLS proxy (`[[proxy]]`, one shard);
#   nginx       Debian's nginx with `proxy_cache` in front of the origin, configured as an
#               operator would for live HLS (cache lock: one upstream fetch per segment;
#               playlists valid 1 s, segments 10 min);
#   hls-proxy   warren-bank's HLS-Proxy (`@warren-bank/hls-proxy` from npm, `hlsd`), which
#               fetches upstream for every viewer request.
#
#   CPU 0: the proxy under test
#   CPU 1: the origin (nginx serving ffmpeg's HLS from tmpfs), ffmpeg, the stream's generator
#          and the players
#
# Reported per run: the proxy's CPU per viewer-second, the players' figures (missed and late
# segments, fetch times), and the requests that reached the origin in the window (from its
# access log). JSON lines to bench/results/hls-proxy-DATE.jsonl.
#
# Usage: bench/scripts/hls-proxy.sh [N ...]   Environment: SECONDS_MEASURED (20), REPS (3),
#                                             SKIP_HLS_PROXY=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
counts=("$@"); [ ${#counts[@]} -gt 0 ] || counts=(100 1000)
seconds=${SECONDS_MEASURED:-20}
reps=${REPS:-3}
command -v ffmpeg >/dev/null && [ -x /usr/sbin/nginx ] || { echo "hls-proxy.sh needs ffmpeg and nginx" >&2; exit 1; }
cargo build --release -q -p shardcast -p shardcast-bench
bench=target/release/shardcast-bench
origin_port=18331; sc_port=18332; cache_port=18333; hp_port=18334; udp_port=15331
work=$(mktemp -d /dev/shm/shardcast-proxy.XXXXXX)
mkdir -p "$work/hls" "$work/origin" "$work/cache" bench/results
out="bench/results/hls-proxy-$(date -u +%Y%m%d-%H%M).jsonl"
pids=()
source bench/scripts/common.sh
trap stop_all EXIT

# The origin: ffmpeg's HLS (2 s segments, 2.6 Mbit/s) of a synthetic stream, served by nginx
# on CPU 1 with an access log of what reaches it.
rate=2600000
taskset -c 1 "$bench" ingest --to "127.0.0.1:$udp_port" --streams 1 --from 127.0.0.1:0 \
  --seconds 100000 --width 480 --height 272 --bitrate "$rate" 2>/dev/null & pids+=($!)
taskset -c 1 ffmpeg -nostdin -v error -i "udp://127.0.0.1:$udp_port?fifo_size=1000000&overrun_nonfatal=1" \
  -c copy -f hls -hls_time 2 -hls_list_size 6 -hls_flags delete_segments+temp_file \
  -hls_segment_filename "$work/hls/seg%d.ts" "$work/hls/index.m3u8" 2>"$work/ffmpeg.log" & pids+=($!)
cat > "$work/origin.conf" <<NGINX
daemon off;
worker_processes 1;
worker_cpu_affinity 10;
worker_rlimit_nofile 40000;
user root;
pid $work/origin.pid;
error_log $work/origin-error.log warn;
events { worker_connections 20000; }
http {
  log_format uri '\$request_uri';
  access_log $work/origin-access.log uri;
  sendfile on;
  keepalive_requests 1000000;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  server { listen 127.0.0.1:$origin_port backlog=8192; root $work; }
}
NGINX
/usr/sbin/nginx -p "$work/origin" -c "$work/origin.conf" & pids+=($!)

# shardcast's proxy.
cat > "$work/shardcast.toml" <<TOML
[server]
listen = "127.0.0.1:$sc_port"
cpus = [0]
io = "${IO:-auto}"
state_dir = "$work/state"
proxy_allow_addresses = ["127.0.0.0/8"]

[[proxy]]
name = "ch"
url = "http://127.0.0.1:$origin_port/hls/index.m3u8"
TOML
taskset -c 0 target/release/shardcast serve --api-listen off --config "$work/shardcast.toml" 2>"$work/shardcast.log" & sc=$!; pids+=($sc)

# nginx with proxy_cache.
cat > "$work/cache.conf" <<NGINX
daemon off;
worker_processes 1;
worker_cpu_affinity 1;
worker_rlimit_nofile 40000;
user root;
pid $work/cache.pid;
error_log $work/cache-error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  client_body_temp_path $work/body;
  proxy_temp_path $work/cache/tmp;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  proxy_cache_path $work/cache/store keys_zone=hls:10m max_size=256m inactive=10m;
  upstream origin { server 127.0.0.1:$origin_port; keepalive 16; }
  server {
    listen 127.0.0.1:$cache_port backlog=8192;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_cache hls;
    proxy_cache_lock on;
    proxy_cache_lock_timeout 5s;
    location ~ \.m3u8\$ { proxy_pass http://origin; proxy_cache_valid 200 1s; }
    location / { proxy_pass http://origin; proxy_cache_valid 200 10m; }
  }
}
NGINX
taskset -c 0 /usr/sbin/nginx -p "$work/cache" -c "$work/cache.conf" & ng=$!; pids+=($ng)

# HLS-Proxy.
hp=""
if [ -z "${SKIP_HLS_PROXY:-}" ]; then
  if npm install --silent --prefix "$work/hlsd" @warren-bank/hls-proxy@3.6.6 >/dev/null 2>&1; then
    taskset -c 0 node "$work/hlsd/node_modules/@warren-bank/hls-proxy/hls-proxy/bin/hlsd.js" \
      --host "127.0.0.1:$hp_port" --port "$hp_port" >"$work/hlsd.log" 2>&1 & hp=$!; pids+=($hp)
  else
    echo "HLS-Proxy could not be installed from npm: left out" >&2
  fi
fi
sleep 14
ng_worker=$(pgrep -P "$ng" | head -n 1)
[ -n "$ng_worker" ] || { echo "nginx has no worker: $(cat "$work/cache-error.log")" >&2; exit 1; }

machine=$(machine_json)
echo "{\"machine\":$machine,\"date\":\"$(date -u +%Y-%m-%dT%H:%MZ)\",\"segment_s\":2,\"bitrate\":$rate}" > "$out"
cat "$out"

id=$(python3 -c "import base64,sys; print(base64.urlsafe_b64encode(sys.argv[1].encode()).decode().rstrip('='))" "http://127.0.0.1:$origin_port/hls/index.m3u8")
# One run, with the origin's requests counted over it.
proxied() {
  local contender=$1; shift
  local before after
  before=$(wc -l < "$work/origin-access.log")
  run_hls "$contender" "$@"
  after=$(wc -l < "$work/origin-access.log")
  tail -n "+$((before + 1))" "$work/origin-access.log" | head -n "$((after - before))" | python3 -c '
import collections, json, sys
uris = collections.Counter(l.strip() for l in sys.stdin)
ts = [n for u, n in uris.items() if u.endswith(".ts")]
print(json.dumps({"origin": {"contender": sys.argv[1], "requests": sum(uris.values()),
  "playlists": sum(n for u, n in uris.items() if u.endswith(".m3u8")),
  "segment_uris": len(ts), "max_per_segment": max(ts, default=0)}}))' "$contender" | tee -a "$out"
}
for n in "${counts[@]}"; do
  for rep in $(seq 1 "$reps"); do
    proxied shardcast "$n" "$rep" hls --url "http://127.0.0.1:$sc_port/proxy/ch.m3u8" --server-pid "$sc"
    proxied nginx-proxy-cache "$n" "$rep" hls --url "http://127.0.0.1:$cache_port/hls/index.m3u8" --server-pid "$ng_worker"
    if [ -n "$hp" ]; then
      proxied hls-proxy "$n" "$rep" hls --url "http://127.0.0.1:$hp_port/$id.m3u8" --server-pid "$hp"
    fi
  done
done
echo "results: $out"
