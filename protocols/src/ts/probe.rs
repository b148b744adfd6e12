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

/// Probe `data` (whole packets, starting anywhere; best at a segment start, where PAT, PMT
/// and a keyframe with its parameter sets come first).
pub fn probe_tracks(data: &[u8]) -> Tracks {
    let mut demuxer = Demuxer::new(DemuxConfig::default());
    let mut pmt: Option<Pmt> = None;
    demuxer.push(data, |e| {
        if let DemuxEvent::Pmt(p) = e {
            pmt.get_or_insert_with(|| p.clone());
        }
    });
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
    let mut video_payload = Vec::new();
    let mut audio_start: Option<Vec<u8>> = None;
    let mut video_started = false;
    for bytes in data.chunks_exact(PACKET_SIZE) {
        let Ok(bytes) = <&[u8; PACKET_SIZE]>::try_from(bytes) else {
            continue;
        };
        let Ok(packet) = Packet::new(bytes) else {
            continue;
        };
        let pid = packet.pid();
        if video.is_some_and(|v| v.pid == pid) && video_payload.len() < VIDEO_SEARCH {
            let payload = packet.payload();
            if packet.payload_unit_start() {
                video_started = true;
                video_payload.extend_from_slice(pes_payload(payload).unwrap_or(&[]));
            } else if video_started {
                video_payload.extend_from_slice(payload);
            }
        }
        if audio_start.is_none()
            && audio.is_some_and(|a| a.pid == pid)
            && packet.payload_unit_start()
        {
            audio_start = pes_payload(packet.payload()).map(<[u8]>::to_vec);
        }
    }
    Tracks {
        video: video.and_then(|v| find_sps(v.codec, &video_payload)),
        audio: audio
            .zip(audio_start)
            .and_then(|(a, frame)| audio_codec(a.codec, &frame)),
    }
}

/// The payload of a PES packet whose header starts `data` (and fits in it).
fn pes_payload(data: &[u8]) -> Option<&[u8]> {
    let header = PesHeader::parse(data).ok()??;
    data.get(header.header_len..)
}

/// The first sequence parameter set in an Annex B byte stream, read.
fn find_sps(codec: Codec, stream: &[u8]) -> Option<VideoParams> {
    let mut at = 0;
    while let Some(found) = memchr::memmem::find(&stream[at..], &[0, 0, 1]) {
        let start = at + found + 3;
        let end =
            memchr::memmem::find(&stream[start..], &[0, 0, 1]).map_or(stream.len(), |n| start + n);
        let nal = &stream[start..end];
        let parsed = match codec {
            Codec::H264 if nal.first().is_some_and(|h| h & 0x1F == 7) => h264_sps(nal),
            Codec::H265 if nal.first().is_some_and(|h| (h >> 1) & 0x3F == 33) => h265_sps(nal),
            _ => None,
        };
        if parsed.is_some() {
            return parsed;
        }
        at = start;
    }
    None
}
