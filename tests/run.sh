#!/usr/bin/env bash
# The one command that runs every test of shardcast (README: "Test").
#
# On a fresh Debian machine it first installs what the tests need and is missing: ffmpeg
# (ffprobe is the reference the demuxer is checked against; ffmpeg decodes what we write),
# nginx (a caching proxy in front of shardcast), systemd and procps (the appliance tests),
# npm and chromium (hls.js for the player page, and the browser tests), prometheus (promtool),
# apache2 and lighttpd (reverse-proxy snippets), and cargo-fuzz. Then: formatting, clippy, the
# bounded fuzz run of every parser and of the shard's request path, the fast tier, and the
# end-to-end tests on both I/O backends (those light on CPU beside the browser tests, which
# mostly wait on real-time playback; the heavy ones after, alone).
#
# Environment: FUZZ_SECONDS (per target, default 10; 0 skips fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

step "dependencies"
missing=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
# srt-live-transmit: the SRT tests' second peer beside ffmpeg (both on Debian's libsrt 1.5,
# which the server opens for SRT sources).
command -v srt-live-transmit >/dev/null 2>&1 || missing+=(srt-tools)
[ -x /usr/bin/python3 ] || missing+=(python3)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# curl: the TLS tests' https client; certutil: the test CA trusted in the browser's profile.
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v certutil >/dev/null 2>&1 || missing+=(libnss3-tools)
# Debian's nginx: the caching reverse proxy in front of shardcast, and the peer in benchmarks.
[ -x /usr/sbin/nginx ] || missing+=(nginx)
# libseccomp's Python binding: a test takes io_uring away the way a container profile does.
/usr/bin/python3 -c 'import seccomp' >/dev/null 2>&1 || missing+=(python3-seccomp)
# The appliance tests: systemd-analyze and systemd-sysusers verify and install the unit into a
# root of their own; sysctl is what `tune check` is compared with.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v sysctl >/dev/null 2>&1 || missing+=(procps)
# The player page: npm fetches hls.js for the build and playwright-core for the browser tests,
# which drive Debian's Chromium.
command -v npm >/dev/null 2>&1 || missing+=(npm)
# promtool, Prometheus's own parser, reads /metrics in the control-plane tests.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# Apache and lighttpd: the reverse-proxy snippets of README are tested with each.
[ -x /usr/sbin/apache2 ] || missing+=(apache2)
[ -x /usr/sbin/lighttpd ] || missing+=(lighttpd)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# GStreamer (its adaptive demuxers and libav's decoders) plays the fMP4 HLS and the DASH.
command -v gst-launch-1.0 >/dev/null 2>&1 || missing+=(gstreamer1.0-tools)
gst-inspect-1.0 dashdemux2 >/dev/null 2>&1 || missing+=(gstreamer1.0-plugins-good)
gst-inspect-1.0 avdec_h264 >/dev/null 2>&1 || missing+=(gstreamer1.0-libav)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing from Debian: ${missing[*]}"
  as_root apt-get update -qq
  # Packages must not start services (nginx would take port 80): tests start their own.
  policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  [ "$policy_added" -eq 0 ] || as_root rm -f /usr/sbin/policy-rc.d
fi
ffmpeg -version | head -n 1
chromium --version 2>/dev/null | head -n 1
[ -d tests/browser/node_modules/playwright-core ] && [ -d tests/browser/node_modules/mp4box ] || \
  npm ci --prefix tests/browser --ignore-scripts --no-audit --no-fund

fuzz_seconds="${FUZZ_SECONDS:-10}"
fuzz_toolchain=()
if [ "$fuzz_seconds" != 0 ]; then
  command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
  # libFuzzer needs nightly compiler flags: use a nightly toolchain when there is one,
  # otherwise let the stable compiler accept them.
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz_toolchain=(+nightly)
  else
    export RUSTC_BOOTSTRAP=1
  fi
fi

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "no import cycles between modules"
for crate in engine protocols bench; do python3 tests/module-cycles.py "$crate/src" 2; done

