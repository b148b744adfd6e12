//! FLV tags to MPEG-TS, for the pipeline that takes TS: H.264 and H.265 from length-prefixed
//! NAL units to Annex B (an access unit delimiter first, the parameter sets of the decoder
//! configuration before every keyframe that lacks them), AAC from raw frames to ADTS (the
//! header built from the AudioSpecificConfig). Sans-IO.
//!
//! Timestamps: FLV's 32-bit millisecond clock is extended across its wrap (each stamp is
//! placed nearest the one before), moved one second on (so the PCR, [`PCR_LEAD`] ahead of
//! the DTS, never goes below 0), and written at 90 kHz; a video frame's PTS is its DTS plus
//! its composition time (a negative one is taken as 0).
//!
//! Streams: video on PID 0x100 (the PCR), audio on 0x101, the PMT on 0x1000, as each
//! configuration arrives; one that arrives after frames were written adds its stream to the
//! PMT (a new version), the others' continuity kept. Frames that come before their
//! configuration are skipped and counted.

use super::{AacConfig, AudioTag, DecoderConfig, FlvError, VideoPacket, VideoTag};
use super::{TAG_AUDIO, TAG_VIDEO};
use crate::es::VideoCodec;
use crate::mp4::annexb::{nal_kind, NalKind};
use crate::ts::mux::{MuxConfig, MuxStream, Muxer, PCR_LEAD};
use crate::ts::{Pid, StreamType};

/// The video PID.
pub const VIDEO_PID: u16 = 0x100;
/// The audio PID.
pub const AUDIO_PID: u16 = 0x101;
/// The PMT's PID.
pub const PMT_PID: u16 = 0x1000;
/// Where FLV's time 0 lands on the 90 kHz clock.
const START_90KHZ: i64 = 90_000;

/// What a remuxer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemuxStats {
    /// Video access units written.
    pub video_frames: u64,
    /// Audio frames written.
    pub audio_frames: u64,
    /// Frames skipped: before their configuration, or with NAL lengths that overrun them.
    pub skipped: u64,
    /// Tags refused: a codec not taken, a configuration that does not parse.
    pub refused: u64,
}

/// Turns FLV tags into MPEG-TS packets.
#[derive(Debug, Default)]
pub struct FlvRemuxer {
    video: Option<(VideoCodec, DecoderConfig)>,
    audio: Option<AacConfig>,
    muxer: Option<Muxer>,
    /// The last stamp and its extended value.
    clock: Option<(u32, i64)>,
    stats: RemuxStats,
}

impl FlvRemuxer {
    /// A remuxer that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// What it did so far.
    pub fn stats(&self) -> RemuxStats {
        self.stats
    }

    /// Forget the configurations and the clock (a new publisher); counts stay.
    pub fn reset(&mut self) {
        *self = Self {
            stats: self.stats,
            ..Self::default()
        };
    }

