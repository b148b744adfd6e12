use super::*;
use crate::ingest::Pipeline;
use shardcast_protocols::generator::{Generator, GeneratorConfig};
use shardcast_protocols::hls::{parse, Playlist};
use shardcast_protocols::ts::pes::Timestamp;

/// Run `seconds` of the generator's stream through a pipeline with a packager; returns the
/// slot. Packets are stamped as received at their stream time.
fn package(
    settings: HlsSettings,
    send: SegmentSend,
    seconds: u64,
) -> (HlsSlot, Arc<StreamCounters>) {
    let slot = HlsSlot::default();
    let counters = Arc::new(StreamCounters::default());
    let packager = Packager::new("t", settings, send, slot.clone(), counters.clone());
    let target = (settings.segment_duration_s * 90_000.0) as u64;
    let mut p = Pipeline::new(None, counters.clone(), target, 100, Some(packager))
        .with_parts(settings.part_duration_s.map(|p| (p * 90_000.0) as u64));
    let mut g = Generator::new(GeneratorConfig::default()).unwrap();
    let mut datagram = Vec::new();
    let mut packet = [0u8; PACKET_SIZE];
    loop {
        g.next_packet(&mut packet);
        let at = g.packet_time_ns(g.packets());
        if at > seconds * 1_000_000_000 {
            break;
        }
        datagram.extend_from_slice(&packet);
        if datagram.len() == 7 * PACKET_SIZE {
            p.push(&datagram, at, &mut |_| {});
            p.flush(at, &mut |_| {});
            datagram.clear();
        }
    }
    (slot, counters)
}

/// A packager of copies under `settings`, the slot it publishes to and its counters.
fn packager(settings: HlsSettings) -> (Packager, HlsSlot, Arc<StreamCounters>) {
    let slot = HlsSlot::default();
    let counters = Arc::new(StreamCounters::default());
    let p = Packager::new(
        "t",
        settings,
        SegmentSend::Copy,
        slot.clone(),
        counters.clone(),
    );
    (p, slot, counters)
}

fn media(w: &HlsWindow) -> shardcast_protocols::hls::MediaPlaylist {
    match parse(&w.playlist).unwrap() {
        Playlist::Media(m) => m,
        other => panic!("not a media playlist: {other:?}"),
    }
}

#[test]
fn the_window_lists_the_newest_segments_and_keeps_the_grace_ones_fetchable() {
    let settings = HlsSettings {
        segment_duration_s: 2.0,
        playlist_segments: 4,
        segment_grace_s: 4.5,
        ..HlsSettings::default()
    };
    let (slot, counters) = package(settings, SegmentSend::Copy, 30);
    let w = slot.load_full().expect("published");
    let m = media(&w);
    assert_eq!(m.segments.len(), 4);
    assert_eq!(m.target_duration, 2);
    // The generator has a keyframe every second: 2 s segments, numbered from 100.
    let first = m.media_sequence;
    assert!(first > 100, "{first}");
    for (i, s) in m.segments.iter().enumerate() {
        assert_eq!(s.uri, format!("{}.ts", first + i as u64));
        assert_eq!(s.duration, Duration::from_secs(2));
        assert!(s.program_date_time.is_some());
    }
    // Two (or three) segments in grace are fetchable, older ones are gone.
    assert!(w.segment(first - 1).is_some());
    assert!(w.segment(first - 2).is_some());
    assert!(w.segment(first - 4).is_none());
    assert!(w.segment(first + 4).is_none(), "the future is not there");
    let held: usize = w.segments().iter().map(|s| s.len()).sum();
    assert_eq!(counters.snapshot().segment_bytes, held as u64);
    // Every segment starts with the PAT.
    for s in w.segments() {
        let SegmentBody::Memory(b) = &s.body else {
            panic!("copy mode keeps segments in memory")
        };
        assert_eq!((b[0], b[1] & 0x1F, b[2]), (0x47, 0, 0));
        assert_eq!(b.len() % PACKET_SIZE, 0);
    }
    // The multivariant playlist names the media playlist with its bandwidth.
    let master = std::str::from_utf8(&w.master).unwrap();
    assert!(master.contains("BANDWIDTH="), "{master}");
    // The generator's H.264 is Constrained Baseline (66, constraint flags 0xC0) level 1.2.
    assert!(
        master.contains("CODECS=\"avc1.42c00c,mp4a.40.2\"")
            && master.contains("RESOLUTION=256x144"),
        "{master}"
    );
    assert!(master.trim_end().ends_with("index.m3u8"), "{master}");
    assert_eq!(w.playlist_cache_control, "public, max-age=1");
}

