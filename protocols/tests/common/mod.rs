//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use shardcast_protocols::ts::{
    DemuxConfig, DemuxEvent, Demuxer, SegmentInfo, Segmenter, SegmenterConfig, SegmenterEvent,
    PACKET_SIZE,
};
use std::path::PathBuf;

pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// Every event of a demux run as text, plus the final counters, for exact comparisons.
pub fn demux_log(chunks: &[&[u8]], config: DemuxConfig) -> Vec<String> {
    let mut d = Demuxer::new(config);
    let mut log = Vec::new();
    for c in chunks {
        d.push(c, |e| log.push(format!("{e:?}")));
    }
    log.push(format!("{:?}", d.stats()));
    log.extend(d.streams().map(|s| format!("{s:?}")));
    log
}

/// A segmenter run: the output bytes of each segment and the sealed segment records.
pub struct Segmented {
    pub segments: Vec<Vec<u8>>,
    pub infos: Vec<SegmentInfo>,
}

pub fn segment(data: &[u8], config: SegmenterConfig, chunk: usize) -> Segmented {
    let mut s = Segmenter::new(config);
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut infos = Vec::new();
    let mut out = |e: SegmenterEvent<'_>| match e {
        SegmenterEvent::SegmentStart { .. } => segments.push(Vec::new()),
        SegmenterEvent::Packet(p) => segments
            .last_mut()
            .expect("packet before a segment")
            .extend_from_slice(p),
        SegmenterEvent::SegmentEnd(info) => infos.push(info),
        _ => {}
    };
    let mut sync = shardcast_protocols::ts::PacketSync::new();
    for c in data.chunks(chunk) {
        sync.push(c, |p| s.push_packet(p, &mut out));
    }
    s.finish(&mut out);
    Segmented { segments, infos }
}

/// Continuity of raw packets, independent of the library: (pid, packet index) of each break.
pub fn continuity_breaks(data: &[u8]) -> Vec<(u16, usize)> {
    let mut last: Vec<Option<u8>> = vec![None; 0x2000];
    let mut breaks = Vec::new();
    for (i, p) in data.chunks_exact(PACKET_SIZE).enumerate() {
        let pid = u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]);
        if pid == 0x1FFF {
            continue;
        }
        let has_payload = p[3] & 0x10 != 0;
        let cc = p[3] & 0x0F;
        if let Some(prev) = last[usize::from(pid)] {
            let expected = if has_payload { (prev + 1) & 0x0F } else { prev };
            if cc != expected {
                breaks.push((pid, i));
            }
        }
        last[usize::from(pid)] = Some(cc);
    }
    breaks
}

/// Check what every HLS segment must be: PAT first, PMT second, the first picture a keyframe.
/// Returns the PTS of each segment's first picture.
pub fn check_segment_starts(segments: &[Vec<u8>]) -> Vec<u64> {
    let mut starts = Vec::new();
    for (n, seg) in segments.iter().enumerate() {
        assert!(seg.len() >= 3 * PACKET_SIZE, "segment {n} is too short");
        assert_eq!(seg.len() % PACKET_SIZE, 0);
        let pid = |i: usize| {
            u16::from(seg[i * PACKET_SIZE + 1] & 0x1F) << 8 | u16::from(seg[i * PACKET_SIZE + 2])
        };
        assert_eq!(pid(0), 0, "segment {n} does not start with the PAT");
        assert_eq!(seg[5], 0x00, "segment {n}: first section is not a PAT");
        assert_eq!(
            seg[PACKET_SIZE + 5],
            0x02,
            "segment {n}: second packet is not a PMT"
        );
        let mut d = Demuxer::new(DemuxConfig::default());
        let mut first = None;
        let mut tables = 0;
        d.push(seg, |e| match e {
            DemuxEvent::Pat(_) | DemuxEvent::Pmt(_) => tables += 1,
            DemuxEvent::Picture { keyframe, pts, .. } if first.is_none() => {
                first = Some((keyframe, pts))
            }
            _ => {}
        });
        assert_eq!(
            tables, 2,
            "segment {n}: PAT and PMT must parse on their own"
        );
        let (keyframe, pts) = first.unwrap_or_else(|| panic!("segment {n} has no picture"));
        assert!(keyframe, "segment {n} does not start with a keyframe");
        starts.push(pts.expect("keyframe PES without PTS").ticks());
    }
    starts
}
