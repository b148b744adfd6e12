use super::*;

/// The boxes of `data` as (depth, type, start, size), walking into the containers this
/// module writes.
fn walk(data: &[u8]) -> Vec<(usize, String, usize, usize)> {
    fn inner(data: &[u8], base: usize, depth: usize, out: &mut Vec<(usize, String, usize, usize)>) {
        let mut at = 0;
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            let kind = String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned();
            assert!(
                size >= 8 && at + size <= data.len(),
                "{kind} at {at}: size {size}"
            );
            out.push((depth, kind.clone(), base + at, size));
            let body = &data[at + 8..at + size];
            let skip = match kind.as_str() {
                "moov" | "trak" | "mdia" | "minf" | "dinf" | "stbl" | "mvex" | "moof" | "traf" => {
                    Some(0)
                }
                "stsd" | "dref" => Some(8),
                "avc1" | "hvc1" => Some(78),
                "mp4a" => Some(28),
                _ => None,
            };
            if let Some(skip) = skip {
                inner(&body[skip..], base + at + 8 + skip, depth + 1, out);
            }
            at += size;
        }
        assert_eq!(at, data.len(), "boxes fill their parent exactly");
    }
    let mut out = Vec::new();
    inner(data, 0, 0, &mut out);
    out
}

fn kinds(boxes: &[(usize, String, usize, usize)]) -> Vec<String> {
    boxes
        .iter()
        .map(|(d, k, _, _)| format!("{}{k}", " ".repeat(*d)))
        .collect()
}

fn tracks() -> Vec<Track> {
    vec![
        Track {
            id: 1,
            timescale: 90_000,
            width: 1280,
            height: 720,
            codec: Codec::H264 {
                sps: vec![vec![0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9]],
                pps: vec![vec![0x68, 0xEB, 0xE3, 0xCB]],
            },
        },
        Track {
            id: 2,
            timescale: 48_000,
            width: 0,
            height: 0,
            codec: Codec::Aac {
                config: vec![0x11, 0x90],
                channels: 2,
                sample_rate: 48_000,
            },
        },
    ]
}

#[test]
fn the_init_segment_has_every_box_a_cmaf_reader_needs() {
    let init = init_segment(&tracks()).unwrap();
    let boxes = walk(&init);
    let k = kinds(&boxes);
    for want in [
        "ftyp",
        "moov",
        " mvhd",
        " trak",
        "  tkhd",
        "  mdia",
        "   mdhd",
        "   hdlr",
        "   minf",
        "    vmhd",
        "    smhd",
        "    dinf",
        "     dref",
        "      url ",
        "    stbl",
        "     stsd",
        "      avc1",
        "       avcC",
        "      mp4a",
        "       esds",
        "     stts",
        "     stsc",
        "     stsz",
        "     stco",
        " mvex",
        "  trex",
    ] {
        assert!(k.iter().any(|b| b == want), "{want} missing from {k:?}");
    }
    assert_eq!(k.iter().filter(|b| *b == " trak").count(), 2);
    // avcC: version 1, profile, compatibility and level from the SPS, 4-byte lengths.
    let (_, _, at, _) = boxes.iter().find(|b| b.1 == "avcC").unwrap();
    assert_eq!(&init[at + 8..at + 14], &[1, 0x64, 0x00, 0x1F, 0xFF, 0xE1]);
    // esds carries the AudioSpecificConfig.
    let (_, _, at, size) = boxes.iter().find(|b| b.1 == "esds").unwrap();
    assert!(init[*at..at + size]
        .windows(4)
        .any(|w| w == [0x05, 2, 0x11, 0x90]));
    assert_eq!(init_segment(&[]), Err(Mp4Error::NoTrack));
    let mut bad = tracks();
    bad[0].codec = Codec::H264 {
        sps: vec![],
        pps: vec![vec![0x68]],
    };
    assert_eq!(init_segment(&bad), Err(Mp4Error::Config(1)));
}

#[test]
fn a_fragment_points_each_run_at_its_data_with_64_bit_times_and_signed_offsets() {
    let video = [
        Sample {
            duration: 3600,
            size: 5,
            sync: true,
            composition_offset: 7200,
        },
        Sample {
            duration: 3600,
            size: 3,
            sync: false,
            composition_offset: -3600,
        },
    ];
    let audio = [Sample {
        duration: 1024,
        size: 4,
        sync: true,
        composition_offset: 0,
    }];
    let base = (1u64 << 33) + 12_345; // past the 33-bit wrap of MPEG-TS
    let f = fragment(
        7,
        &[
            Run {
                track_id: 1,
                base_decode_time: base,
                samples: &video,
                data: b"VVVVVvvv",
            },
            Run {
                track_id: 2,
                base_decode_time: 96_000,
                samples: &audio,
                data: b"AAAA",
            },
        ],
    )
    .unwrap();
    let boxes = walk(&f);
    assert_eq!(
        kinds(&boxes),
        [
            "moof", " mfhd", " traf", "  tfhd", "  tfdt", "  trun", " traf", "  tfhd", "  tfdt",
            "  trun", "mdat"
        ]
    );
    let (_, _, mdat, mdat_size) = boxes.iter().find(|b| b.1 == "mdat").unwrap();
    assert_eq!(&f[mdat + 8..mdat + mdat_size], b"VVVVVvvvAAAA");
    let truns: Vec<usize> = boxes
        .iter()
        .filter(|b| b.1 == "trun")
        .map(|b| b.2)
        .collect();
    let u32_at = |at: usize| u32::from_be_bytes(f[at..at + 4].try_into().unwrap());
    // trun: version 1; data_offset from the moof's start lands on each run's bytes.
    assert_eq!(f[truns[0] + 8], 1);
    assert_eq!(u32_at(truns[0] + 16) as usize, mdat + 8);
    assert_eq!(u32_at(truns[1] + 16) as usize, mdat + 8 + 8);
    // The second video sample's composition offset is negative, the first is sync.
    assert_eq!(u32_at(truns[0] + 20 + 8), 0x0200_0000);
    assert_eq!(u32_at(truns[0] + 20 + 16 + 12) as i32, -3600);
    let tfdt = boxes.iter().find(|b| b.1 == "tfdt").unwrap().2;
    assert_eq!(
        u64::from_be_bytes(f[tfdt + 12..tfdt + 20].try_into().unwrap()),
        base
    );
    assert_eq!(
        fragment(
            1,
            &[Run {
                track_id: 1,
                base_decode_time: 0,
                samples: &video,
                data: b"V"
            }]
        ),
        Err(Mp4Error::SizeMismatch {
            track: 1,
            samples: 8,
            data: 1
        })
    );
}
