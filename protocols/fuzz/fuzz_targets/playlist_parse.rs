//! Arbitrary bytes through the playlist parser, whole and split; whatever parses is written
//! and parsed again. Nothing may panic, and the split must not change the result. The same
//! bytes through the proxy's URI rewrite: it keeps every line, and whatever a replacement
//! holds, no line more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast_protocols::hls::{parse, rewrite_uris, Playlist, PlaylistLimits, PlaylistParser};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let lines = |b: &[u8]| b.iter().filter(|c| **c == b'\n').count();
    let rewritten = rewrite_uris(data, |uri, _| format!("\"\n#{uri}\r\n"));
    assert_eq!(lines(&rewritten), lines(data));

    let whole = parse(data);
    let at = usize::from(split) * data.len() / 256;
    let mut p = PlaylistParser::new(PlaylistLimits::default());
    let split_result = p
        .push(&data[..at])
        .and_then(|()| p.push(&data[at..]))
        .and_then(|()| p.finish());
    assert_eq!(whole.is_ok(), split_result.is_ok());
    if let (Ok(a), Ok(b)) = (&whole, &split_result) {
        assert_eq!(a, b);
    }
    let text = match whole {
        Ok(Playlist::Media(m)) => m.to_string(),
        Ok(Playlist::Multivariant(m)) => m.to_string(),
        Err(_) => return,
    };
    let _ = parse(text.as_bytes());
});
