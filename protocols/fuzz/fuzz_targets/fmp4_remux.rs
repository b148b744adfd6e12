//! Arbitrary bytes through what remuxing into fragmented MP4 reads: the PES assembler (the
//! input cut into packet-sized payloads, its bytes deciding starts and gaps), Annex B to NAL
//! lengths for both codecs, ADTS frames, and the writer over what came out. Nothing may
//! panic; lengths written must add up; every fragment's sizes must match its data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast_protocols::es::VideoCodec;
use shardcast_protocols::mp4::annexb::{adts_config, to_length_prefixed};
use shardcast_protocols::mp4::{fragment, init_segment, Codec, Run, Sample, Track};
use shardcast_protocols::ts::PesAssembler;

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
});
