//! What browsers get: the player page (`/{stream}.html`), the embed script
//! (`/{stream}/embed.js`), the stream's info (`/{stream}/info.json`), hls.js
//! (`/player/hls-VERSION.min.js`) and dash.js (`/player/dash-VERSION.min.js`), served from
//! the binary so the page works offline.
//!
//! Both scripts come from the npm registry at build time (`engine/build.rs`, the versions
//! pinned by `player/package-lock.json`). The page plays HLS in MPEG-TS by default (hls.js
//! only where the browser has no native HLS); `?format=fmp4` plays the CMAF rendition's HLS,
//! `?format=dash` its DASH manifest with dash.js (loaded only then).
//! URLs in the page are relative, so it works behind any proxy path; the embed script finds
//! the server from its own address. What it does not do: decide who may watch (the control
//! plane's token checks), or know a public base URL yet (the control plane's setting).

use crate::hls::HlsWindow;
use crate::stream::StreamCounters;
use bytes::Bytes;
use serde::Serialize;
use std::sync::atomic::Ordering;

/// hls.js, minified, as npm installed it.
pub static HLSJS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hls.min.js"));

/// The hls.js version (its URL changes with it, so it can be cached for good).
pub const HLSJS_VERSION: &str = env!("SHARDCAST_HLSJS_VERSION");

/// Where hls.js is served, relative to the server root.
pub fn hlsjs_path() -> String {
    format!("player/hls-{HLSJS_VERSION}.min.js")
}

/// dash.js's media player, minified, as npm installed it.
pub static DASHJS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dash.mediaplayer.min.js"));

/// The dash.js version.
pub const DASHJS_VERSION: &str = env!("SHARDCAST_DASHJS_VERSION");

/// Where dash.js is served, relative to the server root.
pub fn dashjs_path() -> String {
    format!("player/dash-{DASHJS_VERSION}.min.js")
}

/// The player page of a stream.
pub fn page(stream: &str) -> String {
    include_str!("page.html")
        .replace("__STREAM__", stream)
        .replace("__HLSJS__", &hlsjs_path())
        .replace("__DASHJS__", &dashjs_path())
        .replace(
            "__PATHS__",
            r#"{ ts: "/master.m3u8", fmp4: "/cmaf/master.m3u8", dash: "/manifest.mpd" }"#,
        )
}

/// The player page of configured HLS proxy `name`, at `/proxy/{name}.html`: HLS only (the
/// upstream's playlists, through the proxy).
pub fn proxy_page(name: &str) -> String {
    include_str!("page.html")
        .replace("__STREAM__", name)
        .replace("__HLSJS__", &format!("../{}", hlsjs_path()))
        .replace("__DASHJS__", &format!("../{}", dashjs_path()))
        .replace("__PATHS__", r#"{ ts: ".m3u8" }"#)
}

/// The player page of recording `file` of a stream, at `/vod/{stream}/{file}.html`: its VOD
/// playlist in hls.js or the browser's own HLS, from the start; its state (`recorded`) from
/// `/vod/{stream}/{file}/info.json`.
pub fn recording_page(file: &str) -> String {
    include_str!("page.html")
        .replace("__STREAM__", file)
        .replace("__HLSJS__", &format!("../../{}", hlsjs_path()))
        .replace("__DASHJS__", &format!("../../{}", dashjs_path()))
        .replace("__PATHS__", r#"{ ts: "/index.m3u8" }"#)
}

/// What a proxied stream's player page asks about it (`/proxy/{name}/info.json`), from its
/// top playlist as the proxy last fetched it (`status` 200 with the playlist, or the error
/// viewers get): live when the upstream answered a playlist, waiting (with the reason)
/// otherwise.
pub fn proxy_info_json(name: &str, status: u16, body: &[u8], base: &str) -> Bytes {
    #[derive(Serialize)]
    struct ProxyInfo<'a> {
        stream: &'a str,
        proxied: bool,
        state: StreamState,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        outputs: ProxyOutputs,
    }
    #[derive(Serialize)]
    struct ProxyOutputs {
        hls: String,
        player: String,
    }
    let info = ProxyInfo {
        stream: name,
        proxied: true,
        state: if status == 200 {
            StreamState::Live
        } else {
            StreamState::Waiting
        },
        error: (status != 200)
            .then(|| format!("{status}: {}", String::from_utf8_lossy(body).trim_end())),
        outputs: ProxyOutputs {
            hls: format!("{base}proxy/{name}.m3u8"),
            player: format!("{base}proxy/{name}.html"),
        },
    };
    Bytes::from(serde_json::to_vec(&info).unwrap_or_else(|_| b"{}".to_vec()))
}

/// The embed script of a stream. `public_base` (with a trailing slash) overrides the address
/// the script was loaded from.
pub fn embed_js(stream: &str, public_base: Option<&str>) -> String {
    include_str!("embed.js")
        .replace("__STREAM__", stream)
        .replace("__BASE__", public_base.unwrap_or(""))
}

/// Whether a stream can be watched now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// No segment yet, or none for a while: the source is silent.
    Waiting,
    /// Segments are being made.
    Live,
}

