//! What a stretch of transport stream carries, for a playlist to announce: the first program's
//! video parameters (codec string, size) from its SPS and its audio codec string from its
//! first frame header.
//!
//! What it does not do: follow more than the first video and first audio stream, or read
//! frame rates (VUI timing is optional and often absent).

use super::demux::{DemuxConfig, DemuxEvent, Demuxer};
use super::packet::{Packet, PACKET_SIZE};
use super::pes::PesHeader;
use super::psi::Pmt;
use super::types::Codec;
use crate::es::params::{audio_codec, h264_sps, h265_sps, VideoParams};

/// Bytes of video payload searched for a sequence parameter set.
const VIDEO_SEARCH: usize = 1 << 20;

/// The tracks found.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Tracks {
    /// The first video stream's parameters, when its SPS was found.
    pub video: Option<VideoParams>,
    /// The first audio stream's RFC 6381 codec string, when a frame header was found.
    pub audio: Option<String>,
}

/// Packets handed to the demuxer at a time while it looks for the PMT.
const PMT_SEARCH_STEP: usize = 16 * PACKET_SIZE;

/// Probe `data` (whole packets, starting anywhere; best at a segment start, where PAT, PMT
/// and a keyframe with its parameter sets come first). It reads no further than it needs: to
/// the first PMT, then to the first video SPS and the first audio frame header.
pub fn probe_tracks(data: &[u8]) -> Tracks {
    let mut demuxer = Demuxer::new(DemuxConfig::default());
    let mut pmt: Option<Pmt> = None;
    for step in data.chunks(PMT_SEARCH_STEP) {
        demuxer.push(step, |e| {
            if let DemuxEvent::Pmt(p) = e {
                pmt.get_or_insert_with(|| p.clone());
            }
        });
        if pmt.is_some() {
            break;
        }
    }
    let Some(pmt) = pmt else {
        return Tracks::default();
    };
    let video = pmt
        .streams
        .iter()
        .find(|s| matches!(s.codec, Codec::H264 | Codec::H265));
    let audio = pmt.streams.iter().find(|s| {
        matches!(
            s.codec,
            Codec::AacAdts | Codec::MpegAudio | Codec::Ac3 | Codec::Eac3
        )
    });
    let mut sps = video.map(|v| SpsSearch::new(v.codec));
    let mut audio_start: Option<Vec<u8>> = None;
    for bytes in data.chunks_exact(PACKET_SIZE) {
        let searching_video = sps.as_ref().is_some_and(SpsSearch::searching);
        if !searching_video && (audio.is_none() || audio_start.is_some()) {
            break;
        }
        let Ok(bytes) = <&[u8; PACKET_SIZE]>::try_from(bytes) else {
            continue;
        };
        let Ok(packet) = Packet::new(bytes) else {
            continue;
        };
        let pid = packet.pid();
        if let Some(search) = sps.as_mut().filter(|_| video.is_some_and(|v| v.pid == pid)) {
            search.packet(&packet);
        }
        if audio_start.is_none()
            && audio.is_some_and(|a| a.pid == pid)
            && packet.payload_unit_start()
        {
            audio_start = pes_payload(packet.payload()).map(<[u8]>::to_vec);
        }
    }
    Tracks {
        video: sps.and_then(SpsSearch::finish),
        audio: audio
            .zip(audio_start)
            .and_then(|(a, frame)| audio_codec(a.codec, &frame)),
    }
}

/// The search for a video stream's first SPS in its elementary stream, gathered from the
/// stream's packets up to [`VIDEO_SEARCH`] bytes and looked at as each packet comes, from
/// where the last look stopped (at a keyframe the SPS comes first: nothing more is copied).
struct SpsSearch {
    codec: Codec,
    payload: Vec<u8>,
    started: bool,
    /// Where the next look starts.
    from: usize,
    found: Option<VideoParams>,
    /// Found, or gathered as much as it may.
    done: bool,
}

impl SpsSearch {
    fn new(codec: Codec) -> Self {
        Self {
            codec,
            payload: Vec::new(),
            started: false,
            from: 0,
            found: None,
            done: false,
        }
    }

    fn searching(&self) -> bool {
        !self.done
    }

    fn packet(&mut self, packet: &Packet<'_>) {
        if self.done {
            return;
        }
        let payload = packet.payload();
        if packet.payload_unit_start() {
            self.started = true;
            self.payload
                .extend_from_slice(pes_payload(payload).unwrap_or(&[]));
        } else if self.started {
            self.payload.extend_from_slice(payload);
        } else {
            return;
        }
        self.found = find_sps(self.codec, &self.payload, &mut self.from, false);
        self.done = self.found.is_some() || self.payload.len() >= VIDEO_SEARCH;
    }

    /// The SPS found, taking an SPS that runs to the end of what was gathered as whole when
    /// none was found before.
    fn finish(mut self) -> Option<VideoParams> {
        if self.found.is_none() {
            self.found = find_sps(self.codec, &self.payload, &mut self.from, true);
        }
        self.found
    }
}

