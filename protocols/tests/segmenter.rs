//! The segmenter on real and generated streams: every segment starts with PAT, PMT and a
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
//! keyframe, counters stay continuous across segments, durations are the PTS spans, and
//! ffmpeg reads the result through a playlist written by the HLS writer.

mod common;

use common::{check_segment_starts, continuity_breaks, fixture, segment, Segmented};
use proptest::prelude::*;
use shardcast_protocols::generator::{Generator, GeneratorConfig};
use shardcast_protocols::hls::{MediaPlaylist, MediaSegment};
use shardcast_protocols::ts::psi::{packetize_section, write_long_section, Pmt, PmtStream};
use shardcast_protocols::ts::{
    Codec, ContinuityCounter, PartInfo, Pid, SegmentInfo, Segmenter, SegmenterConfig,
    SegmenterEvent, StreamType, PACKET_SIZE,
};
use std::time::Duration;

fn check(run: &Segmented, config: &SegmenterConfig) -> Vec<u64> {
    assert!(!run.segments.is_empty());
    assert_eq!(run.segments.len(), run.infos.len());
    let starts = check_segment_starts(&run.segments);
    let all: Vec<u8> = run.segments.concat();
    assert_eq!(
        continuity_breaks(&all),
        vec![],
        "counters break across segments"
    );
    for (i, info) in run.infos.iter().enumerate() {
        assert_eq!(info.sequence, config.first_sequence + i as u64);
        assert_eq!(info.start_pts.ticks(), starts[i]);
        assert_eq!(info.packets as usize * PACKET_SIZE, run.segments[i].len());
        if let Some(next) = starts.get(i + 1) {
            let span = next.wrapping_sub(starts[i]) & ((1 << 33) - 1); // PTS wraps at 2^33
            assert_eq!(
                info.duration, span,
                "segment {i}: duration is not the PTS span"
            );
            assert!(
                info.duration >= config.target_duration,
                "segment {i} cut early"
            );
        }
    }
    starts
}

fn playlist(run: &Segmented) -> MediaPlaylist {
    let mut p = MediaPlaylist {
        segments: run
            .infos
            .iter()
            .map(|i| MediaSegment {
                uri: format!("{}.ts", i.sequence),
                duration: Duration::from_nanos(i.duration * 1_000_000 / 90),
                ..MediaSegment::default()
            })
            .collect(),
        end_list: true,
        ..MediaPlaylist::default()
    };
    p.target_duration = p.required_target_duration();
    p
}

#[test]
fn fixtures_segment_cleanly_and_ffmpeg_reads_them() {
    for (file, program) in [
        ("h264_aac_720p25.ts", None),
        ("h265_mp2.ts", None),
        ("mpts.ts", Some(2)),
    ] {
        let config = SegmenterConfig {
            program,
            first_sequence: 7,
            ..SegmenterConfig::default()
        };
        let run = segment(&fixture(file), config, 1316);
        check(&run, &config);
        assert!(
            run.segments.len() >= 2,
            "{file}: {} segments",
            run.segments.len()
        );
        if program == Some(2) {
            let pids: std::collections::BTreeSet<u16> = run
                .segments
                .concat()
                .chunks(PACKET_SIZE)
                .map(|p| u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]))
                .collect();
            assert!(
                pids.contains(&0x102) && pids.contains(&0x103) && !pids.contains(&0x100),
                "{pids:?}"
            );
        }
        // Write the segments and a playlist; ffmpeg must read them without a single error.
        let dir = std::env::temp_dir().join(format!("shardcast-seg-{}-{file}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (seg, info) in run.segments.iter().zip(&run.infos) {
            std::fs::write(dir.join(format!("{}.ts", info.sequence)), seg).unwrap();
        }
        let p = playlist(&run);
        // EXTINF as written (to the millisecond) against the exact PTS span.
        let written: Vec<f64> = p
            .to_string()
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|l| l.trim_end_matches(',').parse().unwrap())
            .collect();
        assert_eq!(written.len(), run.infos.len());
        for (w, info) in written.iter().zip(&run.infos) {
            let exact = info.duration as f64 / 90_000.0;
            assert!(
                (w - exact).abs() < 0.001,
                "{file}: EXTINF {w} against PTS span {exact}"
            );
        }
        std::fs::write(dir.join("index.m3u8"), p.to_string()).unwrap();
        let out = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(dir.join("index.m3u8"))
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg must be installed (the test command installs it)");
        std::fs::remove_dir_all(&dir).ok();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{file}: ffmpeg said: {stderr}"
        );
    }
}

