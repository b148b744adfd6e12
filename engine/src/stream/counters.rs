//! Per-stream counters shared by the shards (relaxed atomics: statistics, not coordination).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of one stream, updated by its home shard (ingest) and by every shard (viewers).
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Datagrams (or reads) received by ingest.
    pub datagrams: AtomicU64,
    /// Bytes received by ingest.
    pub bytes_in: AtomicU64,
    /// Transport packets published.
    pub packets_out: AtomicU64,
    /// Continuity gaps seen in the source.
    pub continuity_errors: AtomicU64,
    /// Unreadable or flagged packets dropped.
    pub malformed_packets: AtomicU64,
    /// Bytes skipped while looking for packet sync.
    pub sync_skipped_bytes: AtomicU64,
    /// Datagrams the kernel dropped because the socket buffer was full (SO_RXQ_OVFL).
    pub kernel_drops: AtomicU64,
    /// Chunks a subscriber shard missed because its queue was full.
    pub fanout_drops: AtomicU64,
    /// Progressive (HTTP-TS) viewers connected now. HLS players are not connections that
    /// last; they are counted as sessions (not yet: the control plane's sessions).
    pub viewers: AtomicU64,
    /// Viewers moved to a newer keyframe because they fell behind.
    pub lag_skips: AtomicU64,
    /// Viewers closed because they kept falling behind.
    pub lag_closes: AtomicU64,
    /// Bytes sent to viewers.
    pub bytes_out: AtomicU64,
    /// Bytes the home shard holds for the stream's window (a gauge; other shards share them).
    pub buffered_bytes: AtomicU64,
    /// HLS segments sealed.
    pub segments: AtomicU64,
    /// HLS segments dropped while being built (too large without a keyframe, or made faster
    /// than real time allows).
    pub segments_dropped: AtomicU64,
    /// HLS segments let go early to keep within `max_hls_bytes`.
    pub segments_evicted: AtomicU64,
    /// HLS segments begun between keyframes (low-latency: the keyframes are further apart
    /// than the target duration allows).
    pub segments_without_keyframe: AtomicU64,
    /// Chunks the progressive buffer dropped to keep within `max_buffer` (home shard's view).
    pub buffer_trims: AtomicU64,
    /// Bytes of the HLS segments in the window and in grace (a gauge; sends in flight may
    /// keep an unlisted segment a little longer).
    pub segment_bytes: AtomicU64,
    /// HLS requests answered (playlists and segments).
    pub hls_requests: AtomicU64,
    /// Low-latency HLS requests held until the part they name exists.
    pub hls_held: AtomicU64,
    /// Of those, the ones answered 503 after three target durations.
    pub hls_hold_timeouts: AtomicU64,
    /// CMAF fragments made (one per track per cut).
    pub cmaf_fragments: AtomicU64,
    /// Samples the CMAF remuxer dropped (before its init segment, over its bounds).
    pub cmaf_dropped_samples: AtomicU64,
    /// Connections a source accepted or made (an encoder connecting, a reconnect).
    pub source_connections: AtomicU64,
    /// Connections a listening source refused (not in its `allow=`).
    pub source_refused: AtomicU64,
    /// Attempts of a connecting source that failed.
    pub source_failures: AtomicU64,
    /// Whether a connection-based source is connected now (a gauge: 0 or 1).
    pub source_connected: AtomicU64,
    /// Datagrams that came as TS in RTP.
    pub rtp_datagrams: AtomicU64,
    /// RTP datagrams missing from the sequence (lost, or still to come late).
    pub rtp_lost: AtomicU64,
    /// RTP datagrams that came after a later one (late, or repeated).
    pub rtp_late: AtomicU64,
    /// Why a source that connects last failed (cleared when it connects).
    pub source_error: std::sync::Mutex<Option<String>>,
    /// Switches between the sources of a failover list.
    pub source_switches: AtomicU64,
    /// A failover list's state: which source is active, which are live.
    pub failover: std::sync::Mutex<Option<crate::source::FailoverStatus>>,
    /// The SRT connection feeding the stream: its statistics, sampled once a second.
    pub srt: std::sync::Mutex<Option<crate::sys::srt::Stats>>,
    /// How long data waited between ingest and the write to progressive viewers.
    pub send_latency: LatencyHistogram,
    /// The input bitrate, as the ingest pipeline measures it.
    pub input_rate: InputRate,
}