#[test]
fn sendfile_mode_keeps_segments_in_sealed_memfds() {
    let (slot, _) = package(HlsSettings::default(), SegmentSend::Sendfile, 6);
    let w = slot.load_full().expect("published");
    let s = w.segments().last().unwrap();
    let fd = s.file().expect("a memfd");
    let mut file = std::fs::File::from(fd.try_clone_to_owned().unwrap());
    assert_eq!(file.metadata().unwrap().len(), s.len() as u64);
    let mut data = vec![0u8; s.len()];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut data, 0).unwrap();
    assert_eq!(data[0], 0x47);
    // Sealed: no write can change what caches were told is immutable.
    assert!(std::io::Write::write_all(&mut file, b"x").is_err());
}

#[test]
fn a_longer_segment_raises_the_target_duration_for_good() {
    // Keyframes every second but a 2.4 s target: segments are 3 s, the target must say 3.
    let settings = HlsSettings {
        segment_duration_s: 2.4,
        ..HlsSettings::default()
    };
    let (slot, _) = package(settings, SegmentSend::Copy, 12);
    let w = slot.load_full().unwrap();
    let m = media(&w);
    assert!(m
        .segments
        .iter()
        .all(|s| s.duration == Duration::from_secs(3)));
    assert_eq!(m.target_duration, 3);
    assert_eq!(w.playlist_cache_control, "public, max-age=1");
}

#[test]
fn a_segment_without_a_cut_is_dropped_at_the_limit_and_the_next_is_a_discontinuity() {
    let (mut p, slot, counters) = packager(HlsSettings::default());
    let packet = [0x47u8; PACKET_SIZE];
    p.start(1, false, true, 0);
    for _ in 0..=StreamLimits::default().max_segment / PACKET_SIZE {
        p.packet(&packet);
    }
    assert_eq!(counters.snapshot().segments_dropped, 1);
    let info = |sequence| SegmentInfo {
        sequence,
        start_pts: Timestamp::new(0),
        duration: 180_000,
        packets: 1,
        discontinuity: false,
        independent: true,
    };
    p.end(info(1), 0);
    assert!(
        slot.load().is_none(),
        "the dropped segment is not published"
    );
    p.start(2, false, true, 0);
    p.packet(&packet);
    p.end(info(2), 0);
    let w = slot.load_full().unwrap();
    assert!(w.segment(2).unwrap().discontinuity);
    assert!(std::str::from_utf8(&w.playlist)
        .unwrap()
        .contains("#EXT-X-DISCONTINUITY\n"));
}

#[test]
fn a_token_goes_into_every_uri() {
    let playlist =
        b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\n100.ts\n#EXTINF:2.000,\n101.ts?x=1\n";
    let out = super::with_query(playlist, "token=a%20b");
    assert_eq!(
        &out[..],
        b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\n100.ts?token=a%20b\n#EXTINF:2.000,\n101.ts?x=1&token=a%20b\n"
    );
}

fn seal(p: &mut Packager, sequence: u64, packets: usize, start_ns: u64, end_ns: u64) {
    p.start(sequence, false, true, start_ns);
    for _ in 0..packets {
        p.packet(&[0x47u8; PACKET_SIZE]);
    }
    p.end(
        SegmentInfo {
            sequence,
            start_pts: Timestamp::new(0),
            duration: 180_000,
            packets: packets as u64,
            discontinuity: false,
            independent: true,
        },
        end_ns,
    );
}

