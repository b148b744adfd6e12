//! Stream buffers: what ingest publishes and every shard reads.
//!
//! ```text
//!  home shard: ingest ─ Chunk ─┬─ its own StreamView
//!                              └─ ArrayQueue per other shard + wake ─► that shard's StreamView
//! ```
//!
//! A [`Chunk`] is a run of whole transport packets in an immutable refcounted buffer
//! (`bytes::Bytes`): cloning it for another shard or another viewer copies nothing. Chunks are
//! published through one lock-free queue per subscriber shard (the push is the release store);
//! each shard keeps its own [`StreamView`] of recent chunks, which only that shard touches, so
//! readers never take a lock. A shard whose queue is full misses chunks: its view notices the
//! gap in sequence numbers and its viewers resume at the next access point. Ingest never waits.
//!
//! Each view is held to the stream's window and to `max_buffer` bytes, whatever the source
//! sends (a source with no keyframe cannot grow it).
//!
//! The home shard also offers each chunk to the stream's taps ([`tap`]): what sends the stream
//! on reads them off the shards.
//!
//! What it does not do: HLS segments and playlists ([`crate::hls`]), or decide who may watch.

mod counters;
pub mod tap;

pub use counters::{
    InputRate, LatencyHistogram, RateWindow, StreamCounters, StreamCountersSnapshot,
    LATENCY_BUCKETS_MS,
};

use bytes::Bytes;
use std::collections::VecDeque;

/// A stream's bounds on what its source can make it hold.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamLimits {
    /// Bytes each shard holds for progressive viewers (the oldest go first past it).
    pub max_buffer: usize,
    /// Bytes of one HLS segment (one larger is dropped while built).
    pub max_segment: usize,
    /// Bytes of HLS segments held, listed and in grace (the oldest go first past it).
    pub max_hls_bytes: usize,
    /// Seconds without data from the source before progressive viewers are closed.
    pub source_timeout_s: f64,
    /// Whether a gated stream's playlists and segments may be kept by shared caches.
    pub public_cache: bool,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_buffer: 32 << 20,
            max_segment: 32 << 20,
            max_hls_bytes: 128 << 20,
            source_timeout_s: 30.0,
            public_cache: false,
        }
    }
}

/// A run of whole transport packets as published by ingest.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// Sequence number; consecutive chunks of a stream have consecutive numbers.
    pub seq: u64,
    /// Whole 188-byte packets.
    pub data: Bytes,
    /// It begins with PAT, PMT and a keyframe: a viewer may start here.
    pub access_point: bool,
    /// Wall clock (UNIX ns) at which ingest received the last datagram of the chunk.
    pub received_ns: u64,
}

/// Consecutive chunks joined into one buffer: what a flush feeds the viewers that had
/// everything before it ([`StreamView::join`]), so that each gets one write of one buffer
/// instead of one per chunk.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The first chunk joined.
    pub first: u64,
    /// The chunk after the last one joined.
    pub next: u64,
    /// Their packets, in order.
    pub data: Bytes,
}

/// One shard's view of a stream: the recent chunks, oldest first, within a time window, and
/// back to the newest access point; never more than its byte cap, whatever the source sends.
///
/// Past the cap the oldest chunks go first, access point or not (a source that sends one
/// keyframe and then only predicted frames, or none at all, must not grow it without bound).
/// Once that has taken the last access point, viewers start at the oldest chunk still held:
/// the newest data there is, from which a decoder recovers at the next keyframe or over an
/// intra refresh.
#[derive(Debug)]
pub struct StreamView {
    chunks: VecDeque<Chunk>,
    window_ns: u64,
    max_bytes: usize,
    bytes: usize,
    /// A chunk was missed since the last access point: viewers must wait for the next one.
    gap_since_access_point: bool,
    /// The byte cap took the access point: viewers start at the oldest chunk held.
    trimmed_past_access_point: bool,
    /// Chunks dropped because of the byte cap, since the view began.
    trimmed: u64,
    /// The newest access point held (kept as chunks come and go, not searched for: a stream
    /// of small chunks has hundreds between two keyframes).
    access_point: Option<u64>,
}

