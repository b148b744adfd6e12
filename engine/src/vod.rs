//! Recordings played back: a finished recording of a stream as VOD HLS, its player page and
//! its state, on the viewers' port.
//!
//! ```text
//!  /vod/{stream}/{file}/index.m3u8   the recording as a VOD playlist (PLAYLIST-TYPE VOD)
//!  /vod/{stream}/{file}/{n}.ts       its segment n: a byte range of the file
//!  /vod/{stream}/{file}/info.json    what the player page asks (state "recorded")
//!  /vod/{stream}/{file}.html         the player page
//! ```
//!
//! `{file}` is a file the stream's `record` path names (as `GET
//! /api/v1/streams/{name}/recordings` lists them); its whole file is downloaded from the API
//! (`GET /api/v1/streams/{name}/recordings/{file}`). Viewers of a recording are sessions of
//! its stream, gated by the stream's access.
//!
//! Nothing here reads the disk on a shard: the shard holds the request and asks the proxy's
//! fetcher for the resource (a key that names the file and the part of it), which reads it
//! on a blocking thread and answers with shared bytes kept in the proxy's cache
//! (`proxy_cache_bytes`, least recently used first), as for a proxied upstream. The
//! segments are cut from the file's index ([`shardcast_protocols::ts::index`]: written by the
//! recorder beside the file, or made by reading the file once when it is missing) at access
//! points about [`TARGET_MS`] apart, with PROGRAM-DATE-TIME from when ingest received them
//! and a discontinuity where the source restarted inside the file.

use crate::proxy::cache::{Cache, Lookup, Object};
use bytes::Bytes;
use shardcast_protocols::hls::{DateTime, MediaPlaylist, MediaSegment, PlaylistType};
use shardcast_protocols::ts::index::{self, Index};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Segments of a recording's playlist are cut at the first access point this long (media
/// time) after the previous cut.
pub const TARGET_MS: u64 = 6_000;
/// How long a playlist, index or segment read from a recording is served before it is read
/// again (a file that retention removed stops being served by then).
const FRESH: Duration = Duration::from_secs(60);
/// What the cache keys of recordings begin with (a proxy's keys begin with its name, which
/// has no NUL).
const KEY_PREFIX: &str = "\0vod\n";
/// A segment longer than this is refused (an index that lists too few access points).
const MAX_SEGMENT: u64 = 256 << 20;

/// What a path under `/vod/` asks of a recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `index.m3u8`.
    Playlist,
    /// `{n}.ts`.
    Segment(u64),
    /// `info.json`.
    Info,
    /// `{file}.html`: the player page.
    Page,
}

impl Part {
    fn key_word(self) -> String {
        match self {
            Part::Playlist => "m3u8".into(),
            Part::Segment(n) => format!("seg {n}"),
            Part::Info => "info".into(),
            Part::Page => "page".into(),
        }
    }

    fn from_key_word(word: &str) -> Option<Part> {
        match word {
            "m3u8" => Some(Part::Playlist),
            "info" => Some(Part::Info),
            w => w.strip_prefix("seg ")?.parse().ok().map(Part::Segment),
        }
    }
}

/// A path under `/vod/`, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VodPath<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The recording's file name.
    pub file: &'a str,
    /// What of it.
    pub part: Part,
}

/// Whether `name` may be a recording's file name: no path, no hidden or unfinished file.
pub fn plausible_file(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.ends_with(".part")
        && !name.ends_with(".idx")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+:".contains(&b))
}

/// What `rest` (the path after `/vod/`) asks for; `None`: nothing served here.
pub fn parse(rest: &str) -> Option<VodPath<'_>> {
    let (stream, rest) = rest.split_once('/')?;
    if stream.is_empty() {
        return None;
    }
    let (file, part) = match rest.split_once('/') {
        Some((file, "index.m3u8")) => (file, Part::Playlist),
        Some((file, "info.json")) => (file, Part::Info),
        Some((file, segment)) => {
            let n = segment.strip_suffix(".ts")?;
            if n.is_empty() || n.len() > 9 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (file, Part::Segment(n.parse().ok()?))
        }
        None => (rest.strip_suffix(".html")?, Part::Page),
    };
    plausible_file(file).then_some(VodPath { stream, file, part })
}

/// The cache key of `part` of the recording at `path`.
pub fn key(path: &Path, part: Part) -> String {
    format!("{KEY_PREFIX}{}\n{}", part.key_word(), path.display())
}

/// Whether `key` names a part of a recording (the fetcher hands those to [`load`]).
pub fn is_key(key: &str) -> bool {
    key.starts_with(KEY_PREFIX)
}

fn from_key(key: &str) -> Option<(Part, PathBuf)> {
    let (word, path) = key.strip_prefix(KEY_PREFIX)?.split_once('\n')?;
    Some((Part::from_key_word(word)?, PathBuf::from(path)))
}

