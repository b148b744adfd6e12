//! The fMP4 writer against independent readers: a fixture's H.264 and AAC, reassembled from
//! its PES packets (`ts::PesAssembler`) and converted (`mp4::annexb`), written as an init
//! segment and fragments; ffprobe must find every packet at the TS input's timestamps, and
//! ffmpeg must decode it without a word at `-v error`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::{fixture, fixture_path};
use shardcast_protocols::es::VideoCodec;
use shardcast_protocols::mp4::annexb::{adts_config, to_length_prefixed, NalKind};
use shardcast_protocols::mp4::{fragment, init_segment, Codec, Run, Sample, Track};
use shardcast_protocols::ts::pes::Unwrapper;
use shardcast_protocols::ts::{
    Codec as TsCodec, DemuxConfig, DemuxEvent, Demuxer, Packet, PesAssembler, PACKET_SIZE,
};
use std::process::Command;

/// An access unit or an audio frame: DTS and PTS (unwrapped, 90 kHz), sync, data as MP4
/// carries it.
struct Unit {
    dts: i64,
    pts: i64,
    sync: bool,
    data: Vec<u8>,
}

struct Remuxed {
    codec: VideoCodec,
    video: Vec<Unit>,
    audio: Vec<Unit>,
    vps: Vec<u8>,
    sps: Vec<u8>,
    pps: Vec<u8>,
    aac: Option<(Vec<u8>, u16, u32)>,
}

fn remux(ts: &[u8]) -> Remuxed {
    let mut demux = Demuxer::new(DemuxConfig::default());
    let (mut video, mut audio_pid) = (None, None);
    demux.push(ts, |e| {
        if let DemuxEvent::Pmt(pmt) = e {
            for s in &pmt.streams {
                match s.codec {
                    TsCodec::H264 => video = Some((s.pid, VideoCodec::H264)),
                    TsCodec::H265 => video = Some((s.pid, VideoCodec::H265)),
                    TsCodec::AacAdts => audio_pid = Some(s.pid),
                    _ => {}
                }
            }
        }
    });
    let (video_pid, codec) = video.unwrap();
    let mut out = Remuxed {
        codec,
        video: Vec::new(),
        audio: Vec::new(),
        vps: Vec::new(),
        sps: Vec::new(),
        pps: Vec::new(),
        aac: None,
    };
    let mut assemblers = [PesAssembler::new(8 << 20), PesAssembler::new(1 << 20)];
    let mut clocks = [Unwrapper::default(), Unwrapper::default()];
    let mut handle = |which: usize, pes: shardcast_protocols::ts::Pes<'_>, out: &mut Remuxed| {
        let Some(pts) = pes.header.pts else { return };
        let pts = clocks[which].extend(pts);
        let dts = pes
            .header
            .dts
            .map_or(pts, |d| pts - pes.header.pts.unwrap().since(d));
        if which == 0 {
            let mut data = Vec::new();
            let mut sync = false;
            to_length_prefixed(out.codec, pes.payload, &mut data, |kind, nal| match kind {
                NalKind::Vps if out.vps.is_empty() => out.vps = nal.to_vec(),
                NalKind::Sps if out.sps.is_empty() => out.sps = nal.to_vec(),
                NalKind::Pps if out.pps.is_empty() => out.pps = nal.to_vec(),
                _ => {}
            });
            let mut at = 0;
            while at + 5 <= data.len() {
                let len = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
                sync |= match out.codec {
                    VideoCodec::H264 => data[at + 4] & 0x1F == 5,
                    // IRAP: BLA, IDR, CRA (16..=23).
                    VideoCodec::H265 => (16..=23).contains(&((data[at + 4] >> 1) & 0x3F)),
                };
                at += 4 + len;
            }
            out.video.push(Unit {
                dts,
                pts,
                sync,
                data,
            });
        } else {
            let mut rest = pes.payload;
            let mut n = 0;
            while let Some(f) = adts_config(rest) {
                let rate = f.sample_rate;
                out.aac.get_or_insert((f.config.clone(), f.channels, rate));
                let at = pts + n * 1024 * 90_000 / i64::from(rate);
                out.audio.push(Unit {
                    dts: at,
                    pts: at,
                    sync: true,
                    data: f.payload.to_vec(),
                });
                rest = &rest[f.len..];
                n += 1;
            }
        }
    };
    let mut previous_cc: [Option<u8>; 2] = [None, None];
    for chunk in ts.chunks_exact(PACKET_SIZE) {
        let Ok(packet) = Packet::new(chunk.try_into().unwrap()) else {
            continue;
        };
        let which = if packet.pid() == video_pid {
            0
        } else if Some(packet.pid()) == audio_pid {
            1
        } else {
            continue;
        };
        if !packet.has_payload() {
            continue;
        }
        let cc = packet.continuity_counter().value();
        let gap = previous_cc[which].is_some_and(|p| (p + 1) & 0x0F != cc);
        previous_cc[which] = Some(cc);
        assemblers[which].push(packet.payload_unit_start(), gap, packet.payload(), |r| {
            if let Ok(pes) = r {
                handle(which, pes, &mut out);
            }
        });
    }
    for (which, assembler) in assemblers.iter_mut().enumerate() {
        assembler.flush(|r| {
            if let Ok(pes) = r {
                handle(which, pes, &mut out);
            }
        });
    }
    out
}

