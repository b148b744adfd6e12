//! HTTP/1.1 for viewers (RFC 9112 message syntax, RFC 9110 semantics), sans-IO.
//!
//! [`parse_head`] reads one request head with httparse under explicit limits and maps every
//! refusal to the status code that goes back ([`HttpError::status`]). [`Conn`] is the state
//! machine of one viewer connection: bytes in, requests routed (by a [`Router`]: what a path
//! names is not this module's business), response bytes and stream subscriptions out,
//! timeouts from a clock the caller passes in. The HTTP rules of an answer are here:
//! validators and 304, ranges, HEAD, private caching. The backends (io_uring, epoll) own the
//! sockets and drive it; neither holds HTTP logic of its own.
//!
//! A connection holds little whatever its peer does: a head of at most 8 KiB, responses
//! queued up to `max_queued` bytes or `max_pipelined` responses (past them its further
//! requests stay unread in the kernel until it drains), and it must take what is queued at
//! `min_send_rate` or be closed.
//!
//! What it does not do: request bodies (refused with 413), chunked uploads, HTTP/2, TLS (a
//! reverse proxy terminates it).

mod chunked;
mod conn;

pub use chunked::{BodyError, BodyReader};
pub use conn::{
    Body, Conn, ConnLimits, ConnState, Document, Feed, Gate, Held, Out, PushRequest, Route, Router,
    Status, RATE_PERIOD_NS,
};

/// Most headers accepted in one request.
pub const MAX_HEADERS: usize = 32;

/// Request methods the server knows.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Method {
    /// GET.
    #[default]
    Get,
    /// HEAD: the same headers as GET, no body.
    Head,
    /// OPTIONS (CORS preflight).
    Options,
    /// PUT: an encoder pushing a stream (`/push/{stream}`).
    Put,
    /// POST: the same as PUT, for encoders that only POST.
    Post,
    /// Anything else: answered with 405.
    Other,
}

impl Method {
    /// Whether requests with this method may have a body (a push).
    pub fn sends_body(self) -> bool {
        matches!(self, Method::Put | Method::Post)
    }
}

/// How a request's body is framed (RFC 9112, section 6). Only PUT and POST may have one.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum RequestBody {
    /// No body.
    #[default]
    None,
    /// Exactly this many bytes (Content-Length).
    Length(u64),
    /// `Transfer-Encoding: chunked`: chunks until one of size 0.
    Chunked,
}

/// What the server needs of a request head.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query, without the `?`.
    pub query: String,
    /// The connection may serve another request after this one.
    pub keep_alive: bool,
    /// The Range header, when there is one.
    pub range: Option<String>,
    /// The If-None-Match header, when there is one.
    pub if_none_match: Option<String>,
    /// The Host header, when there is one and it is a plausible host\[:port\].
    pub host: Option<String>,
    /// Reverse-proxy headers, believed only from trusted proxies ([`crate::site`]).
    pub forwarded: Forwarded,
    /// The connection's peer (set by the connection, not parsed).
    pub peer: Option<std::net::IpAddr>,
    /// The request came over TLS (set by the connection, not parsed).
    pub secure: bool,
    /// The viewer's access token: the `token` (or MistServer's `tkn`) query parameter, else
    /// an `Authorization: Bearer` header, else a `token` cookie; empty when none.
    pub token: String,
    /// The User-Agent header (at most 256 bytes of it).
    pub user_agent: Option<String>,
    /// How the body that follows the head is framed.
    pub body: RequestBody,
    /// `Expect: 100-continue`: the client waits for a 100 before it sends the body.
    pub expect_continue: bool,
}

/// Longest access token taken from a request (longer ones are cut: they are keys, not data).
pub const MAX_TOKEN: usize = 512;

/// The `token=…` (or MistServer's `tkn=…`) pair of a query, as the request wrote it (for
/// carrying into the URIs of a playlist made for that viewer).
pub fn token_pair(query: &str) -> Option<&str> {
    query
        .split('&')
        .find(|p| p.starts_with("token=") || p.starts_with("tkn="))
        .filter(|p| p.len() <= 600)
}