#[test]
fn segments_held_stay_within_their_count_and_byte_caps() {
    let (p, slot, counters) = packager(HlsSettings {
        segment_duration_s: 2.0,
        playlist_segments: 3,
        segment_grace_s: 3600.0,
        ..HlsSettings::default()
    });
    let mut p = p.with_limits(&StreamLimits {
        max_segment: 100 * PACKET_SIZE,
        max_hls_bytes: 500 * PACKET_SIZE,
        ..StreamLimits::default()
    });
    let s = 1_000_000_000u64;
    // Small segments: the long grace would keep them all; the count cap keeps as many as
    // are listed.
    for n in 0..20 {
        seal(&mut p, n, 10, n * 2 * s, (n + 1) * 2 * s);
    }
    let w = slot.load_full().unwrap();
    assert_eq!(w.segments().len(), 6, "3 listed, 3 in grace");
    // Large ones: the byte cap lets the oldest go, listed ones too when it must.
    for n in 20..30 {
        seal(&mut p, n, 99, n * 2 * s, (n + 1) * 2 * s);
    }
    let w = slot.load_full().unwrap();
    let held: usize = w.segments().iter().map(|s| s.len()).sum();
    assert!(held <= 500 * PACKET_SIZE, "{held} bytes held");
    assert!(counters.snapshot().segments_evicted > 0);
    assert_eq!(media(&w).segments.len(), 3);
}

#[test]
fn timestamps_racing_ahead_cannot_make_segments_faster_than_real_time() {
    let (mut p, _slot, counters) = packager(HlsSettings::default());
    let ms = 1_000_000u64;
    // 2 s segments every 10 ms of wall time: a burst of one playlist's worth, then at most
    // twice real time.
    let start = 1_700_000_000_000 * ms;
    for n in 0..1000u64 {
        let at = start + n * 10 * ms;
        seal(&mut p, n, 2, at, at + 10 * ms);
    }
    let sealed = counters.snapshot().segments;
    // 10 s of wall time: 6 (burst) + 2 * 10 / 2 = 16 at most.
    assert!(sealed <= 17, "{sealed} sealed");
    assert!(sealed >= 6, "{sealed} sealed");
    assert!(counters.snapshot().segments_dropped >= 980);
    // At real time again, every segment is sealed.
    let before = counters.snapshot().segments;
    let later = start + 100 * 1000 * ms;
    for n in 1000..1010u64 {
        let at = later + (n - 1000) * 2000 * ms;
        seal(&mut p, n, 2, at, at + 2000 * ms);
    }
    assert_eq!(counters.snapshot().segments - before, 10);
}

#[test]
fn a_window_handed_over_is_taken_up_and_goes_on_with_a_discontinuity() {
    let settings = HlsSettings {
        segment_duration_s: 1.0,
        playlist_segments: 4,
        ..HlsSettings::default()
    };
    // The previous process's window, on memfds.
    let (old_slot, _) = package(settings, SegmentSend::Sendfile, 9);
    let old = old_slot.load_full().unwrap();
    let old_media = media(&old);
    let segments: Vec<Arc<Segment>> = old.segments().to_vec();
    assert!(segments.len() > old.listed, "some in grace too");
    let window = Restored {
        segments: segments.clone(),
        listed: old.listed,
        discontinuity_sequence: 3,
        target_duration: old.target_duration,
    };
    let (mut p, slot, _) = packager(settings);
    p.restore(window, 0);
    let taken = slot.load_full().unwrap();
    let m = media(&taken);
    assert_eq!(m.media_sequence, old_media.media_sequence);
    assert_eq!(m.discontinuity_sequence, 3);
    assert_eq!(m.segments.len(), old_media.segments.len());
    for s in &segments {
        assert!(
            taken.segment(s.sequence).is_some(),
            "segment {} fetchable",
            s.sequence
        );
    }
    assert_eq!(taken.media.codecs(), old.media.codecs());

    // The next segment made here follows on, marked as a discontinuity.
    let next = segments.last().unwrap().sequence + 1;
    p.start(next, false, true, 1_000_000_000);
    let mut packet = [0u8; PACKET_SIZE];
    packet[0] = 0x47;
    p.packet(&packet);
    p.end(
        SegmentInfo {
            sequence: next,
            start_pts: Timestamp::new(0),
            duration: 90_000,
            packets: 1,
            discontinuity: false,
            independent: true,
        },
        u64::MAX / 2,
    );
    let m = media(&slot.load_full().unwrap());
    let last = m.segments.last().unwrap();
    assert_eq!(last.uri, format!("{next}.ts"));
    assert!(last.discontinuity);
}