#[test]
fn damaged_source_still_gives_keyframe_segments() {
    let config = SegmenterConfig::default();
    let run = segment(&fixture("damaged.ts"), config, 1316);
    check_segment_starts(&run.segments);
    assert_eq!(run.segments.len(), 2);
}

/// The generator's stream with an SCTE-35 PID added to the PMT and a splice section every 200
/// packets: the segmenter must carry those packets through byte for byte.
#[test]
fn data_pids_are_carried_through_untouched() {
    let mut g = Generator::new(GeneratorConfig::default()).unwrap();
    let scte_pid = Pid::from_bits(0x1F0);
    let pmt = Pmt {
        program_number: 1,
        version: 1,
        pcr_pid: Pid::from_bits(0x100),
        descriptors: vec![],
        streams: vec![
            PmtStream {
                stream_type: StreamType::H264,
                pid: Pid::from_bits(0x100),
                descriptors: vec![],
                codec: Codec::H264,
            },
            PmtStream {
                stream_type: StreamType::AAC_ADTS,
                pid: Pid::from_bits(0x101),
                descriptors: vec![],
                codec: Codec::AacAdts,
            },
            PmtStream {
                stream_type: StreamType::SCTE35,
                pid: scte_pid,
                descriptors: vec![],
                codec: Codec::Scte35,
            },
        ],
    };
    let mut pmt_packets = Vec::new();
    packetize_section(
        &pmt.to_section(),
        Pid::from_bits(0x1000),
        ContinuityCounter::from_bits(0),
        &mut pmt_packets,
    );
    let mut stream = Vec::new();
    let mut scte_cc = ContinuityCounter::from_bits(0);
    let mut pmt_cc = ContinuityCounter::from_bits(0);
    let mut injected = Vec::new();
    for i in 0..8000 {
        let mut p = [0u8; PACKET_SIZE];
        g.next_packet(&mut p);
        if p[1] & 0x1F == 0x10 && p[2] == 0x00 {
            p = pmt_packets[0];
            p[3] = (p[3] & 0xF0) | pmt_cc.value();
            pmt_cc = pmt_cc.next();
        }
        stream.extend_from_slice(&p);
        if i % 200 == 199 {
            let section =
                write_long_section(0xFC, 0, 0, &[0, 0, 0, 0, 0, 0xFF, 0xFF, 0xF0, 0, 0, 0]);
            let mut packets = Vec::new();
            scte_cc = packetize_section(&section, scte_pid, scte_cc, &mut packets);
            stream.extend_from_slice(&packets[0]);
            injected.push(packets[0]);
        }
    }
    let config = SegmenterConfig::default();
    let run = segment(&stream, config, 1316);
    check(&run, &config);
    let out = run.segments.concat();
    let carried: Vec<&[u8]> = out
        .chunks(PACKET_SIZE)
        .filter(|p| u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]) == 0x1F0)
        .collect();
    assert!(carried.len() >= 30, "{} SCTE-35 packets", carried.len());
    for p in carried {
        assert!(
            injected.iter().any(|i| i[..] == *p),
            "an SCTE-35 packet changed"
        );
    }
}

