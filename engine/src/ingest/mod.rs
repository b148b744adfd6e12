//! Ingest: a source's bytes become published chunks on the stream's home shard.
//!
//! ```text
//!  a source's bytes (crate::source: a socket the backend reads, or bytes its driver makes)
//!     └─ Pipeline: PacketSync → Segmenter → access-point-aligned chunks ─► Chunk
//!                                         └─ Packager (HLS segments and playlists)
//! ```
//!
//! What it does not do: any I/O or scheduling: the shard's backend decides when to read.

mod pipeline;

pub use pipeline::Pipeline;
