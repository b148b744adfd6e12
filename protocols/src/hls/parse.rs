//! Incremental playlist parser: bytes in any chunking, lines out, a playlist at the end.

use super::{
    ByteRange, DateTime, Map, MediaPlaylist, MediaSegment, MediaType, MultivariantPlaylist,
    PartialSegment, Playlist, PlaylistType, PreloadHint, PreloadHintType, Rendition,
    RenditionReport, Resolution, ServerControl, VariantStream,
};
use std::time::Duration;

/// Size limits of the parser.
#[derive(Clone, Copy, Debug)]
pub struct PlaylistLimits {
    /// Largest playlist in bytes.
    pub max_bytes: usize,
    /// Longest line in bytes.
    pub max_line: usize,
    /// Most segments (or variant streams) in one playlist.
    pub max_entries: usize,
}

impl Default for PlaylistLimits {
    fn default() -> Self {
        Self {
            max_bytes: 16 << 20,
            max_line: 64 << 10,
            max_entries: 100_000,
        }
    }
}

/// What is wrong with a playlist.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlaylistErrorKind {
    /// The first line is not `#EXTM3U`.
    #[error("the first line is not #EXTM3U")]
    MissingHeader,
    /// A line is not UTF-8.
    #[error("the line is not UTF-8")]
    NotUtf8,
    /// A line is over the limit.
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// The playlist is over the size limit.
    #[error("playlist larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Too many segments or variants.
    #[error("more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: usize,
    },
    /// A tag's value does not parse.
    #[error("bad value for {tag}")]
    BadValue {
        /// The tag (or tag and attribute).
        tag: &'static str,
    },
    /// A required attribute is missing.
    #[error("{tag} lacks {attribute}")]
    MissingAttribute {
        /// The tag.
        tag: &'static str,
        /// The attribute.
        attribute: &'static str,
    },
    /// Media and multivariant tags are mixed.
    #[error("media playlist and multivariant playlist tags are mixed")]
    MixedKinds,
    /// A media playlist has no EXT-X-TARGETDURATION.
    #[error("media playlist without EXT-X-TARGETDURATION")]
    MissingTargetDuration,
    /// A URI line with no EXTINF or EXT-X-STREAM-INF before it.
    #[error("URI line without EXTINF or EXT-X-STREAM-INF before it")]
    UnexpectedUri,
    /// The playlist ends after EXTINF or EXT-X-STREAM-INF, before its URI.
    #[error("playlist ends before the URI of its last entry")]
    MissingUri,
    /// Neither media nor multivariant tags were found.
    #[error("no media or multivariant playlist tags")]
    Empty,
}

/// A playlist error and the line it was found on (1-based; 0 at the end of input).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("playlist line {line}: {kind}")]
pub struct PlaylistError {
    /// The line number.
    pub line: usize,
    /// What is wrong.
    pub kind: PlaylistErrorKind,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Media,
    Multivariant,
}

/// The incremental parser.
#[derive(Debug)]
pub struct PlaylistParser {
    limits: PlaylistLimits,
    line: Vec<u8>,
    line_no: usize,
    bytes: usize,
    kind: Option<Kind>,
    saw_target: bool,
    media: MediaPlaylist,
    multi: MultivariantPlaylist,
    segment: Option<MediaSegment>,
    pending: MediaSegment,
    variant: Option<VariantStream>,
    failed: Option<PlaylistError>,
}

/// Parse a whole playlist with default limits.
pub fn parse(data: &[u8]) -> Result<Playlist, PlaylistError> {
    let mut p = PlaylistParser::new(PlaylistLimits::default());
    p.push(data)?;
    p.finish()
}

impl PlaylistParser {
    /// A parser with `limits`.
    pub fn new(limits: PlaylistLimits) -> Self {
        Self {
            limits,
            line: Vec::new(),
            line_no: 0,
            bytes: 0,
            kind: None,
            saw_target: false,
            media: MediaPlaylist {
                target_duration: 0,
                version: 1,
                ..MediaPlaylist::default()
            },
            multi: MultivariantPlaylist {
                version: 1,
                ..MultivariantPlaylist::default()
            },
            segment: None,
            pending: MediaSegment::default(),
            variant: None,
            failed: None,
        }
    }

