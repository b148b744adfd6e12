//! Arbitrary bytes through packet sync, the demuxer and the segmenter: nothing may panic, and
//! the demuxer must see the same thing whether the input comes whole or split in two.
#![no_main]

use libfuzzer_sys::fuzz_target;
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
});