/// The payload of a PES packet whose header starts `data` (and fits in it).
fn pes_payload(data: &[u8]) -> Option<&[u8]> {
    let header = PesHeader::parse(data).ok()??;
    data.get(header.header_len..)
}

/// The first sequence parameter set in an Annex B byte stream, read.
/// The first SPS in `stream` from `*from`. An SPS running to the end of `stream` is taken only
/// when `whole` (nothing follows it); otherwise `*from` is left where the next look is to
/// start: at that SPS's start code, or where a start code may begin.
fn find_sps(codec: Codec, stream: &[u8], from: &mut usize, whole: bool) -> Option<VideoParams> {
    let mut at = (*from).min(stream.len());
    loop {
        let Some(found) = memchr::memmem::find(&stream[at..], &[0, 0, 1]) else {
            // The last two bytes may begin a start code.
            *from = stream.len().saturating_sub(2).max(at);
            return None;
        };
        let start = at + found + 3;
        let Some(&header) = stream.get(start) else {
            *from = at + found;
            return None;
        };
        let sps = match codec {
            Codec::H264 => header & 0x1F == 7,
            Codec::H265 => (header >> 1) & 0x3F == 33,
            _ => false,
        };
        if sps {
            let next = memchr::memmem::find(&stream[start..], &[0, 0, 1]).map(|n| start + n);
            let Some(end) = next.or(whole.then_some(stream.len())) else {
                *from = at + found;
                return None;
            };
            let nal = &stream[start..end];
            let parsed = match codec {
                Codec::H264 => h264_sps(nal),
                _ => h265_sps(nal),
            };
            if parsed.is_some() {
                return parsed;
            }
        }
        at = start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::mux::{h264_aac, Muxer};

    /// An H.264 SPS (baseline 3.0, 1920x16) as a NAL unit, with its start code.
    fn sps() -> Vec<u8> {
        let mut bits = Vec::new();
        let mut put = |n: u32, v: u64| {
            for i in (0..n).rev() {
                bits.push(v >> i & 1 == 1);
            }
        };
        // NAL header, profile, constraints, level; then ue(v) fields as bit strings: ids 0,
        // log2_max_frame_num 0, poc type 0, log2_max_poc 0, one reference frame, gaps 0,
        // width 119 (+1 macroblocks), height 0 (+1), frame_mbs_only, direct_8x8, no cropping,
        // no VUI.
        put(32, 0x6742_001E);
        put(4, 0b1111);
        put(3, 0b010);
        put(1, 0);
        put(13, 0b0000001111000);
        put(1, 1);
        put(2, 0b11);
        put(1, 0);
        put(1, 0);
        let mut out = vec![0, 0, 0, 1];
        out.extend(bits.chunks(8).map(|byte| {
            byte.iter()
                .enumerate()
                .fold(0u8, |b, (i, &bit)| b | u8::from(bit) << (7 - i))
        }));
        out.push(0x80);
        out
    }

    /// A NAL unit of `len` bytes that is not a parameter set (a slice), start code first.
    fn slice(len: usize) -> Vec<u8> {
        let mut out = vec![0, 0, 1, 0x41];
        out.extend((0..len).map(|i| (i % 251) as u8 | 0x10));
        out
    }

    fn stream(units: &[(Vec<u8>, bool)]) -> Vec<u8> {
        let mut muxer = Muxer::new(h264_aac());
        let mut out = Vec::new();
        for (i, (unit, audio)) in units.iter().enumerate() {
            let pts = 90_000 + i as u64 * 3600;
            muxer.write(usize::from(*audio), pts, None, i == 0, unit, &mut out);
        }
        out
    }

    fn adts() -> Vec<u8> {
        let mut frame = vec![0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC];
        frame.resize(16, 0);
        frame
    }

    #[test]
    fn an_sps_in_a_later_access_unit_split_over_packets_is_found() {
        // The first access unit has none; the second has it straddling a packet boundary.
        let mut second = slice(150);
        second.extend(sps());
        second.extend(slice(3000));
        let data = stream(&[
            (slice(5000), false),
            (adts(), true),
            (second, false),
            (slice(400), false),
        ]);
        let tracks = probe_tracks(&data);
        let video = tracks.video.expect("the SPS");
        assert_eq!((video.width, video.height), (1920, 16));
        assert_eq!(tracks.audio.as_deref(), Some("mp4a.40.2"));
    }

    #[test]
    fn an_sps_ending_the_data_is_found() {
        let mut last = slice(100);
        last.extend(sps());
        let data = stream(&[(slice(1000), false), (last, false)]);
        let video = probe_tracks(&data).video.expect("the SPS");
        assert_eq!((video.width, video.height), (1920, 16));
        assert_eq!(probe_tracks(&data).audio, None);
    }

    #[test]
    fn a_stream_without_an_sps_has_no_video_params() {
        let data = stream(&[(slice(1000), false), (slice(20_000), false), (adts(), true)]);
        let tracks = probe_tracks(&data);
        assert_eq!(tracks.video, None);
        assert_eq!(tracks.audio.as_deref(), Some("mp4a.40.2"));
    }
}