    /// Feed the next bytes.
    pub fn push(&mut self, data: &[u8]) -> Result<(), PlaylistError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        // Bytes past the size limit are refused only after the bytes before them were parsed,
        // so the first error is the same however the input was split.
        let allowed = self.limits.max_bytes.saturating_sub(self.bytes);
        let (data, over) = match data.get(..allowed) {
            Some(head) if head.len() < data.len() => (head, true),
            _ => (data, false),
        };
        self.bytes += data.len();
        let mut rest = data;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            self.line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            self.end_line()?;
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > self.limits.max_line {
            self.line_no += 1; // the line being collected is the one too long
            return self.fail(PlaylistErrorKind::LineTooLong {
                limit: self.limits.max_line,
            });
        }
        if over {
            self.line_no += 1;
            return self.fail(PlaylistErrorKind::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    /// End of input: the playlist.
    pub fn finish(mut self) -> Result<Playlist, PlaylistError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if !self.line.is_empty() {
            self.end_line()?;
        }
        let at_end = |kind| PlaylistError { line: 0, kind };
        if self.line_no == 0 {
            return Err(at_end(PlaylistErrorKind::MissingHeader));
        }
        match self.kind {
            Some(Kind::Media) => {
                if self.segment.is_some() {
                    return Err(at_end(PlaylistErrorKind::MissingUri));
                }
                if !self.saw_target {
                    return Err(at_end(PlaylistErrorKind::MissingTargetDuration));
                }
                self.media.trailing_parts = std::mem::take(&mut self.pending.parts);
                Ok(Playlist::Media(self.media))
            }
            Some(Kind::Multivariant) => {
                if self.variant.is_some() {
                    return Err(at_end(PlaylistErrorKind::MissingUri));
                }
                Ok(Playlist::Multivariant(self.multi))
            }
            None => Err(at_end(PlaylistErrorKind::Empty)),
        }
    }

    fn fail<T>(&mut self, kind: PlaylistErrorKind) -> Result<T, PlaylistError> {
        let e = PlaylistError {
            line: self.line_no.max(1),
            kind,
        };
        self.failed = Some(e.clone());
        Err(e)
    }

    fn end_line(&mut self) -> Result<(), PlaylistError> {
        self.line_no += 1;
        if self.line.len() > self.limits.max_line {
            return self.fail(PlaylistErrorKind::LineTooLong {
                limit: self.limits.max_line,
            });
        }
        let raw = std::mem::take(&mut self.line);
        let result = match std::str::from_utf8(&raw) {
            Ok(text) => self.line(text.strip_suffix('\r').unwrap_or(text).trim_end()),
            Err(_) => Err(PlaylistErrorKind::NotUtf8),
        };
        self.line = raw;
        self.line.clear();
        match result {
            Ok(()) => Ok(()),
            Err(kind) => self.fail(kind),
        }
    }

    fn set_kind(&mut self, kind: Kind) -> Result<(), PlaylistErrorKind> {
        match self.kind {
            Some(k) if k != kind => Err(PlaylistErrorKind::MixedKinds),
            _ => {
                self.kind = Some(kind);
                Ok(())
            }
        }
    }

    fn line(&mut self, line: &str) -> Result<(), PlaylistErrorKind> {
        if self.line_no == 1 {
            return if line.trim_start_matches('\u{feff}') == "#EXTM3U" {
                Ok(())
            } else {
                Err(PlaylistErrorKind::MissingHeader)
            };
        }
        if line.is_empty() {
            return Ok(());
        }
        let Some(tag_line) = line.strip_prefix('#') else {
            return self.uri(line);
        };
        if !tag_line.starts_with("EXT") {
            return Ok(()); // a comment
        }
        let (tag, value) = tag_line.split_once(':').unwrap_or((tag_line, ""));
        match tag {
            "EXT-X-VERSION" => {
                let v = number(value, "EXT-X-VERSION")?;
                let v = u8::try_from(v).map_err(|_| bad("EXT-X-VERSION"))?;
                self.media.version = v;
                self.multi.version = v;
            }
            "EXT-X-INDEPENDENT-SEGMENTS" => {
                self.media.independent_segments = true;
                self.multi.independent_segments = true;
            }
            "EXT-X-TARGETDURATION" => {
                self.set_kind(Kind::Media)?;
                self.media.target_duration = number(value, "EXT-X-TARGETDURATION")?;
                self.saw_target = true;
            }
            "EXT-X-MEDIA-SEQUENCE" => {
                self.set_kind(Kind::Media)?;
                self.media.media_sequence = number(value, "EXT-X-MEDIA-SEQUENCE")?;
            }
            "EXT-X-DISCONTINUITY-SEQUENCE" => {
                self.set_kind(Kind::Media)?;
                self.media.discontinuity_sequence = number(value, "EXT-X-DISCONTINUITY-SEQUENCE")?;
            }
            "EXT-X-PLAYLIST-TYPE" => {
                self.set_kind(Kind::Media)?;
                self.media.playlist_type = Some(match value {
                    "EVENT" => PlaylistType::Event,
                    "VOD" => PlaylistType::Vod,
                    _ => return Err(bad("EXT-X-PLAYLIST-TYPE")),
                });
            }
            "EXT-X-ENDLIST" => {
                self.set_kind(Kind::Media)?;
                self.media.end_list = true;
            }
            "EXTINF" => {
                self.set_kind(Kind::Media)?;
                let (duration, title) = value.split_once(',').unwrap_or((value, ""));
                self.pending.duration = seconds(duration, "EXTINF")?;
                self.pending.title = title.to_owned();
                self.segment = Some(std::mem::take(&mut self.pending));
            }
            "EXT-X-DISCONTINUITY" => {
                self.set_kind(Kind::Media)?;
                self.pending.discontinuity = true;
            }
            "EXT-X-GAP" => {
                self.set_kind(Kind::Media)?;
                self.pending.gap = true;
            }
            "EXT-X-PROGRAM-DATE-TIME" => {
                self.set_kind(Kind::Media)?;
                self.pending.program_date_time =
                    Some(DateTime::parse(value).ok_or(bad("EXT-X-PROGRAM-DATE-TIME"))?);
            }
            "EXT-X-BYTERANGE" => {
                self.set_kind(Kind::Media)?;
                self.pending.byte_range = Some(byte_range(value, "EXT-X-BYTERANGE")?);
            }
            "EXT-X-PART-INF" => {
                self.set_kind(Kind::Media)?;
                let target = attribute(value, "PART-TARGET")
                    .ok_or(missing("EXT-X-PART-INF", "PART-TARGET"))?;
                self.media.part_target = Some(seconds(target, "EXT-X-PART-INF")?);
            }
            "EXT-X-SERVER-CONTROL" => {
                self.set_kind(Kind::Media)?;
                self.media.server_control = Some(server_control(value)?);
            }
            "EXT-X-PART" => {
                self.set_kind(Kind::Media)?;
                self.pending.parts.push(part(value)?);
            }
            "EXT-X-PRELOAD-HINT" => {
                self.set_kind(Kind::Media)?;
                self.media.preload_hints.push(preload_hint(value)?);
            }
            "EXT-X-MAP" => {
                self.set_kind(Kind::Media)?;
                self.pending.map = Some(map(value)?);
            }
            "EXT-X-SKIP" => {
                self.set_kind(Kind::Media)?;
                let n = attribute(value, "SKIPPED-SEGMENTS")
                    .ok_or(missing("EXT-X-SKIP", "SKIPPED-SEGMENTS"))?;
                self.media.skipped_segments = Some(number(n, "EXT-X-SKIP")?);
            }
            "EXT-X-RENDITION-REPORT" => {
                self.set_kind(Kind::Media)?;
                if self.media.rendition_reports.len() >= self.limits.max_entries {
                    return Err(PlaylistErrorKind::TooManyEntries {
                        limit: self.limits.max_entries,
                    });
                }
                self.media.rendition_reports.push(rendition_report(value)?);
            }
            "EXT-X-STREAM-INF" => {
                self.set_kind(Kind::Multivariant)?;
                self.variant = Some(variant(value)?);
            }
            "EXT-X-MEDIA" => {
                self.set_kind(Kind::Multivariant)?;
                self.multi.renditions.push(rendition(value)?);
            }
            _ => {} // unknown tags are ignored (RFC 8216 §6.3.1)
        }
        Ok(())
    }

    fn uri(&mut self, uri: &str) -> Result<(), PlaylistErrorKind> {
        if let Some(mut segment) = self.segment.take() {
            if self.media.segments.len() >= self.limits.max_entries {
                return Err(PlaylistErrorKind::TooManyEntries {
                    limit: self.limits.max_entries,
                });
            }
            segment.uri = uri.to_owned();
            self.media.segments.push(segment);
            return Ok(());
        }
        if let Some(mut variant) = self.variant.take() {
            if self.multi.variants.len() >= self.limits.max_entries {
                return Err(PlaylistErrorKind::TooManyEntries {
                    limit: self.limits.max_entries,
                });
            }
            variant.uri = uri.to_owned();
            self.multi.variants.push(variant);
            return Ok(());
        }
        Err(PlaylistErrorKind::UnexpectedUri)
    }
}

fn bad(tag: &'static str) -> PlaylistErrorKind {
    PlaylistErrorKind::BadValue { tag }
}

fn missing(tag: &'static str, attribute: &'static str) -> PlaylistErrorKind {
    PlaylistErrorKind::MissingAttribute { tag, attribute }
}

fn number(value: &str, tag: &'static str) -> Result<u64, PlaylistErrorKind> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(tag));
    }
    value.parse().map_err(|_| bad(tag))
}

