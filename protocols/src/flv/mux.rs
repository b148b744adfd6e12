//! MPEG-TS to FLV tags, with no I/O: what an RTMP publisher sends (`rtmp://` pushes).
//!
//! ```text
//!  packets ─ Demuxer (the first program's PMT, where video PES start) ─ mp4::Remuxer (access
//!  units: H.264 Annex B → length-prefixed with its parameter sets kept aside, ADTS → raw AAC)
//!  ─ cut before each video PES ─ FlvTag { kind, timestamp_ms, body }
//! ```
//!
//! Each track's decoder configuration goes first as a sequence header (the
//! AVCDecoderConfigurationRecord, the AudioSpecificConfig) and again whenever it changes
//! (another source, another resolution). Timestamps are milliseconds of decode time from the
//! first tag; a jump of the source's clock (back, or ahead by more than [`MAX_STEP_MS`]) is
//! smoothed over so that they keep going up, as RTMP servers expect.
//!
//! Video is H.264 (FLV's codec 7) and audio AAC; H.265 and other codecs are left out (classic
//! FLV has no codec ID for them) and counted.

use super::{TAG_AUDIO, TAG_VIDEO};
use crate::mp4::{avc_decoder_config, Codec, Remuxer, Run, Track};
use crate::ts::{Codec as TsCodec, DemuxConfig, DemuxEvent, Demuxer, PACKET_SIZE};

/// A step of the timestamps ahead by more than this is a jump of the source's clock.
pub const MAX_STEP_MS: i64 = 10_000;
/// A step back by more than this is a jump of the source's clock (audio and video may be a
/// little out of step with each other).
pub const MAX_BACK_MS: i64 = 1_000;

/// One FLV tag: its type, timestamp and body (what an RTMP audio or video message carries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlvTag {
    /// [`TAG_VIDEO`] or [`TAG_AUDIO`].
    pub kind: u8,
    /// Decode time, ms.
    pub timestamp_ms: u32,
    /// The tag's body.
    pub body: Vec<u8>,
    /// A keyframe, or a sequence header (what a server must not drop).
    pub key: bool,
}

/// What the muxer left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlvMuxStats {
    /// Samples of a codec FLV cannot carry here.
    pub unsupported_samples: u64,
    /// Times the source's clock jumped.
    pub clock_jumps: u64,
}

/// MPEG-TS in, FLV tags out (see the module docs).
#[derive(Debug)]
pub struct TsToFlv {
    demuxer: Demuxer,
    remuxer: Remuxer,
    program: Option<u16>,
    video_pid: Option<u16>,
    video_config: Option<Vec<u8>>,
    audio_config: Option<Vec<u8>>,
    /// Added to the source's clock (ms) to make a tag's timestamp.
    offset_ms: Option<i64>,
    /// The last timestamp handed out.
    last_ms: i64,
    stats: FlvMuxStats,
}

impl Default for TsToFlv {
    fn default() -> Self {
        Self::new()
    }
}

impl TsToFlv {
    /// A muxer waiting for a PMT.
    pub fn new() -> Self {
        Self {
            demuxer: Demuxer::new(DemuxConfig::default()),
            remuxer: Remuxer::new(),
            program: None,
            video_pid: None,
            video_config: None,
            audio_config: None,
            offset_ms: None,
            last_ms: 0,
            stats: FlvMuxStats::default(),
        }
    }

    /// What it left out.
    pub fn stats(&self) -> FlvMuxStats {
        self.stats
    }

    /// The input lost data or its source restarted: what was being assembled is dropped, and
    /// the next tags start at a keyframe (timestamps still go on from the last).
    pub fn restart(&mut self) {
        self.remuxer.restart();
    }

