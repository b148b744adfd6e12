//! A live MPEG-DASH manifest (ISO/IEC 23009-1, the DASH-IF interoperability points' live
//! profile) written from what a packager knows: one period, an adaptation set per track
//! (video, audio) each with one representation of CMAF segments of that track alone,
//! addressed by number (`SegmentTemplate` + `SegmentTimeline`), and the server's clock for
//! the client's.
//!
//! ```text
//!  MPD type="dynamic" availabilityStartTime publishTime minimumUpdatePeriod
//!      timeShiftBufferDepth suggestedPresentationDelay maxSegmentDuration minBufferTime
//!   └ Period id start
//!      └ AdaptationSet contentType mimeType segmentAlignment startWithSAP (one per track)
//!         └ Representation id codecs bandwidth width height frameRate audioSamplingRate
//!            └ SegmentTemplate timescale initialization media startNumber
//!                 presentationTimeOffset [availabilityTimeOffset]
//!               └ SegmentTimeline: S t d r
//!   └ UTCTiming urn:mpeg:dash:utc:direct:2014 (the value written at the request:
//!     [`UTC_NOW`] marks where)
//! ```
//!
//! No I/O and no XML library: the values are numbers and names this crate's callers make;
//! the few strings are escaped.

use std::fmt::{self, Display, Formatter, Write as _};
use std::time::Duration;

/// Where the manifest's UTCTiming value goes: the server writes its clock there when it
/// answers (the manifest itself is written once per segment, and would be stale).
pub const UTC_NOW: &str = "\u{0}UTC-NOW\u{0}";

/// A live manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Mpd {
    /// availabilityStartTime, UNIX milliseconds: media time 0 of the first period's
    /// presentation (less its offset) is this wall-clock time.
    pub availability_start_ms: i64,
    /// publishTime, UNIX milliseconds.
    pub publish_ms: i64,
    /// How often clients should fetch the manifest again.
    pub minimum_update_period: Duration,
    /// How far behind the live edge segments stay available.
    pub time_shift_buffer_depth: Duration,
    /// How far behind the live edge clients should play.
    pub suggested_presentation_delay: Duration,
    /// The longest segment.
    pub max_segment_duration: Duration,
    /// minBufferTime.
    pub min_buffer_time: Duration,
    /// The period.
    pub period: Period,
}

/// The one period.
#[derive(Clone, Debug, PartialEq)]
pub struct Period {
    /// Its id (a new one after a discontinuity).
    pub id: u64,
    /// Its start, from availabilityStartTime.
    pub start: Duration,
    /// Every listed segment starts with a keyframe (`startWithSAP="1"`; left out when not).
    pub starts_with_sap: bool,
    /// Its representations, one per adaptation set.
    pub representations: Vec<Representation>,
}

/// What a representation carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Video.
    Video,
    /// Audio.
    Audio,
}

/// A representation: CMAF segments of one track.
#[derive(Clone, Debug, PartialEq)]
pub struct Representation {
    /// Video or audio.
    pub content: Content,
    /// Its RFC 6381 codec.
    pub codecs: String,
    /// Peak bit rate, bits per second.
    pub bandwidth: u64,
    /// Picture size, when there is video.
    pub size: Option<(u16, u16)>,
    /// Frames per second times 1000, when known.
    pub frame_rate_millis: Option<u32>,
    /// Audio sampling rate, when there is audio.
    pub audio_sampling_rate: Option<u32>,
    /// Ticks per second of `t`, `d` and the offset.
    pub timescale: u32,
    /// The init segment's URL (relative to the manifest).
    pub initialization: String,
    /// The segments' URL template (with `$Number$`).
    pub media: String,
    /// The first listed segment's number.
    pub start_number: u64,
    /// Media time of the period's start.
    pub presentation_time_offset: u64,
    /// availabilityTimeOffset (low-latency: segments may be asked for this much before they
    /// are complete), seconds.
    pub availability_time_offset: Option<f64>,
    /// The listed segments: (start, duration) in `timescale` ticks, in order.
    pub segments: Vec<(u64, u64)>,
}

/// `PT…S` (xs:duration), to the millisecond.
struct IsoDuration(Duration);

impl Display for IsoDuration {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        write!(f, "PT{}.{:03}S", ms / 1000, ms % 1000)
    }
}

