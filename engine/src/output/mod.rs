//! How viewers watch a stream. Each output is a module and a line in [`OUTPUTS`]: it names
//! its part of the URL grammar ([`Output::parse`]) and answers what a request asks of a
//! stream from what the stream has published ([`Output::answer`]). The shard's router
//! ([`crate::shard`]) parses a request once ([`Target::parse`]), finds the stream, applies the
//! access gate, and hands the request to its output; the connection ([`crate::http`]) turns the
//! answer into HTTP (conditional requests, ranges, HEAD, caching for gated streams).
//!
//! ```text
//!  /{stream}.ts             progressive  live MPEG-TS body, fed from the shard's view
//!  /{stream}/index.m3u8     hls          media playlist
//!  /{stream}/master.m3u8    hls          multivariant playlist
//!  /{stream}/{sequence}.ts  hls          segment
//!  /{stream}/{seq}.{i}.ts   hls          part of a segment (low-latency HLS)
//!  /{stream}/cmaf/…         hls          the CMAF (fMP4) rendition (see crate::hls::cmaf)
//!  /{stream}/manifest.mpd   hls          its DASH manifest
//! ```
//!
//! The player's pages (`/{stream}.html`, `info.json`, `embed.js`) are not outputs: they are
//! [`Target`]'s own.
//!
//! What sends a stream on rather than answering viewers (re-emission over UDP, pushes to other
//! servers) is [`push_out`]: it reads the stream's taps off the shards.
//!
//! Recordings played back (`/vod/…`) are not an output of a live stream: see [`crate::vod`].

mod hls;
mod progressive;
pub mod push_out;
pub mod push_target;
mod target;

pub use target::{push_stream, Target};

use crate::hls::HlsSlot;
use crate::http::{RequestHead, Route};
use crate::session::Protocol;
use crate::stream::StreamCounters;

/// Every output, in the order their grammars are tried (they must not overlap).
pub static OUTPUTS: &[&dyn Output] = &[&hls::Hls, &progressive::Progressive];

/// A way of watching a stream (see the module docs).
pub trait Output: Sync {
    /// Its name, for logs and tests.
    fn name(&self) -> &'static str;
    /// How its viewers' sessions are counted.
    fn protocol(&self) -> Protocol;
    /// Whether `path` (a request's path without its leading `/` and its query) is one of this
    /// output's: the stream named and what of it is asked for.
    fn parse<'a>(&self, path: &'a str) -> Option<(&'a str, MediaFile)>;
    /// The answer to a request for `file` of `stream`.
    fn answer(&self, stream: &Published<'_>, file: MediaFile, head: &RequestHead) -> Route;
}

impl PartialEq for dyn Output {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl std::fmt::Debug for dyn Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a viewer's request asks of a stream, in its output's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaFile {
    /// The live body, from the newest access point on, until the viewer goes.
    Live,
    /// A playlist (or manifest).
    Playlist(Playlist),
    /// A segment, by its media sequence number.
    Segment(u64),
    /// A part of a segment (low-latency HLS): the segment's sequence number, the part's index.
    Part(u64, u32),
    /// A file of the CMAF (fMP4) rendition.
    Cmaf(CmafFile),
}

/// What a request asks of a stream's CMAF rendition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmafFile {
    /// Its playlist.
    Playlist(Playlist),
    /// The DASH manifest of its segments.
    Manifest,
    /// Init segment n.
    Init(u64),
    /// Init segment n of one track alone (DASH).
    TrackInit(u64, crate::hls::cmaf::TrackKind),
    /// A segment.
    Segment(u64),
    /// A segment of one track alone (DASH).
    TrackSegment(u64, crate::hls::cmaf::TrackKind),
    /// A part.
    Part(u64, u32),
}

/// Which playlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Playlist {
    /// The media playlist: the live window's segments.
    Media,
    /// The multivariant playlist: the renditions (one today) and their codecs.
    Master,
}

/// A viewer's request of a stream, parsed: which stream, through which output, what of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MediaRequest<'a> {
    /// The stream's name as the URL spells it (a wildcard instance's too).
    pub stream: &'a str,
    /// The output that answers it.
    pub output: &'static dyn Output,
    /// What it asks for.
    pub file: MediaFile,
}

/// What an output reads of a stream: what the home shard published, and where this shard
/// feeds its live viewers from.
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)] // references into the stream table
pub struct Published<'a> {
    /// The stream's slot in the stream table (a live viewer is fed from its view).
    pub slot: usize,
    /// Its newest HLS window.
    pub hls: &'a HlsSlot,
    /// Its counters.
    pub counters: &'a StreamCounters,
    /// It is configured with a CMAF rendition.
    pub cmaf: bool,
    /// The time of the request, UNIX milliseconds (DASH clients set their clocks by it).
    pub unix_ms: i64,
}
