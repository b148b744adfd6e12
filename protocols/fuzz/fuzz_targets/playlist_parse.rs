//! Arbitrary bytes through the playlist parser, whole and split; whatever parses is written
//! and parsed again. Nothing may panic, and the split must not change the result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast_protocols::hls::{parse, Playlist, PlaylistLimits, PlaylistParser};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
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
