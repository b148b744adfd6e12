#!/usr/bin/env bash
# Install shardcast on this Debian host in one command: build the package, install it with
# apt (which brings its dependencies), and say what to do next.
set -euo pipefail
cd "$(dirname "$0")/.."
deb="$(packaging/build-deb.sh | tail -n 1)"
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
as_root apt-get install -y "./$deb"
cat <<NEXT

shardcast is installed and enabled (systemctl status shardcast).
  configuration:  /etc/shardcast/shardcast.toml (then: systemctl reload shardcast)
  tuning:         shardcast tune check; sudo shardcast tune apply --profile general
  planning:       shardcast capacity --viewers 5000 --bitrate 4M
  watch the demo: http://$(hostname -f 2>/dev/null || hostname):8080/demo/index.m3u8
NEXT
