//! HLS output: sealed segments, the live window and its playlists.
//!
//! ```text
//!  home shard: Pipeline ─ segmenter events ─► Packager ─ seal ─► Segment (memory or sealed memfd)
//!                                                 │ render playlists once per seal
//!                                                 └─ store ─► HlsSlot (ArcSwap) ◄─ load ─ every shard
//! ```
//!
//! A [`Segment`] is immutable once sealed and shared by reference count: the window holds it
//! while it is listed or within its grace period, and every send that uses it holds it too, so
//! it is freed only when both are done with it. Each seal publishes a new [`HlsWindow`]
//! snapshot (segments, media playlist bytes, multivariant playlist bytes) with one atomic
//! store; shards load the newest snapshot when a request comes, with no lock and no copy.
//!
//! Bounded: one segment at most `max_segment` bytes, as many in grace as are listed (with a
//! DVR window, `dvr`: those received within it), all held within `max_hls_bytes`, and no more
//! than twice as many sealed as real time allows (a source whose timestamps race ahead).
//!
//! Time-shifted playlists (`?start=`, [`HlsWindow::shifted`]) are made per request from the
//! segments the window holds, with the live playlist's names, times and discontinuity
//! sequence.
//!
//! With `cmaf` set, the same segments and parts are also remuxed into fragmented MP4
//! ([`shardcast_protocols::mp4::Remuxer`], cut where the segmenter cuts): each segment and
//! part then has a CMAF rendition beside its MPEG-TS bytes, with the init segment it needs
//! ([`cmaf`]), and the window has playlists for them.
//!
//! With a part duration set, segments are also published part by part as they are built
//! (low-latency HLS, [`low_latency`]): each part is its own immutable buffer, fetchable while
//! its segment is among the last few, and every part publishes a new window.
//!
//! What it does not do: parse requests or write sockets (see [`crate::http`] and the shard
//! backends).

pub mod cmaf;
pub mod low_latency;
mod media;
mod settings;

pub use cmaf::{CmafRendition, InitSegment};
pub use low_latency::{LowLatency, Part};
pub use media::MediaInfo;
pub use settings::{HlsSettings, SegmentSend};

use crate::stream::{StreamCounters, StreamLimits};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use shardcast_protocols::hls::{
    DateTime, Map, MediaPlaylist, MediaSegment, MultivariantPlaylist, Resolution, VariantStream,
};
use shardcast_protocols::mp4::{Remuxer, AUDIO_TRACK, VIDEO_TRACK};
use shardcast_protocols::ts::pes::Timestamp;
use shardcast_protocols::ts::psi::Pmt;
use shardcast_protocols::ts::{PartInfo, SegmentInfo, PACKET_SIZE};
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The newest published window of a stream, shared by every shard.
pub type HlsSlot = Arc<ArcSwapOption<HlsWindow>>;

/// Where a sealed segment's bytes are.
#[derive(Debug)]
pub enum SegmentBody {
    /// In memory, for `writev` or zero-copy sends.
    Memory(Bytes),
    /// In a sealed memfd, for `sendfile`.
    File {
        /// The memfd.
        fd: OwnedFd,
        /// Its length.
        len: usize,
        /// The memfd mapped read-only, made the first time something needs the bytes in memory
        /// (TLS encrypts from them); `None` if it could not be mapped.
        mapped: std::sync::OnceLock<Option<crate::sys::SealedMapping>>,
    },
}

/// One sealed, immutable HLS segment.
#[derive(Debug)]
pub struct Segment {
    /// Media sequence number (also its URL: `/{stream}/{sequence}.ts`).
    pub sequence: u64,
    /// PTS of its first keyframe.
    pub start_pts: Timestamp,
    /// Exact duration, 90 kHz ticks.
    pub duration: u64,
    /// It follows a source restart or a timestamp jump.
    pub discontinuity: bool,
    /// It starts with a keyframe (not so after a cut that low-latency HLS forced because
    /// the source's keyframes are further apart than the target duration).
    pub independent: bool,
    /// When ingest received its first packet (UNIX ms): EXT-X-PROGRAM-DATE-TIME.
    pub program_date_time_ms: i64,
    /// The bytes.
    pub body: SegmentBody,
    /// Entity tag, quoted.
    pub etag: String,
    /// When it was sealed, as an HTTP date.
    pub last_modified: String,
    /// Its CMAF rendition (fMP4 fragments), when the stream has one.
    pub cmaf: Option<cmaf::CmafSegment>,
    /// Its lines in a time-shifted playlist, written on first use ([`Segment::entry`]).
    pub entry: std::sync::OnceLock<Box<str>>,
}

/// How a rendition's segments and parts are named and carried.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Container {
    /// MPEG-TS: `{sequence}.ts`.
    Ts,
    /// CMAF (fragmented MP4): `{sequence}.m4s`, with an init segment.
    Cmaf,
}

impl Container {
    /// The file name extension of its segments and parts.
    pub fn extension(self) -> &'static str {
        match self {
            Container::Ts => "ts",
            Container::Cmaf => "m4s",
        }
    }
}

