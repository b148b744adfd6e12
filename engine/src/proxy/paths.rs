//! The proxy's URLs, and the names of what they stand for.
//!
//! ```text
//! /proxy/{name}.m3u8                      a configured proxy ([[proxy]] name = …)
//! /proxy/{base64url or base64}.m3u8       an upstream URL (when proxy_any_url allows it)
//! /proxy/{scope}/{sig}/{base64url}.{ext}  what those playlists point to
//! ```
//!
//! `scope` is the configured proxy's name, or `_` for an upstream named in the URL; `sig` is
//! an HMAC of scope, kind and upstream URL under the server's proxy key, so the URLs the
//! proxy hands out cannot be edited into requests for something else with a configured
//! proxy's headers (its cookies, say). `ext` says a playlist (`m3u8`, rewritten) or carries
//! the upstream's extension, for the content type and for people reading logs.
//!
//! Playlists point to what they list relatively (`{scope}/…` from `/proxy/`, `../../{scope}/…`
//! from a playlist at depth three), so a path prefix added by a reverse proxy in front is kept.

use base64::Engine;
use ring::hmac;

/// The scope of upstream URLs named in request URLs (not a configured proxy).
pub const ANY: &str = "_";
/// Longest upstream URL taken.
pub const MAX_URL: usize = 4096;

/// What a URL names: a playlist (rewritten) or anything else (served as it came).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A playlist at `/proxy/{id}.m3u8`: what it lists is one directory down.
    TopPlaylist,
    /// A playlist listed by another: what it lists is two directories up, then down.
    Playlist,
    /// A segment, part, map, key or anything else.
    Media,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::TopPlaylist => 't',
            Kind::Playlist => 'p',
            Kind::Media => 'm',
        }
    }

    fn from_letter(c: char) -> Option<Self> {
        Some(match c {
            't' => Kind::TopPlaylist,
            'p' => Kind::Playlist,
            'm' => Kind::Media,
            _ => return None,
        })
    }
}

/// One thing the proxy fetches and keeps: in which scope, what kind, from where. Its
/// [`Resource::key`] names it in the cache and between shards and the fetcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// The configured proxy's name, or [`ANY`].
    pub scope: String,
    /// Playlist or not.
    pub kind: Kind,
    /// The upstream URL.
    pub url: String,
}

impl Resource {
    /// Its name: `scope`, the kind's letter, the URL, on a line each.
    pub fn key(&self) -> String {
        format!("{}\n{}\n{}", self.scope, self.kind.letter(), self.url)
    }

    /// The resource a key names.
    pub fn from_key(key: &str) -> Option<Self> {
        let mut lines = key.splitn(3, '\n');
        let scope = lines.next()?.to_owned();
        let mut letter = lines.next()?.chars();
        let kind = Kind::from_letter(letter.next()?)?;
        let url = lines.next()?.to_owned();
        Some(Self { scope, kind, url })
    }
}

/// What a path under `/proxy/` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyPath {
    /// `/proxy/{id}.m3u8`: a configured proxy's name, or an encoded upstream URL.
    Top(String),
    /// `/proxy/{scope}/{sig}/{b64}.{ext}`, its signature not checked yet.
    Child {
        /// The scope.
        scope: String,
        /// The signature as written.
        sig: String,
        /// The upstream URL.
        url: String,
        /// Playlist or not (from the extension).
        playlist: bool,
    },
    /// `/proxy/{b64 with slashes}.m3u8`: standard base64 whose `/` split the path; answered
    /// with a redirect to its base64url form (so its playlist's relative URLs resolve).
    Slashed(String),
}

/// A configured proxy's page, or what its page asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page<'a> {
    /// `/proxy/{name}.html`: the player page.
    Player(&'a str),
    /// `/proxy/{name}/info.json`: the stream's state.
    Info(&'a str),
}

/// Whether `rest` (under `/proxy/`) asks for a proxy's page.
pub fn page(rest: &str) -> Option<Page<'_>> {
    if let Some(name) = rest.strip_suffix(".html") {
        return valid_name(name).then_some(Page::Player(name));
    }
    let name = rest.strip_suffix("/info.json")?;
    valid_name(name).then_some(Page::Info(name))
}

