#!/usr/bin/env bash
# Build the shardcast Debian package: target/debian/shardcast_VERSION_ARCH.deb.
#
# It holds the binary (/usr/bin/shardcast), the systemd unit, the sysusers entry that creates
# the `shardcast` user, a commented default configuration (/etc/shardcast/shardcast.toml, a
# conffile: upgrades keep local edits), the tuning profiles (/usr/share/shardcast/tuning/) and
# the README. Built with dpkg-deb from Debian's dpkg; no other tool is needed.
#
# Environment: SHARDCAST_BINARY packs that binary instead of building a release one (tests
# use their debug build); DEB_COMPRESSION picks dpkg-deb's compressor (default xz).
set -euo pipefail
cd "$(dirname "$0")/.."

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
arch="$(dpkg --print-architecture)"
binary="${SHARDCAST_BINARY:-}"
if [ -z "$binary" ]; then
  cargo build --release --locked -p shardcast
  binary=target/release/shardcast
fi

stage="target/debian/stage"
rm -rf "$stage"
install -D -m 0755 "$binary" "$stage/usr/bin/shardcast"
install -D -m 0644 systemd/shardcast.service "$stage/lib/systemd/system/shardcast.service"
install -D -m 0644 packaging/sysusers.conf "$stage/usr/lib/sysusers.d/shardcast.conf"
install -D -m 0640 packaging/shardcast.toml "$stage/etc/shardcast/shardcast.toml"
for profile in tuning/*.conf; do
  install -D -m 0644 "$profile" "$stage/usr/share/shardcast/tuning/$(basename "$profile")"
done
install -D -m 0644 README.md "$stage/usr/share/doc/shardcast/README.md"
printf 'shardcast\nLicense: Apache-2.0\n\nThe player page serves hls.js (https://github.com/video-dev/hls.js),\nbuilt into the binary from the npm registry.\nLicense: Apache-2.0\n' \
  > "$stage/usr/share/doc/shardcast/copyright"

mkdir -p "$stage/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$stage/DEBIAN/"
echo /etc/shardcast/shardcast.toml > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: shardcast
Version: $version
Architecture: $arch
Maintainer: shardcast developers <shardcast@example.invalid>
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: libc6 (>= 2.36), systemd (>= 247)
Recommends: ethtool
Suggests: ffmpeg
Section: video
Priority: optional
Description: live MPEG-TS to HLS and HTTP-TS media server
 shardcast takes live MPEG-TS in (UDP multicast or unicast) and serves it to
 thousands of viewers per core as HLS and progressive HTTP-TS, on a
 thread-per-core io_uring engine. It runs as the shardcast systemd service
 (Type=notify, watchdog) and ships kernel tuning profiles
 (shardcast tune check|apply) and a capacity planner (shardcast capacity).
CONTROL

out="target/debian/shardcast_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-xz}" --build "$stage" "$out" >/dev/null
echo "$out"