impl Segment {
    /// Its lines in a time-shifted playlist (DISCONTINUITY, PROGRAM-DATE-TIME, EXTINF, URI),
    /// written once: a long playlist is then copied together, not formatted per request.
    pub fn entry(&self) -> &str {
        self.entry.get_or_init(|| {
            MediaSegment {
                uri: format!("{}.ts", self.sequence),
                duration: self.duration(),
                discontinuity: self.discontinuity,
                program_date_time: Some(DateTime::from_unix_millis(self.program_date_time_ms)),
                ..MediaSegment::default()
            }
            .to_string()
            .into()
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match &self.body {
            SegmentBody::Memory(b) => b.len(),
            SegmentBody::File { len, .. } => *len,
        }
    }

    /// Whether it has no bytes (never, for a sealed segment).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its memfd, when it is in one.
    pub fn file(&self) -> Option<BorrowedFd<'_>> {
        match &self.body {
            SegmentBody::File { fd, .. } => Some(fd.as_fd()),
            SegmentBody::Memory(_) => None,
        }
    }

    /// Its bytes in memory: the shared buffer, or the memfd mapped read-only (mapped once, on
    /// first use). `None` only when a memfd cannot be mapped (out of address space).
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.body {
            SegmentBody::Memory(b) => Some(b),
            SegmentBody::File { fd, len, mapped } => mapped
                .get_or_init(|| match crate::sys::SealedMapping::map(fd.as_fd(), *len) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::error!(
                            sequence = self.sequence,
                            "cannot map a segment's memfd: {e}"
                        );
                        None
                    }
                })
                .as_deref(),
        }
    }

    /// Its duration.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.duration * 100_000 / 9)
    }
}

/// What a request may take from a stream's HLS output at one moment.
#[derive(Debug)]
pub struct HlsWindow {
    /// Fetchable segments, ascending sequence: those in grace, then those listed.
    segments: Vec<Arc<Segment>>,
    /// `/{stream}/index.m3u8`.
    pub playlist: Bytes,
    /// `/{stream}/master.m3u8`.
    pub master: Bytes,
    /// The Cache-Control value for both playlists.
    pub playlist_cache_control: &'static str,
    /// The entity tag of both playlists (they change together, once per seal).
    pub playlist_etag: String,
    /// EXT-X-TARGETDURATION, seconds.
    pub target_duration: u64,
    /// The tracks, as read from the newest segment.
    pub media: MediaInfo,
    /// Peak segment bitrate of the listed segments, bits per second.
    pub peak_bitrate: u64,
    /// How many segments the media playlist lists.
    pub listed: usize,
    /// EXT-X-DISCONTINUITY-SEQUENCE of the media playlist.
    pub discontinuity_sequence: u64,
    /// Low-latency HLS: where the stream is (`None` when the stream has no parts).
    pub low_latency: Option<LowLatency>,
    /// Fetchable parts, ascending by segment and index.
    parts: Vec<Arc<Part>>,
    /// The delta update of the media playlist (`_HLS_skip`), when it skips anything.
    pub delta: Option<Bytes>,
    /// Counts the windows the stream published (it changes with each).
    pub generation: u64,
    /// The CMAF rendition's playlists and init segments, when the stream has one.
    pub cmaf: Option<CmafRendition>,
}

impl HlsWindow {
    /// Segment `sequence`, if it is listed or in its grace period.
    pub fn segment(&self, sequence: u64) -> Option<&Arc<Segment>> {
        let i = self
            .segments
            .binary_search_by_key(&sequence, |s| s.sequence)
            .ok()?;
        self.segments.get(i)
    }

    /// Every fetchable segment, ascending.
    pub fn segments(&self) -> &[Arc<Segment>] {
        &self.segments
    }

    /// Part `index` of segment `sequence`, if it is fetchable.
    pub fn part(&self, sequence: u64, index: u32) -> Option<&Arc<Part>> {
        let i = self
            .parts
            .binary_search_by_key(&(sequence, index), |p| (p.sequence, p.index))
            .ok()?;
        self.parts.get(i)
    }

    /// The time-shifted media playlist (MPEG-TS segments) `shift` asks for at `now_ms` (UNIX
    /// ms), from the segments kept (a DVR window, or only the grace period without one):
    ///
    /// - [`TimeShift::Back`]: the live playlist as it was that long ago (as many segments,
    ///   the newest the last one complete then), sliding on with the clock, so a player plays
    ///   that far behind live;
    /// - [`TimeShift::From`]: every segment from the one that holds that moment to the newest,
    ///   with `EXT-X-START` at its first, so a player starts there and plays on; at most
    ///   [`MAX_SHIFTED_SEGMENTS`], the newest.
    ///
    /// Sequence numbers, PROGRAM-DATE-TIME and the discontinuity sequence are the live
    /// playlist's own: a segment has the same name and time in both.
    pub fn shifted(&self, shift: TimeShift, now_ms: i64) -> String {
        self.shifted_within(shift, now_ms, MAX_SHIFTED_SEGMENTS)
    }

    /// [`HlsWindow::shifted`], listing at most `most` segments from a moment.
    fn shifted_within(&self, shift: TimeShift, now_ms: i64, most: usize) -> String {
        let segments = &self.segments;
        let count = segments.len();
        let listed = self.listed.clamp(1, count.max(1));
        let first_listed = count.saturating_sub(self.listed);
        let (first, last) = match shift {
            TimeShift::Back(back_ms) => {
                let then = now_ms - back_ms as i64;
                // The newest segment complete at that time.
                let done = segments.partition_point(|s| {
                    s.program_date_time_ms + s.duration().as_millis() as i64 <= then
                });
                let last = done.max(listed.min(count));
                (last.saturating_sub(listed), last)
            }
            TimeShift::From(at_ms) => {
                let holding = segments
                    .partition_point(|s| s.program_date_time_ms <= at_ms)
                    .saturating_sub(1);
                // At most `most`: further back starts later than asked, and a list that grew
                // past it slides on (a player keeps its distance from live, so it stays in).
                (holding.max(count.saturating_sub(most.max(1))), count)
            }
        };
        let chosen = segments.get(first..last).unwrap_or_default();
        // Discontinuities between the first listed here and the live playlist's first.
        let between = |range: std::ops::Range<usize>| {
            segments
                .get(range)
                .unwrap_or_default()
                .iter()
                .filter(|s| s.discontinuity)
                .count() as u64
        };
        let discontinuity_sequence = if first <= first_listed {
            self.discontinuity_sequence
                .saturating_sub(between(first..first_listed))
        } else {
            self.discontinuity_sequence + between(first_listed..first)
        };
        // The head is written per request; each segment's lines were written once.
        let head = MediaPlaylist {
            version: 3,
            target_duration: self.target_duration,
            media_sequence: chosen.first().map_or(0, |s| s.sequence),
            discontinuity_sequence,
            independent_segments: chosen.iter().all(|s| s.independent),
            ..MediaPlaylist::default()
        };
        let mut text = head.to_string();
        if let TimeShift::From(_) = shift {
            // Players start at the first segment, not three from the newest.
            if let Some(at) = text.find("#EXT-X-MEDIA-SEQUENCE") {
                text.insert_str(at, "#EXT-X-START:TIME-OFFSET=0,PRECISE=YES\n");
            }
        }
        text.reserve(chosen.iter().map(|s| s.entry().len()).sum());
        for s in chosen {
            text.push_str(s.entry());
        }
        text
    }
}

