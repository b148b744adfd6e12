//! What a viewer's URL names: the path parsed once, by one grammar, into a typed target that
//! the router (what to answer) and the gate (whose request it is) both read. The media part
//! of the grammar is the outputs' ([`super::OUTPUTS`]); the pages are this file's.
//!
//! ```text
//!  /                              Index
//!  /player/hls-VERSION.min.js     PlayerScript
//!  /player/dash-VERSION.min.js    DashScript
//!  /healthz                       Health (for load balancers: the process serves)
//!  /readyz                        Ready (every stream configured `required` is live)
//!  /{stream}.html                 PlayerPage
//!  /{stream}/info.json            Info
//!  /{stream}/embed.js             Embed
//!  /{stream}.ts, /{stream}/…      Media (an output's: see the table in `output`)
//!  /proxy/…                       Proxy (the HLS proxy's)
//!  /vod/{stream}/{file}/…         Vod (a recording's: see `crate::vod`)
//! ```
//!
//! Anything else is [`Target::Unknown`]. Whether the stream exists is not decided here.
//!
//! PUT and POST requests are pushes, and have a grammar of their own: `/push/{stream}` (a
//! `.ts` after the name is allowed), read by [`push_stream`].

use super::{MediaRequest, OUTPUTS};
use crate::session::Protocol;