/// The value of query parameter `name` (percent-decoding `%XX` and `+`), if present.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// What a reverse proxy says about the original request; each header is kept only when its
/// value has the shape it should (it may end up in URLs the server writes).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Forwarded {
    /// X-Forwarded-Proto: `http` or `https`.
    pub proto: Option<String>,
    /// X-Forwarded-Host: host\[:port\].
    pub host: Option<String>,
    /// X-Forwarded-Prefix: a path.
    pub prefix: Option<String>,
    /// X-Forwarded-For: a comma-separated list of addresses.
    pub for_list: Option<String>,
    /// X-Real-IP: an address.
    pub real_ip: Option<String>,
    /// X-Mst-Path: the full public base URL (as MistServer's proxy configurations send it),
    /// as sent: [`crate::site`] checks it before it believes it.
    pub mst_path: Option<String>,
}

fn host_like(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

fn path_like(value: &str) -> bool {
    value.starts_with('/')
        && value.len() <= 512
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/%+".contains(&b))
}

/// Why a request head was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Not an HTTP/1.x request head.
    #[error("malformed request head")]
    Malformed,
    /// The head is longer than the limit.
    #[error("request head over {limit} bytes")]
    HeadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// More header fields than [`MAX_HEADERS`].
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// The request has a body (Content-Length above 0 or Transfer-Encoding) and its method
    /// takes none.
    #[error("request bodies are not accepted")]
    Body,
    /// A body framed in a way the server does not read: a Transfer-Encoding other than
    /// chunked, both Transfer-Encoding and Content-Length, or an unreadable Content-Length
    /// (RFC 9112, section 6.3: answered 400 and the connection closed).
    #[error("request body framing not understood")]
    Framing,
    /// The request target is not an absolute path.
    #[error("request target is not an absolute path")]
    Target,
    /// More than one Host header (RFC 9112, section 3.2: answered 400).
    #[error("more than one Host header")]
    DuplicateHost,
}

impl HttpError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            HttpError::Malformed
            | HttpError::Target
            | HttpError::DuplicateHost
            | HttpError::Framing => 400,
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders => 431,
            HttpError::Body => 413,
        }
    }
}

/// Parse a request head from the start of `buf`. `Ok(None)`: not complete yet.
/// On success, also returns the bytes the head took.
pub fn parse_head(buf: &[u8], limit: usize) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(_) => return Err(HttpError::Malformed),
    };
    let len = match status {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > limit => {
            return Err(HttpError::HeadTooLarge { limit })
        }
        httparse::Status::Partial => return Ok(None),
    };
    if len > limit {
        return Err(HttpError::HeadTooLarge { limit });
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("OPTIONS") => Method::Options,
        Some("PUT") => Method::Put,
        Some("POST") => Method::Post,
        _ => Method::Other,
    };
    let target = req.path.ok_or(HttpError::Malformed)?;
    if !target.starts_with('/') {
        return Err(HttpError::Target);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let http11 = req.version == Some(1);
    let mut keep_alive = http11;
    let mut range = None;
    let mut if_none_match = None;
    let mut host = None;
    let mut seen_host = false;
    let mut forwarded = Forwarded::default();
    let mut bearer = None;
    let mut cookie_token = None;
    let mut user_agent = None;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only (no sign, no list): two that differ are a smuggling attempt.
            let length = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
                .ok_or(HttpError::Framing)?;
            if content_length.is_some_and(|l| l != length) {
                return Err(HttpError::Framing);
            }
            content_length = Some(length);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !value.eq_ignore_ascii_case("chunked") {
                return Err(HttpError::Framing);
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if h.name.eq_ignore_ascii_case("range") {
            range = Some(value.to_owned());
        } else if h.name.eq_ignore_ascii_case("host") {
            if seen_host {
                return Err(HttpError::DuplicateHost);
            }
            seen_host = true;
            // It is written into URLs the server hands out: only host-name characters.
            host = host_like(value).then(|| value.to_owned());
        } else if h.name.eq_ignore_ascii_case("x-forwarded-proto") {
            let proto = value
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            forwarded.proto = matches!(proto.as_str(), "http" | "https").then_some(proto);
        } else if h.name.eq_ignore_ascii_case("x-forwarded-host") {
            let first = value.split(',').next().unwrap_or("").trim();
            forwarded.host = host_like(first).then(|| first.to_owned());
        } else if h.name.eq_ignore_ascii_case("x-forwarded-prefix") {
            forwarded.prefix = path_like(value).then(|| value.to_owned());
        } else if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded.for_list = (value.len() <= 1024
                && value
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b".:, ".contains(&b)))
            .then(|| value.to_owned());
        } else if h.name.eq_ignore_ascii_case("x-real-ip") {
            forwarded.real_ip = value
                .parse::<std::net::IpAddr>()
                .is_ok()
                .then(|| value.to_owned());
        } else if h.name.eq_ignore_ascii_case("x-mst-path") {
            forwarded.mst_path = Some(value.to_owned());
        } else if h.name.eq_ignore_ascii_case("if-none-match") {
            if_none_match = Some(value.to_owned());
        } else if h.name.eq_ignore_ascii_case("authorization") {
            bearer = value.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
        } else if h.name.eq_ignore_ascii_case("cookie") {
            cookie_token = cookie_token.or_else(|| {
                value.split(';').find_map(|c| {
                    let (k, v) = c.trim().split_once('=')?;
                    (k == "token").then(|| v.trim_matches('"').to_owned())
                })
            });
        } else if h.name.eq_ignore_ascii_case("user-agent") {
            user_agent = Some(cut(value.to_owned(), 256));
        }
    }
    let body = match (content_length, chunked) {
        (Some(_), true) => return Err(HttpError::Framing),
        (None, true) => RequestBody::Chunked,
        (Some(n), false) if n > 0 => RequestBody::Length(n),
        _ => RequestBody::None,
    };
    if body != RequestBody::None && !method.sends_body() {
        return Err(HttpError::Body);
    }
    let token = query_param(query, "token")
        .or_else(|| query_param(query, "tkn"))
        .or(bearer)
        .or(cookie_token)
        .map(|t| cut(t, MAX_TOKEN))
        .unwrap_or_default();
    let head = RequestHead {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        keep_alive,
        range,
        if_none_match,
        host,
        forwarded,
        peer: None,
        secure: false,
        token,
        user_agent,
        body,
        expect_continue,
    };
    Ok(Some((head, len)))
}

