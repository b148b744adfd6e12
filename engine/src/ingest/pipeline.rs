//! Bytes of a source to chunks and HLS segments: packet sync, the segmenter (program
//! selection, PAT+PMT in front of every keyframe, counters kept continuous), chunk boundaries
//! at access points, and the segments' bytes to the stream's [`Packager`].

use crate::hls::Packager;
use crate::stream::{Chunk, RateWindow, StreamCounters};
use bytes::BytesMut;
use shardcast_protocols::ts::pes::CLOCK_90KHZ;
use shardcast_protocols::ts::{
    PacketSync, Segmenter, SegmenterConfig, SegmenterEvent, SegmenterStats, PACKET_SIZE,
};
use std::sync::Arc;

/// Bytes reserved at a time for chunk data; chunks are split off it without copying.
const BLOCK: usize = 256 * 1024;
/// Used blocks kept to be taken up again once their chunks are gone: a block every second or
/// so per stream, fresh from the allocator each time, was a page fault (and a page zeroed) per
/// 4 KiB of every stream received. A stream's view holds `window` of chunks (10 s by default,
/// 12 blocks at 2.5 Mbit/s), within `max_buffer`; past this many the oldest handle is let go
/// (its block is freed when its chunks are).
const SPARE_BLOCKS: usize = 64;

/// The ingest pipeline of one stream (no I/O).
#[derive(Debug)]
pub struct Pipeline {
    sync: PacketSync,
    segmenter: Segmenter,
    current: BytesMut,
    /// Used blocks, oldest first, each free again once every chunk split off it is dropped.
    spare: std::collections::VecDeque<BytesMut>,
    current_access_point: bool,
    next_seq: u64,
    counters: Arc<StreamCounters>,
    reported: (u64, u64, u64),
    packager: Option<Packager>,
    rate: RateWindow,
}

impl Pipeline {
    /// A pipeline for the program `program` (or the first with video or audio), cutting
    /// segments `target_duration` (90 kHz ticks) long for `packager`, numbered from
    /// `first_sequence`.
    pub fn new(
        program: Option<u16>,
        counters: Arc<StreamCounters>,
        target_duration: u64,
        first_sequence: u64,
        packager: Option<Packager>,
    ) -> Self {
        Self {
            sync: PacketSync::new(),
            segmenter: Segmenter::new(SegmenterConfig {
                program,
                target_duration,
                first_sequence,
                ..SegmenterConfig::default()
            }),
            current: BytesMut::with_capacity(BLOCK),
            spare: std::collections::VecDeque::new(),
            current_access_point: false,
            next_seq: 0,
            counters,
            reported: (0, 0, 0),
            packager,
            rate: RateWindow::default(),
        }
    }

    /// Cut segments into parts of at most `part_target` (90 kHz ticks) too, for the
    /// packager's low-latency playlists (before any byte is pushed). Segments are then
    /// also sealed before they outgrow EXT-X-TARGETDURATION (the segment duration rounded),
    /// at a picture that is not a keyframe when the source's keyframes are further apart:
    /// a low-latency playlist's target duration never changes.
    pub fn with_parts(mut self, part_target: Option<u64>) -> Self {
        let config = *self.segmenter.config();
        let target_s = (config.target_duration as f64 / CLOCK_90KHZ as f64)
            .round()
            .max(1.0);
        // EXTINF rounded to the nearest second stays within it.
        let max_duration = (target_s * CLOCK_90KHZ as f64) as u64 + CLOCK_90KHZ / 2 - 1;
        let config = SegmenterConfig {
            part_target,
            max_duration: part_target.map(|_| max_duration),
            ..config
        };
        self.segmenter = Segmenter::new(config);
        self
    }

    /// The source's bytes start again (a new connection, another source): the partial packet
    /// held from before is dropped (counted as skipped), packet sync is found afresh, and the
    /// next segment is a discontinuity.
    pub fn restart(&mut self) {
        self.sync.finish();
        self.segmenter.source_restarted();
        if let Some(p) = &mut self.packager {
            p.source_restarted();
        }
    }

    /// Feed the bytes of one datagram or read; finished chunks go to `publish`.
    pub fn push(&mut self, data: &[u8], received_ns: u64, publish: &mut impl FnMut(Chunk)) {
        StreamCounters::add(&self.counters.bytes_in, data.len() as u64);
        self.rate
            .add(data.len() as u64, received_ns, &self.counters.input_rate);
        let Self {
            sync,
            segmenter,
            current,
            spare,
            current_access_point,
            next_seq,
            packager,
            ..
        } = self;
        sync.push(data, |packet| {
            segmenter.push_packet(packet, &mut |event| match event {
                SegmenterEvent::Program(pmt) => {
                    if let Some(p) = packager.as_mut() {
                        p.program(pmt);
                    }
                }
                SegmenterEvent::PartEnd(info) => {
                    if let Some(p) = packager.as_mut() {
                        p.part_end(info);
                    }
                }
                SegmenterEvent::SegmentEnd(info) => {
                    if let Some(p) = packager.as_mut() {
                        p.end(info, received_ns);
                    }
                }
                SegmenterEvent::SegmentStart { .. } | SegmenterEvent::Keyframe { .. } => {
                    let mut keyframe = true;
                    if let SegmenterEvent::SegmentStart {
                        sequence,
                        discontinuity,
                        independent,
                        ..
                    } = event
                    {
                        keyframe = independent;
                        if let Some(p) = packager.as_mut() {
                            p.start(sequence, discontinuity, independent, received_ns);
                        }
                    }
                    Self::seal(
                        current,
                        current_access_point,
                        next_seq,
                        received_ns,
                        publish,
                    );
                    // Progressive viewers join at keyframes only.
                    *current_access_point = keyframe;
                }
                SegmenterEvent::Packet(p) => {
                    if current.capacity() - current.len() < PACKET_SIZE {
                        Self::next_block(current, spare);
                    }
                    current.extend_from_slice(p);
                    if let Some(packager) = packager.as_mut() {
                        packager.packet(p);
                    }
                }
                _ => {}
            });
        });
    }

