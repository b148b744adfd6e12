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

use super::{CmafFile, MediaFile, Output, Playlist, Published};
use crate::hls::cmaf::TrackKind;
use crate::hls::low_latency::{Hold, Reload};
use crate::hls::HlsWindow;
use crate::http::{Body, Document, RequestHead, Route, Status};
use crate::session::Protocol;
use crate::stream::StreamCounters;
use bytes::Bytes;
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
    /// `{stream}/{sequence}.{part}.ts`, and the CMAF rendition's under `{stream}/cmaf/`:
    /// `index.m3u8`, `master.m3u8`, `init-{n}.mp4`, `{sequence}.m4s`, `{sequence}.{part}.m4s`.
    fn parse<'a>(&self, path: &'a str) -> Option<(&'a str, MediaFile)> {
        let (stream, file) = path.split_once('/')?;
        if stream.is_empty() {
            return None;
        }
        if file == "manifest.mpd" {
            return Some((stream, MediaFile::Cmaf(CmafFile::Manifest)));
        }
        if let Some(file) = file.strip_prefix("cmaf/") {
            let file = match file {
                "index.m3u8" => CmafFile::Playlist(Playlist::Media),
                "master.m3u8" => CmafFile::Playlist(Playlist::Master),
                other => match (other.strip_prefix("init-"), track_name(other)) {
                    (Some(init), None) => CmafFile::Init(number(init.strip_suffix(".mp4")?)?),
                    (Some(_), Some((name, track))) => CmafFile::TrackInit(
                        number(name.strip_prefix("init-")?.strip_suffix(".mp4")?)?,
                        track,
                    ),
                    (None, Some((name, track))) => {
                        CmafFile::TrackSegment(number(name.strip_suffix(".m4s")?)?, track)
                    }
                    (None, None) => match media_name(other, ".m4s")? {
                        (sequence, None) => CmafFile::Segment(sequence),
                        (sequence, Some(part)) => CmafFile::Part(sequence, part),
                    },
                },
            };
            return Some((stream, MediaFile::Cmaf(file)));
        }
        let file = match file {
            "index.m3u8" => MediaFile::Playlist(Playlist::Media),
            "master.m3u8" => MediaFile::Playlist(Playlist::Master),
            other => match media_name(other, ".ts")? {
                (sequence, None) => MediaFile::Segment(sequence),
                (sequence, Some(part)) => MediaFile::Part(sequence, part),
            },
        };
        Some((stream, file))
    }

    fn answer(&self, stream: &Published<'_>, file: MediaFile, head: &RequestHead) -> Route {
        StreamCounters::add(&stream.counters.hls_requests, 1);
        let Some(w) = stream.hls.load_full() else {
            return match file {
                MediaFile::Playlist(_) => not_ready(),
                MediaFile::Cmaf(CmafFile::Playlist(_) | CmafFile::Manifest) if stream.cmaf => {
                    not_ready()
                }
                MediaFile::Cmaf(_) if !stream.cmaf => Route::NotFound,
                _ => not_available("segment", "any".into()),
            };
        };
        match file {
            MediaFile::Playlist(which) if time_shift(&head.query).is_some() => {
                shifted(stream, &w, which, head)
            }
            MediaFile::Playlist(which) => {
                let playlists = Playlists {
                    media: &w.playlist,
                    master: &w.master,
                    delta: w.delta.as_ref(),
                    etag: &w.playlist_etag,
                };
                playlist(stream, &w, &playlists, which, head)
            }
            MediaFile::Segment(sequence) => match w.segment(sequence) {
                Some(segment) => Route::Document(Document {
                    etag: Some(segment.etag.clone()),
                    last_modified: Some(segment.last_modified.clone()),
                    ranges: true,
                    body: Body::Segment(segment.clone()),
                    ..Document::new("video/mp2t", SEGMENT_CACHE_CONTROL)
                }),
                None => not_available("segment", sequence.to_string()),
            },
            MediaFile::Part(sequence, index) => match w.part(sequence, index) {
                Some(part) => Route::Document(Document {
                    etag: Some(part.etag.clone()),
                    ranges: true,
                    body: Body::Bytes(part.body.clone()),
                    ..Document::new("video/mp2t", SEGMENT_CACHE_CONTROL)
                }),
                None => part_to_come(stream, &w, sequence, index),
            },
            MediaFile::Cmaf(file) => cmaf(stream, &w, file, head),
            MediaFile::Live => Route::NotFound,
        }
    }
}

/// The `start=` field of a query, as it came (still URL-encoded).
fn time_shift(query: &str) -> Option<&str> {
    query.split('&').find(|f| f.starts_with("start="))
}