/// The part of `path` under `/proxy/`, if it is there.
pub fn under_proxy(path: &str) -> Option<&str> {
    path.strip_prefix("/proxy/")
}

/// What `rest` (the path after `/proxy/`) asks for; `None`: nothing the proxy serves.
pub fn parse(rest: &str) -> Option<ProxyPath> {
    let rest = percent_decoded(rest)?;
    let parts: Vec<&str> = rest.split('/').collect();
    if let [scope, sig, file] = parts[..] {
        if let Some((b64, ext)) = file.rsplit_once('.') {
            if valid_scope(scope) && sig.len() == SIG_LEN && valid_ext(ext) {
                if let Some(url) = decode_url(b64) {
                    return Some(ProxyPath::Child {
                        scope: scope.to_owned(),
                        sig: sig.to_owned(),
                        url,
                        playlist: ext == "m3u8",
                    });
                }
            }
        }
    }
    let id = rest.strip_suffix(".m3u8")?;
    if id.is_empty() {
        return None;
    }
    if id.contains('/') {
        return decode_url(id).map(ProxyPath::Slashed);
    }
    Some(ProxyPath::Top(id.to_owned()))
}

/// The upstream URL `id` encodes (base64url or base64, padded or not), if it is an
/// `http(s)://` URL.
pub fn decode_url(id: &str) -> Option<String> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    if id.len() > MAX_URL * 4 / 3 + 4 {
        return None;
    }
    let bytes = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config)
        .decode(id)
        .or_else(|_| GeneralPurpose::new(&base64::alphabet::STANDARD, config).decode(id))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let url = url::Url::parse(&text).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host().is_some() && text.len() <= MAX_URL)
        .then(|| url.to_string())
}

/// `url` as base64url without padding.
pub fn encode_url(url: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
}

/// Characters of a signature (12 bytes of HMAC-SHA256, base64url).
const SIG_LEN: usize = 16;

/// Signs and checks the URLs the proxy hands out.
#[derive(Debug)]
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    /// A signer with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn sign(&self, scope: &str, playlist: bool, url: &str) -> String {
        let message = format!("{scope}\n{}\n{url}", if playlist { 'p' } else { 'm' });
        let tag = hmac::sign(&self.key, message.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..12])
    }

    /// Whether `sig` is this server's signature of a child URL.
    pub fn verify(&self, scope: &str, playlist: bool, url: &str, sig: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.sign(scope, playlist, url);
        sig.as_bytes().ct_eq(expected.as_bytes()).into()
    }

    /// The path, relative to a playlist of kind `from`, of `url` in `scope` as `kind`.
    pub fn child_path(&self, from: Kind, scope: &str, url: &str, playlist: bool) -> String {
        let up = match from {
            Kind::TopPlaylist => "",
            _ => "../../",
        };
        let ext = if playlist { "m3u8" } else { media_ext(url) };
        format!(
            "{up}{scope}/{}/{}.{ext}",
            self.sign(scope, playlist, url),
            encode_url(url)
        )
    }
}

/// The extension of `url`'s path, when it is a plain one (letters and digits, up to five),
/// and not `m3u8` (a segment is never served as a playlist); else `bin`.
fn media_ext(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let file = path.rsplit('/').next().unwrap_or("");
    match file.rsplit_once('.') {
        Some((_, ext)) if valid_ext(ext) && ext != "m3u8" => ext,
        _ => "bin",
    }
}