#[test]
fn parts_cover_their_segments_and_the_playlist_lists_and_hints_them() {
    let settings = HlsSettings {
        segment_duration_s: 2.0,
        playlist_segments: 6,
        part_duration_s: Some(0.3),
        ..HlsSettings::default()
    };
    let (slot, _) = package(settings, SegmentSend::Copy, 20);
    let w = slot.load_full().expect("published");
    let ll = w.low_latency.expect("a low-latency window");
    let m = media(&w);
    assert_eq!(m.version, 9);
    assert_eq!(m.part_target, Some(Duration::from_millis(300)));
    let control = m.server_control.expect("EXT-X-SERVER-CONTROL");
    assert!(control.can_block_reload);
    assert_eq!(control.part_hold_back, Some(Duration::from_millis(900)));
    assert_eq!(control.can_skip_until, Some(Duration::from_secs(12)));
    // Parts of the last three target durations are listed, whole segments' worth.
    let with_parts: Vec<_> = m.segments.iter().filter(|s| !s.parts.is_empty()).collect();
    assert!((3..=4).contains(&with_parts.len()), "{}", with_parts.len());
    for s in &with_parts {
        let sequence: u64 = s.uri.trim_end_matches(".ts").parse().unwrap();
        let segment = w.segment(sequence).unwrap();
        let mut bytes = Vec::new();
        let mut total = Duration::ZERO;
        for (i, listed) in s.parts.iter().enumerate() {
            assert_eq!(listed.uri, format!("{sequence}.{i}.ts"));
            assert!(listed.duration <= Duration::from_millis(300), "{listed:?}");
            let part = w
                .part(sequence, i as u32)
                .expect("listed parts are fetchable");
            // The generator has a keyframe every second: a part starts at each.
            assert_eq!(listed.independent, part.independent);
            assert_eq!(part.body[0], 0x47);
            bytes.extend_from_slice(&part.body);
            total += listed.duration;
        }
        assert!(s.parts[0].independent);
        assert_eq!(s.parts.iter().filter(|p| p.independent).count(), 2);
        assert_eq!(
            bytes,
            segment.bytes().unwrap(),
            "parts are the segment's bytes"
        );
        let off = total.abs_diff(s.duration);
        assert!(
            off <= Duration::from_millis(1),
            "{total:?} {:?}",
            s.duration
        );
    }
    // The segment being built: its parts trail, and the next one is hinted.
    assert_eq!(ll.building, ll.last_segment + 1);
    assert_eq!(m.trailing_parts.len() as u32, ll.building_parts);
    assert_eq!(
        m.preload_hints[0].uri,
        format!("{}.{}.ts", ll.building, ll.building_parts)
    );
    // Parts of older segments are gone.
    let oldest = m.media_sequence;
    assert!(w.part(oldest, 0).is_none());
}

#[test]
fn a_long_low_latency_playlist_has_a_delta_update() {
    let settings = HlsSettings {
        segment_duration_s: 1.0,
        playlist_segments: 12,
        part_duration_s: Some(0.25),
        ..HlsSettings::default()
    };
    let (slot, _) = package(settings, SegmentSend::Copy, 30);
    let w = slot.load_full().expect("published");
    let full = media(&w);
    let delta = match parse(w.delta.as_ref().expect("a delta update")).unwrap() {
        Playlist::Media(m) => m,
        other => panic!("{other:?}"),
    };
    let skipped = delta.skipped_segments.expect("EXT-X-SKIP") as usize;
    // CAN-SKIP-UNTIL is six target durations: what ends earlier than that before the end.
    assert!((5..=7).contains(&skipped), "{skipped}");
    assert_eq!(delta.media_sequence, full.media_sequence);
    assert_eq!(delta.segments[..], full.segments[skipped..]);
}

