//! Low-latency HLS (draft-pantos-hls-rfc8216bis): segments are also published part by part,
//! and the media playlist lists the parts of its last segments, hints the next part, and says
//! the server holds a playlist request until the part it names exists.
//!
//! What the window holds for it: the parts still fetchable ([`Part`]), where the stream is
//! ([`LowLatency`]), and a delta update of the playlist (EXT-X-SKIP) when it is long enough
//! to skip anything. What a request may ask and what it is answered is [`Reload`] and
//! [`LowLatency::reload`]: the spec's 400 cases, answer now, or hold.

use super::Container;
use bytes::Bytes;
use shardcast_protocols::hls::{
    MediaPlaylist, PartialSegment, PreloadHint, PreloadHintType, ServerControl,
};
use std::time::Duration;

/// One part of a segment: cut between access units, immutable once cut and shared like
/// segments (`/{stream}/{sequence}.{index}.ts`).
#[derive(Debug)]
pub struct Part {
    /// Its segment's media sequence number.
    pub sequence: u64,
    /// Its index in the segment, from 0.
    pub index: u32,
    /// Duration, 90 kHz ticks.
    pub duration: u64,
    /// It starts with a keyframe.
    pub independent: bool,
    /// The bytes (whole transport packets; the first part of a segment starts with the PAT).
    pub body: Bytes,
    /// Entity tag, quoted.
    pub etag: String,
    /// Its CMAF rendition (one fMP4 fragment), when the stream has one.
    pub cmaf: Option<Bytes>,
}

impl Part {
    /// Its duration.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.duration * 100_000 / 9)
    }

    /// Its name in playlists of `container`.
    pub fn uri(sequence: u64, index: u32, container: Container) -> String {
        format!("{sequence}.{index}.{}", container.extension())
    }

    fn listed(&self, container: Container) -> PartialSegment {
        PartialSegment {
            uri: Part::uri(self.sequence, self.index, container),
            duration: self.duration(),
            independent: self.independent,
            ..PartialSegment::default()
        }
    }
}

/// Where a low-latency stream is, as one window publishes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LowLatency {
    /// EXT-X-PART-INF's PART-TARGET.
    pub part_target: Duration,
    /// The newest complete segment.
    pub last_segment: u64,
    /// The segment being built (the newest parts are its), and how many of its parts exist.
    pub building: u64,
    pub building_parts: u32,
    /// EXT-X-TARGETDURATION, seconds.
    pub target_duration: u64,
}

/// What a playlist request asks with its delivery directives (`_HLS_msn`, `_HLS_part`,
/// `_HLS_skip`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reload {
    /// Hold until this segment (and part) exists.
    pub msn: Option<u64>,
    pub part: Option<u32>,
    /// A delta update is asked for.
    pub skip: bool,
}

/// A request's delivery directives could not be read (answered 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadDirective(pub &'static str);

impl Reload {
    /// The directives of `query` (other parameters are ignored).
    pub fn parse(query: &str) -> Result<Reload, BadDirective> {
        let mut reload = Reload::default();
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "_HLS_msn" => {
                    reload.msn = Some(
                        value
                            .parse()
                            .map_err(|_| BadDirective("_HLS_msn is not a number"))?,
                    )
                }
                "_HLS_part" => {
                    reload.part = Some(
                        value
                            .parse()
                            .map_err(|_| BadDirective("_HLS_part is not a number"))?,
                    )
                }
                "_HLS_skip" => match value {
                    "YES" | "v2" => reload.skip = true,
                    _ => return Err(BadDirective("_HLS_skip is YES or v2")),
                },
                _ => {}
            }
        }
        if reload.part.is_some() && reload.msn.is_none() {
            return Err(BadDirective("_HLS_part without _HLS_msn"));
        }
        Ok(reload)
    }

    /// Whether it asks the server to hold the request.
    pub fn blocks(&self) -> bool {
        self.msn.is_some()
    }
}

/// What a blocking request gets now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// What it waits for exists: answer.
    Ready,
    /// Not yet: hold the request.
    Wait,
    /// Too far ahead of the stream (the spec's 400).
    TooFar,
}

impl LowLatency {
    /// How many parts ahead of the newest a request may ask for (the spec's Advance Part
    /// Limit: three seconds' worth for parts under a second, else three).
    pub fn advance_part_limit(&self) -> u32 {
        let target = self.part_target.as_secs_f64();
        if target < 1.0 {
            (3.0 / target).ceil() as u32
        } else {
            3
        }
    }

    /// Whether part `part` of segment `msn` (or, without a part, the whole segment) exists,
    /// may come, or is too far ahead.
    pub fn hold(&self, msn: u64, part: Option<u32>) -> Hold {
        if msn <= self.last_segment {
            return Hold::Ready;
        }
        if msn > self.last_segment + 2 {
            return Hold::TooFar;
        }
        let Some(part) = part else {
            return Hold::Wait;
        };
        // Parts ahead of the newest: those left in the segment being built count as none
        // (its length is not known), so a request one segment on is measured from its start.
        let ahead = if msn == self.building {
            part.saturating_add(1).saturating_sub(self.building_parts)
        } else {
            part.saturating_add(1)
        };
        if msn == self.building && part < self.building_parts {
            Hold::Ready
        } else if ahead > self.advance_part_limit() {
            Hold::TooFar
        } else {
            Hold::Wait
        }
    }

