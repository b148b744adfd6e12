//! Playlist writer: `Display` for both playlist kinds.

use super::{
    ByteRange, MediaPlaylist, MediaSegment, MediaType, MultivariantPlaylist, PartialSegment,
    PlaylistType, PreloadHintType,
};
use std::fmt::{self, Display, Formatter};
use std::time::Duration;

/// A duration as decimal seconds with millisecond precision (rounded to the nearest ms).
pub(super) struct Seconds(pub(super) Duration);

impl Display for Seconds {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let ms = (self.0.as_micros() + 500) / 1000;
        write!(f, "{}.{:03}", ms / 1000, ms % 1000)
    }
}

fn yes(flag: bool) -> &'static str {
    if flag {
        "YES"
    } else {
        "NO"
    }
}

impl Display for ByteRange {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.length)?;
        match self.offset {
            Some(o) => write!(f, "@{o}"),
            None => Ok(()),
        }
    }
}

fn write_part(f: &mut Formatter<'_>, part: &PartialSegment) -> fmt::Result {
    write!(
        f,
        "#EXT-X-PART:DURATION={},URI=\"{}\"",
        Seconds(part.duration),
        part.uri
    )?;
    if part.independent {
        f.write_str(",INDEPENDENT=YES")?;
    }
    if let Some(r) = part.byte_range {
        write!(f, ",BYTERANGE=\"{r}\"")?;
    }
    if part.gap {
        f.write_str(",GAP=YES")?;
    }
    f.write_str("\n")
}

/// A segment's lines in a media playlist: its tags, then its URI.
impl Display for MediaSegment {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if let Some(map) = &self.map {
            write!(f, "#EXT-X-MAP:URI=\"{}\"", map.uri)?;
            if let Some(r) = map.byte_range {
                write!(f, ",BYTERANGE=\"{r}\"")?;
            }
            f.write_str("\n")?;
        }
        if self.discontinuity {
            writeln!(f, "#EXT-X-DISCONTINUITY")?;
        }
        if let Some(t) = self.program_date_time {
            writeln!(f, "#EXT-X-PROGRAM-DATE-TIME:{t}")?;
        }
        for part in &self.parts {
            write_part(f, part)?;
        }
        if self.gap {
            writeln!(f, "#EXT-X-GAP")?;
        }
        if let Some(r) = self.byte_range {
            writeln!(f, "#EXT-X-BYTERANGE:{r}")?;
        }
        writeln!(f, "#EXTINF:{},{}", Seconds(self.duration), self.title)?;
        writeln!(f, "{}", self.uri)
    }
}

impl Display for MediaPlaylist {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "#EXTM3U")?;
        writeln!(f, "#EXT-X-VERSION:{}", self.version)?;
        writeln!(f, "#EXT-X-TARGETDURATION:{}", self.target_duration)?;
        match self.playlist_type {
            Some(PlaylistType::Event) => writeln!(f, "#EXT-X-PLAYLIST-TYPE:EVENT")?,
            Some(PlaylistType::Vod) => writeln!(f, "#EXT-X-PLAYLIST-TYPE:VOD")?,
            None => {}
        }
        if self.independent_segments {
            writeln!(f, "#EXT-X-INDEPENDENT-SEGMENTS")?;
        }
        if let Some(sc) = &self.server_control {
            write!(
                f,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD={}",
                yes(sc.can_block_reload)
            )?;
            if let Some(d) = sc.can_skip_until {
                write!(f, ",CAN-SKIP-UNTIL={}", Seconds(d))?;
            }
            if let Some(d) = sc.hold_back {
                write!(f, ",HOLD-BACK={}", Seconds(d))?;
            }
            if let Some(d) = sc.part_hold_back {
                write!(f, ",PART-HOLD-BACK={}", Seconds(d))?;
            }
            f.write_str("\n")?;
        }
        if let Some(d) = self.part_target {
            writeln!(f, "#EXT-X-PART-INF:PART-TARGET={}", Seconds(d))?;
        }
        writeln!(f, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence)?;
        if self.discontinuity_sequence != 0 {
            writeln!(
                f,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            )?;
        }
        if let Some(n) = self.skipped_segments {
            writeln!(f, "#EXT-X-SKIP:SKIPPED-SEGMENTS={n}")?;
        }
        for s in &self.segments {
            write!(f, "{s}")?;
        }
        for part in &self.trailing_parts {
            write_part(f, part)?;
        }
        for hint in &self.preload_hints {
            let kind = match hint.kind {
                PreloadHintType::Part => "PART",
                PreloadHintType::Map => "MAP",
            };
            write!(f, "#EXT-X-PRELOAD-HINT:TYPE={kind},URI=\"{}\"", hint.uri)?;
            if let Some(start) = hint.byte_range_start {
                write!(f, ",BYTERANGE-START={start}")?;
            }
            if let Some(length) = hint.byte_range_length {
                write!(f, ",BYTERANGE-LENGTH={length}")?;
            }
            f.write_str("\n")?;
        }
        for r in &self.rendition_reports {
            write!(f, "#EXT-X-RENDITION-REPORT:URI=\"{}\"", r.uri)?;
            if let Some(msn) = r.last_msn {
                write!(f, ",LAST-MSN={msn}")?;
            }
            if let Some(part) = r.last_part {
                write!(f, ",LAST-PART={part}")?;
            }
            f.write_str("\n")?;
        }
        if self.end_list {
            writeln!(f, "#EXT-X-ENDLIST")?;
        }
        Ok(())
    }
}

impl Display for MultivariantPlaylist {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "#EXTM3U")?;
        writeln!(f, "#EXT-X-VERSION:{}", self.version)?;
        if self.independent_segments {
            writeln!(f, "#EXT-X-INDEPENDENT-SEGMENTS")?;
        }
        for r in &self.renditions {
            let kind = match r.media_type {
                MediaType::Audio => "AUDIO",
                MediaType::Video => "VIDEO",
                MediaType::Subtitles => "SUBTITLES",
                MediaType::ClosedCaptions => "CLOSED-CAPTIONS",
            };
            write!(
                f,
                "#EXT-X-MEDIA:TYPE={kind},GROUP-ID=\"{}\",NAME=\"{}\"",
                r.group_id, r.name
            )?;
            if let Some(lang) = &r.language {
                write!(f, ",LANGUAGE=\"{lang}\"")?;
            }
            write!(
                f,
                ",DEFAULT={},AUTOSELECT={}",
                yes(r.default),
                yes(r.autoselect)
            )?;
            if let Some(uri) = &r.uri {
                write!(f, ",URI=\"{uri}\"")?;
            }
            f.write_str("\n")?;
        }
        for v in &self.variants {
            write!(f, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth)?;
            if let Some(b) = v.average_bandwidth {
                write!(f, ",AVERAGE-BANDWIDTH={b}")?;
            }
            if let Some(c) = &v.codecs {
                write!(f, ",CODECS=\"{c}\"")?;
            }
            if let Some(r) = v.resolution {
                write!(f, ",RESOLUTION={}x{}", r.width, r.height)?;
            }
            if let Some(fr) = v.frame_rate_millis {
                write!(f, ",FRAME-RATE={}.{:03}", fr / 1000, fr % 1000)?;
            }
            if let Some(a) = &v.audio {
                write!(f, ",AUDIO=\"{a}\"")?;
            }
            writeln!(f, "\n{}", v.uri)?;
        }
        Ok(())
    }
}