    /// Take one tag of `kind` ([`TAG_AUDIO`], [`TAG_VIDEO`]; others are passed by) stamped
    /// `timestamp_ms`, and append its packets to `out`. A refused tag is counted and its
    /// reason returned (it changes nothing).
    pub fn push(
        &mut self,
        kind: u8,
        timestamp_ms: u32,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FlvError> {
        let result = match kind {
            TAG_VIDEO => self.video(timestamp_ms, body, out),
            TAG_AUDIO => self.audio(timestamp_ms, body, out),
            _ => Ok(()),
        };
        if result.is_err() {
            self.stats.refused += 1;
        }
        result
    }

    fn video(&mut self, timestamp_ms: u32, body: &[u8], out: &mut Vec<u8>) -> Result<(), FlvError> {
        let tag = VideoTag::parse(body)?;
        match tag.packet {
            VideoPacket::Config(record) => {
                self.video = Some((tag.codec, DecoderConfig::parse(tag.codec, record)?));
            }
            VideoPacket::Frame {
                keyframe,
                composition_ms,
                data,
            } => {
                let Some((codec, config)) = self.video.as_ref().filter(|(c, _)| *c == tag.codec)
                else {
                    self.stats.skipped += 1;
                    return Ok(());
                };
                let Some(access_unit) = annex_b(*codec, config, keyframe, data) else {
                    self.stats.skipped += 1;
                    return Ok(());
                };
                let dts = self.time_90khz(timestamp_ms);
                let pts = dts + u64::try_from(composition_ms).unwrap_or(0) * 90;
                let muxer = self.muxer();
                muxer.write(0, pts, Some(dts), keyframe, &access_unit, out);
                self.stats.video_frames += 1;
            }
            VideoPacket::Other => {}
        }
        Ok(())
    }

    fn audio(&mut self, timestamp_ms: u32, body: &[u8], out: &mut Vec<u8>) -> Result<(), FlvError> {
        match AudioTag::parse(body)? {
            AudioTag::AacConfig(config) => self.audio = Some(AacConfig::parse(config)?),
            AudioTag::AacFrame(frame) => {
                let Some(config) = self.audio else {
                    self.stats.skipped += 1;
                    return Ok(());
                };
                if frame.len() + 7 > 0x1FFF {
                    self.stats.skipped += 1;
                    return Ok(());
                }
                let mut adts = Vec::with_capacity(7 + frame.len());
                adts.extend_from_slice(&config.adts_header(frame.len()));
                adts.extend_from_slice(frame);
                let pts = self.time_90khz(timestamp_ms);
                let index = usize::from(self.video.is_some());
                let muxer = self.muxer();
                muxer.write(index, pts, None, false, &adts, out);
                self.stats.audio_frames += 1;
            }
        }
        Ok(())
    }

    /// `timestamp_ms` extended and on the 90 kHz clock.
    fn time_90khz(&mut self, timestamp_ms: u32) -> u64 {
        let ms = match self.clock {
            None => i64::from(timestamp_ms),
            Some((last, value)) => value + i64::from(timestamp_ms.wrapping_sub(last) as i32),
        };
        self.clock = Some((timestamp_ms, ms));
        (START_90KHZ + ms * 90).max(PCR_LEAD as i64) as u64
    }

    /// The muxer for the configurations known now (made, or given a new PMT, when they
    /// changed).
    fn muxer(&mut self) -> &mut Muxer {
        let mut streams = Vec::with_capacity(2);
        if let Some((codec, _)) = &self.video {
            streams.push(MuxStream {
                pid: Pid::from_bits(VIDEO_PID),
                stream_type: match codec {
                    VideoCodec::H264 => StreamType::H264,
                    VideoCodec::H265 => StreamType::H265,
                },
                stream_id: 0xE0,
            });
        }
        if self.audio.is_some() {
            streams.push(MuxStream {
                pid: Pid::from_bits(AUDIO_PID),
                stream_type: StreamType::AAC_ADTS,
                stream_id: 0xC0,
            });
        }
        let config = MuxConfig {
            program_number: 1,
            pmt_pid: Pid::from_bits(PMT_PID),
            streams,
        };
        if let Some(muxer) = self.muxer.as_mut().filter(|m| m.config() != &config) {
            muxer.reconfigure(config.clone());
        }
        self.muxer.get_or_insert_with(|| Muxer::new(config))
    }
}

/// Access unit `data` (NAL units after lengths of `config.length_size` bytes) in Annex B:
/// a delimiter first, and the configuration's parameter sets before a keyframe that carries
/// none. `None` when a length overruns the data.
fn annex_b(
    codec: VideoCodec,
    config: &DecoderConfig,
    keyframe: bool,
    mut data: &[u8],
) -> Option<Vec<u8>> {
    const START: [u8; 4] = [0, 0, 0, 1];
    let mut nals = Vec::new();
    while !data.is_empty() {
        let (len, rest) = data.split_at_checked(config.length_size)?;
        let len = len.iter().fold(0usize, |n, b| n << 8 | usize::from(*b));
        let (nal, rest) = rest.split_at_checked(len)?;
        if !nal.is_empty() {
            nals.push(nal);
        }
        data = rest;
    }
    let mut out = Vec::with_capacity(64 + nals.iter().map(|n| n.len() + 4).sum::<usize>());
    out.extend_from_slice(&START);
    match codec {
        VideoCodec::H264 => out.extend_from_slice(&[0x09, 0xF0]),
        VideoCodec::H265 => out.extend_from_slice(&[0x46, 0x01, 0x50]),
    }
    let carries_parameters = nals
        .iter()
        .any(|n| matches!(nal_kind(codec, n), NalKind::Sps | NalKind::Pps));
    if keyframe && !carries_parameters {
        for set in &config.parameter_sets {
            out.extend_from_slice(&START);
            out.extend_from_slice(set);
        }
    }
    for nal in nals {
        if nal_kind(codec, nal) != NalKind::Delimiter {
            out.extend_from_slice(&START);
            out.extend_from_slice(nal);
        }
    }
    Some(out)
}
