//! HLS playlists (RFC 8216, with the low-latency tags of draft-pantos-hls-rfc8216bis): types,
//! a writer ([`std::fmt::Display`] on each playlist) and an incremental parser
//! ([`PlaylistParser`]).
//!
//! What it does: media playlists for live sliding windows (media and discontinuity sequence,
//! EXTINF to the millisecond, program date-time, discontinuities, byte ranges, gaps, partial
//! segments, preload hints, server control, delta updates (EXT-X-SKIP), rendition reports,
//! media initialization sections (EXT-X-MAP, for fMP4)) and multivariant playlists (variant
//! streams and renditions). Unknown tags are ignored when parsing, as clients must.
//!
//! [`rewrite_uris`] replaces every URI a playlist names and keeps every other byte (an HLS
//! proxy's rewrite: unknown tags pass through untouched).
//!
//! What it does not do: fetch anything, decide windows or target durations (the engine does),
//! or handle encryption keys, session data and interstitials (parsed as unknown tags).

mod datetime;
mod parse;
mod rewrite;
mod write;

pub use datetime::DateTime;
pub use parse::{parse, PlaylistError, PlaylistErrorKind, PlaylistLimits, PlaylistParser};
pub use rewrite::{rewrite_uris, UriKind};

use std::time::Duration;

/// Either kind of playlist.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Playlist {
    /// A media playlist: segments.
    Media(MediaPlaylist),
    /// A multivariant playlist: variant streams and renditions.
    Multivariant(MultivariantPlaylist),
}

/// EXT-X-PLAYLIST-TYPE (RFC 8216 §4.3.3.5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PlaylistType {
    /// Segments are only ever added.
    Event,
    /// The playlist never changes.
    Vod,
}

/// A media playlist (RFC 8216 §4.3.3).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MediaPlaylist {
    /// EXT-X-VERSION.
    pub version: u8,
    /// EXT-X-TARGETDURATION in whole seconds: no EXTINF may round above it.
    pub target_duration: u64,
    /// EXT-X-MEDIA-SEQUENCE: the sequence number of the first segment listed.
    pub media_sequence: u64,
    /// EXT-X-DISCONTINUITY-SEQUENCE.
    pub discontinuity_sequence: u64,
    /// EXT-X-PLAYLIST-TYPE, absent for a live sliding window.
    pub playlist_type: Option<PlaylistType>,
    /// EXT-X-INDEPENDENT-SEGMENTS.
    pub independent_segments: bool,
    /// EXT-X-PART-INF PART-TARGET (low-latency HLS).
    pub part_target: Option<Duration>,
    /// EXT-X-SERVER-CONTROL (low-latency HLS).
    pub server_control: Option<ServerControl>,
    /// The segments, oldest first.
    pub segments: Vec<MediaSegment>,
    /// Partial segments of the segment still being written (after the last full segment).
    pub trailing_parts: Vec<PartialSegment>,
    /// EXT-X-PRELOAD-HINT tags.
    pub preload_hints: Vec<PreloadHint>,
    /// EXT-X-SKIP SKIPPED-SEGMENTS: a delta update left out this many segments, which the
    /// media sequence still counts (the segments listed follow them).
    pub skipped_segments: Option<u64>,
    /// EXT-X-RENDITION-REPORT tags (low-latency HLS).
    pub rendition_reports: Vec<RenditionReport>,
    /// EXT-X-ENDLIST: no more segments will be added.
    pub end_list: bool,
}

impl Default for MediaPlaylist {
    fn default() -> Self {
        Self {
            version: 3,
            target_duration: 2,
            media_sequence: 0,
            discontinuity_sequence: 0,
            playlist_type: None,
            independent_segments: false,
            part_target: None,
            server_control: None,
            segments: Vec::new(),
            trailing_parts: Vec::new(),
            preload_hints: Vec::new(),
            skipped_segments: None,
            rendition_reports: Vec::new(),
            end_list: false,
        }
    }
}

impl MediaPlaylist {
    /// The smallest EXT-X-TARGETDURATION these segments allow: the longest EXTINF rounded to
    /// the nearest second (RFC 8216 §4.3.3.1), at least 1.
    pub fn required_target_duration(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| {
                u64::try_from(s.duration.as_millis().saturating_add(500) / 1000).unwrap_or(u64::MAX)
            })
            .max()
            .unwrap_or(0)
            .max(1)
    }
}

