//! shardcast's engine: the live-media server behind the `shardcast` binary.
//!
//! ```text
//!  ingest (home shard) ─ Pipeline ─ Chunk ─┬─ own StreamView ─┐
//!                                          └─ queue + wake ─► other shards' StreamViews
//!                                                     viewers: http::Conn ◄─ shard loop (epoll)
//! ```
//!
//! Modules: [`config`] (TOML, embedded default), [`ingest`] (sources to chunks), [`stream`]
//! (chunks, views, counters), [`http`] (sans-IO viewer connections), [`shard`] (the per-CPU
//! event loop), [`server`] (start, signals, stop), [`inspect`] (the file inspector), [`sys`]
//! (CPU affinity, clocks).
//!
//! What it does not do yet: HLS output, the io_uring backend, the control plane; see the
//! issues.
#![deny(unsafe_code)]

pub mod config;
pub mod hls;
pub mod http;
pub mod ingest;
pub mod inspect;
pub mod server;
pub mod shard;
pub mod stream;
pub mod sys;
