//! A source as the home shard drives it: sans-IO. The core asks each stream's driver what it
//! needs from the backend (a socket to read, or nothing) and, for sources that make their own
//! bytes (the demo, a file), asks at each turn for what is due by then. A new way in is a
//! module of `source/` with its driver and a line in the scheme table ([`super::SCHEMES`]); the core and the
//! backends do not change.

use super::UdpSpec;
use std::time::Duration;

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

    /// Append to `out` what is due `elapsed` after the stream started; `unix_ns` is the turn's
    /// wall clock (for stamps).
    fn due(&mut self, _elapsed: Duration, _unix_ns: u64, _out: &mut Vec<u8>) {}
}