fn valid_ext(ext: &str) -> bool {
    (1..=5).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether `name` can name a configured proxy: letters, digits, `-` and `_`, up to 64,
/// and not [`ANY`].
pub fn valid_name(name: &str) -> bool {
    name != ANY
        && (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_scope(scope: &str) -> bool {
    scope == ANY || valid_name(scope)
}

/// The content type of a proxied object, from what it is and its extension.
pub fn content_type(kind: Kind, url: &str) -> &'static str {
    if kind != Kind::Media {
        return "application/vnd.apple.mpegurl";
    }
    match media_ext(url).to_ascii_lowercase().as_str() {
        "ts" | "m2ts" | "mts" => "video/mp2t",
        "mp4" | "m4s" | "m4v" | "cmfv" => "video/mp4",
        "m4a" | "cmfa" => "audio/mp4",
        "aac" => "audio/aac",
        "mp3" => "audio/mpeg",
        "vtt" | "webvtt" => "text/vtt",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// `s` with its `%XX` escapes decoded, if they are valid UTF-8.
fn percent_decoded(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !s.contains('%') {
        return Some(s.into());
    }
    let bytes: Vec<u8> = percent_bytes(s.as_bytes())?;
    String::from_utf8(bytes).ok().map(Into::into)
}

fn percent_bytes(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    #[test]
    fn upstream_urls_are_read_in_every_base64_form_hls_proxy_users_write() {
        // A URL whose standard base64 has `+` and `/`, and padding.
        let url = "https://cdn.example.com/live/ch~1/index.m3u8?t=a%3Eb&n=1";
        for id in [
            encode_url(url),
            URL_SAFE.encode(url),
            STANDARD.encode(url),
            STANDARD.encode(url).replace('/', "%2F").replace('+', "%2B"),
        ] {
            let path = format!("{id}.m3u8");
            let parsed = parse(&path);
            match parsed {
                Some(ProxyPath::Top(id)) => assert_eq!(decode_url(&id).as_deref(), Some(url)),
                Some(ProxyPath::Slashed(u)) => assert_eq!(u, url),
                other => panic!("{path}: {other:?}"),
            }
        }
        // Names are ids too (the server decides which), and nothing else is taken.
        assert_eq!(parse("news.m3u8"), Some(ProxyPath::Top("news".into())));
        for bad in ["", ".m3u8", "news.ts", "a/b.ts", "%zz.m3u8"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        // Not a URL, or not http(s): no upstream.
        for text in ["not a url", "file:///etc/passwd", "gopher://h/", "http://"] {
            assert_eq!(decode_url(&encode_url(text)), None, "{text}");
        }
    }

    #[test]
    fn child_urls_are_signed_for_their_scope_kind_and_url() {
        let signer = Signer::new(b"secret");
        let url = "http://origin.example/a/seg-1.ts?x=1";
        let path = signer.child_path(Kind::Playlist, "news", url, false);
        assert!(path.starts_with("../../news/"), "{path}");
        assert!(path.ends_with(".ts"), "{path}");
        let Some(ProxyPath::Child {
            scope,
            sig,
            url: read,
            playlist,
        }) = parse(path.trim_start_matches("../../"))
        else {
            panic!("{path}");
        };
        assert_eq!(
            (scope.as_str(), read.as_str(), playlist),
            ("news", url, false)
        );
        assert!(signer.verify("news", false, url, &sig));
        // Another scope, kind, URL or key: refused.
        assert!(!signer.verify("other", false, url, &sig));
        assert!(!signer.verify("news", true, url, &sig));
        assert!(!signer.verify("news", false, "http://origin.example/", &sig));
        assert!(!Signer::new(b"other").verify("news", false, url, &sig));
        // From a top playlist: one directory down; playlists keep .m3u8.
        let top = signer.child_path(Kind::TopPlaylist, ANY, "http://o/v/index.m3u8", true);
        assert!(top.starts_with("_/") && top.ends_with(".m3u8"), "{top}");
        // A segment never gets .m3u8, nor an extension that is not plain.
        assert!(signer
            .child_path(Kind::Playlist, ANY, "http://o/x.m3u8", false)
            .ends_with(".bin"));
        assert!(signer
            .child_path(Kind::Playlist, ANY, "http://o/x.a%2Fb", false)
            .ends_with(".bin"));
    }

    #[test]
    fn keys_name_a_resource_both_ways() {
        let r = Resource {
            scope: "news".into(),
            kind: Kind::Media,
            url: "http://o/a\nb".into(),
        };
        assert_eq!(Resource::from_key(&r.key()), Some(r));
        assert_eq!(Resource::from_key("news\nx\nhttp://o/"), None);
        assert!(valid_name("news-1_a") && !valid_name("_") && !valid_name("a.b"));
        assert_eq!(content_type(Kind::Media, "http://o/a.TS?x"), "video/mp2t");
        assert_eq!(
            content_type(Kind::Media, "http://o/k"),
            "application/octet-stream"
        );
    }
}
