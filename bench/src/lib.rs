//! `shardcast-bench`: the load generator of shardcast, as a library the tests use in-process
//! and as the `shardcast-bench` binary.
//!
//! ```text
//!  ingest:  Generator (or a TS file, looped) ─ paced UDP datagrams, wall-clock stamp written
//!           at send, to one or many destinations ─► server
//!  ts:      N HTTP-TS viewers on one thread (mio), plain or TLS (net.rs) ◄─ server
//!           └─ per viewer: bytes, continuity gaps, stamps → latency histogram (hdrhistogram)
//!  hls:     N HLS viewers on one thread, each a player: playlist, live edge, every segment
//!           once, re-poll per target duration → fetch times, missed, late, 4xx/5xx
//!  sink:    the floor of UDP ingest: every channel read and dropped, nothing else
//!  cpu:     CPU time of any process (its CPU-time clock, all threads), over the measured window
//! ```
//!
//! The side-by-side runs against nginx are `bench/scripts/compare.sh` (servers, pinning,
//! repetitions) and `bench/scripts/report.py` (tables and SVG plots); this crate is the load.
//!
//! Viewers speak TLS when the URL is `https://` (`--ca` names the CA to trust). What it does
//! not do: drive remote machines.
#![forbid(unsafe_code)]

pub mod cpu;
pub mod hls;
pub mod ingest;
pub mod load;
pub mod net;
pub mod sink;
pub mod ts;