#[test]
fn without_a_part_duration_the_playlist_is_plain() {
    let (slot, _) = package(HlsSettings::default(), SegmentSend::Copy, 10);
    let w = slot.load_full().expect("published");
    assert!(w.low_latency.is_none() && w.delta.is_none());
    assert!(!String::from_utf8_lossy(&w.playlist).contains("EXT-X-PART"));
}

#[test]
fn the_cmaf_rendition_has_the_same_segments_and_parts_as_fragments() {
    let settings = HlsSettings {
        segment_duration_s: 2.0,
        playlist_segments: 6,
        part_duration_s: Some(0.3),
        cmaf: true,
        ..HlsSettings::default()
    };
    let (slot, _) = package(settings, SegmentSend::Copy, 20);
    let w = slot.load_full().expect("published");
    let c = w.cmaf.as_ref().expect("a CMAF rendition");
    let m = match parse(&c.playlist).unwrap() {
        Playlist::Media(m) => m,
        other => panic!("{other:?}"),
    };
    let ts = media(&w);
    assert!(m.version >= 7);
    // Every segment listed in MPEG-TS is listed in CMAF, under the same number.
    assert_eq!(m.media_sequence, ts.media_sequence);
    assert_eq!(m.segments.len(), ts.segments.len());
    let map = m.segments[0]
        .map
        .as_ref()
        .expect("EXT-X-MAP on the first segment");
    assert_eq!(map.uri, "init-1.mp4");
    assert!(m.segments[1..].iter().all(|s| s.map.is_none()));
    let init = c.init(1).expect("the init segment is fetchable");
    assert_eq!(&init.bytes[4..8], b"ftyp");
    assert_eq!(init.codecs.len(), 2, "{:?}", init.codecs);
    assert!(init.codecs[0].starts_with("avc1.") && init.codecs[1] == "mp4a.40.2");
    let mut file = init.bytes.to_vec();
    for (s, t) in m.segments.iter().zip(&ts.segments) {
        let sequence: u64 = s.uri.trim_end_matches(".m4s").parse().unwrap();
        assert_eq!(s.uri, format!("{sequence}.m4s"));
        assert_eq!(s.duration, t.duration);
        let segment = w.segment(sequence).unwrap();
        let fragments = &segment.cmaf.as_ref().unwrap().bytes;
        assert_eq!(&fragments[4..8], b"moof");
        // Its parts are its fragments (a video and an audio one each); the segment has the
        // video ones first, then the audio ones: each track's alone is a DASH segment.
        let c = segment.cmaf.as_ref().unwrap();
        for track in [cmaf::TrackKind::Video, cmaf::TrackKind::Audio] {
            assert_eq!(&c.track(track)[4..8], b"moof");
        }
        if !s.parts.is_empty() {
            assert_eq!(s.parts.len(), t.parts.len());
            let mut length = 0;
            for (i, p) in s.parts.iter().enumerate() {
                assert_eq!(p.uri, format!("{sequence}.{i}.m4s"));
                let part = w.part(sequence, i as u32).unwrap().cmaf.clone().unwrap();
                assert_eq!(&part[4..8], b"moof");
                length += part.len();
            }
            assert!(
                length == fragments.len(),
                "parts {length} bytes, segment {}",
                fragments.len()
            );
        }
        file.extend_from_slice(fragments);
    }
    assert!(m.preload_hints[0].uri.ends_with(".m4s"));
    // ffprobe reads the init segment and the listed segments as one stream.
    let path = std::env::temp_dir().join(format!("shardcast-cmaf-{}.mp4", std::process::id()));
    std::fs::write(&path, &file).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe must be installed");
    let _ = std::fs::remove_file(&path);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("h264,256,144") && said.contains("aac"),
        "{said}"
    );
}

