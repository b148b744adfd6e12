//! Every URI a playlist names, handed to the caller to replace, and everything else kept
//! byte for byte: what an HLS proxy does to the playlists it passes on.
//!
//! ```text
//!  line ─┬─ a URI line ──────────────────────► f(uri, Variant after EXT-X-STREAM-INF, else Segment)
//!        ├─ a tag with a URI="…" attribute ──► f(uri, its kind), the rest of the tag as it was
//!        └─ anything else (other tags, unknown ones, comments, blank lines) ─► unchanged
//! ```
//!
//! Tags whose URI is rewritten: EXT-X-MEDIA, EXT-X-I-FRAME-STREAM-INF, EXT-X-IMAGE-STREAM-INF,
//! EXT-X-MAP, EXT-X-KEY, EXT-X-SESSION-KEY, EXT-X-SESSION-DATA, EXT-X-PART, EXT-X-PRELOAD-HINT,
//! EXT-X-RENDITION-REPORT. Line endings (LF or CRLF) stay as they were. A replacement
//! containing a quote, a line break or a control character would break the playlist: those
//! characters are percent-encoded. The input is not parsed for meaning: a playlist the
//! parser would refuse is rewritten as well as it can be (the player decides), and its size
//! is the caller's to bound.

use std::fmt::Write as _;

/// What a URI names, from where it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriKind {
    /// A variant stream's playlist (the line after EXT-X-STREAM-INF).
    Variant,
    /// A rendition's playlist (EXT-X-MEDIA).
    Rendition,
    /// An I-frame or image playlist (EXT-X-I-FRAME-STREAM-INF, EXT-X-IMAGE-STREAM-INF).
    IFramePlaylist,
    /// A media segment (a URI line of a media playlist).
    Segment,
    /// A media initialization section (EXT-X-MAP).
    Map,
    /// A decryption key (EXT-X-KEY, EXT-X-SESSION-KEY).
    Key,
    /// Session data (EXT-X-SESSION-DATA).
    SessionData,
    /// A partial segment (EXT-X-PART).
    Part,
    /// A resource the server hints at (EXT-X-PRELOAD-HINT).
    PreloadHint,
    /// Another rendition's playlist, reported (EXT-X-RENDITION-REPORT).
    RenditionReport,
}

/// The kind of URI attribute a tag has, if it has one.
fn tag_kind(tag: &str) -> Option<UriKind> {
    Some(match tag {
        "EXT-X-MEDIA" => UriKind::Rendition,
        "EXT-X-I-FRAME-STREAM-INF" | "EXT-X-IMAGE-STREAM-INF" => UriKind::IFramePlaylist,
        "EXT-X-MAP" => UriKind::Map,
        "EXT-X-KEY" | "EXT-X-SESSION-KEY" => UriKind::Key,
        "EXT-X-SESSION-DATA" => UriKind::SessionData,
        "EXT-X-PART" => UriKind::Part,
        "EXT-X-PRELOAD-HINT" => UriKind::PreloadHint,
        "EXT-X-RENDITION-REPORT" => UriKind::RenditionReport,
        _ => return None,
    })
}

/// `playlist` with each URI replaced by `replace(uri, kind)`; every other byte as it was.
pub fn rewrite_uris(playlist: &[u8], mut replace: impl FnMut(&str, UriKind) -> String) -> Vec<u8> {
    let mut out = Vec::with_capacity(playlist.len() + playlist.len() / 2);
    let mut variant_next = false;
    for line in playlist.split_inclusive(|b| *b == b'\n') {
        let (body, ending) = split_ending(line);
        let Ok(text) = std::str::from_utf8(body) else {
            out.extend_from_slice(line);
            continue;
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            out.extend_from_slice(line);
        } else if let Some(tag) = trimmed.strip_prefix('#') {
            let name = tag.split(':').next().unwrap_or_default();
            if name == "EXT-X-STREAM-INF" {
                variant_next = true;
            }
            match (tag_kind(name), tag.split_once(':')) {
                (Some(kind), Some((_, list))) => {
                    match replace_uri_attribute(list, |uri| safe(&replace(uri, kind))) {
                        Some(list) => {
                            out.push(b'#');
                            out.extend_from_slice(name.as_bytes());
                            out.push(b':');
                            out.extend_from_slice(list.as_bytes());
                            out.extend_from_slice(ending);
                        }
                        None => out.extend_from_slice(line),
                    }
                }
                _ => out.extend_from_slice(line),
            }
        } else {
            let kind = if std::mem::take(&mut variant_next) {
                UriKind::Variant
            } else {
                UriKind::Segment
            };
            out.extend_from_slice(safe_line(&replace(trimmed, kind)).as_bytes());
            out.extend_from_slice(ending);
        }
    }
    out
}