/// The most segments a `?start=ISO-TIME` playlist lists (an hour of 2 s segments, about
/// 200 KB). Players reload the whole list every target duration, so an unbounded one (24 h of
/// DVR is 43,200 segments, 4.7 MB) would cost each of them more than the video.
pub const MAX_SHIFTED_SEGMENTS: usize = 1800;

/// Where a time-shifted playlist starts (`?start=` on a media playlist).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeShift {
    /// This many ms behind live (`start=-300`, `-300s`, `-5m`, `-2h`).
    Back(u64),
    /// At this moment, UNIX ms (`start=2026-12-01T10:00:00Z`).
    From(i64),
}

impl TimeShift {
    /// Read a `start=` value; `None` when it is neither.
    pub fn parse(value: &str) -> Option<TimeShift> {
        if let Some(back) = value.strip_prefix('-') {
            let (number, unit) = match back.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
                Some((at, _)) => back.split_at(at),
                None => (back, "s"),
            };
            let scale = match unit {
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return None,
            };
            let seconds: f64 = number
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)?;
            let ms = seconds * scale * 1000.0;
            return (ms <= 1e12).then_some(TimeShift::Back(ms as u64));
        }
        DateTime::parse(value).map(|t| TimeShift::From(t.unix_millis))
    }
}

/// A window to take up ([`Packager::restore`]): what an upgrade handed over.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The segments, ascending: those in grace, then those listed.
    pub segments: Vec<Arc<Segment>>,
    /// How many of them, the newest, are listed.
    pub listed: usize,
    /// EXT-X-DISCONTINUITY-SEQUENCE.
    pub discontinuity_sequence: u64,
    /// EXT-X-TARGETDURATION (it never shrinks).
    pub target_duration: u64,
}

/// Segment sequence numbers start from the UNIX time in seconds when the stream starts, so a
/// restarted server never reuses a URL a cache may still hold for different bytes (segments
/// are at least half a second long, so numbers never catch up with the clock).
pub fn first_sequence() -> u64 {
    crate::sys::unix_ns() / 1_000_000_000
}

struct Building {
    sequence: u64,
    discontinuity: bool,
    independent: bool,
    program_date_time_ms: i64,
    data: Vec<u8>,
    /// Where the part being built begins in `data`, and the parts cut so far.
    part_start: usize,
    parts: Vec<Arc<Part>>,
    /// Its CMAF fragments so far; `None` when it has no CMAF rendition (none is made, or
    /// the remuxer had no init segment when it began).
    cmaf: Option<cmaf::BuildingCmaf>,
}

/// Sealed segments whose parts stay fetchable: those a playlist lists parts for (three
/// target durations) and one more.
const PARTED_SEGMENTS_MIN: usize = 2;

/// Builds a stream's segments from the segmenter's events and publishes its window (home
/// shard only; no I/O beyond writing memfds).
pub struct Packager {
    name: String,
    settings: HlsSettings,
    send: SegmentSend,
    slot: HlsSlot,
    counters: Arc<StreamCounters>,
    building: Option<Building>,
    /// The segment being built was dropped (too large): the next one is a discontinuity.
    dropped: bool,
    listed: VecDeque<Arc<Segment>>,
    /// Segments no longer listed, with when they left (monotonic ns from `now_ns`).
    grace: VecDeque<(Arc<Segment>, u64)>,
    target_duration: u64,
    discontinuity_sequence: u64,
    media: MediaInfo,
    /// A segment larger than this is dropped while it is built (a source without keyframes
    /// must not grow memory without bound); the next one is marked as a discontinuity.
    max_segment: usize,
    /// Bytes of segments held, listed and in grace; past it the oldest go first.
    max_held: usize,
    /// Seals allowed before wall time catches up (a source whose timestamps race ahead
    /// cannot make segments faster than twice real time), and the time they were counted at.
    seal_credit: f64,
    seal_credit_at_ns: u64,
    /// Segments are being dropped because they come faster than real time (logged once per
    /// episode).
    racing: bool,
    /// The parts of the newest sealed segments, oldest first (low-latency HLS).
    parted: VecDeque<(u64, Vec<Arc<Part>>)>,
    /// The stream has made parts (an audio-only stream has none: no low-latency playlist).
    parts_seen: bool,
    /// Windows published.
    generation: u64,
    /// The CMAF rendition's remuxer, and the init segments it made that segments held need.
    remuxer: Option<Remuxer>,
    inits: VecDeque<Arc<InitSegment>>,
    /// The remuxer's fragments and dropped samples already counted.
    remux_reported: (u64, u64),
    /// DASH: availabilityStartTime (UNIX ms, fixed once known), and the current period.
    dash_start_ms: Option<i64>,
    dash_period: Option<cmaf::DashPeriod>,
    /// Told when a segment is sealed (the control plane's stream watcher).
    news: Option<Arc<tokio::sync::Notify>>,
}