/// What a Range header asks of a body `len` bytes long (RFC 9110 §14.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ByteRange {
    /// The whole body: no Range, or one the server may ignore (several ranges, bad syntax).
    Full,
    /// Bytes `start..end` (end exclusive).
    Part {
        /// First byte.
        start: usize,
        /// One past the last byte.
        end: usize,
    },
    /// No byte of the body is in the range: 416.
    Unsatisfiable,
}

/// Read a Range header against a body of `len` bytes. Only single `bytes` ranges are served;
/// anything else is ignored and the whole body is sent, which RFC 9110 allows.
pub fn byte_range(header: Option<&str>, len: usize) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let number = |s: &str| -> Option<usize> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Longer than any body: saturate rather than refuse.
        Some(s.parse().unwrap_or(usize::MAX))
    };
    match (number(first), number(last)) {
        (Some(start), last) if last.is_none() && !last_present(last, spec) => {
            if start >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part { start, end: len }
            }
        }
        (Some(start), Some(last)) if start <= last => {
            if start >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part {
                    start,
                    end: last.saturating_add(1).min(len),
                }
            }
        }
        (None, Some(suffix)) if first.trim().is_empty() => {
            if suffix == 0 || len == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part {
                    start: len.saturating_sub(suffix),
                    end: len,
                }
            }
        }
        _ => ByteRange::Full,
    }
}