/// The samples and data of `units`, durations from the next unit's DTS.
fn samples(units: &[Unit], scale: impl Fn(i64) -> i64) -> (Vec<Sample>, Vec<u8>) {
    let mut samples = Vec::new();
    let mut data = Vec::new();
    for (i, u) in units.iter().enumerate() {
        let next = units.get(i + 1).map_or_else(
            || u.dts + (u.dts - units[i.saturating_sub(1)].dts),
            |n| n.dts,
        );
        samples.push(Sample {
            duration: (scale(next) - scale(u.dts)) as u32,
            size: u.data.len() as u32,
            sync: u.sync,
            composition_offset: (scale(u.pts) - scale(u.dts)) as i32,
        });
        data.extend_from_slice(&u.data);
    }
    (samples, data)
}

fn ffprobe_packets(path: &std::path::Path, stream: &str) -> Vec<(i64, bool)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream])
        .args(["-show_entries", "packet=pts,flags", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (pts, flags) = l.split_once(',')?;
            Some((pts.parse().ok()?, flags.starts_with('K')))
        })
        .collect()
}

#[test]
fn fragmented_mp4_of_h264_and_aac_reads_back_at_the_input_timestamps() {
    reads_back("h264_aac_720p25.ts");
}

#[test]
fn fragmented_mp4_of_h265_reads_back_at_the_input_timestamps() {
    // Its audio is MPEG-1 layer II, which is carried in TS only.
    reads_back("h265_mp2.ts");
}

fn reads_back(name: &str) {
    let ts = fixture(name);
    let r = remux(&ts);
    assert!(r.video.len() > 50);
    // B-frames: composition offsets, some negative relative to the next one's.
    assert!(
        r.video.iter().any(|u| u.pts != u.dts),
        "the fixture has B-frames"
    );
    let (params, codec) = match r.codec {
        VideoCodec::H264 => (
            shardcast_protocols::es::params::h264_sps(&r.sps).unwrap(),
            Codec::H264 {
                sps: vec![r.sps.clone()],
                pps: vec![r.pps.clone()],
            },
        ),
        VideoCodec::H265 => (
            shardcast_protocols::es::params::h265_sps(&r.sps).unwrap(),
            Codec::H265 {
                vps: vec![r.vps.clone()],
                sps: vec![r.sps.clone()],
                pps: vec![r.pps.clone()],
            },
        ),
    };
    let mut tracks = vec![Track {
        id: 1,
        timescale: 90_000,
        width: params.width as u16,
        height: params.height as u16,
        codec,
    }];
    let rate = r.aac.as_ref().map_or(48_000, |a| a.2);
    if let Some((config, channels, rate)) = r.aac.clone() {
        assert!(r.audio.len() > 50);
        tracks.push(Track {
            id: 2,
            timescale: rate,
            width: 0,
            height: 0,
            codec: Codec::Aac {
                config,
                channels,
                sample_rate: rate,
            },
        });
    }
    // Times from the first video DTS; one fragment per keyframe-to-keyframe span.
    let zero = r.video[0].dts;
    let video_scale = |t: i64| t - zero;
    let audio_scale = |t: i64| (t - zero) * i64::from(rate) / 90_000;
    let mut file = init_segment(&tracks).unwrap();
    let cuts: Vec<usize> = (0..r.video.len())
        .filter(|i| r.video[*i].sync)
        .chain([r.video.len()])
        .collect();
    for (n, span) in cuts.windows(2).enumerate() {
        let video = &r.video[span[0]..span[1]];
        let (start, end) = (
            video[0].dts,
            r.video.get(span[1]).map_or(i64::MAX, |u| u.dts),
        );
        let audio: Vec<&Unit> = r
            .audio
            .iter()
            .filter(|a| a.dts >= start && a.dts < end)
            .collect();
        let (vs, vd) = samples(video, video_scale);
        let audio_units: Vec<Unit> = audio
            .iter()
            .map(|a| Unit {
                dts: a.dts,
                pts: a.pts,
                sync: true,
                data: a.data.clone(),
            })
            .collect();
        let (as_, ad) = samples(&audio_units, audio_scale);
        let mut runs = vec![Run {
            track_id: 1,
            base_decode_time: video_scale(video[0].dts) as u64,
            samples: &vs,
            data: &vd,
        }];
        if let Some(first) = audio_units.first() {
            runs.push(Run {
                track_id: 2,
                base_decode_time: audio_scale(first.dts).max(0) as u64,
                samples: &as_,
                data: &ad,
            });
        }
        file.extend(fragment(n as u32 + 1, &runs).unwrap());
    }
    let path =
        std::env::temp_dir().join(format!("shardcast-fmp4-{}-{name}.mp4", std::process::id()));
    std::fs::write(&path, &file).unwrap();

    // Every video packet at the input's PTS (from the first DTS), keyframes where they were.
    let input = ffprobe_packets(&fixture_path(name), "v:0");
    let output = ffprobe_packets(&path, "v:0");
    let input_zero = r.video[0].dts;
    let expected: Vec<(i64, bool)> = r
        .video
        .iter()
        .map(|u| (u.pts - input_zero, u.sync))
        .collect();
    assert_eq!(
        output.len(),
        input.len(),
        "as many video packets as the input has"
    );
    assert_eq!(output, expected);
    if r.aac.is_some() {
        assert_eq!(ffprobe_packets(&path, "a:0").len(), r.audio.len());
    }

    let decoded = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&decoded.stderr);
    let _ = std::fs::remove_file(&path);
    assert!(decoded.status.success() && said.trim().is_empty(), "{said}");
}

