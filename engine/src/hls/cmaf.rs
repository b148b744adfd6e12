//! The CMAF (fragmented MP4) rendition of a stream's segments and parts: made by the
//! packager's remuxer beside the MPEG-TS bytes, cut at the same places, shared the same way.
//!
//! ```text
//!  /{stream}/cmaf/index.m3u8         media playlist (EXT-X-MAP; parts when low-latency)
//!  /{stream}/cmaf/master.m3u8        multivariant playlist
//!  /{stream}/cmaf/init-{n}.mp4       init segment n (a new one when the tracks change)
//!  /{stream}/cmaf/{sequence}.m4s     segment: its parts' fragments back to back
//!  /{stream}/cmaf/{seq}.{part}.m4s   part: one fragment
//!  /{stream}/manifest.mpd            live DASH manifest of the same segments
//! ```
//!
//! Carried: H.264, H.265 and AAC (ADTS); other codecs stay in the MPEG-TS rendition only.

use bytes::Bytes;
use shardcast_protocols::mp4::{Codec, Track};
use std::sync::Arc;

/// An init segment (`ftyp` + `moov`), by the generation the remuxer made it in.
#[derive(Debug)]
pub struct InitSegment {
    /// Which of the stream's init segments it is (its URL: `init-{generation}.mp4`).
    pub generation: u64,
    /// The bytes.
    pub bytes: Bytes,
    /// Init segments of the video and of the audio track alone (DASH).
    pub video: Option<Bytes>,
    pub audio: Option<Bytes>,
    /// The tracks' codecs, RFC 6381 (`avc1.64001f`, `mp4a.40.2`), video first.
    pub codecs: Vec<String>,
    /// Picture size, when there is video.
    pub resolution: Option<(u16, u16)>,
    /// Audio sampling rate, when there is audio.
    pub sample_rate: Option<u32>,
    /// Entity tag, quoted.
    pub etag: String,
}

impl InitSegment {
    /// Init segment `generation` of `tracks`, with those of its video and its audio alone.
    pub fn new(generation: u64, bytes: Bytes, alone: [Option<Bytes>; 2], tracks: &[Track]) -> Self {
        let codecs = tracks.iter().filter_map(codec_string).collect();
        let resolution = tracks
            .iter()
            .find(|t| !matches!(t.codec, Codec::Aac { .. }))
            .map(|t| (t.width, t.height));
        let sample_rate = tracks.iter().find_map(|t| match t.codec {
            Codec::Aac { sample_rate, .. } => Some(sample_rate),
            _ => None,
        });
        let etag = format!("\"init-{generation:x}-{:x}\"", bytes.len());
        let [video, audio] = alone;
        Self {
            generation,
            bytes,
            video,
            audio,
            codecs,
            resolution,
            sample_rate,
            etag,
        }
    }

    /// Its name in playlists.
    pub fn uri(&self) -> String {
        format!("init-{}.mp4", self.generation)
    }

    /// The name of the init segment of one of its tracks alone.
    pub fn track_uri(&self, track: TrackKind) -> String {
        format!("init-{}.{}.mp4", self.generation, track.name())
    }

    /// The init segment of one of its tracks alone.
    pub fn track(&self, track: TrackKind) -> Option<&Bytes> {
        match track {
            TrackKind::Video => self.video.as_ref(),
            TrackKind::Audio => self.audio.as_ref(),
        }
    }
}

/// One of the tracks, as DASH serves them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackKind {
    /// The video track.
    Video,
    /// The audio track.
    Audio,
}

impl TrackKind {
    /// Its name in URLs.
    pub fn name(self) -> &'static str {
        match self {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
        }
    }
}

/// A segment's CMAF rendition being built: its fragments so far, in the order they were cut
/// (each cut's video, then its audio: the order of their sequence numbers), and where each
/// track's lie.
#[derive(Debug)]
pub struct BuildingCmaf {
    pub bytes: Vec<u8>,
    pub fragments: Vec<(std::ops::Range<usize>, TrackKind)>,
    /// The init segment they need.
    pub init: Arc<InitSegment>,
    /// The first fragment's earliest presentation time, 90 kHz.
    pub start: Option<i64>,
    /// The audio's first decode time and duration, the audio track's timescale.
    pub audio_span: Option<(u64, u64)>,
}

impl BuildingCmaf {
    /// Nothing yet, for `init`.
    pub fn new(init: Arc<InitSegment>) -> Self {
        Self {
            bytes: Vec::new(),
            fragments: Vec::new(),
            init,
            start: None,
            audio_span: None,
        }
    }

