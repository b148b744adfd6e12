//! The demuxer against ffprobe on the fixtures made by `testdata/make-fixtures.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::{demux_log, fixture, fixture_path};
use shardcast_protocols::ts::{DemuxConfig, Demuxer};
use std::collections::BTreeMap;
use std::process::Command;

/// Run ffprobe and return its `key=value` lines.
fn ffprobe(args: &[&str], file: &str) -> Vec<(String, String)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .args(["-of", "default=nw=1"])
        .arg(fixture_path(file))
        .output()
        .expect("ffprobe must be installed (the test command installs ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// Per PID: (frames, keyframes) as ffprobe counts them (keyframes only for video).
fn ffprobe_counts(file: &str) -> BTreeMap<u16, (u64, u64)> {
    let mut index_to_pid = BTreeMap::new();
    let mut counts = BTreeMap::new();
    let mut index = 0;
    let mut pid = 0;
    for (k, v) in ffprobe(
        &[
            "-count_frames",
            "-show_entries",
            "stream=index,id,nb_read_frames",
        ],
        file,
    ) {
        match k.as_str() {
            "index" => index = v.parse::<u64>().unwrap(),
            "id" => pid = u16::from_str_radix(v.trim_start_matches("0x"), 16).unwrap(),
            "nb_read_frames" => {
                index_to_pid.insert(index, pid);
                counts.insert(pid, (v.parse().unwrap(), 0));
            }
            _ => {}
        }
    }
    let mut stream = 0;
    for (k, v) in ffprobe(
        &[
            "-select_streams",
            "v",
            "-show_entries",
            "frame=stream_index,key_frame",
        ],
        file,
    ) {
        match k.as_str() {
            "stream_index" => stream = v.parse().unwrap(),
            "key_frame" if v == "1" => counts.get_mut(&index_to_pid[&stream]).unwrap().1 += 1,
            _ => {}
        }
    }
    counts
}

fn demuxer_counts(file: &str) -> (BTreeMap<u16, (u64, u64)>, Demuxer) {
    let data = fixture(file);
    let mut d = Demuxer::new(DemuxConfig::default());
    for datagram in data.chunks(1316) {
        d.push(datagram, |_| {});
    }
    let counts = d
        .streams()
        .map(|s| {
            (
                s.pid.value(),
                (
                    s.frames,
                    if s.codec.kind() == shardcast_protocols::ts::StreamKind::Video {
                        s.keyframes
                    } else {
                        0
                    },
                ),
            )
        })
        .collect();
    (counts, d)
}

fn assert_matches_ffprobe(file: &str) -> Demuxer {
    let expected = ffprobe_counts(file);
    let (got, d) = demuxer_counts(file);
    assert_eq!(
        got, expected,
        "{file}: demuxer (left) against ffprobe (right), per PID: (frames, keyframes)"
    );
    assert!(expected.values().all(|(frames, _)| *frames > 0));
    d
}

#[test]
fn h264_aac_matches_ffprobe() {
    let d = assert_matches_ffprobe("h264_aac_720p25.ts");
    assert_eq!(d.stats().continuity_gaps, 0);
}

#[test]
fn h265_mpeg_audio_matches_ffprobe() {
    let d = assert_matches_ffprobe("h265_mp2.ts");
    assert_eq!(d.stats().continuity_gaps, 0);
}

#[test]
fn mpts_matches_ffprobe_and_selects_a_program() {
    let d = assert_matches_ffprobe("mpts.ts");
    assert_eq!(d.pat().map(|p| p.programs.len()), Some(2));
    let data = fixture("mpts.ts");
    let mut only_two = Demuxer::new(DemuxConfig { program: Some(2) });
    only_two.push(&data, |_| {});
    let pids: Vec<_> = only_two
        .streams()
        .map(|s| (s.program_number, s.pid.value()))
        .collect();
    assert_eq!(pids, vec![(2, 0x102), (2, 0x103)]);
}

#[test]
fn damaged_stream_counts_every_gap() {
    let d = assert_matches_ffprobe("damaged.ts");
    let gaps: u64 = std::fs::read_to_string(fixture_path("damaged.gaps"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(gaps > 0);
    assert_eq!(d.stats().continuity_gaps, gaps);
}

#[test]
fn same_events_at_every_split() {
    for file in ["h264_aac_720p25.ts", "h265_mp2.ts", "mpts.ts", "damaged.ts"] {
        let data = fixture(file);
        // Every split point of a prefix holding the tables and the first keyframe...
        let prefix = &data[..12 * 1024];
        let whole = demux_log(&[prefix], DemuxConfig::default());
        assert!(
            whole.iter().any(|e| e.contains("keyframe: true")),
            "{file}: prefix lacks a keyframe"
        );
        for split in 1..prefix.len() {
            let (a, b) = prefix.split_at(split);
            assert!(
                demux_log(&[a, b], DemuxConfig::default()) == whole,
                "{file}: split at {split} differs"
            );
        }
        // ...and the whole file fed in chunks of every size from 1 to 400 bytes.
        let whole = demux_log(&[&data], DemuxConfig::default());
        for size in (1..=400).step_by(7) {
            let chunks: Vec<&[u8]> = data.chunks(size).collect();
            assert!(
                demux_log(&chunks, DemuxConfig::default()) == whole,
                "{file}: chunks of {size} differ"
            );
        }
    }
}

/// The playlist facts (RFC 6381 codec strings, picture size) match ffprobe's reading.
#[test]
fn probed_tracks_match_ffprobe() {
    use shardcast_protocols::ts::probe::probe_tracks;
    for (file, video_prefix, audio) in [
        ("h264_aac_720p25.ts", "avc1.64", "mp4a.40.2"),
        ("h265_mp2.ts", "hvc1.1.6.L", "mp4a.6B"),
        ("mpts.ts", "avc1.64", "mp4a.40.2"),
    ] {
        let data = fixture(file);
        let tracks = probe_tracks(&data[..data.len().min(2 << 20) / 188 * 188]);
        let video = tracks.video.unwrap_or_else(|| panic!("{file}: no video"));
        let facts = ffprobe(
            &[
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=width,height,level",
            ],
            file,
        );
        let fact = |k: &str| {
            facts
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.parse::<u32>().unwrap())
                .unwrap()
        };
        assert_eq!(
            (video.width, video.height),
            (fact("width"), fact("height")),
            "{file}"
        );
        assert!(
            video.codec.starts_with(video_prefix),
            "{file}: {}",
            video.codec
        );
        // The level is the last field for H.264 (hex) and follows the tier for H.265.
        let level = fact("level");
        if video_prefix.starts_with("avc1") {
            assert!(
                video.codec.ends_with(&format!("{level:02x}")),
                "{file}: {}",
                video.codec
            );
        } else {
            assert!(
                video.codec.contains(&format!(".L{level}")),
                "{file}: {}",
                video.codec
            );
        }
        assert_eq!(tracks.audio.as_deref(), Some(audio), "{file}");
    }
}