fn generated(config: GeneratorConfig, seconds: u64) -> Vec<u8> {
    let mut g = Generator::new(config).unwrap();
    let packets = u64::from(config.bitrate) * seconds / (PACKET_SIZE as u64 * 8);
    let mut out = Vec::with_capacity(packets as usize * PACKET_SIZE);
    let mut p = [0u8; PACKET_SIZE];
    for _ in 0..packets {
        g.next_packet(&mut p);
        out.extend_from_slice(&p);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn segmenter_output_is_continuous_and_starts_at_keyframes(
        fps in prop_oneof![Just(24u32), Just(25), Just(30), Just(50)],
        keyframe_interval in 1u32..60,
        target_ms in 500u64..4000,
        chunk in 1usize..3000,
        audio in any::<bool>(),
        psi_at_keyframes in any::<bool>(),
        first_sequence in 0u64..1000,
    ) {
        let gen = GeneratorConfig { fps, keyframe_interval, audio, width: 64, height: 48, bitrate: 4_000_000, ..GeneratorConfig::default() };
        let data = generated(gen, 8);
        let config = SegmenterConfig { target_duration: target_ms * 90, psi_at_keyframes, first_sequence, ..SegmenterConfig::default() };
        let run = segment(&data, config, chunk);
        check(&run, &config);
        let gop_ticks = u64::from(keyframe_interval) * 90_000 / u64::from(fps);
        for info in &run.infos[..run.infos.len() - 1] {
            prop_assert!(info.duration < config.target_duration + gop_ticks + 1, "{:?}", info);
        }
    }
}

#[test]
fn durations_stay_exact_across_the_33_bit_wrap() {
    let wrap = 1u64 << 33;
    let gen = GeneratorConfig {
        start_pts: wrap - 5 * 90_000,
        ..GeneratorConfig::default()
    };
    let config = SegmenterConfig::default();
    let run = segment(&generated(gen, 12), config, 1316);
    let starts = check(&run, &config);
    assert!(
        starts.iter().any(|s| *s < 90_000 * 10),
        "the stream never wrapped: {starts:?}"
    );
    for info in &run.infos[..run.infos.len() - 1] {
        assert_eq!(info.duration, 2 * 90_000, "{info:?}");
    }
}

#[test]
fn an_encoder_restarted_a_few_seconds_in_is_a_discontinuity() {
    // The same encoder settings twice: the timestamps go back by six seconds.
    let mut data = generated(GeneratorConfig::default(), 6);
    data.extend(generated(GeneratorConfig::default(), 6));
    let run = segment(&data, SegmenterConfig::default(), 1316);
    check_segment_starts(&run.segments);
    let marked = run.infos.iter().filter(|i| i.discontinuity).count();
    assert_eq!(marked, 1, "{:?}", run.infos);
}

#[test]
fn a_source_restart_is_a_discontinuity() {
    // Six seconds of one source, then the "same" source restarted with timestamps an hour
    // earlier (and its counters starting over).
    let mut data = generated(
        GeneratorConfig {
            start_pts: 3600 * 90_000,
            ..GeneratorConfig::default()
        },
        6,
    );
    data.extend(generated(GeneratorConfig::default(), 6));
    let config = SegmenterConfig::default();
    let run = segment(&data, config, 1316);
    check_segment_starts(&run.segments);
    let marked: Vec<u64> = run
        .infos
        .iter()
        .filter(|i| i.discontinuity)
        .map(|i| i.sequence)
        .collect();
    assert_eq!(marked.len(), 1, "{:?}", run.infos);
    for info in &run.infos[..run.infos.len() - 1] {
        assert!(info.duration > 0 && info.duration <= 3 * 90_000, "{info:?}");
    }
}

#[test]
fn a_restart_marked_by_the_caller_is_a_discontinuity_even_when_timestamps_continue() {
    use shardcast_protocols::ts::{PacketSync, Segmenter, SegmenterEvent};
    // A second source whose clock happens to carry on from the first's: nothing in the
    // timestamps says the pictures do not continue; the caller says so.
    let first = generated(GeneratorConfig::default(), 6);
    let second = generated(
        GeneratorConfig {
            start_pts: GeneratorConfig::default().start_pts + 6 * 90_000,
            ..GeneratorConfig::default()
        },
        6,
    );
    let marked = |restart: bool| {
        let mut s = Segmenter::new(SegmenterConfig::default());
        let mut flags = Vec::new();
        let mut out = |e: SegmenterEvent<'_>| {
            if let SegmenterEvent::SegmentEnd(info) = e {
                flags.push(info.discontinuity);
            }
        };
        let mut sync = PacketSync::new();
        sync.push(&first, |p| s.push_packet(p, &mut out));
        if restart {
            s.source_restarted();
        }
        let mut sync = PacketSync::new();
        sync.push(&second, |p| s.push_packet(p, &mut out));
        s.finish(&mut out);
        flags.iter().filter(|d| **d).count()
    };
    assert_eq!(marked(false), 0);
    assert_eq!(marked(true), 1);
    // Before anything was segmented there is nothing to be discontinuous with.
    let mut s = Segmenter::new(SegmenterConfig::default());
    s.source_restarted();
    let mut discontinuities = 0;
    let mut sync = PacketSync::new();
    sync.push(&first, |p| {
        s.push_packet(p, &mut |e| {
            if let SegmenterEvent::SegmentEnd(info) = e {
                discontinuities += usize::from(info.discontinuity);
            }
        })
    });
    assert_eq!(discontinuities, 0);
}