impl StreamView {
    /// An empty view keeping `window_ns` of chunks, and at most `max_bytes` of them.
    pub fn new(window_ns: u64, max_bytes: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            window_ns,
            max_bytes,
            bytes: 0,
            gap_since_access_point: false,
            trimmed_past_access_point: false,
            trimmed: 0,
            access_point: None,
        }
    }

    /// Add the next chunk. Returns false when chunks were missed before it (a gap).
    pub fn push(&mut self, chunk: Chunk) -> bool {
        let continuous = self
            .chunks
            .back()
            .is_none_or(|last| last.seq + 1 == chunk.seq);
        if !continuous {
            // Chunks before the gap cannot be joined to what follows: start over.
            self.chunks.clear();
            self.bytes = 0;
            self.trimmed_past_access_point = false;
            self.access_point = None;
        }
        if chunk.access_point {
            self.gap_since_access_point = false;
            self.trimmed_past_access_point = false;
        } else if !continuous {
            self.gap_since_access_point = true;
        }
        self.bytes += chunk.data.len();
        let newest = chunk.received_ns;
        if chunk.access_point {
            self.access_point = Some(chunk.seq);
        }
        self.chunks.push_back(chunk);
        self.evict(newest);
        continuous
    }

    fn evict(&mut self, newest_ns: u64) {
        let keep_from = self.newest_access_point();
        while let Some(front) = self.chunks.front() {
            let old = newest_ns.saturating_sub(front.received_ns) > self.window_ns;
            if !old || keep_from.is_some_and(|seq| front.seq >= seq) {
                break;
            }
            self.bytes -= front.data.len();
            self.chunks.pop_front();
        }
        while self.bytes > self.max_bytes && self.chunks.len() > 1 {
            let Some(front) = self.chunks.pop_front() else {
                break;
            };
            self.bytes -= front.data.len();
            self.trimmed += 1;
            if self.access_point == Some(front.seq) {
                // That was the newest access point: none is held any more (the older ones
                // went before it).
                self.access_point = None;
                self.trimmed_past_access_point = true;
            }
        }
    }

    /// Chunks dropped because of the byte cap, since the view began.
    pub fn trimmed(&self) -> u64 {
        self.trimmed
    }

    /// Where a viewer starts (or resumes after falling behind): the newest access point;
    /// when the byte cap has taken every access point, the oldest chunk held; `None` while
    /// there is nothing to start at (no access point yet, or since a gap).
    pub fn start_point(&self) -> Option<u64> {
        if self.trimmed_past_access_point {
            return self.chunks.front().map(|c| c.seq);
        }
        self.newest_access_point()
    }

    /// The sequence number the next chunk will have (0 before the first).
    pub fn next_seq(&self) -> u64 {
        self.chunks.back().map_or(0, |c| c.seq + 1)
    }

    /// The chunk numbered `seq`, if still held.
    pub fn get(&self, seq: u64) -> Option<&Chunk> {
        let first = self.chunks.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.chunks.get(index)
    }

    /// The chunks from `first` to the newest joined into one buffer, when there are two or
    /// more and all are still held (one copy, shared by every viewer the flush feeds).
    pub fn join(&self, first: u64) -> Option<Batch> {
        let next = self.next_seq();
        if next.checked_sub(first)? < 2 {
            return None;
        }
        let from = usize::try_from(first.checked_sub(self.chunks.front()?.seq)?).ok()?;
        let joined = self.chunks.range(from..);
        let mut data = bytes::BytesMut::with_capacity(joined.clone().map(|c| c.data.len()).sum());
        for c in joined {
            data.extend_from_slice(&c.data);
        }
        Some(Batch {
            first,
            next,
            data: data.freeze(),
        })
    }

    /// The newest chunk a viewer may start at.
    pub fn newest_access_point(&self) -> Option<u64> {
        if self.gap_since_access_point {
            return None;
        }
        self.access_point
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Chunks held.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether no chunk is held.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, access_point: bool, at_s: u64) -> Chunk {
        Chunk {
            seq,
            data: Bytes::from(vec![0x47; 188]),
            access_point,
            received_ns: at_s * 1_000_000_000,
        }
    }

    #[test]
    fn keeps_the_window_and_the_newest_access_point() {
        let mut v = StreamView::new(5_000_000_000, usize::MAX);
        assert_eq!(v.newest_access_point(), None);
        assert!(v.push(chunk(0, true, 0)));
        for s in 1..20 {
            assert!(v.push(chunk(s, false, s)));
        }
        // Nothing after chunk 0 is an access point, so the window cannot drop it.
        assert_eq!(v.len(), 20);
        assert!(v.push(chunk(20, true, 20)));
        // Now the window (5 s) applies: 15..=20 stay.
        assert_eq!(v.get(14).map(|c| c.seq), None);
        assert_eq!(v.get(15).map(|c| c.seq), Some(15));
        assert_eq!(v.newest_access_point(), Some(20));
        assert_eq!(v.next_seq(), 21);
        assert_eq!(v.bytes(), 6 * 188);
    }

    #[test]
    fn a_source_without_keyframes_is_held_to_the_byte_cap() {
        let mut v = StreamView::new(u64::MAX, 10 * 188);
        v.push(chunk(0, true, 0));
        for s in 1..1000 {
            v.push(chunk(s, false, s));
            assert!(v.bytes() <= 10 * 188);
        }
        assert_eq!(v.len(), 10);
        assert_eq!(v.trimmed(), 990);
        assert_eq!(v.newest_access_point(), None, "the keyframe is gone");
        assert_eq!(
            v.start_point(),
            Some(990),
            "viewers start at the oldest held"
        );
        v.push(chunk(1000, true, 1000));
        assert_eq!(v.start_point(), Some(1000), "then at the next access point");
        let mut normal = StreamView::new(u64::MAX, 1 << 20);
        normal.push(chunk(0, true, 0));
        normal.push(chunk(1, false, 0));
        assert_eq!(normal.start_point(), Some(0));
        assert_eq!(normal.trimmed(), 0);
    }

    #[test]
    fn a_gap_hides_the_access_point_until_the_next_one() {
        let mut v = StreamView::new(10_000_000_000, usize::MAX);
        v.push(chunk(0, true, 0));
        v.push(chunk(1, false, 0));
        assert!(!v.push(chunk(5, false, 1)));
        assert_eq!(v.newest_access_point(), None);
        assert_eq!(v.get(1).map(|c| c.seq), None);
        v.push(chunk(6, true, 1));
        assert_eq!(v.newest_access_point(), Some(6));
    }
}
