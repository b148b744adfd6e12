//! Arbitrary bytes through the FLV path RTMP ingest takes: as an FLV byte stream (a header
//! stamped on, so the tags are reached) through the reader, cut where the first byte says;
//! then as RTMP messages (a kind, a stamp, a body: lengths from the bytes) through the tag
//! parsers and the remuxer into MPEG-TS. Nothing may panic; the TS written is whole packets
//! that the crate's own demuxer reads without a continuity gap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast_protocols::flv::remux::FlvRemuxer;
use shardcast_protocols::flv::{Reader, TAG_AUDIO, TAG_VIDEO};
use shardcast_protocols::ts::{DemuxConfig, Demuxer, PACKET_SIZE};

fuzz_target!(|data: &[u8]| {
    let mut flv = b"FLV\x01\x05\0\0\0\x09\0\0\0\0".to_vec();
    flv.extend_from_slice(data);
    let cut = usize::from(data.first().copied().unwrap_or(0)).min(flv.len());
    let mut reader = Reader::new(64 * 1024);
    let mut remuxer = FlvRemuxer::new();
    let mut ts = Vec::new();
    for part in [&flv[..cut], &flv[cut..]] {
        reader.push(part, |tag| {
            if let Ok(tag) = tag {
                let _ = remuxer.push(tag.kind, tag.timestamp_ms, &tag.body, &mut ts);
            }
        });
    }
    assert!(reader.buffered() <= 11 + 64 * 1024 + 4);
    // Messages: [kind bit, stamp (2 bytes), length] then the body.
    let mut rest = data;
    while let [head, s0, s1, len, tail @ ..] = rest {
        let kind = if head & 1 == 0 { TAG_VIDEO } else { TAG_AUDIO };
        let (body, next) = tail.split_at(usize::from(*len).min(tail.len()));
        let stamp = u32::from(*s0) << 24 | u32::from(*s1) << 4;
        let _ = remuxer.push(kind, stamp, body, &mut ts);
        if head & 0x80 != 0 {
            remuxer.reset();
        }
        rest = next;
    }
    assert_eq!(ts.len() % PACKET_SIZE, 0);
    let stats = remuxer.stats();
    let mut demux = Demuxer::new(DemuxConfig::default());
    demux.push(&ts, |_| {});
    // A reset starts the counters again (a new publisher): gaps only then.
    if data.iter().all(|b| b & 0x80 == 0) {
        assert_eq!(demux.stats().continuity_gaps, 0, "{stats:?}");
    }
});
