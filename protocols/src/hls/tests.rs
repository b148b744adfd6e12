use super::*;
use proptest::prelude::*;

const LIVE: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002
#EXT-X-PART-INF:PART-TARGET=0.334
#EXT-X-MEDIA-SEQUENCE:1204
#EXT-X-DISCONTINUITY-SEQUENCE:3
# a comment, then an unknown tag
#EXT-X-UNKNOWN:FOO=1
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T06:00:00.000Z
#EXTINF:2.000,
1204.ts
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T06:00:02.000+00:00
#EXT-X-PART:DURATION=0.334,URI=\"1205.0.ts\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.333,URI=\"1205.1.ts\"
#EXTINF:1.96,live
1205.ts
#EXT-X-PART:DURATION=0.334,URI=\"1206.0.ts\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"1206.1.ts\"
";

#[test]
fn parses_a_low_latency_live_playlist() {
    let Playlist::Media(p) = parse(LIVE.as_bytes()).unwrap() else {
        panic!("not a media playlist")
    };
    assert_eq!(p.media_sequence, 1204);
    assert_eq!(p.discontinuity_sequence, 3);
    assert_eq!(p.part_target, Some(Duration::from_millis(334)));
    assert!(p.server_control.unwrap().can_block_reload);
    assert_eq!(p.segments.len(), 2);
    assert_eq!(p.segments[1].duration, Duration::from_millis(1960));
    assert_eq!(p.segments[1].title, "live");
    assert!(p.segments[1].discontinuity);
    assert_eq!(p.segments[1].parts.len(), 2);
    assert_eq!(
        p.segments[1].program_date_time,
        DateTime::parse("2026-11-21T06:00:02Z")
    );
    assert_eq!(p.trailing_parts.len(), 1);
    assert_eq!(p.preload_hints[0].uri, "1206.1.ts");
    // Written back and parsed again, nothing changes.
    assert_eq!(parse(p.to_string().as_bytes()).unwrap(), Playlist::Media(p));
}

#[test]
fn same_result_at_every_split() {
    let whole = parse(LIVE.as_bytes()).unwrap();
    for split in 0..LIVE.len() {
        let (a, b) = LIVE.as_bytes().split_at(split);
        let mut parser = PlaylistParser::new(PlaylistLimits::default());
        parser.push(a).unwrap();
        parser.push(b).unwrap();
        assert_eq!(parser.finish().unwrap(), whole, "split at {split}");
    }
}