/// A time-shifted playlist (`?start=`, see [`HlsWindow::shifted`]): the multivariant
/// playlist passes `start=` on to its media playlist; the media playlist is made for the
/// request from the segments kept (the stream's `dvr` window).
fn shifted(stream: &Published<'_>, w: &HlsWindow, which: Playlist, head: &RequestHead) -> Route {
    let pair = time_shift(&head.query).unwrap_or_default();
    let value = form_urlencoded::parse(pair.as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let Some(shift) = crate::hls::TimeShift::parse(&value) else {
        return Route::Status(Status {
            code: 400,
            text: Cow::Borrowed(
                "start= is how far back (-300, -300s, -5m, -2h) or an ISO 8601 time (2026-12-01T10:00:00Z)\n",
            ),
            headers: "Cache-Control: no-store\r\n".into(),
        });
    };
    let body = match which {
        Playlist::Master => crate::hls::with_query(&w.master, pair),
        Playlist::Media => Bytes::from(w.shifted(shift, stream.unix_ms)),
    };
    let (body, personal) = match crate::http::token_pair(&head.query) {
        Some(token) => (crate::hls::with_query(&body, token), true),
        None => (body, false),
    };
    Route::Document(Document {
        body: Body::Bytes(body),
        etag: None,
        personal,
        ..Document::new(PLAYLIST_TYPE, w.playlist_cache_control)
    })
}

/// A request of the CMAF rendition.
fn cmaf(stream: &Published<'_>, w: &HlsWindow, file: CmafFile, head: &RequestHead) -> Route {
    let Some(c) = &w.cmaf else {
        return match file {
            // A stream with no CMAF rendition (yet, or at all).
            CmafFile::Playlist(_) | CmafFile::Manifest if stream.cmaf => not_ready(),
            _ => Route::NotFound,
        };
    };
    match file {
        CmafFile::Playlist(which) => {
            let etag = format!("\"c{}", &w.playlist_etag[1..]);
            let playlists = Playlists {
                media: &c.playlist,
                master: &c.master,
                delta: c.delta.as_ref(),
                etag: &etag,
            };
            playlist(stream, w, &playlists, which, head)
        }
        CmafFile::Manifest => match &c.manifest {
            Some((before, after)) => {
                let now = shardcast_protocols::dash::IsoTime(stream.unix_ms).to_string();
                let mut body = Vec::with_capacity(before.len() + now.len() + after.len());
                body.extend_from_slice(before);
                body.extend_from_slice(now.as_bytes());
                body.extend_from_slice(after);
                Route::Document(Document {
                    body: Body::Bytes(Bytes::from(body)),
                    ..Document::new("application/dash+xml", w.playlist_cache_control)
                })
            }
            None => not_ready(),
        },
        CmafFile::Init(generation) => match c.init(generation) {
            Some(init) => Route::Document(Document {
                etag: Some(init.etag.clone()),
                ranges: true,
                body: Body::Bytes(init.bytes.clone()),
                ..Document::new("video/mp4", SEGMENT_CACHE_CONTROL)
            }),
            None => not_available("init segment", generation.to_string()),
        },
        CmafFile::TrackInit(generation, track) => {
            match c.init(generation).and_then(|i| Some((i, i.track(track)?))) {
                Some((init, bytes)) => Route::Document(Document {
                    etag: Some(format!("\"{}{}", track.name(), &init.etag[1..])),
                    ranges: true,
                    body: Body::Bytes(bytes.clone()),
                    ..Document::new(track_type(track), SEGMENT_CACHE_CONTROL)
                }),
                None => not_available("init segment", generation.to_string()),
            }
        }
        CmafFile::TrackSegment(sequence, track) => {
            match w
                .segment(sequence)
                .and_then(|s| Some((s, s.cmaf.as_ref()?)))
            {
                Some((segment, fragments)) => Route::Document(Document {
                    etag: Some(format!("\"{}{}", track.name(), &segment.etag[1..])),
                    last_modified: Some(segment.last_modified.clone()),
                    ranges: true,
                    body: Body::Bytes(fragments.track(track)),
                    ..Document::new(track_type(track), SEGMENT_CACHE_CONTROL)
                }),
                None => not_available("segment", sequence.to_string()),
            }
        }
        CmafFile::Segment(sequence) => {
            match w
                .segment(sequence)
                .and_then(|s| Some((s, s.cmaf.as_ref()?)))
            {
                Some((segment, fragments)) => Route::Document(Document {
                    etag: Some(format!("\"c{}", &segment.etag[1..])),
                    last_modified: Some(segment.last_modified.clone()),
                    ranges: true,
                    body: Body::Bytes(fragments.bytes.clone()),
                    ..Document::new("video/mp4", SEGMENT_CACHE_CONTROL)
                }),
                None => not_available("segment", sequence.to_string()),
            }
        }
        CmafFile::Part(sequence, index) => {
            match w
                .part(sequence, index)
                .and_then(|p| Some((p, p.cmaf.as_ref()?)))
            {
                Some((part, fragment)) => Route::Document(Document {
                    etag: Some(format!("\"c{}", &part.etag[1..])),
                    ranges: true,
                    body: Body::Bytes(fragment.clone()),
                    ..Document::new("video/mp4", SEGMENT_CACHE_CONTROL)
                }),
                None => part_to_come(stream, w, sequence, index),
            }
        }
    }
}

/// The Content-Type of one track's segments.
fn track_type(track: TrackKind) -> &'static str {
    match track {
        TrackKind::Video => "video/mp4",
        TrackKind::Audio => "audio/mp4",
    }
}