    /// Whether part `index` of segment `sequence` may still come soon enough to hold a
    /// request for it (the hinted part, or a few after).
    pub fn part_may_come(&self, sequence: u64, index: u32) -> bool {
        matches!(self.hold(sequence, Some(index)), Hold::Wait)
    }

    /// How long a blocking request is held at most: three target durations.
    pub fn hold_limit(&self) -> Duration {
        Duration::from_secs(3 * self.target_duration.max(1))
    }
}

/// Decorate `playlist` (its segments listed) as a low-latency playlist: the server control,
/// PART-INF, the parts of the segments in the last three target durations, the parts of the
/// segment being built and the hint of the next part. `parts_of(sequence)` gives a segment's
/// parts.
pub fn decorate<'a>(
    playlist: &mut MediaPlaylist,
    part_target: Duration,
    container: Container,
    building: (u64, &'a [std::sync::Arc<Part>]),
    parts_of: impl Fn(u64) -> Option<&'a [std::sync::Arc<Part>]>,
) {
    let target = Duration::from_secs(playlist.target_duration);
    playlist.version = playlist.version.max(9);
    playlist.part_target = Some(part_target);
    playlist.server_control = Some(ServerControl {
        can_block_reload: true,
        can_skip_until: Some(target * 6),
        hold_back: None,
        part_hold_back: Some(part_target * 3),
    });
    // Parts are listed for the segments in the last three target durations.
    let mut covered = Duration::ZERO;
    for segment in playlist.segments.iter_mut().rev() {
        if covered >= target * 3 {
            break;
        }
        covered += segment.duration;
        let Some(sequence) = segment
            .uri
            .split('.')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if let Some(parts) = parts_of(sequence) {
            segment.parts = parts.iter().map(|p| p.listed(container)).collect();
        }
    }
    let (sequence, parts) = building;
    playlist.trailing_parts = parts.iter().map(|p| p.listed(container)).collect();
    playlist.preload_hints = vec![PreloadHint {
        kind: PreloadHintType::Part,
        uri: Part::uri(sequence, parts.len() as u32, container),
        byte_range_start: None,
        byte_range_length: None,
    }];
}

/// The delta update of `playlist` (EXT-X-SKIP in place of the segments that end more than
/// CAN-SKIP-UNTIL before its end), when there is any segment to skip.
pub fn delta(playlist: &MediaPlaylist) -> Option<MediaPlaylist> {
    let until = playlist.server_control.as_ref()?.can_skip_until?;
    let total: Duration = playlist
        .segments
        .iter()
        .map(|s| s.duration)
        .sum::<Duration>()
        + playlist
            .trailing_parts
            .iter()
            .map(|p| p.duration)
            .sum::<Duration>();
    let mut end = Duration::ZERO;
    let mut skipped = 0;
    for segment in &playlist.segments {
        end += segment.duration;
        if total.saturating_sub(end) < until {
            break;
        }
        skipped += 1;
    }
    if skipped == 0 {
        return None;
    }
    let mut delta = playlist.clone();
    delta.segments.drain(..skipped);
    delta.skipped_segments = Some(skipped as u64);
    Some(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> LowLatency {
        LowLatency {
            part_target: Duration::from_millis(333),
            last_segment: 100,
            building: 101,
            building_parts: 2,
            target_duration: 2,
        }
    }

    #[test]
    fn directives_are_read_and_bad_ones_refused() {
        assert_eq!(Reload::parse(""), Ok(Reload::default()));
        assert_eq!(
            Reload::parse("token=x&_HLS_msn=7&_HLS_part=2&_HLS_skip=YES"),
            Ok(Reload {
                msn: Some(7),
                part: Some(2),
                skip: true
            })
        );
        assert!(Reload::parse("_HLS_part=2").is_err());
        assert!(Reload::parse("_HLS_msn=x").is_err());
        assert!(Reload::parse("_HLS_msn=-1").is_err());
        assert!(Reload::parse("_HLS_msn=1&_HLS_part=").is_err());
        assert!(Reload::parse("_HLS_skip=NO").is_err());
    }

    #[test]
    fn a_request_is_answered_held_or_refused_by_where_it_points() {
        let s = stream();
        assert_eq!(s.advance_part_limit(), 10);
        assert_eq!(s.hold(99, None), Hold::Ready);
        assert_eq!(s.hold(100, Some(9)), Hold::Ready);
        assert_eq!(s.hold(101, Some(1)), Hold::Ready);
        assert_eq!(s.hold(101, Some(2)), Hold::Wait);
        assert_eq!(s.hold(101, None), Hold::Wait);
        assert_eq!(s.hold(101, Some(11)), Hold::Wait);
        assert_eq!(s.hold(101, Some(12)), Hold::TooFar);
        assert_eq!(s.hold(102, Some(0)), Hold::Wait);
        assert_eq!(s.hold(102, Some(10)), Hold::TooFar);
        assert_eq!(s.hold(102, None), Hold::Wait);
        assert_eq!(s.hold(103, None), Hold::TooFar);
        assert_eq!(s.hold_limit(), Duration::from_secs(6));
    }
}