/// A line without its ending, and the ending (`\n`, `\r\n` or none).
fn split_ending(line: &[u8]) -> (&[u8], &[u8]) {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    line.split_at(body.len())
}

/// The attribute list `list` with its URI attribute's value replaced by `f(value)`; `None`
/// when it has no quoted URI attribute. Other attributes keep their bytes, quotes included.
fn replace_uri_attribute(list: &str, f: impl FnOnce(&str) -> String) -> Option<String> {
    let mut at = 0;
    while at < list.len() {
        let rest = &list[at..];
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let value_end = if let Some(quoted) = after.strip_prefix('"') {
            1 + quoted.find('"')? + 1
        } else {
            after.find(',').unwrap_or(after.len())
        };
        let value_start = at + eq + 1;
        if name == "URI" && after.starts_with('"') {
            let inner = &list[value_start + 1..value_start + value_end - 1];
            let mut out = String::with_capacity(list.len() + 64);
            out.push_str(&list[..value_start + 1]);
            out.push_str(&f(inner));
            out.push_str(&list[value_start + value_end - 1..]);
            return Some(out);
        }
        // Past the value and its comma.
        at = value_start + value_end;
        if list[at..].starts_with(',') {
            at += 1;
        }
    }
    None
}

/// `uri` fit to stand inside a quoted attribute value: quotes, line breaks and other control
/// characters percent-encoded.
fn safe(uri: &str) -> String {
    encode(uri, |c| c == '"' || c.is_control())
}

/// `uri` fit to stand as a line of its own: line breaks and control characters encoded.
fn safe_line(uri: &str) -> String {
    let encoded = encode(uri, char::is_control);
    // A line starting with `#` would be read as a tag or a comment.
    match encoded.strip_prefix('#') {
        Some(rest) => format!("%23{rest}"),
        None => encoded,
    }
}