    /// Whole packets (188 bytes each; a trailing part is ignored); each tag they complete
    /// goes to `out`.
    pub fn push(&mut self, data: &[u8], mut out: impl FnMut(FlvTag)) {
        for packet in data.chunks_exact(PACKET_SIZE) {
            let Ok(packet) = <&[u8; PACKET_SIZE]>::try_from(packet) else {
                continue;
            };
            let (program, video_pid, remuxer) =
                (&mut self.program, &mut self.video_pid, &mut self.remuxer);
            let mut video_starts = false;
            self.demuxer.push_packet(packet, &mut |event| match event {
                DemuxEvent::Pmt(pmt) if program.is_none_or(|p| p == pmt.program_number) => {
                    *program = Some(pmt.program_number);
                    *video_pid = pmt
                        .streams
                        .iter()
                        .find(|s| s.codec == TsCodec::H264 || s.codec == TsCodec::H265)
                        .map(|s| s.pid.value());
                    remuxer.set_program(pmt);
                }
                DemuxEvent::PesStart { pid, .. } if Some(pid.value()) == *video_pid => {
                    video_starts = true;
                }
                _ => {}
            });
            if video_starts {
                // Between access units: what came before is complete.
                self.cut(&mut out);
            }
            self.remuxer.push(packet);
        }
    }

    /// The end of the input: the last tags.
    pub fn finish(&mut self, mut out: impl FnMut(FlvTag)) {
        self.cut(&mut out);
    }

    fn cut(&mut self, out: &mut impl FnMut(FlvTag)) {
        let mut tags = Vec::new();
        let Self {
            remuxer,
            video_config,
            audio_config,
            stats,
            ..
        } = self;
        remuxer.cut_runs(|track, run| match &track.codec {
            Codec::H264 { sps, pps } => {
                let config = avc_decoder_config(sps, pps);
                if config.is_some() && *video_config != config {
                    video_config.clone_from(&config);
                    let mut body = vec![0x17, 0, 0, 0, 0];
                    body.extend_from_slice(config.as_deref().unwrap_or_default());
                    tags.push((TAG_VIDEO, first_ms(track, run), body, true));
                }
                samples(track, run, |ms, sample, data| {
                    let cts = (i64::from(sample.composition_offset) * 1000
                        / i64::from(track.timescale.max(1))) as i32;
                    let mut body = Vec::with_capacity(data.len() + 5);
                    body.push(if sample.sync { 0x17 } else { 0x27 });
                    body.push(1);
                    body.extend_from_slice(&cts.to_be_bytes()[1..]);
                    body.extend_from_slice(data);
                    tags.push((TAG_VIDEO, ms, body, sample.sync));
                });
            }
            Codec::Aac { config, .. } => {
                if audio_config.as_ref() != Some(config) {
                    *audio_config = Some(config.clone());
                    let mut body = vec![0xAF, 0];
                    body.extend_from_slice(config);
                    tags.push((TAG_AUDIO, first_ms(track, run), body, true));
                }
                samples(track, run, |ms, _, data| {
                    let mut body = Vec::with_capacity(data.len() + 2);
                    body.extend_from_slice(&[0xAF, 1]);
                    body.extend_from_slice(data);
                    tags.push((TAG_AUDIO, ms, body, false));
                });
            }
            Codec::H265 { .. } => stats.unsupported_samples += run.samples.len() as u64,
        });
        // Video and audio interleaved by time, as a publisher sends them.
        tags.sort_by_key(|t| t.1);
        for (kind, ms, body, key) in tags {
            let timestamp_ms = self.timestamp(ms);
            out(FlvTag {
                kind,
                timestamp_ms,
                body,
                key,
            });
        }
    }

    /// The timestamp of source time `ms`: from the first tag, going on over a clock jump.
    fn timestamp(&mut self, ms: i64) -> u32 {
        let offset = *self.offset_ms.get_or_insert(-ms);
        let mut t = ms + offset;
        if t < self.last_ms - MAX_BACK_MS || t > self.last_ms + MAX_STEP_MS {
            self.stats.clock_jumps += 1;
            let offset = self.last_ms + 1 - ms;
            self.offset_ms = Some(offset);
            t = ms + offset;
        }
        let t = t.max(0);
        self.last_ms = self.last_ms.max(t);
        (t & 0xFFFF_FFFF) as u32
    }
}

