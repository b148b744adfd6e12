//! The shape of a load: where, how many viewers, and the ramp, settle and measured window.

use std::net::SocketAddr;
use std::time::Duration;

/// The load to apply (to `hls` or `ts`).
#[derive(Clone, Debug)]
pub struct Load {
    /// Server address.
    pub addr: SocketAddr,
    /// The path: a stream (`/demo.ts`) or a media playlist (`/demo/index.m3u8`).
    pub path: String,
    /// Viewers.
    pub viewers: usize,
    /// Time over which the viewers start.
    pub ramp: Duration,
    /// Time after the ramp before measuring starts.
    pub settle: Duration,
    /// Length of the measured window.
    pub measure: Duration,
    /// The server's process id, to account its CPU and memory over the window.
    pub server_pid: Option<u32>,
    /// Print a progress line every second.
    pub progress: bool,
    /// `ts` only: read at most this many bits per second per viewer (0: as fast as the server
    /// sends). Against a static file this makes viewers behave like players of a live stream.
    pub pace_bps: u64,
    /// Viewers speak TLS (https:// URLs).
    pub tls: Option<crate::net::TlsClient>,
    /// `hls` only: viewers are low-latency HLS players (parts, blocking reloads).
    pub low_latency: bool,
    /// `hls` only: each request goes on a new connection (`Connection: close`), as some
    /// set-top boxes and probes ask, instead of one keep-alive connection per viewer.
    pub connection_per_request: bool,
}

impl Load {
    /// How many viewers should have started `elapsed` into the run.
    pub fn due(&self, elapsed: Duration) -> usize {
        if self.ramp.is_zero() {
            return self.viewers;
        }
        let due = (elapsed.as_secs_f64() / self.ramp.as_secs_f64() * self.viewers as f64).ceil();
        (due as usize).min(self.viewers)
    }
}
