//! shardcast's engine: the live-media server behind the `shardcast` binary.
//!
//! ```text
//!  ingest (home shard) ─ Pipeline ─┬─ Chunk ─┬─ own StreamView ─┐
//!                                  │         └─ queue + wake ─► other shards' StreamViews
//!                                  └─ Packager ─ sealed Segment + playlists ─► HlsSlot (ArcSwap)
//!                     viewers: http::Conn ◄─ shard loop (io_uring, or epoll as the fallback)
//! ```
//!
//! Modules: [`config`] (TOML, embedded default), [`source`] (the ways in, one module each), [`ingest`] (a source's bytes to chunks), [`stream`]
//! (chunks, views, counters), [`hls`] (segments, live window, playlists), [`http`] (sans-IO
//! viewer connections), [`output`] (the viewer URL grammar, and each way of watching as a
//! module: HLS, progressive MPEG-TS), [`shard`] (the per-CPU event loop and its two backends), [`server`]
//! (start, signals, stop), [`notify`] (the service manager's ready, stopping and watchdog
//! notifications), [`player`] (player page, embed script, stream info, hls.js, dash.js), [`inspect`] (the file inspector), [`session`] (viewer sessions and the shard links that carry them), [`sys`] (CPU affinity, clocks, memfds,
//! sendfile, libsrt), [`host`] (kernel settings, NICs and their interrupts, CPU topology), [`tune`]
//! (tuning profiles), [`capacity`] (deployment planning), [`files`] (atomic writes), [`upstream`]
//! (HTTP to servers someone outside names, behind the SSRF guard), [`proxy`] (remote HLS
//! re-served under `/proxy/`, fetched once for every viewer).
//!
//! Everything a viewer or a source can grow is bounded (README: "Limits and protection"):
//! [`shard::admission`] (connections per address), [`http`] (queued responses, send rate),
//! [`stream`] and [`hls`] (buffer bytes, segments), [`session`] and [`control`] (sessions,
//! access checks, wildcard instances).
//!
//! What it does not do yet: `https://` pulls, SRT and RTMP, low-latency DASH, HTTP/2,
//! recording and re-emission; see the issues.
#![deny(unsafe_code)]

pub mod capacity;
pub mod cli;
pub mod config;
pub mod control;
pub mod files;
pub mod hls;
pub mod host;
pub mod http;
pub mod ingest;
pub mod inspect;
pub mod notify;
pub mod output;
pub mod player;
pub mod proxy;
pub mod server;
pub mod session;
pub mod shard;
pub mod site;
pub mod source;
pub mod stream;
pub mod sys;
pub mod tls;
pub mod tune;
pub mod upgrade;
pub mod upstream;
pub mod vod;
pub mod wake;
