//! What an HLS output is configured with: segment and playlist lengths, and how sealed
//! segments reach sockets.

use serde::{Deserialize, Serialize};

/// HLS settings of a stream.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct HlsSettings {
    /// Segments are cut at the first keyframe at least this many seconds in.
    pub segment_duration_s: f64,
    /// Segments listed in the live playlist.
    pub playlist_segments: usize,
    /// Seconds a segment stays fetchable after it left the playlist.
    pub segment_grace_s: f64,
    /// DVR: seconds of segments kept (in memory, within `max_hls_bytes`) for time-shifted
    /// playlists (`?start=`); 0: none beyond the grace period.
    pub dvr_s: f64,
    /// Low-latency HLS: segments are also cut into parts of at most this many seconds.
    pub part_duration_s: Option<f64>,
    /// Segments and parts are also remuxed into CMAF (fragmented MP4).
    pub cmaf: bool,
}

impl Default for HlsSettings {
    fn default() -> Self {
        Self {
            segment_duration_s: 2.0,
            playlist_segments: 6,
            segment_grace_s: 10.0,
            dvr_s: 0.0,
            part_duration_s: None,
            cmaf: false,
        }
    }
}

/// How sealed HLS segments reach viewer sockets (see bench/RESULTS.md for what each costs).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SegmentSend {
    /// The cheapest measured on this kind of host: `sendfile`.
    #[default]
    Auto,
    /// Segments in memory, written with `writev` / io_uring `WRITEV` (the kernel copies).
    Copy,
    /// Segments in sealed memfds, sent with `sendfile(2)` (page references, no copy).
    Sendfile,
    /// Segments in memory, sent with io_uring `SENDMSG_ZC`; a connection whose sends the
    /// kernel reports as copied (loopback, NICs without scatter-gather) falls back to `copy`.
    /// On epoll this is `copy`.
    Zerocopy,
}

impl SegmentSend {
    /// What `Auto` means.
    pub fn resolve(self) -> SegmentSend {
        match self {
            SegmentSend::Auto => SegmentSend::Sendfile,
            other => other,
        }
    }
}
