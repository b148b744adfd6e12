//! A source as the home shard drives it. The core asks each stream's driver what it needs
//! from the backend (a socket to read, or nothing); for sources that make their own bytes
//! (the demo, a file) it asks at each turn for what is due by then; for sources whose I/O
//! runs as a task on the sources' runtime (TCP) it takes what the task delivered to the
//! driver's [`Inlet`]. When to try again is sans-IO ([`super::Retry`]). A new way in is a
//! module of `source/` with its driver and a line in the scheme table ([`super::SCHEMES`]); the core and the
//! backends do not change.

use super::{Inlet, UdpSpec};
use crate::stream::StreamCounters;
use crate::wake::Wake;
use std::sync::Arc;
use std::time::Duration;

/// What a driver is started with: its stream, and where a source that does its own I/O (a
/// TCP connection) runs its task and hands over what it reads.
#[derive(Debug)]
pub struct SourceContext<'a> {
    /// The stream's name, for log lines.
    pub stream: &'a str,
    /// The sources' runtime (its own thread), when the server has one.
    pub tasks: Option<&'a tokio::runtime::Handle>,
    /// Wakes the home shard when bytes are delivered.
    pub waker: Arc<dyn Wake>,
    /// The stream's counters.
    pub counters: Arc<StreamCounters>,
    /// How long a connection may send nothing before it is closed.
    pub idle: Duration,
    /// Where pushes are handed, when the server takes them.
    pub pushes: Option<&'a Arc<super::Pushes>>,
    /// The HLS proxy's fetcher, when the server has one (a configured proxy as a source).
    pub fetcher: Option<&'a Arc<crate::proxy::Fetcher>>,
}

/// What the home shard runs for a stream's source.
pub trait SourceDriver: std::fmt::Debug + Send {
    /// The UDP socket the backend opens and reads for it, if it is fed that way.
    fn socket(&self) -> Option<&UdpSpec> {
        None
    }

    /// The program to take from a multi-program transport stream (`None`: the first).
    fn program(&self) -> Option<u16> {
        None
    }

    /// How long after the stream started the source has bytes next (`None`: it makes none
    /// itself; what it receives comes through its socket).
    fn next_due(&self) -> Option<Duration> {
        None
    }

    /// What its own task delivered, for the home shard to take at each turn (`None`: it has
    /// no task).
    fn inlet(&self) -> Option<&Inlet> {
        None
    }

    /// Append to `out` what is due `elapsed` after the stream started; `unix_ns` is the turn's
    /// wall clock (for stamps).
    fn due(&mut self, _elapsed: Duration, _unix_ns: u64, _out: &mut Vec<u8>) {}
}