/// A stream's input bitrate: set by the ingest pipeline each time a window of at least
/// [`RATE_WINDOW_NS`] closes ([`RateWindow`]), read by anyone. A rate holds until twice its
/// window (at least [`RATE_HOLD_NS`]) has passed with no newer one; after that the input is
/// silent and the rate is 0.
#[derive(Debug, Default)]
pub struct InputRate {
    bits_per_second: AtomicU64,
    /// UNIX ns after which the rate no longer holds (0: never measured).
    until_ns: AtomicU64,
}

/// The shortest window a rate is measured over.
pub(crate) const RATE_WINDOW_NS: u64 = 1_000_000_000;
/// How long a rate holds at least with no newer one.
pub(crate) const RATE_HOLD_NS: u64 = 3_000_000_000;

impl InputRate {
    /// The rate at `now_ns` (UNIX), bits per second.
    pub fn at(&self, now_ns: u64) -> u64 {
        if now_ns > self.until_ns.load(Relaxed) {
            0
        } else {
            self.bits_per_second.load(Relaxed)
        }
    }

    fn set(&self, bits_per_second: u64, until_ns: u64) {
        self.bits_per_second.store(bits_per_second, Relaxed);
        self.until_ns.store(until_ns, Relaxed);
    }
}

/// The window the ingest pipeline counts bytes in (owned by the home shard).
#[derive(Clone, Copy, Debug, Default)]
pub struct RateWindow {
    start_ns: u64,
    bytes: u64,
}

impl RateWindow {
    /// `bytes` arrived at `at_ns` (UNIX); a window of a second or more closes and sets `rate`.
    pub fn add(&mut self, bytes: u64, at_ns: u64, rate: &InputRate) {
        if self.start_ns == 0 || at_ns < self.start_ns {
            // The first bytes, or the clock stepped back: a window starts here.
            *self = Self {
                start_ns: at_ns,
                bytes: 0,
            };
            return;
        }
        self.bytes += bytes;
        let length = at_ns - self.start_ns;
        if length >= RATE_WINDOW_NS {
            let bits = (self.bytes as u128 * 8 * 1_000_000_000 / length as u128) as u64;
            rate.set(bits, at_ns + (2 * length).max(RATE_HOLD_NS));
            *self = Self {
                start_ns: at_ns,
                bytes: 0,
            };
        }
    }
}

/// Upper bounds of the ingest-to-send latency buckets, milliseconds (and +Inf after them).
pub const LATENCY_BUCKETS_MS: [u64; 10] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

/// A latency histogram of fixed buckets, updated with relaxed atomics by any shard.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last is over the largest bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    /// Count one observation of `ns` nanoseconds.
    pub fn record(&self, ns: u64) {
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|&ms| ns <= ms * 1_000_000)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Cumulative counts per bound (the last is the total), and the sum in nanoseconds.
    pub fn cumulative(&self) -> ([u64; LATENCY_BUCKETS_MS.len() + 1], u64) {
        let mut out = [0; LATENCY_BUCKETS_MS.len() + 1];
        let mut total = 0;
        for (slot, bucket) in out.iter_mut().zip(&self.buckets) {
            total += bucket.load(Relaxed);
            *slot = total;
        }
        (out, self.sum_ns.load(Relaxed))
    }
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct StreamCountersSnapshot {
    pub datagrams: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub continuity_errors: u64,
    pub malformed_packets: u64,
    pub sync_skipped_bytes: u64,
    pub kernel_drops: u64,
    pub fanout_drops: u64,
    pub viewers: u64,
    pub lag_skips: u64,
    pub lag_closes: u64,
    pub bytes_out: u64,
    pub buffered_bytes: u64,
    pub segments: u64,
    pub segments_dropped: u64,
    pub segments_evicted: u64,
    pub segments_without_keyframe: u64,
    pub buffer_trims: u64,
    pub segment_bytes: u64,
    pub hls_requests: u64,
    pub hls_held: u64,
    pub hls_hold_timeouts: u64,
    pub cmaf_fragments: u64,
    pub cmaf_dropped_samples: u64,
    pub source_connections: u64,
    pub source_refused: u64,
    pub source_failures: u64,
    pub source_connected: u64,
    pub rtp_datagrams: u64,
    pub rtp_lost: u64,
    pub rtp_late: u64,
    pub source_switches: u64,
}