/// A source is silent when the newest segment ended this long ago: two target durations (one
/// segment being cut, one more for a late keyframe) and a second.
fn silent_after_ms(window: &HlsWindow) -> i64 {
    (window.target_duration as i64 * 2 + 1) * 1000
}

/// The state of a stream from its newest window, at `now_ms` (UNIX ms).
pub fn state(window: Option<&HlsWindow>, now_ms: i64) -> StreamState {
    match live_until_ms(window) {
        Some(until) if now_ms <= until => StreamState::Live,
        _ => StreamState::Waiting,
    }
}

/// Until when (UNIX ms) the stream counts as live if no segment comes after this window;
/// `None` before its first segment.
pub fn live_until_ms(window: Option<&HlsWindow>) -> Option<i64> {
    let w = window?;
    let newest = w.segments().last()?;
    let ended_ms = newest.program_date_time_ms + newest.duration().as_millis() as i64;
    Some(ended_ms + silent_after_ms(w))
}

/// How many of the listed segments are from the newest discontinuity on.
fn since_discontinuity(w: &HlsWindow) -> usize {
    let all = w.segments();
    let listed = &all[all.len().saturating_sub(w.listed)..];
    listed
        .iter()
        .rposition(|s| s.discontinuity)
        .map_or(listed.len(), |i| listed.len() - i)
}

#[derive(Serialize)]
struct Info<'a> {
    stream: &'a str,
    state: StreamState,
    outputs: Outputs,
    tracks: Vec<Track>,
    /// Peak segment bitrate, bits per second (0 before the first segment).
    bitrate: u64,
    /// HLS target duration, seconds (0 before the first segment).
    target_duration: u64,
    /// Segments the live playlist lists now (players start a few segments from its end).
    segments: usize,
    /// Of those, the ones from the newest discontinuity on (a source that came back): a
    /// player that starts a few segments from the end starts after the discontinuity only
    /// once there are that many.
    segments_since_discontinuity: usize,
    /// Low-latency HLS: the part target in seconds (absent when the playlist has no parts).
    #[serde(skip_serializing_if = "Option::is_none")]
    part_target: Option<f64>,
    /// Progressive (HTTP-TS) viewers connected now.
    http_ts_viewers: u64,
}

#[derive(Serialize)]
struct Outputs {
    hls: String,
    hls_media: String,
    /// HLS with fMP4 segments and DASH, when the stream has a CMAF rendition.
    #[serde(skip_serializing_if = "Option::is_none")]
    hls_cmaf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dash: Option<String>,
    http_ts: String,
    player: String,
    embed: String,
}

