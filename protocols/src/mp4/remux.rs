//! MPEG-TS to fragmented MP4, with no I/O: a program's transport packets go in, and at each
//! cut the caller asks for (a segment's or a part's end, between access units) every sample
//! complete so far comes out as one fragment (`moof` + `mdat`); the init segment is made once
//! the tracks' configurations are known.
//!
//! ```text
//!  packets ─► PesAssembler per PID ─► access units (video: Annex B → length-prefixed, its
//!             parameter sets kept aside; audio: ADTS frames → raw frames) with unwrapped DTS
//!             and PTS ─► pending samples ─ cut ─► fragment(Run per track)
//! ```
//!
//! Tracks: the program's first H.264 or H.265 stream (track 1, 90 kHz) and its first AAC
//! stream in ADTS (track 2, at its sampling rate). Other codecs stay in MPEG-TS only. The
//! first fragment's video starts with a sync sample: what comes before the first keyframe is
//! dropped (later fragments start where the caller cuts). Each track's `tfdt` is its first sample's decode time, so audio that straddles a
//! cut simply goes in the next fragment.
//!
//! The last video sample of a fragment is given the previous sample's duration (the next
//! access unit, whose DTS would tell, has not started yet); the next fragment's `tfdt` says
//! where it really starts, so no error accumulates.
//!
//! The caller cuts only between access units: where the segmenter ends a segment or a part,
//! that is, before the packet that starts the next access unit is pushed.

use super::annexb::{adts_config, nal_units, to_length_prefixed, NalKind};
use super::{fragment, init_segment, Codec, Run, Sample, Track};
use crate::es::params::{h264_sps, h265_sps, VideoParams};
use crate::es::VideoCodec;
use crate::ts::pes::{Unwrapper, CLOCK_90KHZ};
use crate::ts::psi::Pmt;
use crate::ts::{Codec as TsCodec, Packet, Pes, PesAssembler, Pid, PACKET_SIZE};

/// Bounds of one reassembled PES: a video access unit, an audio PES.
const MAX_VIDEO_PES: usize = 8 << 20;
const MAX_AUDIO_PES: usize = 1 << 20;

/// Samples held for one fragment past which the oldest are dropped (a caller that never
/// cuts must not grow memory without bound): ten seconds of 60 fps video.
const MAX_PENDING_SAMPLES: usize = 600;

/// Bytes held for one fragment past which the fragment is dropped.
const MAX_PENDING_BYTES: usize = 64 << 20;

/// What the remuxer counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemuxStats {
    /// Fragments made.
    pub fragments: u64,
    /// PES packets dropped (too large, a bad header, cut short).
    pub dropped_pes: u64,
    /// Samples dropped (before the first keyframe, a track without its configuration, over
    /// the bounds).
    pub dropped_samples: u64,
}

/// A track being collected.
#[derive(Debug)]
struct Pending {
    samples: Vec<Sample>,
    /// Decode time of each sample (track timescale).
    decode: Vec<i64>,
    data: Vec<u8>,
}