/// A part not there: held when it is the hinted one (or one soon after), else 404.
fn part_to_come(stream: &Published<'_>, w: &HlsWindow, sequence: u64, index: u32) -> Route {
    match w.low_latency {
        Some(ll) if ll.part_may_come(sequence, index) => Route::Hold {
            stream: stream.slot,
            limit: ll.hold_limit(),
        },
        _ => not_available("part", format!("{sequence}.{index}")),
    }
}

/// The stream has published nothing yet: 503, ask again soon.
fn not_ready() -> Route {
    Route::Status(Status {
        code: 503,
        text: Cow::Borrowed("stream not ready: no segment yet\n"),
        headers: "Cache-Control: no-store\r\nRetry-After: 2\r\n".into(),
    })
}

/// A segment or part that is not (or no longer) held: 404.
fn not_available(what: &str, name: String) -> Route {
    Route::Status(Status {
        code: 404,
        text: Cow::Owned(format!("{what} {name} is not available\n")),
        headers: "Cache-Control: no-store\r\n".into(),
    })
}

/// A name with `.video` or `.audio` before its extension: the name without it, and the track.
fn track_name(name: &str) -> Option<(String, TrackKind)> {
    let (stem, ext) = name.rsplit_once('.')?;
    let (stem, track) = stem.rsplit_once('.')?;
    let track = match track {
        "video" => TrackKind::Video,
        "audio" => TrackKind::Audio,
        _ => return None,
    };
    Some((format!("{stem}.{ext}"), track))
}

/// `{sequence}{ext}` or `{sequence}.{part}{ext}`.
fn media_name(name: &str, ext: &str) -> Option<(u64, Option<u32>)> {
    let name = name.strip_suffix(ext)?;
    match name.split_once('.') {
        None => Some((number(name)?, None)),
        Some((sequence, part)) => {
            Some((number(sequence)?, Some(u32::try_from(number(part)?).ok()?)))
        }
    }
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

/// One rendition's playlists in a window.
struct Playlists<'a> {
    media: &'a Bytes,
    master: &'a Bytes,
    delta: Option<&'a Bytes>,
    etag: &'a str,
}

/// A playlist request: the multivariant playlist, or the media playlist (low-latency:
/// with delivery directives held until what they name exists, 400 when it is too far
/// ahead; with `_HLS_skip`, the delta update).
fn playlist(
    stream: &Published<'_>,
    w: &HlsWindow,
    playlists: &Playlists<'_>,
    which: Playlist,
    head: &RequestHead,
) -> Route {
    let mut body = match which {
        Playlist::Media => playlists.media,
        Playlist::Master => playlists.master,
    };
    let mut etag = playlists.etag.to_owned();
    let mut cache_control = w.playlist_cache_control;
    if let (Playlist::Media, Some(ll)) = (which, w.low_latency) {
        let reload = match Reload::parse(&head.query) {
            Ok(r) => r,
            Err(why) => {
                return Route::Status(Status {
                    code: 400,
                    text: Cow::Owned(format!("{}\n", why.0)),
                    headers: "Cache-Control: no-store\r\n".into(),
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
                        headers: "Cache-Control: no-store\r\n".into(),
                    })
                }
            }
            // An answer to a blocking request holds at least what it named: a cache may
            // keep it under its URL (directives included) for a while.
            cache_control = BLOCKING_PLAYLIST_CACHE_CONTROL;
        }
        if let (Some(delta), true) = (playlists.delta, reload.skip) {
            body = delta;
            etag.push('d');
        }
    }
    match crate::http::token_pair(&head.query) {
        // The player's token goes into every URI of the playlist, so that its segment
        // requests carry it too (one session); such a playlist is the viewer's own.
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