    /// End of a read batch: publish what is pending as a chunk, and update the counters.
    pub fn flush(&mut self, received_ns: u64, publish: &mut impl FnMut(Chunk)) {
        Self::seal(
            &mut self.current,
            &mut self.current_access_point,
            &mut self.next_seq,
            received_ns,
            publish,
        );
        let demux = self.segmenter.demuxer().stats();
        let errors = (
            demux.continuity_gaps,
            demux.malformed + demux.transport_errors,
            self.sync.stats().skipped_bytes,
        );
        let c = &self.counters;
        StreamCounters::add(&c.continuity_errors, errors.0 - self.reported.0);
        StreamCounters::add(&c.malformed_packets, errors.1 - self.reported.1);
        StreamCounters::add(&c.sync_skipped_bytes, errors.2 - self.reported.2);
        self.reported = errors;
    }

    /// Move `current` to a fresh block: the oldest used one nothing points into any more, else
    /// a new one. What `current` holds of a chunk not yet sealed comes along.
    fn next_block(current: &mut BytesMut, spare: &mut std::collections::VecDeque<BytesMut>) {
        // The oldest that is free (one whose chunk something holds on to for longer, a
        // viewer's or a tap's queue, does not hold up the rest). Any other free one goes back
        // to the allocator: what is kept is what the stream's chunks still use, and one block.
        let mut reused = None;
        let mut at = 0;
        while at < spare.len() {
            if spare[at].try_reclaim(BLOCK) {
                let free = spare.remove(at);
                if reused.is_none() {
                    reused = free;
                }
                continue;
            }
            at += 1;
        }
        let mut block = reused.unwrap_or_else(|| BytesMut::with_capacity(BLOCK));
        block.extend_from_slice(current);
        let mut used = std::mem::replace(current, block);
        used.clear();
        if spare.len() == SPARE_BLOCKS {
            spare.pop_front();
        }
        spare.push_back(used);
    }

    fn seal(
        current: &mut BytesMut,
        access_point: &mut bool,
        next_seq: &mut u64,
        received_ns: u64,
        publish: &mut impl FnMut(Chunk),
    ) {
        if current.is_empty() {
            return;
        }
        let data = current.split().freeze();
        let chunk = Chunk {
            seq: *next_seq,
            data,
            access_point: *access_point,
            received_ns,
        };
        *next_seq += 1;
        *access_point = false;
        publish(chunk);
    }

    /// Counters of the segmenter inside.
    pub fn segmenter_stats(&self) -> SegmenterStats {
        self.segmenter.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardcast_protocols::generator::{Generator, GeneratorConfig};

    #[test]
    fn a_block_is_taken_up_again_once_its_chunks_are_gone() {
        let counters = Arc::new(StreamCounters::default());
        let mut p = Pipeline::new(None, counters, 2 * 90_000, 0, None);
        let mut g = Generator::new(GeneratorConfig::default()).unwrap();
        let mut starts = Vec::new();
        let mut datagram = Vec::new();
        let mut fed = 0;
        // Every chunk is dropped as it is published: a block is free once the next one starts.
        // (The generator's null packets are not kept: about half of what is fed is.)
        while fed < 16 * BLOCK {
            let mut packet = [0u8; PACKET_SIZE];
            g.next_packet(&mut packet);
            datagram.extend_from_slice(&packet);
            if datagram.len() == 7 * PACKET_SIZE {
                let mut publish = |c: Chunk| starts.push(c.data.as_ptr() as usize);
                p.push(&datagram, 0, &mut publish);
                p.flush(0, &mut publish);
                fed += datagram.len();
                datagram.clear();
            }
        }
        let first = starts[0];
        let again = starts[1..].iter().filter(|&&s| s == first).count();
        assert!(again >= 2, "the first block came back {again} times");
        assert!(p.spare.len() <= SPARE_BLOCKS);
    }

    #[test]
    fn chunks_start_at_access_points_and_carry_every_packet() {
        let counters = Arc::new(StreamCounters::default());
        let mut p = Pipeline::new(None, counters.clone(), 2 * 90_000, 0, None);
        let mut g = Generator::new(GeneratorConfig::default()).unwrap();
        let mut chunks = Vec::new();
        let mut datagram = Vec::new();
        for i in 0..4000u64 {
            let mut packet = [0u8; PACKET_SIZE];
            g.next_packet(&mut packet);
            datagram.extend_from_slice(&packet);
            if datagram.len() == 7 * PACKET_SIZE {
                p.push(&datagram, i, &mut |c| chunks.push(c));
                p.flush(i, &mut |c| chunks.push(c));
                datagram.clear();
            }
        }
        assert!(chunks.iter().enumerate().all(|(i, c)| c.seq == i as u64));
        assert!(chunks[0].access_point);
        let access_points = chunks.iter().filter(|c| c.access_point).count();
        // 4000 packets at 2 Mbit/s are 3 s: keyframes at 0, 1, 2 (and 3) s.
        assert!((3..=4).contains(&access_points), "{access_points}");
        for c in chunks.iter().filter(|c| c.access_point) {
            assert_eq!(
                c.data[1] & 0x1F,
                0,
                "access point chunk must start with the PAT"
            );
        }
        assert_eq!(counters.snapshot().continuity_errors, 0);
        assert!(counters.snapshot().bytes_in > 0);
    }
}