impl Pending {
    fn new() -> Self {
        Self {
            samples: Vec::new(),
            decode: Vec::new(),
            data: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.samples.clear();
        self.decode.clear();
        self.data.clear();
    }

    fn full(&self) -> bool {
        self.samples.len() >= MAX_PENDING_SAMPLES || self.data.len() >= MAX_PENDING_BYTES
    }
}

#[derive(Debug)]
struct VideoTrack {
    pid: Pid,
    assembler: PesAssembler,
    units: VideoUnits,
}

/// A video track's access units so far, and what it knows of its configuration.
#[derive(Debug)]
struct VideoUnits {
    codec: VideoCodec,
    clock: Unwrapper,
    vps: Option<Vec<u8>>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    params: Option<VideoParams>,
    pending: Pending,
    /// The duration of the newest sample whose successor was seen (90 kHz).
    last_duration: u32,
    /// A keyframe has been seen: samples are kept from it on.
    synced: bool,
}

#[derive(Debug)]
struct AudioTrack {
    pid: Pid,
    assembler: PesAssembler,
    frames: AudioFrames,
}

/// An audio track's frames so far, and its configuration.
#[derive(Debug)]
struct AudioFrames {
    clock: Unwrapper,
    /// AudioSpecificConfig, channels, sampling rate.
    config: Option<(Vec<u8>, u16, u32)>,
    pending: Pending,
}

/// A program's packets to fMP4 (see the module docs).
#[derive(Debug, Default)]
pub struct Remuxer {
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    /// The current init segment, the tracks it was made for, and how many there have been.
    init: Option<(Vec<u8>, Vec<Track>)>,
    init_generation: u64,
    /// Cuts made while the audio's configuration was awaited for the init segment.
    awaited: u32,
    /// The earliest presentation time of the last fragment (90 kHz).
    last_start: Option<i64>,
    sequence: u32,
    stats: RemuxStats,
}

/// Cuts the init segment waits for an audio track's first frame before it is made without
/// audio (a program that lists audio it never sends).
const AUDIO_WAIT_CUTS: u32 = 16;

impl Remuxer {
    /// A remuxer that follows no program yet ([`Remuxer::set_program`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Follow `pmt`'s first H.264/H.265 stream and first AAC (ADTS) stream. The same streams
    /// again change nothing; others start afresh (a new init segment will be made).
    pub fn set_program(&mut self, pmt: &Pmt) {
        let video = pmt.streams.iter().find_map(|s| match s.codec {
            TsCodec::H264 => Some((s.pid, VideoCodec::H264)),
            TsCodec::H265 => Some((s.pid, VideoCodec::H265)),
            _ => None,
        });
        let audio = pmt
            .streams
            .iter()
            .find(|s| s.codec == TsCodec::AacAdts)
            .map(|s| s.pid);
        let same_video = self.video.as_ref().map(|v| (v.pid, v.units.codec)) == video;
        let same_audio = self.audio.as_ref().map(|a| a.pid) == audio;
        if same_video && same_audio {
            return;
        }
        self.video = video.map(|(pid, codec)| VideoTrack {
            pid,
            assembler: PesAssembler::new(MAX_VIDEO_PES),
            units: VideoUnits {
                codec,
                clock: Unwrapper::default(),
                vps: None,
                sps: None,
                pps: None,
                params: None,
                pending: Pending::new(),
                last_duration: 0,
                synced: false,
            },
        });
        self.audio = audio.map(|pid| AudioTrack {
            pid,
            assembler: PesAssembler::new(MAX_AUDIO_PES),
            frames: AudioFrames {
                clock: Unwrapper::default(),
                config: None,
                pending: Pending::new(),
            },
        });
    }

    /// The source started again (its timestamps jump): the clocks start afresh, and so does
    /// the wait for a keyframe.
    pub fn restart(&mut self) {
        if let Some(v) = &mut self.video {
            v.assembler = PesAssembler::new(MAX_VIDEO_PES);
            v.units.clock = Unwrapper::default();
            v.units.pending.clear();
            v.units.synced = false;
        }
        if let Some(a) = &mut self.audio {
            a.assembler = PesAssembler::new(MAX_AUDIO_PES);
            a.frames.clock = Unwrapper::default();
            a.frames.pending.clear();
        }
    }

    /// One transport packet of the program (others are ignored).
    pub fn push(&mut self, bytes: &[u8; PACKET_SIZE]) {
        let Ok(packet) = Packet::new(bytes) else {
            return;
        };
        if !packet.has_payload() || packet.transport_error() {
            return;
        }
        let pid = packet.pid();
        let stats = &mut self.stats;
        let start = packet.payload_unit_start();
        if let Some(v) = self.video.as_mut().filter(|v| v.pid == pid) {
            let units = &mut v.units;
            v.assembler
                .push(start, false, packet.payload(), |r| match r {
                    Ok(pes) => units.access_unit(&pes, stats),
                    Err(_) => stats.dropped_pes += 1,
                });
        } else if let Some(a) = self.audio.as_mut().filter(|a| a.pid == pid) {
            let frames = &mut a.frames;
            a.assembler
                .push(start, false, packet.payload(), |r| match r {
                    Ok(pes) => frames.frames(&pes, stats),
                    Err(_) => stats.dropped_pes += 1,
                });
        }
    }

    /// Cut here (between access units): every sample complete so far, one fragment per
    /// track. `None` when there is none yet, or no init segment can be made yet (no keyframe
    /// with its parameter sets).
    pub fn cut(&mut self) -> Option<Cut> {
        let mut out = Cut::default();
        let mut sequence = self.sequence;
        self.cut_tracks(false, |_, run| {
            sequence = sequence.wrapping_add(1).max(1);
            let Ok(bytes) = fragment(sequence, std::slice::from_ref(run)) else {
                return;
            };
            match run.track_id {
                VIDEO_TRACK => out.video = Some(bytes),
                _ => {
                    out.audio = Some(bytes);
                    out.audio_samples = run.samples.len() as u32;
                    out.audio_start = run.base_decode_time;
                }
            }
        });
        self.sequence = sequence;
        let out = (out.video.is_some() || out.audio.is_some()).then_some(out);
        self.stats.fragments += out.as_ref().map_or(0, |c| {
            u64::from(c.video.is_some()) + u64::from(c.audio.is_some())
        });
        out
    }