/// UNIX milliseconds as xs:dateTime, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsoTime(pub i64);

impl Display for IsoTime {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rest = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        )
    }
}

/// (year, month, day) of a day count from 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `text` escaped for an XML attribute value.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

impl Display for Mpd {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
        writeln!(
            f,
            "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011,http://dashif.org/guidelines/dash-if-simple\" type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\" minimumUpdatePeriod=\"{}\" timeShiftBufferDepth=\"{}\" suggestedPresentationDelay=\"{}\" maxSegmentDuration=\"{}\" minBufferTime=\"{}\">",
            IsoTime(self.availability_start_ms),
            IsoTime(self.publish_ms),
            IsoDuration(self.minimum_update_period),
            IsoDuration(self.time_shift_buffer_depth),
            IsoDuration(self.suggested_presentation_delay),
            IsoDuration(self.max_segment_duration),
            IsoDuration(self.min_buffer_time),
        )?;
        let p = &self.period;
        writeln!(
            f,
            "  <Period id=\"{}\" start=\"{}\">",
            p.id,
            IsoDuration(p.start)
        )?;
        for (id, r) in p.representations.iter().enumerate() {
            r.write(f, id, self.period.starts_with_sap)?;
        }
        writeln!(f, "  </Period>")?;
        writeln!(
            f,
            "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"{UTC_NOW}\"/>"
        )?;
        writeln!(f, "</MPD>")
    }
}

