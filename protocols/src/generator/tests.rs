use super::*;
use crate::ts::{DemuxConfig, DemuxEvent, Demuxer};

fn generate(config: GeneratorConfig, packets: usize) -> (Vec<u8>, Vec<usize>) {
    let mut g = Generator::new(config).unwrap();
    let mut out = Vec::with_capacity(packets * PACKET_SIZE);
    let mut stamps = Vec::new();
    for i in 0..packets {
        let mut p = [0u8; PACKET_SIZE];
        if let Some(at) = g.next_packet(&mut p) {
            write_stamp(&mut p, at, 1_700_000_000_000_000_000 + i as u64);
            stamps.push(i);
        }
        out.extend_from_slice(&p);
    }
    (out, stamps)
}

#[test]
fn stamps_round_trip() {
    for ns in [0, 1, 1_763_700_000_123_456_789, u64::MAX] {
        let mut p = [0u8; PACKET_SIZE];
        p[20..36].copy_from_slice(&STAMP_UUID);
        write_stamp(&mut p, 36, ns);
        assert_eq!(read_stamp(&p), Some(ns));
    }
    assert_eq!(read_stamp(&[0u8; PACKET_SIZE]), None);
}

#[test]
fn one_stamp_per_frame_and_the_demuxer_sees_every_frame() {
    let config = GeneratorConfig::default();
    let g = Generator::new(config).unwrap();
    let seconds = 4;
    let packets = (u64::from(config.bitrate) * seconds).div_ceil(188 * 8) as usize;
    assert!(g.packet_time_ns(packets as u64) >= seconds * 1_000_000_000);
    let (ts, stamps) = generate(config, packets);
    let mut demux = Demuxer::new(DemuxConfig::default());
    let mut pictures = Vec::new();
    let mut errors = 0;
    demux.push(&ts, |e| match e {
        DemuxEvent::Picture { keyframe, .. } => pictures.push(keyframe),
        DemuxEvent::Error { .. } | DemuxEvent::Continuity { .. } => errors += 1,
        _ => {}
    });
    assert_eq!(errors, 0);
    // Frames queued by the time the last packet went out; the last ones may still be queued.
    assert!(
        pictures.len() >= 95 && pictures.len() <= 101,
        "{}",
        pictures.len()
    );
    assert_eq!(
        pictures.iter().filter(|k| **k).count(),
        pictures.len().div_ceil(25)
    );
    assert_eq!(stamps.len(), pictures.len());
    for &i in &stamps {
        let p = &ts[i * PACKET_SIZE..(i + 1) * PACKET_SIZE];
        assert_eq!(read_stamp(p), Some(1_700_000_000_000_000_000 + i as u64));
    }
    let audio = demux.streams().find(|s| s.codec == Codec::AacAdts).unwrap();
    assert!(audio.frames >= 185, "{}", audio.frames);
}

#[test]
fn refuses_a_bitrate_too_low() {
    let config = GeneratorConfig {
        bitrate: 200_000,
        ..GeneratorConfig::default()
    };
    assert!(matches!(
        Generator::new(config),
        Err(GeneratorError::BitrateTooLow { .. })
    ));
    let config = GeneratorConfig {
        width: 15,
        ..GeneratorConfig::default()
    };
    assert!(matches!(
        Generator::new(config),
        Err(GeneratorError::Invalid(_))
    ));
}

#[test]
fn intra_refresh_without_keyframes_carries_whole_pictures_in_p_frames() {
    let config = GeneratorConfig {
        bitrate: 10_000_000,
        width: 640,
        height: 368,
        keyframe_interval: u32::MAX,
        refresh_columns: 4,
        ..GeneratorConfig::default()
    };
    let mut g = Generator::new(config).unwrap();
    let mut demux = Demuxer::new(DemuxConfig::default());
    let mut p = [0u8; PACKET_SIZE];
    let mut keyframes = 0;
    let mut pictures = 0;
    for _ in 0..(10_000_000 / 8 / PACKET_SIZE) * 4 {
        g.next_packet(&mut p);
        demux.push(&p, |e| {
            if let DemuxEvent::Picture { keyframe, .. } = e {
                pictures += 1;
                keyframes += usize::from(keyframe);
            }
        });
    }
    assert_eq!(keyframes, 1, "one keyframe, at the start");
    assert!(pictures >= 95, "{pictures}");
    let video = demux.streams().find(|s| s.codec == Codec::H264).unwrap();
    // 4 columns of 23 I_PCM macroblocks (384 bytes) a frame: about 35 kB, 7 Mbit/s.
    assert!(video.bytes > 3_000_000, "{}", video.bytes);
}