    /// Cut here as [`Remuxer::cut`] does, handing each track's run (with its track) to `each`
    /// instead of writing fragments: for another container (FLV), where audio whose
    /// configuration came after the init segment was made is carried too. Returns whether
    /// there was any.
    pub fn cut_runs(&mut self, each: impl FnMut(&Track, &Run<'_>)) -> bool {
        self.cut_tracks(true, each)
    }

    /// [`Remuxer::cut_runs`]; `late_audio`: audio is carried once its configuration is known,
    /// whether or not the init segment has it.
    fn cut_tracks(&mut self, late_audio: bool, mut each: impl FnMut(&Track, &Run<'_>)) -> bool {
        let stats = &mut self.stats;
        // The access unit in progress is complete: the next one has not started.
        if let Some(v) = &mut self.video {
            let units = &mut v.units;
            v.assembler.flush(|r| match r {
                Ok(pes) => units.access_unit(&pes, stats),
                Err(_) => stats.dropped_pes += 1,
            });
        } else if let Some(a) = &mut self.audio {
            // Audio only: cuts are at audio PES starts.
            let frames = &mut a.frames;
            a.assembler.flush(|r| match r {
                Ok(pes) => frames.frames(&pes, stats),
                Err(_) => stats.dropped_pes += 1,
            });
        }
        self.ensure_init();
        let Some((_, tracks)) = self.init.as_ref() else {
            // No init segment yet: what came so far has nowhere to go (the next fragment
            // starts at this cut, not before it).
            if let Some(v) = &mut self.video {
                // The next fragment starts with a keyframe, as every first one does.
                v.units.synced = false;
            }
            for pending in [
                self.video.as_mut().map(|v| &mut v.units.pending),
                self.audio.as_mut().map(|a| &mut a.frames.pending),
            ]
            .into_iter()
            .flatten()
            {
                self.stats.dropped_samples += pending.samples.len() as u64;
                pending.clear();
            }
            return false;
        };
        let audio_track = match (late_audio, self.audio.as_ref()) {
            (true, Some(a)) => a.frames.config.as_ref().map(aac_track),
            _ => tracks.iter().find(|t| t.id == AUDIO_TRACK).cloned(),
        };
        let has_audio = audio_track.is_some();
        if let Some(v) = &mut self.video {
            let last_duration = v.units.last_duration.max(1);
            if let Some(last) = v.units.pending.samples.last_mut() {
                last.duration = last_duration;
            }
        }
        let mut runs = Vec::new();
        if let Some(p) = self
            .video
            .as_ref()
            .map(|v| &v.units.pending)
            .filter(|p| !p.samples.is_empty())
        {
            runs.push(Run {
                track_id: VIDEO_TRACK,
                base_decode_time: p.decode[0].max(0) as u64,
                samples: &p.samples,
                data: &p.data,
            });
        }
        if let Some(p) = self
            .audio
            .as_ref()
            .map(|a| &a.frames.pending)
            .filter(|p| has_audio && !p.samples.is_empty())
        {
            runs.push(Run {
                track_id: AUDIO_TRACK,
                base_decode_time: p.decode[0].max(0) as u64,
                samples: &p.samples,
                data: &p.data,
            });
        }
        if runs.is_empty() {
            return false;
        }
        // Its earliest presentation time: the video's (a sync sample comes first, but the
        // earliest may be a reordered one after it), else the audio's.
        self.last_start = match self.video.as_ref().map(|v| &v.units.pending) {
            Some(p) if !p.samples.is_empty() => p
                .samples
                .iter()
                .zip(&p.decode)
                .map(|(s, d)| d + i64::from(s.composition_offset))
                .min(),
            _ => runs.first().map(|r| {
                let rate = self.init.as_ref().map_or(CLOCK_90KHZ as u32, |(_, t)| {
                    t.iter()
                        .find(|t| t.id == r.track_id)
                        .map_or(1, |t| t.timescale)
                });
                r.base_decode_time as i64 * CLOCK_90KHZ as i64 / i64::from(rate.max(1))
            }),
        };
        for run in &runs {
            let track = match run.track_id {
                AUDIO_TRACK => audio_track.as_ref(),
                id => tracks.iter().find(|t| t.id == id),
            };
            if let Some(track) = track {
                each(track, run);
            }
        }
        if let Some(v) = &mut self.video {
            v.units.pending.clear();
        }
        if let Some(a) = &mut self.audio {
            if !has_audio {
                self.stats.dropped_samples += a.frames.pending.samples.len() as u64;
            }
            a.frames.pending.clear();
        }
        true
    }

    /// The end of the input: the audio PES in progress is complete too; the last fragments.
    pub fn finish(&mut self) -> Option<Cut> {
        if let Some(a) = self.audio.as_mut().filter(|_| self.video.is_some()) {
            let (frames, stats) = (&mut a.frames, &mut self.stats);
            a.assembler.flush(|r| match r {
                Ok(pes) => frames.frames(&pes, stats),
                Err(_) => stats.dropped_pes += 1,
            });
        }
        self.cut()
    }

    /// The earliest presentation time of the fragment [`Remuxer::cut`] last made, 90 kHz
    /// (the stream's own clock, unwrapped).
    pub fn last_start(&self) -> Option<i64> {
        self.last_start
    }

    /// The init segment, once the tracks' configurations are known.
    pub fn init_segment(&self) -> Option<&[u8]> {
        self.init.as_ref().map(|(bytes, _)| bytes.as_slice())
    }

    /// An init segment of one of its tracks alone (for a DASH representation).
    pub fn init_segment_of(&self, track_id: u32) -> Option<Vec<u8>> {
        let track = self.tracks().iter().find(|t| t.id == track_id)?;
        init_segment(std::slice::from_ref(track)).ok()
    }

    /// The tracks of the init segment.
    pub fn tracks(&self) -> &[Track] {
        self.init.as_ref().map_or(&[], |(_, t)| t.as_slice())
    }

    /// How many init segments have been made (a new one when the configuration changed:
    /// another source, another resolution).
    pub fn init_generation(&self) -> u64 {
        self.init_generation
    }

    /// What it counted.
    pub fn stats(&self) -> RemuxStats {
        self.stats
    }

    /// Make the init segment when the tracks' configurations are known, and again when they
    /// changed. Audio whose configuration is not known by then is left out.
    fn ensure_init(&mut self) {
        let mut tracks = Vec::new();
        if let Some(v) = self.video.as_ref().map(|v| &v.units) {
            let (Some(sps), Some(pps), Some(params)) = (&v.sps, &v.pps, &v.params) else {
                return;
            };
            let codec = match v.codec {
                VideoCodec::H264 => Codec::H264 {
                    sps: vec![sps.clone()],
                    pps: vec![pps.clone()],
                },
                VideoCodec::H265 => {
                    let Some(vps) = &v.vps else { return };
                    Codec::H265 {
                        vps: vec![vps.clone()],
                        sps: vec![sps.clone()],
                        pps: vec![pps.clone()],
                    }
                }
            };
            tracks.push(Track {
                id: VIDEO_TRACK,
                timescale: CLOCK_90KHZ as u32,
                width: params.width.min(u32::from(u16::MAX)) as u16,
                height: params.height.min(u32::from(u16::MAX)) as u16,
                codec,
            });
        }
        let audio_known = self.audio.as_ref().and_then(|a| a.frames.config.as_ref());
        match (audio_known, &self.init) {
            (Some(known), _) => tracks.push(aac_track(known)),
            // Audio is waited for a while (for ever while there is no video to go on with).
            (None, None) if self.audio.is_some() && self.awaited < AUDIO_WAIT_CUTS => {
                self.awaited += 1;
                return;
            }
            (None, _) if self.video.is_none() => return,
            (None, _) => {}
        }
        if tracks.is_empty() {
            return;
        }
        // Once made, audio that came late does not change it (that would be a new init
        // segment mid-stream for nothing); a new video configuration does.
        if let Some((_, current)) = &self.init {
            let video_same = current.first() == tracks.first();
            if video_same {
                return;
            }
        }
        if let Ok(bytes) = init_segment(&tracks) {
            self.init = Some((bytes, tracks));
            self.init_generation += 1;
        }
    }
}

/// What one cut made: a fragment (`moof` + `mdat`) for each track that had samples. Back to
/// back (video first) they are one CMAF chunk of both tracks, for an init segment with both;
/// alone, a chunk of one track, for an init segment with that track alone (DASH's
/// representations carry one track each).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cut {
    /// The video track's fragment.
    pub video: Option<Vec<u8>>,
    /// The audio track's fragment.
    pub audio: Option<Vec<u8>>,
    /// Audio frames in it (1024 samples each).
    pub audio_samples: u32,
    /// The audio fragment's base decode time (the audio track's timescale).
    pub audio_start: u64,
}

impl Cut {
    /// Both fragments back to back, video first.
    pub fn joined(&self) -> Vec<u8> {
        let (v, a) = (self.video.as_deref(), self.audio.as_deref());
        let mut out = Vec::with_capacity(v.map_or(0, <[u8]>::len) + a.map_or(0, <[u8]>::len));
        out.extend_from_slice(v.unwrap_or_default());
        out.extend_from_slice(a.unwrap_or_default());
        out
    }
}

/// The audio track of an AAC configuration (AudioSpecificConfig, channels, sampling rate).
fn aac_track((config, channels, rate): &(Vec<u8>, u16, u32)) -> Track {
    Track {
        id: AUDIO_TRACK,
        timescale: *rate,
        width: 0,
        height: 0,
        codec: Codec::Aac {
            config: config.clone(),
            channels: *channels,
            sample_rate: *rate,
        },
    }
}

/// Track IDs in the init segment.
pub const VIDEO_TRACK: u32 = 1;
/// The audio track's ID.
pub const AUDIO_TRACK: u32 = 2;

impl VideoUnits {
    /// One access unit: its parameter sets kept, its NAL units as one sample.
    fn access_unit(&mut self, pes: &Pes<'_>, stats: &mut RemuxStats) {
        let Some(pts) = pes.header.pts else {
            stats.dropped_pes += 1;
            return;
        };
        let raw_dts = pes.header.dts.unwrap_or(pts);
        let dts = self.clock.extend(raw_dts);
        let pts = dts + pts.since(raw_dts);
        let sync = nal_units(pes.payload).any(|nal| is_sync(self.codec, nal));
        if sync {
            self.synced = true;
        }
        if !self.synced {
            stats.dropped_samples += 1;
            return;
        }
        if self.pending.full() {
            stats.dropped_samples += self.pending.samples.len() as u64;
            self.pending.clear();
            self.synced = sync;
            if !sync {
                return;
            }
        }
        if let (Some(prev), Some(last)) =
            (self.pending.decode.last(), self.pending.samples.last_mut())
        {
            let step = (dts - prev).clamp(1, i64::from(u32::MAX)) as u32;
            last.duration = step;
            self.last_duration = step;
        }
        let (codec, vps, sps, pps, params) = (
            self.codec,
            &mut self.vps,
            &mut self.sps,
            &mut self.pps,
            &mut self.params,
        );
        let size =
            to_length_prefixed(
                codec,
                pes.payload,
                &mut self.pending.data,
                |kind, nal| match kind {
                    NalKind::Vps => *vps = Some(nal.to_vec()),
                    NalKind::Sps => {
                        let read = match codec {
                            VideoCodec::H264 => h264_sps(nal),
                            VideoCodec::H265 => h265_sps(nal),
                        };
                        if let Some(read) = read {
                            *params = Some(read);
                            *sps = Some(nal.to_vec());
                        }
                    }
                    NalKind::Pps => *pps = Some(nal.to_vec()),
                    _ => {}
                },
            );
        self.pending.samples.push(Sample {
            duration: self.last_duration.max(1),
            size: size as u32,
            sync,
            composition_offset: (pts - dts).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        });
        self.pending.decode.push(dts);
    }
}

/// Whether NAL unit `nal` makes its access unit a sync sample (an IDR, or for H.265 any
/// IRAP picture).
fn is_sync(codec: VideoCodec, nal: &[u8]) -> bool {
    let Some(&head) = nal.first() else {
        return false;
    };
    match codec {
        VideoCodec::H264 => head & 0x1F == 5,
        VideoCodec::H265 => (16..=23).contains(&((head >> 1) & 0x3F)),
    }
}

impl AudioFrames {
    /// One audio PES: each ADTS frame in it is a sample of 1024.
    fn frames(&mut self, pes: &Pes<'_>, stats: &mut RemuxStats) {
        let Some(pts) = pes.header.pts else {
            stats.dropped_pes += 1;
            return;
        };
        let at = self.clock.extend(pts);
        let mut rest = pes.payload;
        let mut n = 0i64;
        while let Some(frame) = adts_config(rest) {
            let rate = frame.sample_rate;
            let config = self
                .config
                .get_or_insert_with(|| (frame.config.clone(), frame.channels, rate));
            if config.2 != rate || config.0 != frame.config || self.pending.full() {
                // Another configuration mid-stream (or a caller that does not cut): dropped.
                stats.dropped_samples += 1;
            } else {
                let decode = at * i64::from(rate) / CLOCK_90KHZ as i64 + n * 1024;
                self.pending.samples.push(Sample {
                    duration: 1024,
                    size: frame.payload.len() as u32,
                    sync: true,
                    composition_offset: 0,
                });
                self.pending.decode.push(decode);
                self.pending.data.extend_from_slice(frame.payload);
            }
            rest = &rest[frame.len..];
            n += 1;
        }
    }
}