impl std::fmt::Debug for Packager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packager")
            .field("name", &self.name)
            .field("listed", &self.listed.len())
            .field("grace", &self.grace.len())
            .finish_non_exhaustive()
    }
}

impl Packager {
    /// A packager for stream `name` publishing to `slot`.
    pub fn new(
        name: &str,
        settings: HlsSettings,
        send: SegmentSend,
        slot: HlsSlot,
        counters: Arc<StreamCounters>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            target_duration: settings.segment_duration_s.round().max(1.0) as u64,
            settings,
            send,
            slot,
            counters,
            building: None,
            dropped: false,
            listed: VecDeque::new(),
            grace: VecDeque::new(),
            discontinuity_sequence: 0,
            media: MediaInfo::default(),
            max_segment: StreamLimits::default().max_segment,
            max_held: StreamLimits::default().max_hls_bytes,
            seal_credit: settings.playlist_segments as f64,
            seal_credit_at_ns: 0,
            racing: false,
            parted: VecDeque::new(),
            parts_seen: false,
            generation: 0,
            remuxer: settings.cmaf.then(Remuxer::new),
            inits: VecDeque::new(),
            dash_start_ms: None,
            dash_period: None,
            remux_reported: (0, 0),
            news: None,
        }
    }

    /// Tell `news` whenever a segment is sealed or a window restored (a window of parts
    /// alone tells nobody).
    pub fn with_news(mut self, news: Arc<tokio::sync::Notify>) -> Self {
        self.news = Some(news);
        self
    }

    fn tell(&self) {
        if let Some(news) = &self.news {
            news.notify_one();
        }
    }

    /// Use `limits`'s bounds on one segment and on the segments held.
    pub fn with_limits(mut self, limits: &StreamLimits) -> Self {
        self.max_segment = limits.max_segment;
        self.max_held = limits.max_hls_bytes.max(limits.max_segment);
        self
    }

    /// A segment begins (with a keyframe when `independent`); `received_ns` is the ingest
    /// wall clock (UNIX ns).
    pub fn start(
        &mut self,
        sequence: u64,
        discontinuity: bool,
        independent: bool,
        received_ns: u64,
    ) {
        let discontinuity = discontinuity || std::mem::take(&mut self.dropped);
        if !independent {
            StreamCounters::add(&self.counters.segments_without_keyframe, 1);
        }
        self.building = Some(Building {
            sequence,
            discontinuity,
            independent,
            program_date_time_ms: (received_ns / 1_000_000) as i64,
            data: Vec::with_capacity(self.building_capacity()),
            part_start: 0,
            parts: Vec::new(),
            cmaf: self.current_init().map(cmaf::BuildingCmaf::new),
        });
    }

    /// The program's tables (the CMAF remuxer follows its streams).
    pub fn program(&mut self, pmt: &Pmt) {
        if let Some(r) = &mut self.remuxer {
            r.set_program(pmt);
        }
    }

    /// The source started again: the CMAF remuxer's clocks start afresh.
    pub fn source_restarted(&mut self) {
        if let Some(r) = &mut self.remuxer {
            r.restart();
        }
    }

    /// The remuxer's current init segment, kept once per generation.
    fn current_init(&mut self) -> Option<Arc<InitSegment>> {
        let r = self.remuxer.as_ref()?;
        let bytes = r.init_segment()?;
        let generation = r.init_generation();
        if self.inits.back().is_none_or(|i| i.generation != generation) {
            let alone = |track| r.init_segment_of(track).map(Bytes::from);
            self.inits.push_back(Arc::new(InitSegment::new(
                generation,
                Bytes::copy_from_slice(bytes),
                [alone(VIDEO_TRACK), alone(AUDIO_TRACK)],
                r.tracks(),
            )));
        }
        self.inits.back().cloned()
    }

    /// Cut the CMAF remuxer here: the fragment, when the segment being built has a CMAF
    /// rendition and the remuxer made one.
    fn cut_cmaf(&mut self) -> Option<Bytes> {
        let remuxer = self.remuxer.as_mut()?;
        let cut = remuxer.cut();
        let stats = remuxer.stats();
        let c = &self.counters;
        StreamCounters::add(&c.cmaf_fragments, stats.fragments - self.remux_reported.0);
        StreamCounters::add(
            &c.cmaf_dropped_samples,
            stats.dropped_samples - self.remux_reported.1,
        );
        self.remux_reported = (stats.fragments, stats.dropped_samples);
        let b = self.building.as_mut()?;
        let building = b.cmaf.as_mut()?;
        let cut = cut?;
        building.take(&cut, remuxer.last_start());
        Some(Bytes::from(cut.joined()))
    }

    /// The part being built is complete (low-latency HLS): it is cut from the segment's bytes
    /// so far and published.
    pub fn part_end(&mut self, info: PartInfo) {
        if self.settings.part_duration_s.is_none() {
            return;
        }
        let Some(b) = &mut self.building else { return };
        if b.data.len() <= b.part_start {
            return;
        }
        let index = b.parts.len() as u32;
        let body = Bytes::copy_from_slice(&b.data[b.part_start..]);
        b.part_start = b.data.len();
        let cmaf = self.cut_cmaf();
        let Some(b) = &mut self.building else { return };
        b.parts.push(Arc::new(Part {
            sequence: b.sequence,
            index,
            duration: info.duration,
            independent: info.independent,
            etag: format!(
                "\"{:x}-{:x}-{index:x}\"",
                b.sequence, b.program_date_time_ms
            ),
            body,
            cmaf,
        }));
        self.parts_seen = true;
        // Before the first segment is sealed nothing is published (a playlist lists at
        // least one segment).
        if !self.listed.is_empty() {
            self.publish();
        }
    }

    fn building_capacity(&self) -> usize {
        self.listed
            .back()
            .map_or(256 * 1024, |s| s.len() + s.len() / 4)
            .min(self.max_segment)
    }

    /// A packet of the segment being built.
    pub fn packet(&mut self, packet: &[u8; PACKET_SIZE]) {
        if let Some(r) = &mut self.remuxer {
            r.push(packet);
        }
        let Some(b) = &mut self.building else { return };
        if b.data.len() + PACKET_SIZE > self.max_segment {
            tracing::warn!(stream = %self.name, sequence = b.sequence, "segment over max_segment ({} bytes) without a keyframe to cut at: dropped", self.max_segment);
            StreamCounters::add(&self.counters.segments_dropped, 1);
            self.building = None;
            self.dropped = true;
            return;
        }
        b.data.extend_from_slice(packet);
    }

    /// The segment being built is complete; `now_ns` is a monotonic clock for the grace period.
    pub fn end(&mut self, info: SegmentInfo, now_ns: u64) {
        // What the remuxer holds past the last part (all of it, without parts).
        let _ = self.cut_cmaf();
        let Some(b) = self.building.take() else {
            return;
        };
        if b.sequence != info.sequence || b.data.is_empty() {
            return;
        }
        if !self.may_seal(&b, &info, now_ns) {
            StreamCounters::add(&self.counters.segments_dropped, 1);
            self.dropped = true;
            return;
        }
        self.media = MediaInfo::probe(&b.data);
        if self.parts_seen {
            self.parted.push_back((b.sequence, b.parts));
        }
        let body = self.body(b.sequence, b.data);
        let cmaf = b.cmaf.and_then(cmaf::BuildingCmaf::seal);
        let sealed = SystemTime::now();
        let segment = Arc::new(Segment {
            sequence: b.sequence,
            start_pts: info.start_pts,
            duration: info.duration,
            discontinuity: b.discontinuity,
            independent: b.independent,
            program_date_time_ms: b.program_date_time_ms,
            etag: format!("\"{:x}-{:x}\"", b.sequence, b.program_date_time_ms),
            last_modified: httpdate::fmt_http_date(sealed),
            body,
            cmaf,
            entry: Default::default(),
        });
        self.listed.push_back(segment);
        while self.listed.len() > self.settings.playlist_segments {
            if let Some(old) = self.listed.pop_front() {
                if old.discontinuity {
                    self.discontinuity_sequence += 1;
                }
                self.grace.push_back((old, now_ns));
            }
        }
        let grace_ns = (self.settings.segment_grace_s * 1e9) as u64;
        if self.settings.dvr_s > 0.0 {
            // A DVR window: kept while they were received within it (by the ingest clock,
            // what PROGRAM-DATE-TIME says), within the byte cap below.
            let newest = self.listed.back().map_or(0, |s| s.program_date_time_ms);
            let keep_ms = (self.settings.dvr_s * 1000.0) as i64;
            while self.grace.front().is_some_and(|(s, left)| {
                newest - s.program_date_time_ms > keep_ms && now_ns.saturating_sub(*left) > grace_ns
            }) {
                self.grace.pop_front();
            }
        } else {
            // In grace: for its time, at most as many as are listed, within the byte cap.
            while self
                .grace
                .front()
                .is_some_and(|(_, left)| now_ns.saturating_sub(*left) > grace_ns)
                || self.grace.len() > self.settings.playlist_segments
            {
                self.grace.pop_front();
            }
        }
        let mut held: usize = self.listed.iter().map(|s| s.len()).sum::<usize>()
            + self.grace.iter().map(|(s, _)| s.len()).sum::<usize>();
        while held > self.max_held {
            let oldest = match self.grace.pop_front() {
                Some((s, _)) => s,
                None if self.listed.len() > 1 => match self.listed.pop_front() {
                    Some(s) => {
                        if s.discontinuity {
                            self.discontinuity_sequence += 1;
                        }
                        s
                    }
                    None => break,
                },
                None => break,
            };
            held -= oldest.len();
            StreamCounters::add(&self.counters.segments_evicted, 1);
        }
        self.counters.segments.fetch_add(1, Ordering::Relaxed);
        self.publish();
        self.tell();
    }

    /// Whether the segment just built may be sealed: a source whose timestamps race ahead of
    /// the wall clock (a broken encoder, or a hostile one) may seal no more than twice as
    /// many segments as real time allows, after a burst of one playlist's worth.
    fn may_seal(&mut self, b: &Building, info: &SegmentInfo, now_ns: u64) -> bool {
        let target_ns = self.settings.segment_duration_s * 1e9;
        let elapsed = now_ns.saturating_sub(self.seal_credit_at_ns) as f64;
        let burst = self.settings.playlist_segments as f64;
        self.seal_credit = (self.seal_credit + 2.0 * elapsed / target_ns).min(burst);
        self.seal_credit_at_ns = now_ns;
        let wall_ns =
            now_ns.saturating_sub((b.program_date_time_ms as u64).saturating_mul(1_000_000));
        let stream_ns = info.duration as f64 * 1e9 / 90_000.0;
        if self.seal_credit >= 1.0 || wall_ns as f64 >= stream_ns / 2.0 {
            self.seal_credit = (self.seal_credit - 1.0).max(0.0);
            if std::mem::take(&mut self.racing) {
                tracing::info!(stream = %self.name, "segments come at real time again");
            }
            return true;
        }
        if !self.racing {
            self.racing = true;
            tracing::warn!(stream = %self.name, sequence = b.sequence, "the source's timestamps run ahead of the clock: segments made faster than twice real time are dropped");
        }
        false
    }

    fn body(&self, sequence: u64, data: Vec<u8>) -> SegmentBody {
        if self.send == SegmentSend::Sendfile {
            let name = format!("shardcast-{}-{sequence}", self.name);
            match crate::sys::sealed_memfd(&name, &data) {
                Ok(fd) => {
                    return SegmentBody::File {
                        fd,
                        len: data.len(),
                        mapped: std::sync::OnceLock::new(),
                    }
                }
                Err(e) => {
                    tracing::warn!(stream = %self.name, "cannot put a segment in a memfd ({e}): keeping it in memory")
                }
            }
        }
        SegmentBody::Memory(Bytes::from(data))
    }

    fn publish(&mut self) {
        let mut playlist = self.media_playlist(Container::Ts);
        // The target duration may only grow (RFC 8216 4.3.3.1): a segment longer than the
        // configured one (sparse keyframes) raises it for the rest of the stream.
        let required = playlist.required_target_duration();
        if required > self.target_duration {
            tracing::warn!(stream = %self.name, from = self.target_duration, to = required, "a segment outgrew the target duration (the source's keyframes are further apart than segment_duration): EXT-X-TARGETDURATION raised");
            self.target_duration = required;
        }
        playlist.target_duration = self.target_duration;
        self.prune_parts();
        let low_latency = self.decorate(&mut playlist, Container::Ts);
        let delta = low_latency
            .and_then(|_| low_latency::delta(&playlist))
            .map(|d| Bytes::from(d.to_string()));
        let part_bytes: usize = self
            .parted
            .iter()
            .flat_map(|(_, parts)| parts)
            .chain(self.building.iter().flat_map(|b| &b.parts))
            .map(|p| p.body.len() + p.cmaf.as_ref().map_or(0, Bytes::len))
            .sum();
        let bytes: usize = self
            .listed
            .iter()
            .chain(self.grace.iter().map(|(s, _)| s))
            .map(|s| s.len() + s.cmaf.as_ref().map_or(0, |c| c.bytes.len()))
            .sum::<usize>()
            + part_bytes;
        let peak = self
            .listed
            .iter()
            .map(|s| (s.len() as f64 * 8.0 / s.duration().as_secs_f64().max(0.001)) as u64)
            .max()
            .unwrap_or(0);
        let average = {
            let (b, d) = self.listed.iter().fold((0.0, 0.0), |(b, d), s| {
                (b + s.len() as f64, d + s.duration().as_secs_f64())
            });
            (d > 0.0).then(|| (b * 8.0 / d) as u64)
        };
        let independent = self.listed.iter().all(|s| s.independent);
        let master = |version| MultivariantPlaylist {
            version,
            independent_segments: independent,
            variants: vec![VariantStream {
                uri: "index.m3u8".into(),
                bandwidth: peak,
                average_bandwidth: average,
                codecs: self.media.codecs(),
                resolution: self
                    .media
                    .resolution
                    .map(|(width, height)| Resolution { width, height }),
                frame_rate_millis: self.media.frame_rate_millis,
                ..VariantStream::default()
            }],
            ..MultivariantPlaylist::default()
        };
        let (cmaf_master, master) = (master(7).to_string(), master(3));
        let cmaf = self.cmaf_rendition(cmaf_master, peak);
        let window = HlsWindow {
            segments: self
                .grace
                .iter()
                .map(|(s, _)| s.clone())
                .chain(self.listed.iter().cloned())
                .collect(),
            playlist: Bytes::from(playlist.to_string()),
            master: Bytes::from(master.to_string()),
            playlist_cache_control: match low_latency {
                // It changes with every part.
                Some(_) => "no-cache",
                None => playlist_cache_control(self.target_duration),
            },
            playlist_etag: format!(
                "\"{:x}-{:x}-{:x}\"",
                self.listed.back().map_or(0, |s| s.sequence),
                self.listed.back().map_or(0, |s| s.program_date_time_ms),
                low_latency.map_or(0, |l| l.building_parts)
            ),
            target_duration: self.target_duration,
            media: self.media.clone(),
            peak_bitrate: peak,
            listed: self.listed.len(),
            discontinuity_sequence: self.discontinuity_sequence,
            low_latency,
            parts: self
                .parted
                .iter()
                .flat_map(|(_, parts)| parts)
                .chain(self.building.iter().flat_map(|b| &b.parts))
                .cloned()
                .collect(),
            delta,
            generation: self.generation,
            cmaf,
        };
        self.generation += 1;
        self.slot.store(Some(Arc::new(window)));
        self.counters
            .segment_bytes
            .store(bytes as u64, Ordering::Relaxed);
    }

    /// The media playlist of the listed segments in `container` (the CMAF one lists those
    /// that have a CMAF rendition, with EXT-X-MAP where the init segment changes).
    fn media_playlist(&self, container: Container) -> MediaPlaylist {
        let ext = container.extension();
        let mut init = None;
        let mut segments = Vec::with_capacity(self.listed.len());
        let mut first = None;
        for s in &self.listed {
            let map = match (container, &s.cmaf) {
                (Container::Ts, _) => None,
                (Container::Cmaf, None) => continue,
                (Container::Cmaf, Some(c)) => {
                    let changed = init != Some(c.init.generation);
                    init = Some(c.init.generation);
                    changed.then(|| Map {
                        uri: c.init.uri(),
                        byte_range: None,
                    })
                }
            };
            first.get_or_insert(s.sequence);
            segments.push(MediaSegment {
                uri: format!("{}.{ext}", s.sequence),
                duration: s.duration(),
                discontinuity: s.discontinuity,
                program_date_time: Some(DateTime::from_unix_millis(s.program_date_time_ms)),
                map,
                ..MediaSegment::default()
            });
        }
        MediaPlaylist {
            version: match container {
                Container::Ts => 3,
                Container::Cmaf => 7,
            },
            target_duration: self.target_duration,
            media_sequence: first.unwrap_or(0),
            discontinuity_sequence: self.discontinuity_sequence,
            independent_segments: self.listed.iter().all(|s| s.independent),
            segments,
            ..MediaPlaylist::default()
        }
    }

    /// The CMAF rendition's playlists, when the stream has one and a segment of it is listed.
    fn cmaf_rendition(&mut self, master: String, peak: u64) -> Option<CmafRendition> {
        self.remuxer.as_ref()?;
        let mut playlist = self.media_playlist(Container::Cmaf);
        if playlist.segments.is_empty() {
            return None;
        }
        playlist.target_duration = self.target_duration;
        let low_latency = self.decorate(&mut playlist, Container::Cmaf);
        let delta = low_latency
            .and_then(|_| low_latency::delta(&playlist))
            .map(|mut d| {
                // The first segment after the skipped ones names its init segment again.
                if let (Some(first), Some(init)) = (
                    d.segments.first_mut(),
                    self.listed
                        .iter()
                        .rev()
                        .find_map(|s| s.cmaf.as_ref().map(|c| c.init.uri())),
                ) {
                    first.map.get_or_insert(Map {
                        uri: init,
                        byte_range: None,
                    });
                }
                Bytes::from(d.to_string())
            });
        // The init segments the listed and grace segments need.
        let needed: Vec<u64> = self
            .listed
            .iter()
            .chain(self.grace.iter().map(|(s, _)| s))
            .filter_map(|s| s.cmaf.as_ref().map(|c| c.init.generation))
            .collect();
        let current = self.inits.back().map(|i| i.generation);
        self.inits
            .retain(|i| Some(i.generation) == current || needed.contains(&i.generation));
        let manifest = self.manifest(peak);
        Some(CmafRendition {
            playlist: Bytes::from(playlist.to_string()),
            master: Bytes::from(master),
            delta,
            inits: self.inits.iter().cloned().collect(),
            manifest,
        })
    }

    /// The DASH manifest of the listed CMAF segments of the current period (it begins
    /// after a discontinuity, or where the init segment changes), split where the
    /// server's clock goes.
    fn manifest(&mut self, peak: u64) -> Option<(Bytes, Bytes)> {
        let segments: Vec<(&Arc<Segment>, &cmaf::CmafSegment)> = self
            .listed
            .iter()
            .filter_map(|s| Some((s, s.cmaf.as_ref()?)))
            .collect();
        let boundary = |i: usize| {
            i > 0
                && (segments[i].0.discontinuity
                    || segments[i].1.init.generation != segments[i - 1].1.init.generation)
        };
        let from = (0..segments.len())
            .rev()
            .find(|&i| boundary(i))
            .unwrap_or(0);
        let period = &segments[from..];
        let (first, c) = *period.first()?;
        // A later period begins with the earlier of its first video and its first audio
        // (which a muxer usually writes a little after the video it goes with): each track's
        // segments then start at or after it. The clock is the first segment's: its first
        // packet (a keyframe) came in at its PROGRAM-DATE-TIME.
        let rate = u64::from(c.init.sample_rate.unwrap_or(90_000));
        let begins = c
            .audio_span
            .map_or(c.start, |(t, _)| c.start.min(t * 90_000 / rate.max(1)));
        let ast = *self
            .dash_start_ms
            .get_or_insert(first.program_date_time_ms - (c.start / 90) as i64);
        let current = self.dash_period.filter(|p| {
            // The period goes on while its first segment is listed, or has left the window
            // with no new period begun since.
            p.first == first.sequence
                || (from == 0 && p.first < first.sequence && !first.discontinuity)
        });
        // The first period starts at the stream's media time 0 (availabilityStartTime is
        // chosen so): no offset, which every client reads alike. A later one (after a
        // discontinuity) starts where its first media is, its offset that media's time.
        let current = current.unwrap_or_else(|| match self.dash_period {
            None => cmaf::DashPeriod {
                id: 0,
                first: first.sequence,
                start: Duration::ZERO,
                offset: 0,
            },
            Some(previous) => cmaf::DashPeriod {
                id: previous.id + 1,
                first: first.sequence,
                start: Duration::from_millis(
                    (first.program_date_time_ms - (c.start - begins) as i64 / 90 - ast).max(0)
                        as u64,
                ),
                offset: begins,
            },
        });
        self.dash_period = Some(current);
        let (last, _) = *period.last()?;
        let target = Duration::from_secs(self.target_duration);
        // Each track's peak rate over the period's segments.
        let peak = |track: cmaf::TrackKind| {
            period
                .iter()
                .map(|(s, c)| {
                    (c.track(track).len() as f64 * 8.0 / s.duration().as_secs_f64().max(0.001))
                        as u64
                })
                .max()
                .unwrap_or(peak)
        };
        let timeline: Vec<(u64, u64)> = period.iter().map(|(s, c)| (c.start, s.duration)).collect();
        // The audio's own, in its own timescale (its frames do not start where the video's
        // segments do).
        let audio_timeline: Vec<(u64, u64)> = period
            .iter()
            .map(|(s, c)| {
                c.audio_span
                    .unwrap_or((c.start * rate / 90_000, s.duration * rate / 90_000))
            })
            .collect();
        let representation = |track: cmaf::TrackKind| {
            let (content, codecs) = match track {
                cmaf::TrackKind::Video => (
                    shardcast_protocols::dash::Content::Video,
                    c.init.codecs.first().cloned(),
                ),
                cmaf::TrackKind::Audio => (
                    shardcast_protocols::dash::Content::Audio,
                    c.init.codecs.last().cloned(),
                ),
            };
            c.init.track(track)?;
            let video = track == cmaf::TrackKind::Video;
            Some(shardcast_protocols::dash::Representation {
                content,
                codecs: codecs?,
                bandwidth: peak(track),
                size: c.init.resolution.filter(|_| video),
                frame_rate_millis: self.media.frame_rate_millis.filter(|_| video),
                audio_sampling_rate: c.init.sample_rate.filter(|_| !video),
                timescale: if video { 90_000 } else { rate as u32 },
                initialization: format!("cmaf/{}", c.init.track_uri(track)),
                media: format!("cmaf/$Number$.{}.m4s", track.name()),
                start_number: first.sequence,
                presentation_time_offset: if video {
                    current.offset
                } else {
                    current.offset * rate / 90_000
                },
                availability_time_offset: None,
                segments: if video {
                    timeline.clone()
                } else {
                    audio_timeline.clone()
                },
            })
        };
        let representations: Vec<_> = [cmaf::TrackKind::Video, cmaf::TrackKind::Audio]
            .into_iter()
            .filter_map(representation)
            .collect();
        let mpd = shardcast_protocols::dash::Mpd {
            availability_start_ms: ast,
            publish_ms: last.program_date_time_ms + last.duration().as_millis() as i64,
            minimum_update_period: target,
            time_shift_buffer_depth: period.iter().map(|(s, _)| s.duration()).sum(),
            suggested_presentation_delay: target * 3,
            max_segment_duration: target,
            min_buffer_time: target,
            period: shardcast_protocols::dash::Period {
                id: current.id,
                start: current.start,
                starts_with_sap: period.iter().all(|(s, _)| s.independent),
                representations,
            },
        };
        let text = mpd.to_string();
        let (before, after) = text.split_once(shardcast_protocols::dash::UTC_NOW)?;
        Some((
            Bytes::copy_from_slice(before.as_bytes()),
            Bytes::copy_from_slice(after.as_bytes()),
        ))
    }

    /// Drop the parts of segments no playlist lists parts for any more: parts stay
    /// fetchable for the segments of the last three target durations, and one.
    fn prune_parts(&mut self) {
        let mut covered = Duration::ZERO;
        let mut keep = 0;
        for s in self.listed.iter().rev() {
            keep += 1;
            covered += s.duration();
            if covered >= Duration::from_secs(3 * self.target_duration) {
                break;
            }
        }
        let keep = (keep + 1).max(PARTED_SEGMENTS_MIN);
        while self.parted.len() > keep {
            self.parted.pop_front();
        }
    }

    /// Make `playlist` (of `container`) a low-latency one when the stream has parts; where
    /// the stream is. The CMAF playlist lists a segment's parts only when each has its
    /// fragment.
    fn decorate(&self, playlist: &mut MediaPlaylist, container: Container) -> Option<LowLatency> {
        let part_target = self.settings.part_duration_s.filter(|_| self.parts_seen)?;
        let part_target = Duration::from_secs_f64(part_target);
        let last_segment = self.listed.back().map_or(0, |s| s.sequence);
        let (building, parts): (u64, &[Arc<Part>]) = match &self.building {
            Some(b) => (b.sequence, &b.parts),
            None => (last_segment + 1, &[]),
        };
        let usable = |parts: &[Arc<Part>]| match container {
            Container::Ts => parts.len(),
            Container::Cmaf => parts.iter().take_while(|p| p.cmaf.is_some()).count(),
        };
        let parted = &self.parted;
        low_latency::decorate(
            playlist,
            part_target,
            container,
            (building, &parts[..usable(parts)]),
            |sequence| {
                parted
                    .iter()
                    .find(|(s, _)| *s == sequence)
                    .map(|(_, p)| p.as_slice())
                    .filter(|p| usable(p) == p.len())
            },
        );
        Some(LowLatency {
            part_target,
            last_segment,
            building,
            building_parts: parts.len() as u32,
            target_duration: self.target_duration,
        })
    }

    /// Take up a window a previous process made (an upgrade): its segments, listed and in
    /// grace as they were, its discontinuity sequence and target duration; the next segment
    /// made here is a discontinuity (what came between is lost). Published at once.
    pub fn restore(&mut self, window: Restored, now_ns: u64) {
        let listed_from = window.segments.len().saturating_sub(window.listed);
        for (i, segment) in window.segments.into_iter().enumerate() {
            if i < listed_from {
                self.grace.push_back((segment, now_ns));
            } else {
                self.listed.push_back(segment);
            }
        }
        self.discontinuity_sequence = window.discontinuity_sequence;
        self.target_duration = self.target_duration.max(window.target_duration);
        if let Some(bytes) = self.listed.back().and_then(|s| s.bytes()) {
            self.media = MediaInfo::probe(bytes);
        }
        self.dropped = true;
        self.publish();
        self.tell();
    }
}

/// Playlists may be cached for at most half a target duration (so a cache is never more than
/// one target duration behind); under two seconds that rounds to nothing: revalidate.
fn playlist_cache_control(target_duration: u64) -> &'static str {
    match target_duration / 2 {
        0 => "no-cache",
        1 => "public, max-age=1",
        2 => "public, max-age=2",
        3 => "public, max-age=3",
        4 => "public, max-age=4",
        _ => "public, max-age=5",
    }
}

/// `playlist` with `query` (`name=value`, already URL-encoded) added to every URI line, for a
/// viewer whose token must travel with its segment requests.
pub fn with_query(playlist: &[u8], query: &str) -> Bytes {
    let mut out = Vec::with_capacity(playlist.len() + 16 * (query.len() + 1));
    for line in playlist.split_inclusive(|b| *b == b'\n') {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() || text.starts_with(b"#") {
            out.extend_from_slice(line);
            continue;
        }
        out.extend_from_slice(text);
        out.push(if text.contains(&b'?') { b'&' } else { b'?' });
        out.extend_from_slice(query.as_bytes());
        out.extend_from_slice(&line[text.len()..]);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests;