    /// Take the fragments of one cut.
    pub fn take(&mut self, cut: &shardcast_protocols::mp4::Cut, start: Option<i64>) {
        self.start.get_or_insert(start.unwrap_or(0));
        for (fragment, track) in [
            (&cut.video, TrackKind::Video),
            (&cut.audio, TrackKind::Audio),
        ] {
            if let Some(fragment) = fragment {
                let at = self.bytes.len();
                self.bytes.extend_from_slice(fragment);
                self.fragments.push((at..self.bytes.len(), track));
            }
        }
        if cut.audio.is_some() {
            let (_, duration) = self.audio_span.get_or_insert((cut.audio_start, 0));
            *duration += u64::from(cut.audio_samples) * 1024;
        }
    }

    /// The segment, when it has any fragment.
    pub fn seal(self) -> Option<CmafSegment> {
        if self.bytes.is_empty() {
            return None;
        }
        Some(CmafSegment {
            init: self.init,
            bytes: Bytes::from(self.bytes),
            fragments: self.fragments,
            tracks: std::sync::OnceLock::new(),
            start: self.start.unwrap_or(0).max(0) as u64,
            audio_span: self.audio_span,
        })
    }
}

/// A segment's CMAF rendition.
#[derive(Debug)]
pub struct CmafSegment {
    /// The init segment its fragments need.
    pub init: Arc<InitSegment>,
    /// Its fragments, in the order they were cut (that of their sequence numbers): each
    /// part's video, then its audio, so the segment is its parts back to back.
    pub bytes: Bytes,
    /// Where each fragment lies in `bytes`, and its track.
    pub fragments: Vec<(std::ops::Range<usize>, TrackKind)>,
    /// Each track's fragments alone (video, audio), gathered from `bytes` the first time
    /// DASH asks for either (a stream no DASH player watches holds no copy).
    pub tracks: std::sync::OnceLock<[Bytes; 2]>,
    /// Its earliest presentation time, 90 kHz (the stream's clock, unwrapped): its place in
    /// the DASH timeline.
    pub start: u64,
    /// Its audio's first decode time and duration, the audio track's timescale (the audio
    /// representation's DASH timeline).
    pub audio_span: Option<(u64, u64)>,
}

/// What a window publishes of the CMAF rendition.
#[derive(Debug, Clone)]
pub struct CmafRendition {
    /// `/{stream}/cmaf/index.m3u8`.
    pub playlist: Bytes,
    /// `/{stream}/cmaf/master.m3u8`.
    pub master: Bytes,
    /// The media playlist's delta update, when it skips anything.
    pub delta: Option<Bytes>,
    /// The init segments the fetchable segments need, oldest first (the last is current).
    pub inits: Vec<Arc<InitSegment>>,
    /// The DASH manifest, before and after where the server's clock goes.
    pub manifest: Option<(Bytes, Bytes)>,
}

/// A DASH period: from a discontinuity (or a new init segment) on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DashPeriod {
    /// Its id in the manifest.
    pub id: u64,
    /// Its first segment.
    pub first: u64,
    /// Its start, from availabilityStartTime.
    pub start: std::time::Duration,
    /// The media time of its start (presentationTimeOffset), 90 kHz.
    pub offset: u64,
}

impl CmafSegment {
    /// The fragments of one of its tracks (a DASH representation's segment).
    pub fn track(&self, track: TrackKind) -> Bytes {
        let [video, audio] = self.tracks.get_or_init(|| {
            [TrackKind::Video, TrackKind::Audio].map(|kind| {
                let mut alone = Vec::new();
                for (range, _) in self.fragments.iter().filter(|(_, t)| *t == kind) {
                    alone.extend_from_slice(&self.bytes[range.clone()]);
                }
                Bytes::from(alone)
            })
        });
        match track {
            TrackKind::Video => video.clone(),
            TrackKind::Audio => audio.clone(),
        }
    }
}

impl CmafRendition {
    /// Init segment `generation`, if a fetchable segment needs it.
    pub fn init(&self, generation: u64) -> Option<&Arc<InitSegment>> {
        self.inits.iter().find(|i| i.generation == generation)
    }
}

/// The RFC 6381 codec string of a track, from its configuration.
fn codec_string(track: &Track) -> Option<String> {
    match &track.codec {
        Codec::H264 { sps, .. } => {
            let sps = sps.first()?;
            // profile_idc, constraint flags, level_idc follow the NAL header.
            let (p, c, l) = (sps.get(1)?, sps.get(2)?, sps.get(3)?);
            Some(format!("avc1.{p:02x}{c:02x}{l:02x}"))
        }
        Codec::H265 { sps, .. } => {
            shardcast_protocols::es::params::h265_sps(sps.first()?).map(|p| p.codec)
        }
        Codec::Aac { config, .. } => {
            let object_type = config.first()? >> 3;
            Some(format!("mp4a.40.{object_type}"))
        }
    }
}
