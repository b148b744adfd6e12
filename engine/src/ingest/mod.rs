//! Ingest: a source's bytes become published chunks on the stream's home shard.
//!
//! ```text
//!  UdpIngest (socket2: unicast, ASM/SSM multicast, RCVBUF, RXQ_OVFL)  ─┐
//!  DemoSource (protocols generator, paced, wall-clock stamps)         ─┴─ Pipeline ─► Chunk
//!                                         PacketSync → Segmenter → access-point-aligned chunks
//! ```
//!
//! What it does not do: TCP/HTTP push, encoder processes, pulls (later issues), or any I/O
//! scheduling: the shard's backend decides when to read.

mod demo;
mod driver;
mod file;
mod pipeline;
mod source;
mod udp;

pub use demo::DemoSource;
pub use driver::{SourceDriver, UdpDriver};
pub use file::FileSpec;
pub use pipeline::Pipeline;
pub use source::{SourceError, SourceSpec, UdpSpec, DEFAULT_RCVBUF};
pub use udp::UdpIngest;