# The bounded fuzz run (FUZZ_SECONDS per target): the parsers of the protocols crate
# (and what remuxing into fMP4 and from FLV reads), and the shard's whole request path (HTTP
# heads, routing, the access gate, pipelining bounds) in the engine.
fuzz() {
  corpus=$PWD/target/fuzz-corpus
  mkdir -p "$corpus/ts_demux" "$corpus/playlist_parse" "$corpus/http_request" "$corpus/rtp_unwrap" \
    "$corpus/fmp4_remux" "$corpus/flv_remux"
  for f in protocols/testdata/*.ts; do
    head -c 20000 "$f" > "$corpus/ts_demux/$(basename "$f")"
    head -c 20000 "$f" > "$corpus/fmp4_remux/$(basename "$f")"
  done
  cp protocols/fuzz/seeds/playlist_parse/* "$corpus/playlist_parse/"
  head -c 20000 protocols/testdata/h264_aac.flv | tail -c +14 > "$corpus/flv_remux/h264_aac"
  cp engine/fuzz/seeds/http_request/* "$corpus/http_request/"
  for spec in protocols:ts_demux protocols:playlist_parse protocols:rtp_unwrap protocols:fmp4_remux \
      protocols:flv_remux \
      engine:http_request; do
    crate=${spec%%:*}
    target=${spec#*:}
    log="$PWD/target/fuzz-$target.log"
    # No sanitizer: the fuzzed code is safe Rust (the protocols crate forbids unsafe, and the
    # request path reaches none), where AddressSanitizer finds nothing Rust's own checks do
    # not, and its build costs this step a minute and a half (tests/asan.sh runs the server
    # itself under it).
    if ! (cd "$crate" && cargo "${fuzz_toolchain[@]}" fuzz run -s none "$target" "$corpus/$target" -- \
        -max_total_time="$fuzz_seconds" -max_len=65536 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1); then
      tail -n 60 "$log"
      echo "fuzz target $target failed; the crashing input is under $crate/fuzz/artifacts/$target/"
      return 1
    fi
    echo "$target: $(grep -E '^stat::number_of_executed_units' "$log" | tr -s ' ') runs, corpus $(ls "$corpus/$target" | wc -l) inputs"
  done
}

if [ "$fuzz_seconds" != 0 ]; then
  step "fuzz (${fuzz_seconds}s per target)"
  fuzz
fi

step "fast tier: unit and crate tests (no server process, no root, no peers)"
cargo test --workspace --locked

e2e=(cargo test -p shardcast-e2e --features e2e --locked)
# What the epoll pass leaves out. The browser, package, tuning, capacity and check-config
# tests, the thousand killed config writes, the API, metrics and trigger tests, and the sources whose I/O is the sources'
# runtime's (processes, pulls, a TCP connect, readyz, failover), the API over TLS and a
# certificate refused at start exercise no I/O backend of their own: they run once, above. The
# upgrade under load runs once too; on epoll the failed upgrades and the one after them run.
# Pushes (handed over by the shard) and TCP listening run twice, and so does the low-latency
# HLS conformance run (held requests are released through the backend), not its 300 players;
# the CMAF and DASH renditions (documents like any other, made at ingest) run once.
# The HLS proxy's thousand players and a stream pulled through it (the sources' runtime) run
# once too, and so do the pushes out and recordings (threads and tasks of their own, fed by the
# shard's core whichever backend drives it); a recording played back runs twice (its requests
# are held and released through the backend).
epoll_skips=(
  --skip browser_
  --skip the_package_
  --skip tune_
  --skip capacity_
  --skip check_config_
  --skip a_daemon_killed_
  --skip the_api_needs_its_token
  --skip metrics_parse_with_promtool
  --skip triggers_fire_
  --skip default_stream_and_play_rewrite
  --skip an_encoder_process
  --skip deleting_an_exec_
  --skip two_edges_pull_
  --skip an_origin_answering_404
  --skip a_pull_starts_again
  --skip the_server_connects_to_a_tcp
  --skip an_hls_stream_served_by_nginx
  --skip readyz_
  --skip a_dead_multicast_primary_hands_over
  --skip the_api_is_served_over_tls
  --skip an_expired_certificate_
  --skip an_upgrade_under_
  --skip a_pulled_source_is_pulled_again
  --skip three_hundred_players_held
  --skip hls_in_fmp4_
  --skip a_live_dash_
  --skip gstreamer_
  --skip a_thousand_players_through_the_proxy
  --skip a_stream_pulled_from_a_configured_proxy
  --skip srt_recovers_what_a_lossy_path_loses
  --skip the_server_calls_encoders_that_listen
  --skip a_stream_is_re_emitted_to_multicast
  --skip pushes_reach_a_second_server
  --skip a_far_end_that_takes_nothing
  --skip a_stream_is_published_over_rtmp
  --skip a_recording_is_cut_at_keyframes
  --skip a_full_disk_stops_the_recording
  --skip a_minute_is_recorded_whole
)
# Test binaries light on CPU (their tests mostly wait on real-time media and small servers):
# they run, with both backends, beside the browser tests (a third of the end-to-end time,
# one browser at a time, playing in real time); the rest run after, alone. A new test file
# is heavy unless listed here.
light=(access appliance cmaf control failover impaired inspect notify proxy_cache reverse_proxy
  rtmp sessions sources stream_edits tls triggers)
mapfile -t all < <(awk '/^\[\[test\]\]/ { t = 1 } t && /^name = / { gsub(/"/, "", $3); print $3; t = 0 }' \
  tests/e2e/Cargo.toml)
heavy=()
for t in "${all[@]}"; do
  [[ " ${light[*]} player " == *" $t "* ]] || heavy+=("$t")
done
tests_of() { for t in "$@"; do printf -- '--test %s ' "$t"; done; }
# Background work (and what it started) is stopped if a step fails.
background=()
kill_tree() {
  local child
  for child in $(pgrep -P "$1"); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}
trap 'for pid in "${background[@]}"; do kill_tree "$pid"; done' EXIT

step "end-to-end tests: building them"
"${e2e[@]}" --no-run

step "end-to-end tests: the browser tests, beside the light tests (io backend: auto, then epoll forced)"
browser_log=$PWD/target/e2e-browser.log
"${e2e[@]}" --test player >"$browser_log" 2>&1 &
browser=$!
background+=("$browser")
# shellcheck disable=SC2046 # one word per --test and binary
"${e2e[@]}" $(tests_of "${light[@]}")
# shellcheck disable=SC2046
SHARDCAST_TEST_IO=epoll "${e2e[@]}" $(tests_of "${light[@]}") -- "${epoll_skips[@]}"
browser_ok=0
wait "$browser" || browser_ok=$?
cat "$browser_log"
[ "$browser_ok" -eq 0 ] || { echo "the browser tests failed"; exit 1; }

step "end-to-end tests: the rest (io backend: auto)"
# shellcheck disable=SC2046
"${e2e[@]}" $(tests_of "${heavy[@]}")

step "end-to-end tests: the rest again, epoll forced"
# shellcheck disable=SC2046
SHARDCAST_TEST_IO=epoll "${e2e[@]}" $(tests_of "${heavy[@]}") -- "${epoll_skips[@]}"
