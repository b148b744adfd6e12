use super::remux::{FlvRemuxer, AUDIO_PID, VIDEO_PID};
use super::*;

/// An avcC with one SPS and one PPS, 4-byte lengths.
fn avcc() -> Vec<u8> {
    let mut r = vec![
        1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4, 0x67, 0x64, 0, 0x1F, 1, 0, 2, 0x68, 0xEE,
    ];
    r.truncate(17);
    r
}

fn avc_tag(packet_type: u8, keyframe: bool, composition: i32, data: &[u8]) -> Vec<u8> {
    let c = composition.to_be_bytes();
    let mut t = vec![
        if keyframe { 0x17 } else { 0x27 },
        packet_type,
        c[1],
        c[2],
        c[3],
    ];
    t.extend_from_slice(data);
    t
}

/// One NAL of `nal` after a 4-byte length.
fn prefixed(nal: &[u8]) -> Vec<u8> {
    let mut v = (nal.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(nal);
    v
}

#[test]
fn video_tags_legacy_and_enhanced() {
    let config = avcc();
    let tag = avc_tag(0, true, 0, &config);
    assert_eq!(
        VideoTag::parse(&tag).unwrap(),
        VideoTag {
            codec: VideoCodec::H264,
            packet: VideoPacket::Config(&config)
        }
    );
    let tag = avc_tag(1, false, -40, b"xy");
    assert_eq!(
        VideoTag::parse(&tag).unwrap().packet,
        VideoPacket::Frame {
            keyframe: false,
            composition_ms: -40,
            data: b"xy"
        }
    );
    // Enhanced RTMP: hvc1, coded frames with and without composition time.
    let mut ex = vec![0x80 | 0x10 | 1];
    ex.extend_from_slice(b"hvc1");
    ex.extend_from_slice(&[0, 0, 80, 9, 9]);
    assert_eq!(
        VideoTag::parse(&ex).unwrap(),
        VideoTag {
            codec: VideoCodec::H265,
            packet: VideoPacket::Frame {
                keyframe: true,
                composition_ms: 80,
                data: &[9, 9]
            }
        }
    );
    ex[0] = 0x80 | 0x20 | 3;
    assert_eq!(
        VideoTag::parse(&ex).unwrap().packet,
        VideoPacket::Frame {
            keyframe: false,
            composition_ms: 0,
            data: &[0, 0, 80, 9, 9]
        }
    );
    // Refused by name, or short.
    let mut av1 = vec![0x90];
    av1.extend_from_slice(b"av01");
    for (body, why) in [
        (&[0x12, 0][..], "Sorenson"),
        (&av1[..], "av01"),
        (&[0x17, 1, 0][..], "shorter"),
        (&[][..], "shorter"),
    ] {
        let e = VideoTag::parse(body).unwrap_err();
        assert!(e.to_string().contains(why), "{e}");
    }
}

#[test]
fn decoder_configurations_and_aac_configs_parse() {
    let c = DecoderConfig::parse(VideoCodec::H264, &avcc()).unwrap();
    assert_eq!(c.length_size, 4);
    assert_eq!(
        c.parameter_sets,
        [vec![0x67, 0x64, 0, 0x1F], vec![0x68, 0xEE]]
    );
    for cut in 0..avcc().len() - 1 {
        assert!(DecoderConfig::parse(VideoCodec::H264, &avcc()[..cut]).is_err() || cut >= 15);
    }
    // hvcC: 23 bytes of header, then arrays of VPS, SPS, PPS.
    let mut hvcc = vec![1];
    hvcc.extend_from_slice(&[0; 20]);
    hvcc.push(0x0F); // lengthSizeMinusOne 3
    hvcc.push(3);
    for (kind, nal) in [
        (32u8, &[0x40u8, 1][..]),
        (33, &[0x42, 1, 7]),
        (34, &[0x44, 1]),
    ] {
        hvcc.extend_from_slice(&[0x80 | kind, 0, 1, 0, nal.len() as u8]);
        hvcc.extend_from_slice(nal);
    }
    let c = DecoderConfig::parse(VideoCodec::H265, &hvcc).unwrap();
    assert_eq!((c.length_size, c.parameter_sets.len()), (4, 3));
    assert!(DecoderConfig::parse(VideoCodec::H265, &hvcc[..hvcc.len() - 1]).is_err());
    // AAC LC, 44.1 kHz, stereo; HE-AAC v1 with explicit SBR: the core's type and rate.
    let lc = AacConfig::parse(&[0x12, 0x10]).unwrap();
    assert_eq!((lc.object_type, lc.frequency_index, lc.channels), (2, 4, 2));
    assert_eq!(
        lc.adts_header(100),
        [0xFF, 0xF1, 0x50, 0x80, 0x0D, 0x7F, 0xFC]
    );
    // object type 5, index 6 (24 kHz core), 2 channels, extension index 3 (48 kHz), then 2.
    let he = AacConfig::parse(&[0x2B, 0x11, 0x88, 0x00]).unwrap();
    assert_eq!((he.object_type, he.frequency_index, he.channels), (2, 6, 2));
    for bad in [&[][..], &[0x17, 0x90], &[0x12, 0x00], &[0xF8, 0, 0]] {
        assert!(AacConfig::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn audio_tags() {
    assert_eq!(
        AudioTag::parse(&[0xAF, 0, 0x12, 0x10]).unwrap(),
        AudioTag::AacConfig(&[0x12, 0x10])
    );
    assert_eq!(
        AudioTag::parse(&[0xAF, 1, 7]).unwrap(),
        AudioTag::AacFrame(&[7])
    );
    assert!(AudioTag::parse(&[0x2F, 1])
        .unwrap_err()
        .to_string()
        .contains("MP3"));
    assert!(AudioTag::parse(&[0xAF]).is_err());
}

#[test]
fn reader_refuses_what_is_not_flv_and_tags_too_large() {
    let mut errors = Vec::new();
    Reader::default().push(b"GIF89a.......", |t| errors.push(t.unwrap_err()));
    assert_eq!(errors, [FlvError::Header]);
    let mut header = b"FLV\x01\x05\0\0\0\x09\0\0\0\0".to_vec();
    header.extend_from_slice(&[9, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut got = Vec::new();
    let mut reader = Reader::new(1024);
    reader.push(&header, |t| got.push(t));
    assert_eq!(got, [Err(FlvError::TooLarge(1 << 20, 1024))]);
    // Nothing more is read, and nothing is held.
    reader.push(&[0; 100], |t| got.push(t));
    assert_eq!((got.len(), reader.buffered() <= 11), (1, true));
    let mut bad_type = b"FLV\x01\x05\0\0\0\x09\0\0\0\0".to_vec();
    bad_type.extend_from_slice(&[7, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xAA, 0, 0, 0, 12]);
    let mut got = Vec::new();
    Reader::default().push(&bad_type, |t| got.push(t));
    assert_eq!(got, [Err(FlvError::TagType(7))]);
}

/// Frames before their configuration are skipped; parameter sets go before a keyframe that
/// lacks them; an overrunning NAL length drops the frame; a configuration that arrives late
/// adds its stream with a new PMT version, the other's continuity kept.
#[test]
fn remuxer_skips_inserts_and_reconfigures() {
    use crate::ts::{DemuxConfig, DemuxEvent, Demuxer};
    let mut r = FlvRemuxer::new();
    let mut ts = Vec::new();
    let idr = prefixed(&[0x65, 0x88, 0x84, 1, 2, 3]);
    r.push(TAG_VIDEO, 0, &avc_tag(1, true, 0, &idr), &mut ts)
        .unwrap();
    assert_eq!((r.stats().skipped, ts.len()), (1, 0));
    r.push(TAG_VIDEO, 0, &avc_tag(0, true, 0, &avcc()), &mut ts)
        .unwrap();
    r.push(TAG_VIDEO, 40, &avc_tag(1, true, 80, &idr), &mut ts)
        .unwrap();
    let mut overrun = idr.clone();
    overrun[3] = 200;
    r.push(TAG_VIDEO, 80, &avc_tag(1, false, 0, &overrun), &mut ts)
        .unwrap();
    assert_eq!((r.stats().video_frames, r.stats().skipped), (1, 2));
    // The access unit: delimiter, SPS, PPS, then the slice.
    let sps_at = ts
        .windows(6)
        .position(|w| w == [0, 0, 0, 1, 0x09, 0xF0])
        .unwrap();
    let au = &ts[sps_at..];
    assert!(au.starts_with(&[
        0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x67, 0x64, 0, 0x1F, 0, 0, 0, 1, 0x68, 0xEE, 0, 0, 0,
        1, 0x65
    ]));
    // Audio's configuration arrives late: a second PMT with both streams.
    r.push(TAG_AUDIO, 40, &[0xAF, 0, 0x12, 0x10], &mut ts)
        .unwrap();
    r.push(TAG_AUDIO, 46, &[0xAF, 1, 0x21, 0x10, 4], &mut ts)
        .unwrap();
    r.push(
        TAG_VIDEO,
        120,
        &avc_tag(1, false, 0, &prefixed(&[0x41, 1])),
        &mut ts,
    )
    .unwrap();
    assert!(r.push(TAG_AUDIO, 50, &[0x2F, 1], &mut ts).is_err());
    assert_eq!(r.stats().refused, 1);
    let mut demux = Demuxer::new(DemuxConfig::default());
    let mut pmts = Vec::new();
    let mut stamps = Vec::new();
    demux.push(&ts, |e| match e {
        DemuxEvent::Pmt(p) => pmts.push((p.version, p.streams.len())),
        DemuxEvent::PesStart { pid, header, .. } => stamps.push((
            pid.value(),
            header.pts.map(|t| t.ticks()),
            header.dts.map(|t| t.ticks()),
        )),
        _ => {}
    });
    assert_eq!(pmts, [(0, 1), (1, 2)]);
    assert_eq!(
        stamps,
        [
            (
                VIDEO_PID,
                Some(90_000 + 40 * 90 + 80 * 90),
                Some(90_000 + 40 * 90)
            ),
            (AUDIO_PID, Some(90_000 + 46 * 90), None),
            (VIDEO_PID, Some(90_000 + 120 * 90), None),
        ]
    );
    assert_eq!(demux.stats().continuity_gaps, 0);
}

/// FLV's 32-bit millisecond clock wraps; the TS clock goes on.
#[test]
fn the_millisecond_clock_is_extended_across_its_wrap() {
    let mut r = FlvRemuxer::new();
    let mut ts = Vec::new();
    r.push(TAG_AUDIO, 0, &[0xAF, 0, 0x12, 0x10], &mut ts)
        .unwrap();
    for ms in [u32::MAX - 50, u32::MAX - 27, 4, 27] {
        r.push(TAG_AUDIO, ms, &[0xAF, 1, 0x21, 0x10, 4], &mut ts)
            .unwrap();
    }
    let mut pts = Vec::new();
    let mut demux = crate::ts::Demuxer::new(crate::ts::DemuxConfig::default());
    demux.push(&ts, |e| {
        if let crate::ts::DemuxEvent::PesStart { header, .. } = e {
            pts.push(header.pts.unwrap().ticks());
        }
    });
    let steps: Vec<u64> = pts
        .windows(2)
        .map(|w| (w[1] + (1 << 33) - w[0]) % (1 << 33))
        .collect();
    assert_eq!(steps, [23 * 90, 32 * 90, 23 * 90]);
}