/// One media segment and the tags that apply to it.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct MediaSegment {
    /// The URI line.
    pub uri: String,
    /// EXTINF duration (written to the millisecond).
    pub duration: Duration,
    /// EXTINF title.
    pub title: String,
    /// EXT-X-DISCONTINUITY before it.
    pub discontinuity: bool,
    /// EXT-X-PROGRAM-DATE-TIME of its first sample.
    pub program_date_time: Option<DateTime>,
    /// EXT-X-BYTERANGE.
    pub byte_range: Option<ByteRange>,
    /// EXT-X-GAP: the segment is missing.
    pub gap: bool,
    /// Its partial segments (low-latency HLS), listed before it.
    pub parts: Vec<PartialSegment>,
    /// EXT-X-MAP before it: the media initialization section of it and the segments after
    /// it (fMP4), until the next.
    pub map: Option<Map>,
}

/// EXT-X-MAP: where a segment's media initialization section is.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Map {
    /// URI.
    pub uri: String,
    /// BYTERANGE (with an offset, as the tag requires).
    pub byte_range: Option<ByteRange>,
}

/// EXT-X-RENDITION-REPORT: where another rendition's live edge is.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RenditionReport {
    /// The rendition's media playlist, relative to this one.
    pub uri: String,
    /// LAST-MSN.
    pub last_msn: Option<u64>,
    /// LAST-PART.
    pub last_part: Option<u64>,
}

/// A byte range: `length[@offset]`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ByteRange {
    /// Bytes in the range.
    pub length: u64,
    /// First byte; absent means right after the previous range of the same resource.
    pub offset: Option<u64>,
}

/// EXT-X-PART (low-latency HLS).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PartialSegment {
    /// URI.
    pub uri: String,
    /// DURATION.
    pub duration: Duration,
    /// INDEPENDENT=YES: starts with a keyframe.
    pub independent: bool,
    /// BYTERANGE.
    pub byte_range: Option<ByteRange>,
    /// GAP=YES.
    pub gap: bool,
}

/// EXT-X-SERVER-CONTROL (low-latency HLS).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ServerControl {
    /// CAN-BLOCK-RELOAD=YES.
    pub can_block_reload: bool,
    /// CAN-SKIP-UNTIL.
    pub can_skip_until: Option<Duration>,
    /// HOLD-BACK.
    pub hold_back: Option<Duration>,
    /// PART-HOLD-BACK.
    pub part_hold_back: Option<Duration>,
}

/// TYPE of an EXT-X-PRELOAD-HINT.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PreloadHintType {
    /// The next partial segment.
    Part,
    /// The next media initialization section.
    Map,
}

/// EXT-X-PRELOAD-HINT (low-latency HLS).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PreloadHint {
    /// TYPE.
    pub kind: PreloadHintType,
    /// URI.
    pub uri: String,
    /// BYTERANGE-START.
    pub byte_range_start: Option<u64>,
    /// BYTERANGE-LENGTH.
    pub byte_range_length: Option<u64>,
}

/// A multivariant playlist (RFC 8216 §4.3.4).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MultivariantPlaylist {
    /// EXT-X-VERSION.
    pub version: u8,
    /// EXT-X-INDEPENDENT-SEGMENTS.
    pub independent_segments: bool,
    /// EXT-X-MEDIA renditions.
    pub renditions: Vec<Rendition>,
    /// EXT-X-STREAM-INF variant streams.
    pub variants: Vec<VariantStream>,
}

impl Default for MultivariantPlaylist {
    fn default() -> Self {
        Self {
            version: 3,
            independent_segments: false,
            renditions: Vec::new(),
            variants: Vec::new(),
        }
    }
}

/// Width and height in pixels.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Resolution {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// EXT-X-STREAM-INF and its URI.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct VariantStream {
    /// The media playlist URI.
    pub uri: String,
    /// BANDWIDTH: peak bit/s.
    pub bandwidth: u64,
    /// AVERAGE-BANDWIDTH.
    pub average_bandwidth: Option<u64>,
    /// CODECS (RFC 6381 strings, comma-separated).
    pub codecs: Option<String>,
    /// RESOLUTION.
    pub resolution: Option<Resolution>,
    /// FRAME-RATE in thousandths of a frame per second.
    pub frame_rate_millis: Option<u32>,
    /// AUDIO group id.
    pub audio: Option<String>,
}

/// TYPE of an EXT-X-MEDIA rendition.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MediaType {
    /// AUDIO.
    Audio,
    /// VIDEO.
    Video,
    /// SUBTITLES.
    Subtitles,
    /// CLOSED-CAPTIONS.
    ClosedCaptions,
}

/// EXT-X-MEDIA.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Rendition {
    /// TYPE.
    pub media_type: MediaType,
    /// GROUP-ID.
    pub group_id: String,
    /// NAME.
    pub name: String,
    /// URI (absent when the rendition is in the variant stream itself).
    pub uri: Option<String>,
    /// LANGUAGE.
    pub language: Option<String>,
    /// DEFAULT=YES.
    pub default: bool,
    /// AUTOSELECT=YES.
    pub autoselect: bool,
}

#[cfg(test)]
mod tests;
