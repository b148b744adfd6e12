//! HLS (RFC 8216) from the stream's published window: the media and multivariant playlists
//! and the sealed segments, answered as documents (the connection handles conditional
//! requests and ranges). A request carrying a token gets playlists with the token in every
//! URI, so that its segment requests are the same session's.
//!
//! Low-latency HLS (draft-pantos-hls-rfc8216bis) when the stream has parts: the parts
//! (`{sequence}.{index}.ts`), playlist requests with delivery directives (`_HLS_msn`,
//! `_HLS_part`: held on the shard until what they name exists, at most three target
//! durations, then 503; too far ahead, 400; `_HLS_skip`: the delta update), and requests for
//! the hinted part, held until it is complete.

use super::{MediaFile, Output, Playlist, Published};
use crate::hls::low_latency::{Hold, Reload};
use crate::hls::HlsWindow;
use crate::http::{Body, Document, RequestHead, Route, Status};
use crate::session::Protocol;
use crate::stream::StreamCounters;
use std::borrow::Cow;

/// How long caches may keep a segment: its bytes never change under its URL.
const SEGMENT_CACHE_CONTROL: &str = "public, max-age=86400, immutable";

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// How long caches may keep the answer to a blocking playlist request (under its URL with
/// the directives): it lists at least what was asked for.
const BLOCKING_PLAYLIST_CACHE_CONTROL: &str = "public, max-age=2";

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

    /// `{stream}/index.m3u8`, `{stream}/master.m3u8`, `{stream}/{sequence}.ts`,
    /// `{stream}/{sequence}.{part}.ts`.
    fn parse<'a>(&self, path: &'a str) -> Option<(&'a str, MediaFile)> {
        let (stream, file) = path.split_once('/')?;
        if stream.is_empty() {
            return None;
        }
        let file = match file {
            "index.m3u8" => MediaFile::Playlist(Playlist::Media),
            "master.m3u8" => MediaFile::Playlist(Playlist::Master),
            other => {
                let name = other.strip_suffix(".ts")?;
                match name.split_once('.') {
                    None => MediaFile::Segment(number(name)?),
                    Some((sequence, part)) => {
                        MediaFile::Part(number(sequence)?, u32::try_from(number(part)?).ok()?)
                    }
                }
            }
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
            (MediaFile::Playlist(Playlist::Media), Some(w)) if w.low_latency.is_some() => {
                low_latency_playlist(stream, &w, head)
            }
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
                    None => not_available("segment", sequence.to_string()),
                }
            }
            (MediaFile::Part(sequence, index), window) => {
                let Some(w) = window else {
                    return not_available("part", format!("{sequence}.{index}"));
                };
                if let Some(part) = w.part(sequence, index) {
                    return Route::Document(Document {
                        etag: Some(part.etag.clone()),
                        ranges: true,
                        body: Body::Bytes(part.body.clone()),
                        ..Document::new("video/mp2t", SEGMENT_CACHE_CONTROL)
                    });
                }
                match w.low_latency {
                    // The hinted part (or one soon after): answered once it is complete.
                    Some(ll) if ll.part_may_come(sequence, index) => Route::Hold {
                        stream: stream.slot,
                        limit: ll.hold_limit(),
                    },
                    _ => not_available("part", format!("{sequence}.{index}")),
                }
            }
            (MediaFile::Live, _) => Route::NotFound,
        }
    }
}

/// A segment or part that is not (or no longer) held: 404.
fn not_available(what: &str, name: String) -> Route {
    Route::Status(Status {
        code: 404,
        text: Cow::Owned(format!("{what} {name} is not available\n")),
        headers: "Cache-Control: no-store\r\n",
    })
}

/// A decimal number of at most [`MAX_SEQUENCE_DIGITS`] digits.
fn number(text: &str) -> Option<u64> {
    if text.is_empty()
        || text.len() > MAX_SEQUENCE_DIGITS
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    text.parse().ok()
}

/// A low-latency media playlist request: with delivery directives, held until what they
/// name exists (400 when it is too far ahead); with `_HLS_skip`, the delta update.
fn low_latency_playlist(stream: &Published<'_>, w: &HlsWindow, head: &RequestHead) -> Route {
    let Some(ll) = w.low_latency else {
        return Route::NotFound;
    };
    let reload = match Reload::parse(&head.query) {
        Ok(r) => r,
        Err(why) => {
            return Route::Status(Status {
                code: 400,
                text: Cow::Owned(format!("{}\n", why.0)),
                headers: "Cache-Control: no-store\r\n",
            })
        }
    };
    if let Some(msn) = reload.msn {
        match ll.hold(msn, reload.part) {
            Hold::Ready => {}
            Hold::Wait => {
                return Route::Hold {
                    stream: stream.slot,
                    limit: ll.hold_limit(),
                }
            }
            Hold::TooFar => {
                return Route::Status(Status {
                    code: 400,
                    text: Cow::Owned(format!(
                        "_HLS_msn={msn} _HLS_part={} is too far ahead of the stream (segment {}, part {} of {})\n",
                        reload.part.map_or("-".into(), |p| p.to_string()),
                        ll.last_segment,
                        ll.building_parts,
                        ll.building
                    )),
                    headers: "Cache-Control: no-store\r\n",
                })
            }
        }
    }
    let (body, etag) = match (&w.delta, reload.skip) {
        (Some(delta), true) => (delta, format!("{}d", w.playlist_etag)),
        _ => (&w.playlist, w.playlist_etag.clone()),
    };
    // An answer to a blocking request holds at least what it named: a cache may keep it
    // under its URL (directives included) for a while; a plain request's changes each part.
    let cache_control = if reload.blocks() {
        BLOCKING_PLAYLIST_CACHE_CONTROL
    } else {
        w.playlist_cache_control
    };
    match token_pair(&head.query) {
        Some(pair) => Route::Document(Document {
            body: Body::Bytes(crate::hls::with_query(body, pair)),
            etag: None,
            personal: true,
            ..Document::new(PLAYLIST_TYPE, cache_control)
        }),
        None => Route::Document(Document {
            body: Body::Bytes(body.clone()),
            etag: Some(etag),
            ..Document::new(PLAYLIST_TYPE, cache_control)
        }),
    }
}

/// The `token=…` (or `tkn=…`) pair of a query, as the request wrote it.
fn token_pair(query: &str) -> Option<&str> {
    query
        .split('&')
        .find(|p| p.starts_with("token=") || p.starts_with("tkn="))
        .filter(|p| p.len() <= 600)
}