/// A decimal number of seconds, exact to the nanosecond.
fn seconds(value: &str, tag: &'static str) -> Result<Duration, PlaylistErrorKind> {
    let (whole, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs = number(whole, tag)?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(tag));
    }
    let mut nanos = 0u32;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |d| u32::from(d - b'0'));
        nanos = nanos * 10 + digit;
    }
    Ok(Duration::new(secs, nanos))
}

fn byte_range(value: &str, tag: &'static str) -> Result<ByteRange, PlaylistErrorKind> {
    let (length, offset) = match value.split_once('@') {
        Some((l, o)) => (l, Some(number(o, tag)?)),
        None => (value, None),
    };
    Ok(ByteRange {
        length: number(length, tag)?,
        offset,
    })
}

/// The attributes of an attribute list (RFC 8216 §4.2): `(name, raw value)` pairs, quoted
/// strings returned without their quotes.
fn attributes(list: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = list;
    std::iter::from_fn(move || {
        let (name, after) = rest.split_once('=')?;
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            let tail = &quoted[end + 1..];
            (&quoted[..end], tail.strip_prefix(',').unwrap_or(tail))
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        rest = tail;
        Some((name.trim(), value))
    })
}

fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    attributes(list).find(|(n, _)| *n == name).map(|(_, v)| v)
}

