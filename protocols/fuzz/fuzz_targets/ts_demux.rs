//! Arbitrary bytes through packet sync, the demuxer, the segmenter, the pacer, a recording's
//! index and the FLV muxer: nothing may panic, the demuxer must see the same thing whether the
//! input comes whole or split in two, the pacer hands out every packet it keeps, within its
//! bound, a recording's segments cover the file in order and its index reads back as written,
//! and every FLV tag is a video or audio tag of the codecs it writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast_protocols::flv::mux::TsToFlv;
use shardcast_protocols::flv::{TAG_AUDIO, TAG_VIDEO};
use shardcast_protocols::ts::index::{scan, Index};
use shardcast_protocols::ts::pacer::{Pacer, PacerConfig};
use shardcast_protocols::ts::{
    DemuxConfig, DemuxEvent, DemuxStats, Demuxer, PacketSync, Segmenter, SegmenterConfig,
    StreamStats,
};

fn kind(e: &DemuxEvent<'_>) -> u8 {
    match e {
        DemuxEvent::Pat(_) => 0,
        DemuxEvent::Pmt(_) => 1,
        DemuxEvent::PesStart { .. } => 2,
        DemuxEvent::Picture { keyframe, .. } => 3 + u8::from(*keyframe),
        DemuxEvent::AudioFrame { .. } => 5,
        DemuxEvent::Pcr { .. } => 6,
        DemuxEvent::Continuity { .. } => 7,
        DemuxEvent::Error { .. } => 8,
        _ => 9,
    }
}

fn run(chunks: &[&[u8]]) -> (Vec<u8>, DemuxStats, Vec<StreamStats>) {
    let mut d = Demuxer::new(DemuxConfig::default());
    let mut events = Vec::new();
    for c in chunks {
        d.push(c, |e| events.push(kind(&e)));
    }
    (events, d.stats(), d.streams().copied().collect())
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let at = usize::from(split) * data.len() / 256;
    let whole = run(&[data]);
    let (a, b) = data.split_at(at);
    assert_eq!(whole, run(&[a, b]), "split at {at} changed the result");

    let mut segmenter = Segmenter::new(SegmenterConfig {
        target_duration: 9000,
        psi_at_keyframes: split & 1 == 1,
        // Low-latency cuts too: parts, and segments sealed without a keyframe when overdue.
        part_target: (split & 2 == 2).then_some(1800),
        max_duration: (split & 4 == 4).then_some(13_499),
        ..SegmenterConfig::default()
    });
    let mut sync = PacketSync::new();
    let mut events = 0u64;
    for c in data.chunks(usize::from(split).max(1)) {
        sync.push(c, |p| segmenter.push_packet(p, &mut |_| events += 1));
    }
    segmenter.finish(&mut |_| events += 1);

    // The pacer, fed what packet sync finds, arriving 1 ms apart per read.
    let mut pacer = Pacer::new(PacerConfig {
        delay_ns: 1_000_000 * u64::from(split),
        max_packets: 64,
    });
    let mut sync = PacketSync::new();
    let mut now = 0u64;
    let mut out = 0u64;
    for c in data.chunks(usize::from(split).max(1)) {
        now += 1_000_000;
        sync.push(c, |p| pacer.push(p, now));
        assert!(pacer.held() <= 64);
        while let Some(d) = pacer.poll(now) {
            assert!(d.due_ns <= now);
            out += d.packets as u64;
        }
    }
    now += 60_000_000_000;
    while let Some(d) = pacer.poll(now) {
        out += d.packets as u64;
    }
    let stats = pacer.stats();
    assert_eq!(out + stats.skipped + stats.overflowed, stats.packets_in);

    // A recording of these bytes: its index, its segments.
    let index = scan(data, data.len() as u64).unwrap();
    assert_eq!(Index::parse(&index.to_text()), Ok(index.clone()));
    let segments = index.segments(u64::from(split) * 40);
    let mut at = 0;
    for s in &segments {
        assert_eq!(s.range.start, at);
        assert!(s.range.end > s.range.start);
        at = s.range.end;
    }
    assert_eq!(at, data.len() as u64);
    let listed: u64 = segments.iter().map(|s| s.duration_ms).sum();
    assert!(listed <= index.media_ms);

    // Published over RTMP: FLV tags.
    let mut mux = TsToFlv::new();
    let mut sync = PacketSync::new();
    let mut check = |t: shardcast_protocols::flv::mux::FlvTag| match t.kind {
        TAG_VIDEO => assert!(matches!(t.body[0], 0x17 | 0x27) && t.body.len() >= 5),
        TAG_AUDIO => assert!(t.body[0] == 0xAF && t.body.len() >= 2),
        _ => panic!("tag type {}", t.kind),
    };
    for c in data.chunks(usize::from(split).max(1)) {
        sync.push(c, |p| mux.push(p, &mut check));
    }
    mux.finish(&mut check);
});