fn encode(uri: &str, unsafe_char: impl Fn(char) -> bool) -> String {
    if !uri.chars().any(&unsafe_char) {
        return uri.to_owned();
    }
    let mut out = String::with_capacity(uri.len() + 8);
    for c in uri.chars() {
        if unsafe_char(c) {
            let mut bytes = [0u8; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(playlist: &str) -> (String, Vec<(String, UriKind)>) {
        let mut seen = Vec::new();
        let out = rewrite_uris(playlist.as_bytes(), |uri, kind| {
            seen.push((uri.to_owned(), kind));
            format!("/p/{}", uri.len())
        });
        (String::from_utf8(out).unwrap(), seen)
    }

    #[test]
    fn every_uri_of_a_multivariant_playlist_and_nothing_else() {
        let input = "#EXTM3U\r\n\
            #EXT-X-INDEPENDENT-SEGMENTS\r\n\
            #EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"https://k.example/key?a=1,b\",IV=0x01\r\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English, main\",URI=\"audio/en.m3u8\"\r\n\
            #EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID=\"cc\",NAME=\"cc1\",INSTREAM-ID=\"CC1\"\r\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.4d401e,mp4a.40.2\",AUDIO=\"aud\"\r\n\
            low/index.m3u8?token=x\r\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"low/iframes.m3u8\"\r\n\
            #X-UNKNOWN-TAG:URI=\"not/a/uri\"\r\n\
            # a comment\r\n\
            \r\n\
            #EXT-X-STREAM-INF:BANDWIDTH=2400000\r\n\
            https://cdn.example/high/index.m3u8\r\n";
        let (out, seen) = marked(input);
        assert_eq!(
            seen,
            [
                ("https://k.example/key?a=1,b".to_owned(), UriKind::Key),
                ("audio/en.m3u8".to_owned(), UriKind::Rendition),
                ("low/index.m3u8?token=x".to_owned(), UriKind::Variant),
                ("low/iframes.m3u8".to_owned(), UriKind::IFramePlaylist),
                (
                    "https://cdn.example/high/index.m3u8".to_owned(),
                    UriKind::Variant
                ),
            ]
        );
        assert_eq!(
            out,
            "#EXTM3U\r\n\
            #EXT-X-INDEPENDENT-SEGMENTS\r\n\
            #EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"/p/27\",IV=0x01\r\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English, main\",URI=\"/p/13\"\r\n\
            #EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID=\"cc\",NAME=\"cc1\",INSTREAM-ID=\"CC1\"\r\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.4d401e,mp4a.40.2\",AUDIO=\"aud\"\r\n\
            /p/22\r\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"/p/16\"\r\n\
            #X-UNKNOWN-TAG:URI=\"not/a/uri\"\r\n\
            # a comment\r\n\
            \r\n\
            #EXT-X-STREAM-INF:BANDWIDTH=2400000\r\n\
            /p/35\r\n"
        );
    }

    #[test]
    fn every_uri_of_a_low_latency_media_playlist() {
        let input = "#EXTM3U\n\
            #EXT-X-TARGETDURATION:2\n\
            #EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\"\n\
            #EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"720@0\"\n\
            #EXT-X-BYTERANGE:1000@720\n\
            #EXTINF:2.000,\n\
            all.mp4\n\
            #EXT-X-PART:DURATION=0.2,URI=\"5.0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"5.1.m4s\"\n\
            #EXT-X-RENDITION-REPORT:URI=\"../alt/index.m3u8\",LAST-MSN=5\n\
            #EXT-X-KEY:METHOD=NONE\n\
            #EXTINF:2,\n\
            seg 6.ts";
        let (out, seen) = marked(input);
        let kinds: Vec<UriKind> = seen.iter().map(|(_, k)| *k).collect();
        assert_eq!(
            kinds,
            [
                UriKind::Key,
                UriKind::Map,
                UriKind::Segment,
                UriKind::Part,
                UriKind::PreloadHint,
                UriKind::RenditionReport,
                UriKind::Segment,
            ]
        );
        assert!(out.contains("#EXT-X-MAP:URI=\"/p/8\",BYTERANGE=\"720@0\"\n"));
        assert!(out.contains("#EXT-X-BYTERANGE:1000@720\n#EXTINF:2.000,\n/p/7\n"));
        assert!(out.contains("#EXT-X-KEY:METHOD=NONE\n"));
        // The last line had no ending and gets none.
        assert!(out.ends_with("#EXTINF:2,\n/p/8"), "{out}");
    }

    #[test]
    fn replacements_cannot_break_the_playlist() {
        let input = "#EXTM3U\n#EXT-X-MAP:URI=\"a\"\n#EXTINF:1,\nb\n";
        let out = rewrite_uris(input.as_bytes(), |_, kind| match kind {
            UriKind::Map => "x\"\n#EXT-X-ENDLIST\n".into(),
            _ => "#EXT-X-ENDLIST\r\nc".into(),
        });
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-MAP:URI=\"x%22%0A#EXT-X-ENDLIST%0A\"\n#EXTINF:1,\n%23EXT-X-ENDLIST%0D%0Ac\n"
        );
        assert_eq!(out.lines().count(), 4);
    }

    #[test]
    fn what_it_cannot_read_it_keeps() {
        // Not UTF-8, an unterminated quote, a URI attribute without quotes.
        let input: &[u8] =
            b"#EXTM3U\n\xff\xfe\n#EXT-X-MAP:URI=\"open\n#EXT-X-KEY:METHOD=AES-128,URI=bare\n";
        let out = rewrite_uris(input, |_, _| "replaced".into());
        assert_eq!(out, input);
    }
}