fn flag(value: &str, tag: &'static str) -> Result<bool, PlaylistErrorKind> {
    match value {
        "YES" => Ok(true),
        "NO" => Ok(false),
        _ => Err(bad(tag)),
    }
}

fn server_control(list: &str) -> Result<ServerControl, PlaylistErrorKind> {
    const TAG: &str = "EXT-X-SERVER-CONTROL";
    let mut sc = ServerControl::default();
    for (name, value) in attributes(list) {
        match name {
            "CAN-BLOCK-RELOAD" => sc.can_block_reload = flag(value, TAG)?,
            "CAN-SKIP-UNTIL" => sc.can_skip_until = Some(seconds(value, TAG)?),
            "HOLD-BACK" => sc.hold_back = Some(seconds(value, TAG)?),
            "PART-HOLD-BACK" => sc.part_hold_back = Some(seconds(value, TAG)?),
            _ => {}
        }
    }
    Ok(sc)
}

fn part(list: &str) -> Result<PartialSegment, PlaylistErrorKind> {
    const TAG: &str = "EXT-X-PART";
    let mut p = PartialSegment::default();
    let (mut has_uri, mut has_duration) = (false, false);
    for (name, value) in attributes(list) {
        match name {
            "URI" => (p.uri, has_uri) = (value.to_owned(), true),
            "DURATION" => (p.duration, has_duration) = (seconds(value, TAG)?, true),
            "INDEPENDENT" => p.independent = flag(value, TAG)?,
            "BYTERANGE" => p.byte_range = Some(byte_range(value, TAG)?),
            "GAP" => p.gap = flag(value, TAG)?,
            _ => {}
        }
    }
    if !has_uri {
        return Err(missing(TAG, "URI"));
    }
    if !has_duration {
        return Err(missing(TAG, "DURATION"));
    }
    Ok(p)
}

fn preload_hint(list: &str) -> Result<PreloadHint, PlaylistErrorKind> {
    const TAG: &str = "EXT-X-PRELOAD-HINT";
    let mut kind = None;
    let mut uri = None;
    let (mut start, mut length) = (None, None);
    for (name, value) in attributes(list) {
        match name {
            "TYPE" => {
                kind = Some(match value {
                    "PART" => PreloadHintType::Part,
                    "MAP" => PreloadHintType::Map,
                    _ => return Err(bad(TAG)),
                })
            }
            "URI" => uri = Some(value.to_owned()),
            "BYTERANGE-START" => start = Some(number(value, TAG)?),
            "BYTERANGE-LENGTH" => length = Some(number(value, TAG)?),
            _ => {}
        }
    }
    Ok(PreloadHint {
        kind: kind.ok_or(missing(TAG, "TYPE"))?,
        uri: uri.ok_or(missing(TAG, "URI"))?,
        byte_range_start: start,
        byte_range_length: length,
    })
}