#[test]
fn a_dvr_window_keeps_its_seconds_and_time_shifted_playlists_come_from_it() {
    let settings = HlsSettings {
        segment_duration_s: 2.0,
        playlist_segments: 3,
        segment_grace_s: 4.0,
        dvr_s: 20.0,
        ..HlsSettings::default()
    };
    let (slot, _) = package(settings, SegmentSend::Copy, 40);
    let w = slot.load_full().expect("published");
    let kept = w.segments();
    let newest = kept.last().unwrap();
    let oldest = kept.first().unwrap();
    // 20 s kept (and what the grace period holds on to), more than the live window.
    let span = newest.program_date_time_ms - oldest.program_date_time_ms;
    assert!((18_000..=24_000).contains(&span), "{span} ms kept");
    assert!(kept.len() > 3 + 2, "{}", kept.len());
    let now = newest.program_date_time_ms + newest.duration().as_millis() as i64;
    let shifted = |shift| match parse(w.shifted(shift, now).as_bytes()).unwrap() {
        Playlist::Media(m) => m,
        other => panic!("{other:?}"),
    };
    // Ten seconds back: the live window as it was then.
    let back = shifted(TimeShift::Back(10_000));
    assert_eq!(back.segments.len(), 3);
    let last = back.segments.last().unwrap();
    let last_end = last.program_date_time.unwrap().unix_millis + last.duration.as_millis() as i64;
    assert!(
        (now - 10_000 - 2_100..=now - 10_000).contains(&last_end),
        "ends at {last_end}, now {now}"
    );
    let first_sequence: u64 = back.segments[0]
        .uri
        .trim_end_matches(".ts")
        .parse()
        .unwrap();
    assert_eq!(back.media_sequence, first_sequence);
    assert!(back.end_list.eq(&false));
    // Further back than kept: the oldest window there is.
    let oldest_window = shifted(TimeShift::Back(3_600_000));
    assert_eq!(oldest_window.media_sequence, oldest.sequence);
    // From a moment: every segment from the one holding it to the newest, starting there.
    let at = newest.program_date_time_ms - 15_000;
    let text = w.shifted(TimeShift::From(at), now);
    assert!(
        text.contains("#EXT-X-START:TIME-OFFSET=0,PRECISE=YES\n"),
        "{text}"
    );
    let from = shifted(TimeShift::From(at));
    let first = &from.segments[0];
    let start = first.program_date_time.unwrap().unix_millis;
    assert!(start <= at && at < start + first.duration.as_millis() as i64);
    assert_eq!(
        from.segments.last().unwrap().uri,
        format!("{}.ts", newest.sequence)
    );
    // None back: the live playlist's segments.
    let live = shifted(TimeShift::Back(0));
    assert_eq!(live.media_sequence, media(&w).media_sequence);
    // A moment further back than a playlist may list: the newest that many, still starting
    // at its first, and written as the unbounded one writes them.
    let bounded = w.shifted_within(TimeShift::From(at), now, 4);
    let Playlist::Media(bounded) = parse(bounded.as_bytes()).unwrap() else {
        panic!("{bounded}")
    };
    assert_eq!(bounded.segments.len(), 4);
    assert_eq!(
        bounded.segments[..],
        from.segments[from.segments.len() - 4..]
    );
    assert_eq!(
        bounded.media_sequence,
        from.media_sequence + from.segments.len() as u64 - 4
    );
}

#[test]
fn start_is_how_far_back_or_a_moment() {
    assert_eq!(TimeShift::parse("-300"), Some(TimeShift::Back(300_000)));
    assert_eq!(TimeShift::parse("-300s"), Some(TimeShift::Back(300_000)));
    assert_eq!(TimeShift::parse("-5m"), Some(TimeShift::Back(300_000)));
    assert_eq!(TimeShift::parse("-1.5h"), Some(TimeShift::Back(5_400_000)));
    assert_eq!(
        TimeShift::parse("2026-12-01T10:00:00Z"),
        Some(TimeShift::From(1_796_119_200_000))
    );
    for bad in [
        "",
        "-",
        "-5d",
        "-x",
        "300",
        "--5",
        "-1e300h",
        "yesterday",
        "-NaN",
    ] {
        assert_eq!(TimeShift::parse(bad), None, "{bad}");
    }
}
