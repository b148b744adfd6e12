//! HLS (RFC 8216) from the stream's published window: the media and multivariant playlists
//! and the sealed segments, answered as documents (the connection handles conditional
//! requests and ranges). A request carrying a token gets playlists with the token in every
//! URI, so that its segment requests are the same session's.

use super::{MediaFile, Output, Playlist, Published};
use crate::http::{Body, Document, RequestHead, Route, Status};
use crate::session::Protocol;
use crate::stream::StreamCounters;
use std::borrow::Cow;

/// How long caches may keep a segment: its bytes never change under its URL.
const SEGMENT_CACHE_CONTROL: &str = "public, max-age=86400, immutable";

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// Longest media sequence number in a segment's name (`u64::MAX` has 20 digits).
const MAX_SEQUENCE_DIGITS: usize = 19;

/// The HLS output.
pub(super) struct Hls;

impl Output for Hls {
    fn name(&self) -> &'static str {
        "hls"
    }

    fn protocol(&self) -> Protocol {
        Protocol::Hls
    }

    /// `{stream}/index.m3u8`, `{stream}/master.m3u8`, `{stream}/{sequence}.ts`.
    fn parse<'a>(&self, path: &'a str) -> Option<(&'a str, MediaFile)> {
        let (stream, file) = path.split_once('/')?;
        if stream.is_empty() {
            return None;
        }
        let file = match file {
            "index.m3u8" => MediaFile::Playlist(Playlist::Media),
            "master.m3u8" => MediaFile::Playlist(Playlist::Master),
            other => other
                .strip_suffix(".ts")
                .filter(|n| {
                    !n.is_empty()
                        && n.len() <= MAX_SEQUENCE_DIGITS
                        && n.bytes().all(|b| b.is_ascii_digit())
                })
                .and_then(|n| n.parse().ok())
                .map(MediaFile::Segment)?,
        };
        Some((stream, file))
    }

    fn answer(&self, stream: &Published<'_>, file: MediaFile, head: &RequestHead) -> Route {
        StreamCounters::add(&stream.counters.hls_requests, 1);
        let window = stream.hls.load_full();
        match (file, window) {
            (MediaFile::Playlist(_), None) => Route::Status(Status {
                code: 503,
                text: Cow::Borrowed("stream not ready: no segment yet\n"),
                headers: "Cache-Control: no-store\r\nRetry-After: 2\r\n",
            }),
            (MediaFile::Playlist(which), Some(w)) => {
                let body = match which {
                    Playlist::Media => &w.playlist,
                    Playlist::Master => &w.master,
                };
                match token_pair(&head.query) {
                    // The player's token goes into every URI of the playlist, so that its
                    // segment requests carry it too (one session); such a playlist is the
                    // viewer's own.
                    Some(pair) => Route::Document(Document {
                        body: Body::Bytes(crate::hls::with_query(body, pair)),
                        etag: None,
                        personal: true,
                        ..Document::new(PLAYLIST_TYPE, w.playlist_cache_control)
                    }),
                    None => Route::Document(Document {
                        body: Body::Bytes(body.clone()),
                        etag: Some(w.playlist_etag.clone()),
                        ..Document::new(PLAYLIST_TYPE, w.playlist_cache_control)
                    }),
                }
            }
            (MediaFile::Segment(sequence), window) => {
                match window.as_ref().and_then(|w| w.segment(sequence)) {
                    Some(segment) => Route::Document(Document {
                        etag: Some(segment.etag.clone()),
                        last_modified: Some(segment.last_modified.clone()),
                        ranges: true,
                        body: Body::Segment(segment.clone()),
                        ..Document::new("video/mp2t", SEGMENT_CACHE_CONTROL)
                    }),
                    None => Route::Status(Status {
                        code: 404,
                        text: Cow::Owned(format!("segment {sequence} is not available\n")),
                        headers: "Cache-Control: no-store\r\n",
                    }),
                }
            }
            (MediaFile::Live, _) => Route::NotFound,
        }
    }
}

/// The `token=…` (or `tkn=…`) pair of a query, as the request wrote it.
fn token_pair(query: &str) -> Option<&str> {
    query
        .split('&')
        .find(|p| p.starts_with("token=") || p.starts_with("tkn="))
        .filter(|p| p.len() <= 600)
}
