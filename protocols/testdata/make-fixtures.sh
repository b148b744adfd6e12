#!/usr/bin/env bash
# Makes the transport stream fixtures of the protocols tests with Debian's ffmpeg.
# Deterministic for a given ffmpeg build (single-threaded encoders, fixed sources, bitexact).
# Usage: protocols/testdata/make-fixtures.sh   (writes next to this script)
set -euo pipefail
cd "$(dirname "$0")"
ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }
common=(-fflags +bitexact -flags:v +bitexact -flags:a +bitexact -mpegts_flags +resend_headers)

# H.264 (B-frames, so DTS differs from PTS) + AAC, 720p25, 4 s, keyframe every 2 s.
ff -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 \
   -t 4 -c:v libx264 -preset veryfast -crf 38 -g 50 -bf 2 -threads 1 -pix_fmt yuv420p \
   -c:a aac -b:a 64k "${common[@]}" -f mpegts h264_aac_720p25.ts

# H.265 (open GOP: CRA keyframes) + MPEG-1 layer II audio, 640x360, 4 s.
ff -f lavfi -i testsrc2=size=640x360:rate=25 -f lavfi -i sine=frequency=660:sample_rate=48000 \
   -t 4 -c:v libx265 -preset ultrafast -x265-params keyint=25:min-keyint=25:pools=none:frame-threads=1:log-level=error \
   -crf 38 -c:a mp2 -b:a 128k "${common[@]}" -f mpegts h265_mp2.ts

# A two-program MPTS: program 1 is H.264 + AAC, program 2 is H.264 + AC-3.
ff -f lavfi -i testsrc2=size=320x180:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 \
   -f lavfi -i smptebars=size=320x180:rate=25 -f lavfi -i sine=frequency=880:sample_rate=48000 \
   -t 4 -map 0:v -map 1:a -map 2:v -map 3:a \
   -c:v libx264 -preset veryfast -crf 38 -g 25 -threads 1 -pix_fmt yuv420p \
   -c:a:0 aac -b:a:0 64k -c:a:1 ac3 -b:a:1 96k \
   -program program_num=1:title=one:st=0:st=1 -program program_num=2:title=two:st=2:st=3 \
   "${common[@]}" -f mpegts mpts.ts

# The H.264 fixture with single video packets removed (never a PES start or the three packets
# after one, where the parameter sets and first slice header live); the number of gaps made
# is written beside it.
python3 - <<'PY'
data = open("h264_aac_720p25.ts", "rb").read()
packets = [data[i:i + 188] for i in range(0, len(data), 188)]
out, gaps, since_start, count = [], 0, 99, 0
for p in packets:
    pid = (p[1] & 0x1F) << 8 | p[2]
    if pid == 0x100:
        since_start = 0 if p[1] & 0x40 else since_start + 1
        count += 1
        if since_start > 3 and count % 97 == 0:
            gaps += 1
            continue
    out.append(p)
open("damaged.ts", "wb").write(b"".join(out))
open("damaged.gaps", "w").write(f"{gaps}\n")
PY
ls -l ./*.ts damaged.gaps

# FLV as RTMP publishers send it: H.264 with B-frames (composition times) + AAC, 320x180, 2 s.
ff -f lavfi -i testsrc2=size=320x180:rate=25 -f lavfi -i sine=frequency=440:sample_rate=44100 \
   -t 2 -c:v libx264 -preset veryfast -crf 38 -g 25 -bf 2 -threads 1 -pix_fmt yuv420p \
   -c:a aac -b:a 64k -ac 2 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact -f flv h264_aac.flv
