//! FLV as ffmpeg writes it for RTMP publishing, read at every split and remuxed into MPEG-TS:
//! ffprobe must find the same pictures and audio frames at the same times (one second on), and
//! ffmpeg must decode the TS without a word at `-v error`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::fixture;
use shardcast_protocols::flv::remux::FlvRemuxer;
use shardcast_protocols::flv::{Reader, Tag, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use std::process::Command;

fn tags(chunks: &[&[u8]]) -> Vec<Tag> {
    let mut reader = Reader::default();
    let mut tags = Vec::new();
    for chunk in chunks {
        reader.push(chunk, |t| tags.push(t.unwrap()));
    }
    tags
}

#[test]
fn the_same_tags_at_every_split() {
    let data = fixture("h264_aac.flv");
    let whole = tags(&[&data]);
    let kinds = |k: u8| whole.iter().filter(|t| t.kind == k).count();
    assert_eq!(kinds(TAG_SCRIPT), 1);
    // The sequence header, 50 pictures and the end of sequence; AAC's configuration and
    // its frames.
    assert_eq!(kinds(TAG_VIDEO), 52);
    assert!(
        (85..=90).contains(&kinds(TAG_AUDIO)),
        "{}",
        kinds(TAG_AUDIO)
    );
    let prefix = &data[..8 * 1024];
    let first = tags(&[prefix]);
    for split in 1..prefix.len() {
        let (a, b) = prefix.split_at(split);
        assert!(tags(&[a, b]) == first, "split at {split} differs");
    }
    for size in (1..=400).step_by(7) {
        let chunks: Vec<&[u8]> = data.chunks(size).collect();
        assert!(tags(&chunks) == whole, "chunks of {size} differ");
    }
}

/// `stream`'s packets in `path`: PTS in milliseconds, and whether each is a keyframe.
fn packets(path: &std::path::Path, stream: &str) -> Vec<(i64, bool)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream])
        .args(["-show_entries", "packet=pts_time,flags", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (pts, flags) = l.split_once(',')?;
            let seconds: f64 = pts.parse().ok()?;
            Some(((seconds * 1000.0).round() as i64, flags.starts_with('K')))
        })
        .collect()
}

#[test]
fn remuxed_into_ts_it_probes_and_decodes_as_the_flv_does() {
    let flv = common::fixture_path("h264_aac.flv");
    let mut remuxer = FlvRemuxer::new();
    let mut ts = Vec::new();
    for tag in tags(&[&fixture("h264_aac.flv")]) {
        remuxer
            .push(tag.kind, tag.timestamp_ms, &tag.body, &mut ts)
            .unwrap();
    }
    let stats = remuxer.stats();
    assert_eq!(
        (stats.video_frames, stats.skipped, stats.refused),
        (50, 0, 0)
    );
    let dir = std::env::temp_dir().join(format!("flv-remux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.ts");
    std::fs::write(&out, &ts).unwrap();
    // The same codecs and sizes.
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height,sample_rate,channels",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&out)
        .output()
        .unwrap();
    let probe = String::from_utf8_lossy(&probe.stdout).into_owned();
    assert!(probe.contains("h264,320,180"), "{probe}");
    assert!(probe.contains("aac,44100,2"), "{probe}");
    // Every picture at its time (one second on, as the remuxer places FLV's 0), keyframes
    // where they were; every audio frame likewise.
    for stream in ["v:0", "a:0"] {
        let mut want = packets(&flv, stream);
        let mut got = packets(&out, stream);
        want.sort();
        got.sort();
        let shifted: Vec<(i64, bool)> = got.iter().map(|(t, k)| (t - 1000, *k)).collect();
        if stream == "v:0" {
            assert_eq!(shifted, want, "{stream}");
        } else {
            // ADTS in TS: ffprobe does not mark audio keyframes the same way; times only.
            let times = |v: &[(i64, bool)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
            assert_eq!(times(&shifted), times(&want), "{stream}");
        }
    }
    // ffmpeg decodes it all and says nothing.
    let decode = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&out)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&decode.stderr);
    assert!(
        decode.status.success() && said.trim().is_empty(),
        "ffmpeg said: {said}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