/// What a request's path names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target<'a> {
    /// `/`: the list of streams.
    Index,
    /// The player's script (hls.js), at a path with its version.
    PlayerScript,
    /// The player's DASH script (dash.js), at a path with its version.
    DashScript,
    /// `/healthz`: the process serves.
    Health,
    /// `/readyz`: every stream configured as required is live.
    Ready,
    /// `/{stream}.html`: the player page.
    PlayerPage(&'a str),
    /// `/{stream}/info.json`: what the player page asks about the stream.
    Info(&'a str),
    /// `/{stream}/embed.js`: the embed script.
    Embed(&'a str),
    /// A viewer's request of a stream, through one of the [`OUTPUTS`].
    Media(MediaRequest<'a>),
    /// `/proxy/…`: the HLS proxy's (the path under `/proxy/`).
    Proxy(&'a str),
    /// `/vod/…`: a recording of a stream.
    Vod(crate::vod::VodPath<'a>),
    /// Nothing this server serves.
    Unknown,
}

impl<'a> Target<'a> {
    /// Parse a request's path (without its query).
    pub fn parse(path: &'a str) -> Target<'a> {
        match path {
            "/" => return Target::Index,
            "/healthz" => return Target::Health,
            "/readyz" => return Target::Ready,
            _ => {}
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Target::Unknown;
        };
        if let Some(proxied) = crate::proxy::paths::under_proxy(path) {
            return Target::Proxy(proxied);
        }
        if let Some(vod) = rest.strip_prefix("vod/").and_then(crate::vod::parse) {
            return Target::Vod(vod);
        }
        // `player/hls-VERSION.min.js`, compared in place: this runs for every request.
        let script = rest
            .strip_prefix("player/hls-")
            .and_then(|r| r.strip_suffix(".min.js"));
        if script == Some(crate::player::HLSJS_VERSION) {
            return Target::PlayerScript;
        }
        let script = rest
            .strip_prefix("player/dash-")
            .and_then(|r| r.strip_suffix(".min.js"));
        if script == Some(crate::player::DASHJS_VERSION) {
            return Target::DashScript;
        }
        for &output in OUTPUTS {
            if let Some((stream, file)) = output.parse(rest) {
                return Target::Media(MediaRequest {
                    stream,
                    output,
                    file,
                });
            }
        }
        match rest.split_once('/') {
            Some(("", _)) => Target::Unknown,
            Some((stream, "info.json")) => Target::Info(stream),
            Some((stream, "embed.js")) => Target::Embed(stream),
            Some(_) => Target::Unknown,
            None => match rest.strip_suffix(".html").filter(|s| !s.is_empty()) {
                Some(stream) => Target::PlayerPage(stream),
                None => Target::Unknown,
            },
        }
    }

    /// The stream named, for a viewer's media request, and how it is watched.
    pub fn media(&self) -> Option<(&'a str, Protocol)> {
        match self {
            Target::Media(request) => Some((request.stream, request.output.protocol())),
            // A recording's viewers are HLS sessions of its stream; its page is nobody's.
            Target::Vod(vod) if vod.part != crate::vod::Part::Page => {
                Some((vod.stream, Protocol::Hls))
            }
            _ => None,
        }
    }

    /// The stream named, whatever is asked of it.
    pub fn stream(&self) -> Option<&'a str> {
        match *self {
            Target::PlayerPage(s) | Target::Info(s) | Target::Embed(s) => Some(s),
            Target::Media(request) => Some(request.stream),
            Target::Vod(vod) => Some(vod.stream),
            Target::Index
            | Target::PlayerScript
            | Target::DashScript
            | Target::Health
            | Target::Ready
            | Target::Proxy(_)
            | Target::Unknown => None,
        }
    }
}

/// The stream a push's path names: `/push/{stream}` or `/push/{stream}.ts`.
pub fn push_stream(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/push/")?;
    let name = name.strip_suffix(".ts").unwrap_or(name);
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{MediaFile, Playlist};

    /// The output named `name` asked for `file` of `stream`.
    fn media<'a>(stream: &'a str, name: &str, file: MediaFile) -> Target<'a> {
        let output = *OUTPUTS.iter().find(|o| o.name() == name).unwrap();
        Target::Media(MediaRequest {
            stream,
            output,
            file,
        })
    }

    #[test]
    fn the_grammar() {
        let p = Target::parse;
        assert_eq!(p("/"), Target::Index);
        assert_eq!(p("/healthz"), Target::Health);
        assert_eq!(p("/readyz"), Target::Ready);
        assert_eq!(p("/readyz.html"), Target::PlayerPage("readyz"));
        let script = format!("/{}", crate::player::hlsjs_path());
        assert_eq!(p(&script), Target::PlayerScript);
        let script = format!("/{}", crate::player::dashjs_path());
        assert_eq!(p(&script), Target::DashScript);
        assert_eq!(p("/player/dash-0.0.1.min.js"), Target::Unknown);
        assert_eq!(p("/cam.ts"), media("cam", "http-ts", MediaFile::Live));
        assert_eq!(
            p("/cam+5000.ts"),
            media("cam+5000", "http-ts", MediaFile::Live)
        );
        assert_eq!(p("/cam.html"), Target::PlayerPage("cam"));
        assert_eq!(p("/cam/info.json"), Target::Info("cam"));
        assert_eq!(p("/cam/embed.js"), Target::Embed("cam"));
        assert_eq!(
            p("/cam/index.m3u8"),
            media("cam", "hls", MediaFile::Playlist(Playlist::Media))
        );
        assert_eq!(
            p("/cam/master.m3u8"),
            media("cam", "hls", MediaFile::Playlist(Playlist::Master))
        );
        assert_eq!(p("/cam/42.ts"), media("cam", "hls", MediaFile::Segment(42)));
        for unknown in [
            "",
            "cam.ts",
            "/.ts",
            "/.html",
            "//index.m3u8",
            "/cam/abc.ts",
            "/cam/.ts",
            "/cam/-1.ts",
            "/cam/+1.ts",
            "/cam/99999999999999999999.ts",
            "/cam/a/b.ts",
            "/cam/index.m3u",
            "/cam",
            "//1.ts",
            "/cam/x/info.json",
        ] {
            assert_eq!(p(unknown), Target::Unknown, "{unknown:?}");
        }
        assert_eq!(p("/cam.ts").media(), Some(("cam", Protocol::HttpTs)));
        assert_eq!(p("/cam/7.ts").media(), Some(("cam", Protocol::Hls)));
        assert_eq!(p("/a.ts.html"), Target::PlayerPage("a.ts"));
        assert_eq!(p("/a.html.ts"), media("a.html", "http-ts", MediaFile::Live));
        assert_eq!(p("/cam.html").media(), None);
        assert_eq!(p("/cam.html").stream(), Some("cam"));
    }
}