#[test]
fn errors_name_the_line() {
    let e = parse(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:abc,\nx.ts\n").unwrap_err();
    assert_eq!(
        (e.line, e.kind),
        (3, PlaylistErrorKind::BadValue { tag: "EXTINF" })
    );
    let e = parse(b"not a playlist\n").unwrap_err();
    assert_eq!(e.kind, PlaylistErrorKind::MissingHeader);
    let e = parse(b"#EXTM3U\n#EXTINF:2,\n").unwrap_err();
    assert_eq!(e.kind, PlaylistErrorKind::MissingUri);
    let e =
        parse(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-STREAM-INF:BANDWIDTH=1\n").unwrap_err();
    assert_eq!((e.line, e.kind), (3, PlaylistErrorKind::MixedKinds));
    let limits = PlaylistLimits {
        max_line: 16,
        ..PlaylistLimits::default()
    };
    let mut p = PlaylistParser::new(limits);
    let e = p
        .push(b"#EXTM3U\n#EXT-X-TARGETDURATION:2222222222222222\n")
        .unwrap_err();
    assert_eq!(e.kind, PlaylistErrorKind::LineTooLong { limit: 16 });
}

#[test]
fn huge_values_are_refused_not_overflowed() {
    // Found by the playlist_parse fuzz target: a frame rate of 2^64 seconds.
    let e = parse(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,FRAME-RATE=18446744073709551615.5\nx\n")
        .unwrap_err();
    assert_eq!(
        (e.line, e.kind),
        (
            2,
            PlaylistErrorKind::BadValue {
                tag: "EXT-X-STREAM-INF"
            }
        )
    );
    let p = MediaPlaylist {
        segments: vec![MediaSegment {
            duration: Duration::MAX,
            ..MediaSegment::default()
        }],
        ..MediaPlaylist::default()
    };
    assert!(p.required_target_duration() > 1 << 60);
}

#[test]
fn writes_a_multivariant_playlist() {
    let m = MultivariantPlaylist {
        version: 3,
        independent_segments: true,
        renditions: vec![],
        variants: vec![VariantStream {
            uri: "index.m3u8".into(),
            bandwidth: 2_200_000,
            average_bandwidth: Some(2_000_000),
            codecs: Some("avc1.42c01e,mp4a.40.2".into()),
            resolution: Some(Resolution {
                width: 256,
                height: 144,
            }),
            frame_rate_millis: Some(25_000),
            audio: None,
        }],
    };
    let text = m.to_string();
    assert_eq!(
        text,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n\
         #EXT-X-STREAM-INF:BANDWIDTH=2200000,AVERAGE-BANDWIDTH=2000000,CODECS=\"avc1.42c01e,mp4a.40.2\",RESOLUTION=256x144,FRAME-RATE=25.000\n\
         index.m3u8\n"
    );
    assert_eq!(parse(text.as_bytes()).unwrap(), Playlist::Multivariant(m));
}

fn uri() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._/?=&-]{0,30}"
}

fn millis() -> impl Strategy<Value = Duration> {
    (0u64..100_000).prop_map(Duration::from_millis)
}

fn byte_range() -> impl Strategy<Value = Option<ByteRange>> {
    proptest::option::of(
        (1u64..1 << 40, proptest::option::of(0u64..1 << 40))
            .prop_map(|(length, offset)| ByteRange { length, offset }),
    )
}

fn part() -> impl Strategy<Value = PartialSegment> {
    (uri(), millis(), any::<bool>(), byte_range(), any::<bool>()).prop_map(
        |(uri, duration, independent, byte_range, gap)| PartialSegment {
            uri,
            duration,
            independent,
            byte_range,
            gap,
        },
    )
}

fn segment() -> impl Strategy<Value = MediaSegment> {
    (
        uri(),
        millis(),
        "[a-zA-Z0-9 ]{0,10}[a-zA-Z0-9]|",
        any::<bool>(),
        proptest::option::of((0i64..4_000_000_000_000).prop_map(DateTime::from_unix_millis)),
        byte_range(),
        any::<bool>(),
        proptest::collection::vec(part(), 0..3),
        proptest::option::of((uri(), byte_range())),
    )
        .prop_map(
            |(
                uri,
                duration,
                title,
                discontinuity,
                program_date_time,
                byte_range,
                gap,
                parts,
                map,
            )| {
                MediaSegment {
                    uri,
                    duration,
                    title,
                    discontinuity,
                    program_date_time,
                    byte_range,
                    gap,
                    parts,
                    map: map.map(|(uri, byte_range)| Map { uri, byte_range }),
                }
            },
        )
}

fn media_playlist() -> impl Strategy<Value = MediaPlaylist> {
    (
        (1u8..13, 1u64..100, any::<u64>(), any::<u64>()),
        proptest::option::of(prop_oneof![
            Just(PlaylistType::Event),
            Just(PlaylistType::Vod)
        ]),
        any::<bool>(),
        proptest::option::of(millis()),
        proptest::option::of((
            any::<bool>(),
            proptest::option::of(millis()),
            proptest::option::of(millis()),
            proptest::option::of(millis()),
        )),
        proptest::collection::vec(segment(), 0..8),
        proptest::collection::vec(part(), 0..3),
        proptest::collection::vec(
            (
                uri(),
                proptest::option::of(0u64..1000),
                proptest::option::of(0u64..1000),
            ),
            0..2,
        ),
        any::<bool>(),
        proptest::option::of(0u64..1000),
        proptest::collection::vec(
            (
                uri(),
                proptest::option::of(0u64..100_000),
                proptest::option::of(0u64..100),
            ),
            0..3,
        ),
    )
        .prop_map(
            |(
                (version, target_duration, media_sequence, discontinuity_sequence),
                playlist_type,
                independent_segments,
                part_target,
                sc,
                segments,
                trailing_parts,
                hints,
                end_list,
                skipped_segments,
                reports,
            )| MediaPlaylist {
                version,
                target_duration,
                media_sequence,
                discontinuity_sequence,
                playlist_type,
                independent_segments,
                part_target,
                server_control: sc.map(
                    |(can_block_reload, can_skip_until, hold_back, part_hold_back)| ServerControl {
                        can_block_reload,
                        can_skip_until,
                        hold_back,
                        part_hold_back,
                    },
                ),
                segments,
                trailing_parts,
                preload_hints: hints
                    .into_iter()
                    .map(|(uri, byte_range_start, byte_range_length)| PreloadHint {
                        kind: PreloadHintType::Part,
                        uri,
                        byte_range_start,
                        byte_range_length,
                    })
                    .collect(),
                skipped_segments,
                rendition_reports: reports
                    .into_iter()
                    .map(|(uri, last_msn, last_part)| RenditionReport {
                        uri,
                        last_msn,
                        last_part,
                    })
                    .collect(),
                end_list,
            },
        )
}

proptest! {
    #[test]
    fn media_playlists_round_trip(p in media_playlist()) {
        let text = p.to_string();
        prop_assert_eq!(parse(text.as_bytes()), Ok(Playlist::Media(p)), "{}", text);
    }

    #[test]
    fn multivariant_playlists_round_trip(
        variants in proptest::collection::vec((uri(), 1u64..1 << 40, proptest::option::of(1u64..1 << 40), proptest::option::of("[a-z0-9.]{1,12}(,[a-z0-9.]{1,12})?"), proptest::option::of((1u32..8192, 1u32..8192)), proptest::option::of(1u32..240_000), proptest::option::of("[a-z]{1,5}")), 1..4),
        renditions in proptest::collection::vec(("[a-z]{1,5}", "[A-Za-z ]{0,8}[a-z]", proptest::option::of(uri()), proptest::option::of("[a-z]{2}"), any::<bool>(), any::<bool>()), 0..3),
    ) {
        let m = MultivariantPlaylist {
            version: 4,
            independent_segments: false,
            renditions: renditions.into_iter().map(|(group_id, name, uri, language, default, autoselect)| Rendition { media_type: MediaType::Audio, group_id, name, uri, language, default, autoselect }).collect(),
            variants: variants.into_iter().map(|(uri, bandwidth, average_bandwidth, codecs, res, frame_rate_millis, audio)| VariantStream { uri, bandwidth, average_bandwidth, codecs, resolution: res.map(|(width, height)| Resolution { width, height }), frame_rate_millis, audio }).collect(),
        };
        let text = m.to_string();
        prop_assert_eq!(parse(text.as_bytes()), Ok(Playlist::Multivariant(m)), "{}", text);
    }

    #[test]
    fn the_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&data);
    }
}
