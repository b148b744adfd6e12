//! Ingest: a source's bytes become published chunks on the stream's home shard.
//!
//! ```text
//!  source URL ─ scheme table (source.rs) ─► SourceSpec ─► SourceDriver (driver.rs)
//!     udp://   UdpDriver: the backend reads the socket (UdpIngest: unicast, ASM/SSM
//!              multicast, RCVBUF, RXQ_OVFL)                                        ─┐
//!     demo:    DemoSource: the protocols generator, paced, wall-clock stamps         ├─ Pipeline ─► Chunk
//!     file://  FileSource: a file looped at the pace of its PCRs                    ─┘
//!                              PacketSync → Segmenter → access-point-aligned chunks
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