/// A segmenter run with parts: per segment, its packets and its parts.
fn parts_of(
    data: &[u8],
    config: SegmenterConfig,
    chunk: usize,
) -> Vec<(SegmentInfo, Vec<PartInfo>, u64)> {
    let mut s = Segmenter::new(config);
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut packets = 0u64;
    let mut take = |e: SegmenterEvent<'_>| match e {
        SegmenterEvent::SegmentStart { .. } => {
            parts.clear();
            packets = 0;
        }
        SegmenterEvent::Packet(_) => packets += 1,
        SegmenterEvent::PartEnd(p) => parts.push(p),
        SegmenterEvent::SegmentEnd(info) => out.push((info, std::mem::take(&mut parts), packets)),
        _ => {}
    };
    let mut sync = shardcast_protocols::ts::PacketSync::new();
    for c in data.chunks(chunk) {
        sync.push(c, |p| s.push_packet(p, &mut take));
    }
    s.finish(&mut take);
    out
}

#[test]
fn parts_are_cut_between_access_units_within_the_part_target() {
    let data = fixture("h264_aac_720p25.ts");
    let target = 18_000; // 200 ms
    let config = SegmenterConfig {
        target_duration: 180_000,
        part_target: Some(target),
        ..SegmenterConfig::default()
    };
    let runs = parts_of(&data, config, 7 * PACKET_SIZE);
    assert!(runs.len() >= 2, "{runs:?}");
    for (info, parts, packets) in &runs {
        assert!(!parts.is_empty(), "segment {} has no part", info.sequence);
        // Every packet of the segment is in exactly one part, in order.
        assert_eq!(parts.iter().map(|p| p.packets).sum::<u64>(), *packets);
        assert_eq!(*packets, info.packets);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.index as usize, i);
            assert!(p.duration <= target, "{p:?} over the target in {info:?}");
            assert!(p.packets > 0);
        }
        assert!(
            parts[0].independent,
            "a segment starts with an independent part"
        );
        // Parts add up to the segment, to within one frame (decode against presentation
        // time at the ends).
        let sum: u64 = parts.iter().map(|p| p.duration).sum();
        assert!(
            sum.abs_diff(info.duration) <= 3_600,
            "{sum} against {}",
            info.duration
        );
        // Full parts: every part but one at a keyframe or the segment's last is 200 ms (5
        // frames at 25 fps).
        let short = parts[..parts.len() - 1]
            .iter()
            .zip(&parts[1..])
            .filter(|(p, next)| p.duration < target && !next.independent)
            .count();
        assert_eq!(short, 0, "{parts:?}");
    }
    // The same at any chunking, and the same packets as without parts.
    assert_eq!(parts_of(&data, config, 1), runs);
    let plain = segment(
        &data,
        SegmenterConfig {
            part_target: None,
            ..config
        },
        4096,
    );
    assert_eq!(
        plain.infos,
        runs.iter().map(|(info, _, _)| *info).collect::<Vec<_>>()
    );
}