impl StreamCounters {
    /// Add `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Read every counter.
    pub fn snapshot(&self) -> StreamCountersSnapshot {
        StreamCountersSnapshot {
            datagrams: self.datagrams.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            packets_out: self.packets_out.load(Relaxed),
            continuity_errors: self.continuity_errors.load(Relaxed),
            malformed_packets: self.malformed_packets.load(Relaxed),
            sync_skipped_bytes: self.sync_skipped_bytes.load(Relaxed),
            kernel_drops: self.kernel_drops.load(Relaxed),
            fanout_drops: self.fanout_drops.load(Relaxed),
            viewers: self.viewers.load(Relaxed),
            lag_skips: self.lag_skips.load(Relaxed),
            lag_closes: self.lag_closes.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            buffered_bytes: self.buffered_bytes.load(Relaxed),
            segments: self.segments.load(Relaxed),
            segments_dropped: self.segments_dropped.load(Relaxed),
            segments_evicted: self.segments_evicted.load(Relaxed),
            segments_without_keyframe: self.segments_without_keyframe.load(Relaxed),
            buffer_trims: self.buffer_trims.load(Relaxed),
            segment_bytes: self.segment_bytes.load(Relaxed),
            hls_requests: self.hls_requests.load(Relaxed),
            hls_held: self.hls_held.load(Relaxed),
            hls_hold_timeouts: self.hls_hold_timeouts.load(Relaxed),
            cmaf_fragments: self.cmaf_fragments.load(Relaxed),
            cmaf_dropped_samples: self.cmaf_dropped_samples.load(Relaxed),
            source_connections: self.source_connections.load(Relaxed),
            source_refused: self.source_refused.load(Relaxed),
            source_failures: self.source_failures.load(Relaxed),
            source_connected: self.source_connected.load(Relaxed),
            rtp_datagrams: self.rtp_datagrams.load(Relaxed),
            rtp_lost: self.rtp_lost.load(Relaxed),
            rtp_late: self.rtp_late.load(Relaxed),
            source_switches: self.source_switches.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_rate_is_the_bytes_of_a_closed_window_and_fades_when_the_input_stops() {
        let rate = InputRate::default();
        let mut window = RateWindow::default();
        let t0 = 1_700_000_000 * S;
        assert_eq!(rate.at(t0), 0, "never measured");
        // 2.5 Mbit/s: 125 datagrams of 2,500 bytes a second, one every 8 ms.
        for i in 0..=250 {
            window.add(2_500, t0 + i * 8_000_000, &rate);
        }
        let last = t0 + 250 * 8_000_000;
        assert_eq!(rate.at(last), 2_500_000);
        // Silent: the rate holds for three seconds, then the input counts as stopped.
        assert_eq!(rate.at(last + 3 * S), 2_500_000);
        assert_eq!(rate.at(last + 3 * S + 1), 0);
    }

    #[test]
    fn sparse_bursts_hold_their_rate_for_twice_their_window() {
        let rate = InputRate::default();
        let mut window = RateWindow::default();
        let t0 = 1_700_000_000 * S;
        // A pulled source: a 6 s segment of 1.5 MB at once, every 6 s.
        for k in 0..4 {
            window.add(1_500_000, t0 + k * 6 * S, &rate);
        }
        let last = t0 + 18 * S;
        assert_eq!(rate.at(last), 2_000_000);
        assert_eq!(rate.at(last + 11 * S), 2_000_000);
        assert_eq!(rate.at(last + 13 * S), 0);
    }

    #[test]
    fn a_clock_stepping_back_starts_a_new_window() {
        let rate = InputRate::default();
        let mut window = RateWindow::default();
        let t0 = 1_700_000_000 * S;
        window.add(1_000, t0, &rate);
        window.add(1_000, t0 - 3_600 * S, &rate);
        window.add(125_000, t0 - 3_599 * S, &rate);
        assert_eq!(rate.at(t0 - 3_599 * S), 1_000_000);
    }
}