/// The source time (ms) of a run's first sample.
fn first_ms(track: &Track, run: &Run<'_>) -> i64 {
    (run.base_decode_time as i64).saturating_mul(1000) / i64::from(track.timescale.max(1))
}

/// Each sample of `run` with its source decode time (ms) and its data.
fn samples(track: &Track, run: &Run<'_>, mut each: impl FnMut(i64, &crate::mp4::Sample, &[u8])) {
    let rate = i64::from(track.timescale.max(1));
    let mut decode = run.base_decode_time as i64;
    let mut at = 0usize;
    for sample in run.samples {
        let end = at + sample.size as usize;
        let Some(data) = run.data.get(at..end) else {
            return;
        };
        each(decode.saturating_mul(1000) / rate, sample, data);
        decode += i64::from(sample.duration);
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::remux::FlvRemuxer;
    use crate::flv::{AudioTag, VideoPacket, VideoTag};

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn tags_of(data: &[u8], chunk: usize) -> Vec<FlvTag> {
        let mut mux = TsToFlv::new();
        let mut tags = Vec::new();
        for part in data.chunks(chunk) {
            mux.push(part, |t| tags.push(t));
        }
        mux.finish(|t| tags.push(t));
        tags
    }

    #[test]
    fn a_transport_stream_becomes_the_tags_a_publisher_sends() {
        let data = fixture("h264_aac_720p25.ts");
        let tags = tags_of(&data, 1316);
        // The sequence headers first, then a keyframe.
        let video: Vec<&FlvTag> = tags.iter().filter(|t| t.kind == TAG_VIDEO).collect();
        let audio: Vec<&FlvTag> = tags.iter().filter(|t| t.kind == TAG_AUDIO).collect();
        assert!(matches!(
            VideoTag::parse(&video[0].body).unwrap().packet,
            VideoPacket::Config(_)
        ));
        assert!(matches!(
            VideoTag::parse(&video[1].body).unwrap().packet,
            VideoPacket::Frame { keyframe: true, .. }
        ));
        assert!(matches!(
            AudioTag::parse(&audio[0].body).unwrap(),
            AudioTag::AacConfig(_)
        ));
        // 25 pictures a second, timestamps going up by 40 ms (decode order).
        let frames = &video[1..];
        assert!(frames.len() >= 50, "{}", frames.len());
        for pair in frames.windows(2) {
            assert_eq!(pair[1].timestamp_ms - pair[0].timestamp_ms, 40);
        }
        // Each track's timestamps go up (one track may be a little behind the other).
        for track in [&video, &audio] {
            assert!(track
                .windows(2)
                .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
        }
        assert!(audio.len() > 80, "{}", audio.len());
        // Back to MPEG-TS through the RTMP ingest's remuxer: every picture and audio frame.
        let mut remuxer = FlvRemuxer::new();
        let mut ts = Vec::new();
        for t in &tags {
            remuxer
                .push(t.kind, t.timestamp_ms, &t.body, &mut ts)
                .unwrap();
        }
        assert_eq!(remuxer.stats().refused, 0);
        assert!(ts.len() > data.len() / 2, "{} of {}", ts.len(), data.len());
        // Split at other packet boundaries, the same tags.
        for chunk in [188, 188 * 500] {
            let other = tags_of(&data, chunk);
            let differ = other.iter().zip(&tags).position(|(a, b)| a != b);
            assert_eq!(
                (other.len(), differ),
                (tags.len(), None),
                "split every {chunk}"
            );
        }
    }

    #[test]
    fn timestamps_go_on_over_a_jump_of_the_source_clock() {
        let mut mux = TsToFlv::new();
        assert_eq!(mux.timestamp(5_000), 0);
        assert_eq!(mux.timestamp(5_040), 40);
        // The source restarted with its clock at 0.
        assert_eq!(mux.timestamp(0), 41);
        assert_eq!(mux.timestamp(40), 81);
        // Ahead by an hour.
        assert_eq!(mux.timestamp(3_600_040), 82);
        assert_eq!(mux.stats().clock_jumps, 2);
    }
}
