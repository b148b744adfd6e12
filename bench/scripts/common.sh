# Shared by the benchmark scripts (sourced): stopping what a run started, and Debian's nginx
# configured as the HLS peer.

# Stop every process in the array `pids` (SIGTERM, then SIGKILL a second later: ffmpeg waiting
# on a silent UDP input does not act on SIGTERM until a packet comes), then remove `$work`.
# Scripts install it with `trap stop_all EXIT`.
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # A tmpfs a script mounted inside its directory (compare.sh's NGINX_TMPFS_HUGE).
  awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/mounts | xargs -r umount
  rm -rf "$work"
}

# The kernel's shmem_enabled (the folio sizes of memfds, so of shardcast's segments): the word
# it lists in brackets, or nothing without transparent huge pages.
thp=/sys/kernel/mm/transparent_hugepage/shmem_enabled
shmem_now() { sed 's/.*\[\(.*\)\].*/\1/' "$thp" 2>/dev/null || true; }

# Print an nginx configuration serving `$work` (ffmpeg's HLS under hls/, static files) with one
# worker on CPU 0, sendfile, keep-alive, and no access log; $1 is the listen directives (and
# any other server-level lines), $2 any other http-level lines (TLS certificates).
nginx_conf() {
  cat <<NGINX
daemon off;
worker_processes 1;
worker_cpu_affinity 1;
worker_rlimit_nofile 40000;
user root;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  ${2:-}
  server {
    $1
    root $work;
    location ~ \.m3u8\$ { add_header Cache-Control "max-age=1"; }
  }
}
NGINX
}

# Print this machine as JSON: cores, CPU model, kernel.
machine_json() {
  python3 - <<'PY'
import json, os, platform
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(json.dumps({"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release()}))
PY
}

# Run one HLS load on CPU 1 and append its JSON line (or its error) to `$out`:
#   run_hls CONTENDER N REP BENCH-ARGS...
# Uses `$bench`, `$seconds` and `$work` of the calling script.
run_hls() {
  local contender=$1 n=$2 rep=$3; shift 3
  local ramp=$(( n >= 5000 ? 10 : 4 ))
  local line
  if line=$(taskset -c 1 "$bench" "$@" --viewers "$n" --ramp "$ramp" --settle 4 --seconds "$seconds" --json 2>"$work/bench.err"); then
    echo "{\"protocol\":\"hls\",\"contender\":\"$contender\",\"n\":$n,\"rep\":$rep,\"run\":$line}" | tee -a "$out"
  else
    echo "{\"protocol\":\"hls\",\"contender\":\"$contender\",\"n\":$n,\"rep\":$rep,\"error\":$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read().strip()))' "$work/bench.err")}" | tee -a "$out"
  fi
  sleep 2
}