impl Representation {
    /// Its adaptation set, number `id`.
    fn write(&self, f: &mut Formatter<'_>, id: usize, starts_with_sap: bool) -> fmt::Result {
        let r = self;
        let (content, mime) = match r.content {
            Content::Video => ("video", "video/mp4"),
            Content::Audio => ("audio", "audio/mp4"),
        };
        let sap = if starts_with_sap {
            " startWithSAP=\"1\""
        } else {
            ""
        };
        writeln!(
            f,
            "    <AdaptationSet id=\"{id}\" contentType=\"{content}\" mimeType=\"{mime}\" segmentAlignment=\"true\"{sap}>",
        )?;
        let mut attributes = format!(
            "id=\"{content}\" codecs=\"{}\" bandwidth=\"{}\"",
            escaped(&r.codecs),
            r.bandwidth.max(1)
        );
        if let Some((w, h)) = r.size {
            let _ = write!(attributes, " width=\"{w}\" height=\"{h}\"");
        }
        if let Some(fr) = r.frame_rate_millis {
            let _ = match fr % 1000 {
                0 => write!(attributes, " frameRate=\"{}\"", fr / 1000),
                _ => write!(attributes, " frameRate=\"{fr}/1000\""),
            };
        }
        if let Some(rate) = r.audio_sampling_rate {
            let _ = write!(attributes, " audioSamplingRate=\"{rate}\"");
        }
        writeln!(f, "      <Representation {attributes}>")?;
        write!(
            f,
            "        <SegmentTemplate timescale=\"{}\" initialization=\"{}\" media=\"{}\" startNumber=\"{}\" presentationTimeOffset=\"{}\"",
            r.timescale,
            escaped(&r.initialization),
            escaped(&r.media),
            r.start_number,
            r.presentation_time_offset
        )?;
        if let Some(offset) = r.availability_time_offset {
            write!(
                f,
                " availabilityTimeOffset=\"{offset:.3}\" availabilityTimeComplete=\"false\""
            )?;
        }
        writeln!(f, ">")?;
        writeln!(f, "          <SegmentTimeline>")?;
        // Runs of equal durations, each run starting where the previous ended; a gap or an
        // overlap starts a run with its own t.
        let mut i = 0;
        let mut expected = None;
        while i < r.segments.len() {
            let (t, d) = r.segments[i];
            let mut repeat = 0;
            while let Some(&(nt, nd)) = r.segments.get(i + 1 + repeat) {
                if nd != d || nt != t + d * (repeat as u64 + 1) {
                    break;
                }
                repeat += 1;
            }
            write!(f, "            <S")?;
            if expected != Some(t) {
                write!(f, " t=\"{t}\"")?;
            }
            write!(f, " d=\"{d}\"")?;
            if repeat > 0 {
                write!(f, " r=\"{repeat}\"")?;
            }
            writeln!(f, "/>")?;
            expected = Some(t + d * (repeat as u64 + 1));
            i += repeat + 1;
        }
        writeln!(f, "          </SegmentTimeline>")?;
        writeln!(f, "        </SegmentTemplate>")?;
        writeln!(f, "      </Representation>")?;
        writeln!(f, "    </AdaptationSet>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mpd(segments: Vec<(u64, u64)>) -> Mpd {
        Mpd {
            availability_start_ms: 1_700_000_000_000,
            publish_ms: 1_700_000_100_500,
            minimum_update_period: Duration::from_secs(2),
            time_shift_buffer_depth: Duration::from_secs(12),
            suggested_presentation_delay: Duration::from_secs(6),
            max_segment_duration: Duration::from_secs(2),
            min_buffer_time: Duration::from_secs(2),
            period: Period {
                id: 3,
                start: Duration::from_millis(1500),
                starts_with_sap: true,
                representations: vec![
                    Representation {
                        content: Content::Video,
                        codecs: "avc1.64001e".into(),
                        bandwidth: 1_200_000,
                        size: Some((640, 360)),
                        frame_rate_millis: Some(25_000),
                        audio_sampling_rate: None,
                        timescale: 90_000,
                        initialization: "cmaf/init-1.video.mp4".into(),
                        media: "cmaf/$Number$.video.m4s".into(),
                        start_number: 100,
                        presentation_time_offset: 900_000,
                        availability_time_offset: None,
                        segments: segments.clone(),
                    },
                    Representation {
                        content: Content::Audio,
                        codecs: "mp4a.40.2".into(),
                        bandwidth: 128_000,
                        size: None,
                        frame_rate_millis: None,
                        audio_sampling_rate: Some(48_000),
                        timescale: 90_000,
                        initialization: "cmaf/init-1.audio.mp4".into(),
                        media: "cmaf/$Number$.audio.m4s".into(),
                        start_number: 100,
                        presentation_time_offset: 900_000,
                        availability_time_offset: None,
                        segments,
                    },
                ],
            },
        }
    }

    #[test]
    fn times_are_iso_8601() {
        assert_eq!(IsoTime(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            IsoTime(1_700_000_100_500).to_string(),
            "2023-11-14T22:15:00.500Z"
        );
        assert_eq!(
            IsoTime(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            IsoDuration(Duration::from_millis(1500)).to_string(),
            "PT1.500S"
        );
    }

    #[test]
    fn the_timeline_runs_equal_durations_together_and_marks_jumps() {
        let text = mpd(vec![
            (900_000, 180_000),
            (1_080_000, 180_000),
            (1_260_000, 180_000),
            (1_440_000, 176_400),
            (1_700_000, 180_000),
        ])
        .to_string();
        let timeline: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("<S "))
            .collect();
        let one = [
            "<S t=\"900000\" d=\"180000\" r=\"2\"/>",
            "<S d=\"176400\"/>",
            "<S t=\"1700000\" d=\"180000\"/>",
        ];
        assert_eq!(timeline, [one, one].concat());
        assert!(text.contains("type=\"dynamic\""));
        assert!(text.contains("availabilityStartTime=\"2023-11-14T22:13:20.000Z\""));
        assert!(text.contains("contentType=\"video\" mimeType=\"video/mp4\""));
        assert!(text.contains("contentType=\"audio\" mimeType=\"audio/mp4\""));
        assert!(text.contains("codecs=\"avc1.64001e\""));
        assert!(
            text.contains("codecs=\"mp4a.40.2\" bandwidth=\"128000\" audioSamplingRate=\"48000\"")
        );
        assert!(text.contains("frameRate=\"25\""));
        assert!(text.contains("startNumber=\"100\" presentationTimeOffset=\"900000\""));
        assert!(text.contains(UTC_NOW));
        assert_eq!(text.matches("startWithSAP=\"1\"").count(), 2);
    }

    #[test]
    fn segments_cut_between_keyframes_are_not_said_to_start_with_one() {
        let mut manifest = mpd(vec![(0, 90_000)]);
        manifest.period.starts_with_sap = false;
        let text = manifest.to_string();
        assert!(!text.contains("startWithSAP"), "{text}");
        assert!(text.contains("segmentAlignment=\"true\">"), "{text}");
    }
}