fn map(list: &str) -> Result<Map, PlaylistErrorKind> {
    const TAG: &str = "EXT-X-MAP";
    let mut m = Map::default();
    let mut has_uri = false;
    for (name, value) in attributes(list) {
        match name {
            "URI" => (m.uri, has_uri) = (value.to_owned(), true),
            "BYTERANGE" => m.byte_range = Some(byte_range(value, TAG)?),
            _ => {}
        }
    }
    if !has_uri {
        return Err(missing(TAG, "URI"));
    }
    Ok(m)
}

fn rendition_report(list: &str) -> Result<RenditionReport, PlaylistErrorKind> {
    const TAG: &str = "EXT-X-RENDITION-REPORT";
    let mut r = RenditionReport::default();
    let mut has_uri = false;
    for (name, value) in attributes(list) {
        match name {
            "URI" => (r.uri, has_uri) = (value.to_owned(), true),
            "LAST-MSN" => r.last_msn = Some(number(value, TAG)?),
            "LAST-PART" => r.last_part = Some(number(value, TAG)?),
            _ => {}
        }
    }
    if !has_uri {
        return Err(missing(TAG, "URI"));
    }
    Ok(r)
}

fn variant(list: &str) -> Result<VariantStream, PlaylistErrorKind> {
    const TAG: &str = "EXT-X-STREAM-INF";
    let mut v = VariantStream::default();
    let mut has_bandwidth = false;
    for (name, value) in attributes(list) {
        match name {
            "BANDWIDTH" => (v.bandwidth, has_bandwidth) = (number(value, TAG)?, true),
            "AVERAGE-BANDWIDTH" => v.average_bandwidth = Some(number(value, TAG)?),
            "CODECS" => v.codecs = Some(value.to_owned()),
            "RESOLUTION" => {
                let (w, h) = value.split_once('x').ok_or(bad(TAG))?;
                let dim =
                    |s: &str| number(s, TAG).and_then(|n| u32::try_from(n).map_err(|_| bad(TAG)));
                v.resolution = Some(Resolution {
                    width: dim(w)?,
                    height: dim(h)?,
                });
            }
            "FRAME-RATE" => {
                let d = seconds(value, TAG)?;
                let millis = d.as_millis();
                v.frame_rate_millis = Some(u32::try_from(millis).map_err(|_| bad(TAG))?);
            }
            "AUDIO" => v.audio = Some(value.to_owned()),
            _ => {}
        }
    }
    if !has_bandwidth {
        return Err(missing(TAG, "BANDWIDTH"));
    }
    Ok(v)
}

fn rendition(list: &str) -> Result<Rendition, PlaylistErrorKind> {
    const TAG: &str = "EXT-X-MEDIA";
    let mut media_type = None;
    let (mut group_id, mut name) = (None, None);
    let mut r = Rendition {
        media_type: MediaType::Audio,
        group_id: String::new(),
        name: String::new(),
        uri: None,
        language: None,
        default: false,
        autoselect: false,
    };
    for (attr, value) in attributes(list) {
        match attr {
            "TYPE" => {
                media_type = Some(match value {
                    "AUDIO" => MediaType::Audio,
                    "VIDEO" => MediaType::Video,
                    "SUBTITLES" => MediaType::Subtitles,
                    "CLOSED-CAPTIONS" => MediaType::ClosedCaptions,
                    _ => return Err(bad(TAG)),
                })
            }
            "GROUP-ID" => group_id = Some(value.to_owned()),
            "NAME" => name = Some(value.to_owned()),
            "URI" => r.uri = Some(value.to_owned()),
            "LANGUAGE" => r.language = Some(value.to_owned()),
            "DEFAULT" => r.default = flag(value, TAG)?,
            "AUTOSELECT" => r.autoselect = flag(value, TAG)?,
            _ => {}
        }
    }
    r.media_type = media_type.ok_or(missing(TAG, "TYPE"))?;
    r.group_id = group_id.ok_or(missing(TAG, "GROUP-ID"))?;
    r.name = name.ok_or(missing(TAG, "NAME"))?;
    Ok(r)
}
