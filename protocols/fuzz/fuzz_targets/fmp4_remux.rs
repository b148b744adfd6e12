//! Arbitrary bytes through what remuxing into fragmented MP4 reads: the PES assembler (the
//! input cut into packet-sized payloads, its bytes deciding starts and gaps), Annex B to NAL
//! lengths for both codecs, ADTS frames, and the writer over what came out; then the same
//! bytes as transport packets of an H.264 + AAC program through the remuxer, cut where the
//! bytes say. Nothing may panic; lengths written must add up; every fragment's sizes must
//! match its data; every fragment is a `moof` then an `mdat`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast_protocols::es::VideoCodec;
use shardcast_protocols::mp4::annexb::{adts_config, to_length_prefixed};
use shardcast_protocols::mp4::{fragment, init_segment, Codec, Remuxer, Run, Sample, Track};
use shardcast_protocols::ts::psi::{Pmt, PmtStream};
use shardcast_protocols::ts::{Codec as TsCodec, PesAssembler, Pid, StreamType, PACKET_SIZE};

fuzz_target!(|data: &[u8]| {
    let mut assembler = PesAssembler::new(64 * 1024);
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    for chunk in data.chunks(184) {
        let flags = chunk.first().copied().unwrap_or(0);
        assembler.push(flags & 1 == 1, flags & 2 == 2, chunk, |r| {
            if let Ok(p) = r {
                payloads.push(p.payload.to_vec());
            }
        });
    }
    assembler.flush(|r| {
        if let Ok(p) = r {
            payloads.push(p.payload.to_vec());
        }
    });
    payloads.push(data.to_vec());
    for payload in &payloads {
        for codec in [VideoCodec::H264, VideoCodec::H265] {
            let mut out = Vec::new();
            let mut params = Vec::new();
            let n = to_length_prefixed(codec, payload, &mut out, |_, p| params.push(p.to_vec()));
            assert_eq!(n, out.len());
            let samples = [Sample {
                duration: 3600,
                size: out.len() as u32,
                sync: true,
                composition_offset: 0,
            }];
            let run = Run {
                track_id: 1,
                base_decode_time: 0,
                samples: &samples,
                data: &out,
            };
            assert!(fragment(1, &[run]).is_ok());
            let _ = init_segment(&[Track {
                id: 1,
                timescale: 90_000,
                width: 16,
                height: 16,
                codec: match codec {
                    VideoCodec::H264 => Codec::H264 {
                        sps: params.clone(),
                        pps: params.clone(),
                    },
                    VideoCodec::H265 => Codec::H265 {
                        vps: params.clone(),
                        sps: params.clone(),
                        pps: params.clone(),
                    },
                },
            }]);
        }
        let mut rest = &payload[..];
        while let Some(f) = adts_config(rest) {
            assert!(f.len >= 7 && f.len <= rest.len() && !f.config.is_empty());
            let _ = init_segment(&[Track {
                id: 2,
                timescale: f.sample_rate,
                width: 0,
                height: 0,
                codec: Codec::Aac {
                    config: f.config.clone(),
                    channels: f.channels,
                    sample_rate: f.sample_rate,
                },
            }]);
            rest = &rest[f.len..];
        }
    }
    remux(data);
});

/// `data` as packets of PIDs 0x100 (H.264) and 0x101 (AAC), each packet's fourth byte's top
/// bit asking for a cut after it.
fn remux(data: &[u8]) {
    let stream = |pid, codec, stream_type| PmtStream {
        stream_type: StreamType(stream_type),
        pid: Pid::from_bits(pid),
        descriptors: Vec::new(),
        codec,
    };
    let pmt = Pmt {
        program_number: 1,
        version: 0,
        pcr_pid: Pid::from_bits(0x100),
        descriptors: Vec::new(),
        streams: vec![
            stream(0x100, TsCodec::H264, 0x1B),
            stream(0x101, TsCodec::AacAdts, 0x0F),
        ],
    };
    let mut remuxer = Remuxer::new();
    remuxer.set_program(&pmt);
    let check = |cut: shardcast_protocols::mp4::Cut| {
        for f in [cut.video, cut.audio].into_iter().flatten() {
            assert!(f.len() >= 16 && &f[4..8] == b"moof", "a fragment starts with moof");
            let moof = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
            assert_eq!(f.get(moof + 4..moof + 8), Some(&b"mdat"[..]));
        }
    };
    for chunk in data.chunks(PACKET_SIZE) {
        let mut packet = [0xFFu8; PACKET_SIZE];
        packet[..chunk.len()].copy_from_slice(chunk);
        packet[0] = 0x47;
        packet[1] = (packet[1] & 0x40) | 0x01;
        packet[2] &= 0x01;
        remuxer.push(&packet);
        if chunk.get(3).is_some_and(|b| b & 0x80 != 0) {
            if let Some(f) = remuxer.cut() {
                check(f);
            }
        }
    }
    if let Some(f) = remuxer.finish() {
        check(f);
    }
}
