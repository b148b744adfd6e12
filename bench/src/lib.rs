//! `shardcast-bench`: the load generator of shardcast, as a library the tests use in-process
//! and as the `shardcast-bench` binary.
//!
//! ```text
//!  ingest:  Generator ─ paced UDP datagrams, wall-clock stamp written at send ─► server
//!  ts:      N HTTP-TS viewers on one thread (mio) ◄─ server
//!           └─ per viewer: bytes, continuity gaps, stamps → latency histogram (hdrhistogram)
//!  hls:     N HLS viewers on one thread, each a player: playlist, live edge, every segment
//!           once, re-poll per target duration → fetch times, missed, late, 4xx/5xx
//!  cpu:     utime+stime of any process from /proc, over the measured window
//! ```
//!
//! What it does not do yet: the side-by-side runs against nginx and the plots (the bench
//! issue).
#![forbid(unsafe_code)]

pub mod cpu;
pub mod hls;
pub mod ingest;
pub mod ts;