/// What `part` of recording `path` (of `stream`) is, read from the disk (blocking: on a
/// thread that may wait for it). Indexes made by reading a file are kept in `cache`.
pub fn load(key: &str, cache: &Cache) -> Object {
    let Some((part, path)) = from_key(key) else {
        return Object::error(400, "not a recording's part");
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Object::error(404, "no such recording")
        }
        Err(e) => {
            tracing::warn!("recording {}: cannot open: {e}", path.display());
            return Object::error(500, "the recording cannot be read");
        }
    };
    let len = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        _ => return Object::error(404, "no such recording"),
    };
    let index = match index_of(&path, &file, len, cache) {
        Ok(index) => index,
        Err(e) => {
            tracing::warn!("recording {}: cannot index: {e}", path.display());
            return Object::error(500, "the recording cannot be read");
        }
    };
    let segments = index.segments(TARGET_MS);
    match part {
        Part::Playlist => fresh(
            Bytes::from(playlist(&segments).to_string()),
            "application/vnd.apple.mpegurl",
        ),
        Part::Info => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let info = serde_json::json!({
                "stream": name,
                "state": "recorded",
                "duration_s": index.media_ms as f64 / 1000.0,
                "bytes": len,
                "segments": segments.len(),
                "outputs": { "hls": format!("{name}/index.m3u8") },
            });
            fresh(Bytes::from(info.to_string()), "application/json")
        }
        Part::Segment(n) => {
            let Some(segment) = usize::try_from(n).ok().and_then(|n| segments.get(n)) else {
                return Object::error(404, "no such segment");
            };
            let length = segment.range.end - segment.range.start;
            if length > MAX_SEGMENT {
                return Object::error(500, "the recording's segment is too long to serve");
            }
            let mut bytes = vec![0u8; length as usize];
            if let Err(e) = file.read_exact_at(&mut bytes, segment.range.start) {
                tracing::warn!("recording {}: cannot read: {e}", path.display());
                return Object::error(500, "the recording cannot be read");
            }
            fresh(Bytes::from(bytes), "video/mp2t")
        }
        Part::Page => Object::error(400, "not a recording's part"),
    }
}

fn fresh(body: Bytes, content_type: &'static str) -> Object {
    Object {
        status: 200,
        body,
        content_type,
        fresh_until: Some(Instant::now() + FRESH),
        cache_control: "public, max-age=60",
        children: Vec::new(),
    }
}

/// The index of the recording at `path` (`len` bytes): its index file when that describes
/// it, else made by reading the file (kept in `cache`).
fn index_of(path: &Path, file: &std::fs::File, len: u64, cache: &Cache) -> std::io::Result<Index> {
    let mut idx = path.as_os_str().to_owned();
    idx.push(".idx");
    if let Ok(text) = std::fs::read_to_string(&idx) {
        match Index::parse(&text) {
            Ok(index) if index.bytes == len => return Ok(index),
            Ok(_) => tracing::warn!(
                "recording {}: its index is of another length: reading the file",
                path.display()
            ),
            Err(e) => tracing::warn!("recording {}: {e}: reading the file", path.display()),
        }
    }
    let key = format!("{KEY_PREFIX}scan {len}\n{}", path.display());
    if let Lookup::Fresh(object) = cache.get(&key, Instant::now()) {
        if let Ok(index) = Index::parse(&String::from_utf8_lossy(&object.body)) {
            return Ok(index);
        }
    }
    let index = index::scan(file, len)?;
    cache.insert(
        key.into(),
        Arc::new(fresh(Bytes::from(index.to_text()), "text/plain")),
    );
    Ok(index)
}

/// The VOD playlist of `segments` (`{n}.ts`, relative to the playlist).
fn playlist(segments: &[index::VodSegment]) -> MediaPlaylist {
    let mut playlist = MediaPlaylist {
        playlist_type: Some(PlaylistType::Vod),
        // Each begins at an access point (the first at the file's start, where recordings
        // begin with one).
        independent_segments: true,
        end_list: true,
        segments: segments
            .iter()
            .enumerate()
            .map(|(n, s)| MediaSegment {
                uri: format!("{n}.ts"),
                duration: Duration::from_millis(s.duration_ms),
                discontinuity: s.discontinuity,
                program_date_time: s.wall_ms.map(DateTime::from_unix_millis),
                ..MediaSegment::default()
            })
            .collect(),
        ..MediaPlaylist::default()
    };
    playlist.target_duration = playlist.required_target_duration().max(1);
    playlist
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_a_recording_and_its_part() {
        let p = parse("cam/cam-20261201-010203.ts/index.m3u8").unwrap();
        assert_eq!(
            (p.stream, p.file, p.part),
            ("cam", "cam-20261201-010203.ts", Part::Playlist)
        );
        assert_eq!(parse("cam/a.ts/12.ts").unwrap().part, Part::Segment(12));
        assert_eq!(parse("cam/a.ts/info.json").unwrap().part, Part::Info);
        assert_eq!(parse("cam/a.ts.html").unwrap().part, Part::Page);
        for bad in [
            "cam",
            "cam/",
            "/a.ts/index.m3u8",
            "cam/../index.m3u8",
            "cam/.hidden/index.m3u8",
            "cam/a.ts.part/index.m3u8",
            "cam/a.ts.idx/0.ts",
            "cam/a.ts/x.ts",
            "cam/a.ts/1234567890.ts",
            "cam/a.ts/-1.ts",
            "cam/a b.ts/index.m3u8",
            "cam/a.ts",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_name_the_file_and_the_part() {
        let path = Path::new("/rec/cam/a.ts");
        for part in [Part::Playlist, Part::Info, Part::Segment(3)] {
            let k = key(path, part);
            assert!(is_key(&k));
            assert_eq!(from_key(&k), Some((part, path.to_owned())));
        }
        assert!(!is_key("news\nP\nhttp://x/"));
    }
}