/// The remuxer driven as the server drives it: the segmenter's events in (its program, its
/// packets), a cut at every part's end (200 ms parts) and segment's end. Returns the init
/// segment and every fragment back to back, and the number of fragments.
fn remuxed_at_parts(name: &str) -> (Vec<u8>, usize) {
    use shardcast_protocols::mp4::Remuxer;
    use shardcast_protocols::ts::{PacketSync, Segmenter, SegmenterConfig, SegmenterEvent};
    let ts = fixture(name);
    let mut segmenter = Segmenter::new(SegmenterConfig {
        target_duration: 90_000,
        part_target: Some(18_000),
        ..SegmenterConfig::default()
    });
    let mut remuxer = Remuxer::new();
    let mut fragments: Vec<Vec<u8>> = Vec::new();
    let mut sync = PacketSync::new();
    let mut event = |e: SegmenterEvent<'_>| match e {
        SegmenterEvent::Program(pmt) => remuxer.set_program(pmt),
        SegmenterEvent::Packet(p) => remuxer.push(p),
        SegmenterEvent::PartEnd(_) | SegmenterEvent::SegmentEnd(_) => {
            fragments.extend(remuxer.cut().map(|c| c.joined()));
        }
        _ => {}
    };
    for chunk in ts.chunks(1000) {
        sync.push(chunk, |packet| segmenter.push_packet(packet, &mut event));
    }
    segmenter.finish(&mut event);
    fragments.extend(remuxer.finish().map(|c| c.joined()));
    let stats = remuxer.stats();
    assert_eq!(stats.dropped_pes, 0, "{stats:?}");
    let mut file = remuxer.init_segment().expect("an init segment").to_vec();
    let count = fragments.len();
    for f in fragments {
        file.extend(f);
    }
    (file, count)
}

#[test]
fn the_remuxer_cut_at_every_part_reads_back_at_the_input_timestamps() {
    for name in ["h264_aac_720p25.ts", "h265_mp2.ts"] {
        let r = remux(&fixture(name));
        let (file, fragments) = remuxed_at_parts(name);
        assert!(fragments > 10, "{name}: {fragments} fragments");
        let path =
            std::env::temp_dir().join(format!("shardcast-remux-{}-{name}.mp4", std::process::id()));
        std::fs::write(&path, &file).unwrap();
        // The remuxer keeps the stream's own clock: PTS as the input's, from a keyframe on
        // (the first one its init segment was ready for; what comes before is dropped).
        let output = ffprobe_packets(&path, "v:0");
        let from = r
            .video
            .iter()
            .position(|u| u.pts == output[0].0)
            .expect("the first picture is the input's");
        assert!(
            r.video[from].sync && from < 60,
            "{name}: starts at picture {from}"
        );
        let expected: Vec<(i64, bool)> = r.video[from..].iter().map(|u| (u.pts, u.sync)).collect();
        assert_eq!(output, expected, "{name}");
        if let Some((_, _, rate)) = &r.aac {
            let got = ffprobe_packets(&path, "a:0");
            // Every frame from the first on, at the input's time (in the track's timescale).
            let rate = i64::from(*rate);
            let from = r
                .audio
                .iter()
                .position(|a| a.pts * rate / 90_000 == got[0].0)
                .expect("the first audio frame is the input's");
            assert_eq!(got.len(), r.audio.len() - from, "{name}: audio frames");
            for (out, input) in got.iter().zip(&r.audio[from..]) {
                assert_eq!(out.0, input.pts * rate / 90_000, "{name}: audio frame time");
            }
        }
        let decoded = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&decoded.stderr);
        let _ = std::fs::remove_file(&path);
        assert!(
            decoded.status.success() && said.trim().is_empty(),
            "{name}: {said}"
        );
    }
}