#[test]
fn low_latency_segments_never_outgrow_the_target_when_keyframes_are_sparse() {
    // Keyframes every 5 s; a 2 s target that low-latency HLS may not raise.
    let gen = GeneratorConfig {
        fps: 25,
        keyframe_interval: 125,
        width: 64,
        height: 48,
        bitrate: 2_000_000,
        ..GeneratorConfig::default()
    };
    let data = generated(gen, 16);
    let max = 2 * 90_000 + 45_000 - 1;
    let config = SegmenterConfig {
        target_duration: 180_000,
        part_target: Some(18_000),
        max_duration: Some(max),
        ..SegmenterConfig::default()
    };
    let runs = parts_of(&data, config, 7 * PACKET_SIZE);
    assert!(runs.len() >= 6, "{} segments", runs.len());
    for (i, (info, parts, _)) in runs[..runs.len() - 1].iter().enumerate() {
        assert!(info.duration <= max, "{info:?} outgrew the target");
        // Cut within four frames of the bound (2 s and a little, not at every frame), or
        // where a keyframe comes back.
        assert!(
            info.duration >= 180_000 || runs[i + 1].0.independent,
            "{info:?} cut early"
        );
        assert_eq!(parts[0].independent, info.independent, "{info:?}");
        assert!(parts.iter().all(|p| p.duration <= 18_000), "{parts:?}");
    }
    // A keyframe still starts a segment when it is due: every 5 s one starts independent.
    let independent: Vec<u64> = runs
        .iter()
        .filter(|(info, _, _)| info.independent)
        .map(|(info, _, _)| info.start_pts.ticks())
        .collect();
    assert!(independent.len() >= 3, "{independent:?}");
    for pair in independent.windows(2) {
        assert_eq!(pair[1] - pair[0], 5 * 90_000, "{independent:?}");
    }
    assert!(runs.iter().any(|(info, _, _)| !info.independent));
    // Each segment still begins with PAT and PMT, and counters run on across the cuts.
    let plain = segment(&data, config, 7 * PACKET_SIZE);
    for seg in &plain.segments {
        assert_eq!(
            u16::from(seg[1] & 0x1F) << 8 | u16::from(seg[2]),
            0,
            "no PAT first"
        );
    }
    assert_eq!(continuity_breaks(&plain.segments.concat()), vec![]);
    // The same at any chunking; counted.
    assert_eq!(parts_of(&data, config, 1), runs);
    let mut s = Segmenter::new(config);
    let mut sync = shardcast_protocols::ts::PacketSync::new();
    sync.push(&data, |p| s.push_packet(p, &mut |_| {}));
    let forced = runs.iter().filter(|(info, _, _)| !info.independent).count() as u64;
    assert!(s.stats().forced_cuts >= forced - 1, "{:?}", s.stats());
    // Without `max_duration`, the same source gives 5 s segments.
    let keyframes_only = segment(
        &data,
        SegmenterConfig {
            max_duration: None,
            ..config
        },
        4096,
    );
    assert!(keyframes_only.infos[..keyframes_only.infos.len() - 1]
        .iter()
        .all(|i| i.duration == 5 * 90_000 && i.independent));
}
