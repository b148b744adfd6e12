//! What a viewer's URL names: the path parsed once, by one grammar, into a typed target that
//! the router (what to answer) and the gate (whose request it is) both read.
//!
//! ```text
//!  /                              Index
//!  /player/hls-VERSION.min.js     PlayerScript
//!  /{stream}.ts                   Progressive
//!  /{stream}.html                 PlayerPage
//!  /{stream}/info.json            Info
//!  /{stream}/embed.js             Embed
//!  /{stream}/index.m3u8           Hls(Media)
//!  /{stream}/master.m3u8          Hls(Master)
//!  /{stream}/{sequence}.ts        Hls(Segment)
//! ```
//!
//! Anything else is [`Target::Unknown`]. Whether the stream exists is not decided here.

use crate::session::Protocol;

/// An HLS file of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HlsFile {
    /// `index.m3u8`: the media playlist.
    Media,
    /// `master.m3u8`: the multivariant playlist.
    Master,
    /// `{sequence}.ts`: a segment by its media sequence number.
    Segment(u64),
}

/// What a request's path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/`: the list of streams.
    Index,
    /// The player's script (hls.js), at a path with its version.
    PlayerScript,
    /// `/{stream}.ts`: the progressive stream.
    Progressive(&'a str),
    /// `/{stream}.html`: the player page.
    PlayerPage(&'a str),
    /// `/{stream}/info.json`: what the player page asks about the stream.
    Info(&'a str),
    /// `/{stream}/embed.js`: the embed script.
    Embed(&'a str),
    /// `/{stream}/…`: an HLS file.
    Hls(&'a str, HlsFile),
    /// Nothing this server serves.
    Unknown,
}

/// Longest media sequence number in a segment's name (`u64::MAX` has 20 digits).
const MAX_SEQUENCE_DIGITS: usize = 19;

impl<'a> Target<'a> {
    /// Parse a request's path (without its query).
    pub fn parse(path: &'a str) -> Target<'a> {
        if path == "/" {
            return Target::Index;
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Target::Unknown;
        };
        // `player/hls-VERSION.min.js`, compared in place: this runs for every request.
        let script = rest
            .strip_prefix("player/hls-")
            .and_then(|r| r.strip_suffix(".min.js"));
        if script == Some(crate::player::HLSJS_VERSION) {
            return Target::PlayerScript;
        }
        if let Some((stream, file)) = rest.split_once('/') {
            if stream.is_empty() {
                return Target::Unknown;
            }
            return match file {
                "info.json" => Target::Info(stream),
                "embed.js" => Target::Embed(stream),
                "index.m3u8" => Target::Hls(stream, HlsFile::Media),
                "master.m3u8" => Target::Hls(stream, HlsFile::Master),
                other => other
                    .strip_suffix(".ts")
                    .filter(|n| {
                        !n.is_empty()
                            && n.len() <= MAX_SEQUENCE_DIGITS
                            && n.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|n| n.parse().ok())
                    .map_or(Target::Unknown, |sequence| {
                        Target::Hls(stream, HlsFile::Segment(sequence))
                    }),
            };
        }
        if let Some(stream) = rest.strip_suffix(".html").filter(|s| !s.is_empty()) {
            return Target::PlayerPage(stream);
        }
        if let Some(stream) = rest.strip_suffix(".ts").filter(|s| !s.is_empty()) {
            return Target::Progressive(stream);
        }
        Target::Unknown
    }

    /// The stream named, for a viewer's media request, and how it is watched.
    pub fn media(&self) -> Option<(&'a str, Protocol)> {
        match *self {
            Target::Progressive(stream) => Some((stream, Protocol::HttpTs)),
            Target::Hls(stream, _) => Some((stream, Protocol::Hls)),
            _ => None,
        }
    }

    /// The stream named, whatever is asked of it.
    pub fn stream(&self) -> Option<&'a str> {
        match *self {
            Target::Progressive(s)
            | Target::PlayerPage(s)
            | Target::Info(s)
            | Target::Embed(s)
            | Target::Hls(s, _) => Some(s),
            Target::Index | Target::PlayerScript | Target::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar() {
        let p = Target::parse;
        assert_eq!(p("/"), Target::Index);
        let script = format!("/{}", crate::player::hlsjs_path());
        assert_eq!(p(&script), Target::PlayerScript);
        assert_eq!(p("/cam.ts"), Target::Progressive("cam"));
        assert_eq!(p("/cam+5000.ts"), Target::Progressive("cam+5000"));
        assert_eq!(p("/cam.html"), Target::PlayerPage("cam"));
        assert_eq!(p("/cam/info.json"), Target::Info("cam"));
        assert_eq!(p("/cam/embed.js"), Target::Embed("cam"));
        assert_eq!(p("/cam/index.m3u8"), Target::Hls("cam", HlsFile::Media));
        assert_eq!(p("/cam/master.m3u8"), Target::Hls("cam", HlsFile::Master));
        assert_eq!(p("/cam/42.ts"), Target::Hls("cam", HlsFile::Segment(42)));
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
        ] {
            assert_eq!(p(unknown), Target::Unknown, "{unknown:?}");
        }
        assert_eq!(p("/cam.ts").media(), Some(("cam", Protocol::HttpTs)));
        assert_eq!(p("/cam/7.ts").media(), Some(("cam", Protocol::Hls)));
        assert_eq!(p("/cam.html").media(), None);
        assert_eq!(p("/cam.html").stream(), Some("cam"));
    }
}