/// A track of a stream, as info.json and the API describe it.
#[derive(Clone, Debug, Serialize)]
pub struct Track {
    /// `video` or `audio`.
    pub kind: &'static str,
    /// RFC 6381 codec string.
    pub codec: String,
    /// Video width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Video height.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// The tracks of the newest segment.
pub fn tracks(window: Option<&HlsWindow>) -> Vec<Track> {
    let mut tracks = Vec::new();
    if let Some(w) = window {
        if let Some(codec) = &w.media.video {
            tracks.push(Track {
                kind: "video",
                codec: codec.clone(),
                width: w.media.resolution.map(|r| r.0),
                height: w.media.resolution.map(|r| r.1),
            });
        }
        if let Some(codec) = &w.media.audio {
            tracks.push(Track {
                kind: "audio",
                codec: codec.clone(),
                width: None,
                height: None,
            });
        }
    }
    tracks
}

/// `/{stream}/info.json`. `base` is the server's URL with a trailing slash (the public base
/// URL, or one made from the request's Host), or `/` when neither is known.
pub fn info_json(
    stream: &str,
    window: Option<&HlsWindow>,
    counters: &StreamCounters,
    base: &str,
    now_ms: i64,
) -> Bytes {
    let info = Info {
        stream,
        state: state(window, now_ms),
        outputs: Outputs {
            hls: format!("{base}{stream}/master.m3u8"),
            hls_media: format!("{base}{stream}/index.m3u8"),
            hls_cmaf: window
                .filter(|w| w.cmaf.is_some())
                .map(|_| format!("{base}{stream}/cmaf/master.m3u8")),
            dash: window
                .filter(|w| w.cmaf.as_ref().is_some_and(|c| c.manifest.is_some()))
                .map(|_| format!("{base}{stream}/manifest.mpd")),
            http_ts: format!("{base}{stream}.ts"),
            player: format!("{base}{stream}.html"),
            embed: format!("{base}{stream}/embed.js"),
        },
        tracks: tracks(window),
        bitrate: window.map_or(0, |w| w.peak_bitrate),
        target_duration: window.map_or(0, |w| w.target_duration),
        segments: window.map_or(0, |w| w.listed),
        segments_since_discontinuity: window.map_or(0, since_discontinuity),
        part_target: window
            .and_then(|w| w.low_latency)
            .map(|l| l.part_target.as_secs_f64()),
        http_ts_viewers: counters.viewers.load(Ordering::Relaxed),
    };
    // Serialising plain strings and numbers cannot fail; an empty object would be the answer
    // if it somehow did.
    Bytes::from(serde_json::to_vec(&info).unwrap_or_else(|_| b"{}".to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_stream_and_the_served_hlsjs() {
        let html = page("cam1");
        assert!(html.contains("var stream = \"cam1\";"));
        assert!(html.contains(&format!(
            "<script src=\"player/hls-{HLSJS_VERSION}.min.js\">"
        )));
        assert!(!html.contains("__"));
        // hls.js really is in the binary, and dash.js, loaded by the page when asked for.
        assert!(HLSJS.len() > 100_000);
        assert!(HLSJS.windows(11).any(|w| w == b"isSupported"));
        assert!(html.contains(&format!(
            "script.src = \"player/dash-{DASHJS_VERSION}.min.js\";"
        )));
        assert!(DASHJS.len() > 100_000);
        assert!(DASHJS.windows(11).any(|w| w == b"MediaPlayer"));
    }

    #[test]
    fn a_proxied_streams_page_and_info_point_through_the_proxy() {
        let html = proxy_page("news");
        assert!(html.contains("var paths = { ts: \".m3u8\" };"));
        assert!(html.contains(&format!(
            "<script src=\"../player/hls-{HLSJS_VERSION}.min.js\">"
        )));
        assert!(!html.contains("__"));
        let live = proxy_info_json("news", 200, b"#EXTM3U", "http://h/");
        let live = std::str::from_utf8(&live).unwrap();
        assert!(
            live.contains("\"state\":\"live\"") && live.contains("\"proxied\":true"),
            "{live}"
        );
        assert!(
            live.contains("\"hls\":\"http://h/proxy/news.m3u8\""),
            "{live}"
        );
        assert!(!live.contains("error"), "{live}");
        let down = proxy_info_json("news", 502, b"the upstream is unreachable\n", "http://h/");
        let down = std::str::from_utf8(&down).unwrap();
        assert!(down.contains("\"state\":\"waiting\""), "{down}");
        assert!(
            down.contains("\"error\":\"502: the upstream is unreachable\""),
            "{down}"
        );
    }

    #[test]
    fn the_embed_script_uses_its_own_address_unless_a_base_is_given() {
        let js = embed_js("cam1", None);
        assert!(js.contains("var base = \"\" || new URL(\"..\", script.src).href;"));
        assert!(js.contains("base + \"cam1.html\""));
        let js = embed_js("cam1", Some("https://tv.example/live/"));
        assert!(js.contains("var base = \"https://tv.example/live/\" ||"));
    }

    #[test]
    fn a_stream_without_segments_is_waiting_with_urls_from_the_base() {
        let counters = StreamCounters::default();
        let json = info_json("cam1", None, &counters, "http://h:8080/", 0);
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains("\"state\":\"waiting\""), "{text}");
        assert!(text.contains("\"hls\":\"http://h:8080/cam1/master.m3u8\""));
        assert!(text.contains("\"http_ts\":\"http://h:8080/cam1.ts\""));
        assert!(text.contains("\"tracks\":[]"));
    }

    #[test]
    fn segments_are_counted_from_the_newest_discontinuity() {
        use crate::hls::{HlsSettings, SegmentSend};
        use shardcast_protocols::ts::pes::Timestamp;
        use shardcast_protocols::ts::SegmentInfo;
        let slot = crate::hls::HlsSlot::default();
        let mut p = crate::hls::Packager::new(
            "t",
            HlsSettings::default(),
            SegmentSend::Copy,
            slot.clone(),
            std::sync::Arc::new(StreamCounters::default()),
        );
        let mut seal = |sequence: u64, discontinuity: bool| {
            let at = 1_700_000_000_000_000_000 + sequence * 2_000_000_000;
            p.start(sequence, discontinuity, true, at);
            p.packet(&[0x47; 188]);
            p.end(
                SegmentInfo {
                    sequence,
                    start_pts: Timestamp::new(0),
                    duration: 180_000,
                    packets: 1,
                    discontinuity,
                    independent: true,
                },
                at + 2_000_000_000,
            );
        };
        for n in 0..5 {
            seal(n, false);
        }
        let w = slot.load_full().unwrap();
        assert_eq!(since_discontinuity(&w), 5);
        seal(5, true);
        seal(6, false);
        let w = slot.load_full().unwrap();
        assert_eq!((w.listed, since_discontinuity(&w)), (6, 2));
    }
}