/// Whether the part after `-` has anything in it (`bytes=5-x` is bad syntax, not `bytes=5-`).
fn last_present(parsed: Option<usize>, spec: &str) -> bool {
    parsed.is_some()
        || spec
            .split_once('-')
            .is_some_and(|(_, l)| !l.trim().is_empty())
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        302 => "Found",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A response head. `content_length: None` means the body runs until the connection closes.
pub fn response_head(
    status: u16,
    content_type: &str,
    content_length: Option<usize>,
    keep_alive: bool,
    extra: &str,
) -> String {
    let mut h = String::new();
    write_response_head(
        &mut h,
        status,
        content_type,
        content_length,
        keep_alive,
        &[extra],
    );
    h
}

/// [`response_head`] written into `h`, with the `extra` header lines in order: one
/// allocation at most for the whole head (it is made for every response).
pub fn write_response_head(
    h: &mut String,
    status: u16,
    content_type: &str,
    content_length: Option<usize>,
    keep_alive: bool,
    extra: &[&str],
) {
    h.reserve(160 + content_type.len() + extra.iter().map(|e| e.len()).sum::<usize>());
    h.push_str("HTTP/1.1 ");
    h.push_str(itoa::Buffer::new().format(status));
    h.push(' ');
    h.push_str(reason(status));
    h.push_str("\r\nServer: shardcast\r\nAccess-Control-Allow-Origin: *\r\n");
    if !content_type.is_empty() {
        h.push_str("Content-Type: ");
        h.push_str(content_type);
        h.push_str("\r\n");
    }
    if let Some(len) = content_length {
        h.push_str("Content-Length: ");
        h.push_str(itoa::Buffer::new().format(len));
        h.push_str("\r\n");
    }
    for e in extra {
        h.push_str(e);
    }
    // 204 and 304 never have a body, so they need no length to keep the connection.
    let delimited = content_length.is_some() || matches!(status, 204 | 304);
    h.push_str(if keep_alive && delimited {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_token_and_the_user_agent() {
        let parse = |raw: &str| parse_head(raw.as_bytes(), 8192).unwrap().unwrap().0;
        let h = parse("GET /a.ts?x=1&token=ab%2Fc+d HTTP/1.1\r\nUser-Agent: VLC/3\r\nAuthorization: Bearer other\r\n\r\n");
        assert_eq!(h.token, "ab/c d");
        assert_eq!(h.user_agent.as_deref(), Some("VLC/3"));
        assert_eq!(parse("GET /a.ts?tkn=m1 HTTP/1.1\r\n\r\n").token, "m1");
        assert_eq!(
            parse("GET /a.ts HTTP/1.1\r\nAuthorization: Bearer b1\r\nCookie: token=c1\r\n\r\n")
                .token,
            "b1"
        );
        assert_eq!(
            parse("GET /a.ts HTTP/1.1\r\nCookie: a=1; token=\"c1\"\r\n\r\n").token,
            "c1"
        );
        assert_eq!(
            parse("GET /a.ts?token=%E2%82%AC%zz% HTTP/1.1\r\n\r\n").token,
            "€%zz%"
        );
        assert_eq!(parse("GET /a.ts HTTP/1.1\r\n\r\n").token, "");
    }

    #[test]
    fn parses_heads_and_maps_errors_to_statuses() {
        let (h, len) = parse_head(
            b"GET /demo.ts?token=x HTTP/1.1\r\nHost: a\r\n\r\nrest",
            8192,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (h.method, h.path.as_str(), h.query.as_str(), h.keep_alive),
            (Method::Get, "/demo.ts", "token=x", true)
        );
        assert_eq!(len, 42);
        let (h, _) = parse_head(
            b"GET /a/1.ts HTTP/1.1\r\nRange: bytes=0-99\r\nIf-None-Match: \"x\"\r\n\r\n",
            8192,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.range.as_deref(), Some("bytes=0-99"));
        assert_eq!(h.if_none_match.as_deref(), Some("\"x\""));
        let (h, _) = parse_head(b"HEAD / HTTP/1.0\r\n\r\n", 8192)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n", 8192), Ok(None));
        let e = |buf: &[u8]| parse_head(buf, 64).unwrap_err().status();
        assert_eq!(e(b"\x01\x02 nonsense\r\n\r\n"), 400);
        assert_eq!(e(b"GET http://x/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            e(&[b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 100]].concat()),
            431
        );
        assert_eq!(e(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"), 413);
        assert_eq!(e(b"PUT / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"), 400);
        let (h, _) = parse_head(b"POST /push/a HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 8192)
            .unwrap()
            .unwrap();
        assert_eq!((h.method, h.body), (Method::Post, RequestBody::Length(5)));
        let r = |h: &str| byte_range(Some(h), 1000);
        assert_eq!(r("bytes=0-99"), ByteRange::Part { start: 0, end: 100 });
        assert_eq!(
            r("bytes=990-"),
            ByteRange::Part {
                start: 990,
                end: 1000
            }
        );
        assert_eq!(
            r("bytes=-10"),
            ByteRange::Part {
                start: 990,
                end: 1000
            }
        );
        assert_eq!(
            r("bytes=900-5000"),
            ByteRange::Part {
                start: 900,
                end: 1000
            }
        );
        assert_eq!(r("bytes=1000-"), ByteRange::Unsatisfiable);
        assert_eq!(r("bytes=-0"), ByteRange::Unsatisfiable);
        assert_eq!(r("bytes=5-1"), ByteRange::Full);
        assert_eq!(r("bytes=0-1,5-6"), ByteRange::Full);
        assert_eq!(r("bytes=5-x"), ByteRange::Full);
        assert_eq!(r("items=0-1"), ByteRange::Full);
        assert_eq!(byte_range(None, 10), ByteRange::Full);
        let many: String = (0..40).map(|i| format!("X{i}: y\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(req.as_bytes(), 8192).unwrap_err().status(), 431);
    }
}
