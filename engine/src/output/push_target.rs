//! Where a stream is sent on, as configured: the push target URLs (`udp://`, `srt://`,
//! `tcp://`, `http://`, `rtmp://`) and the recording settings' path templates. Parsing and checking only; sending
//! is [`crate::output::push_out`]'s. Apart from it so that the configuration can check targets
//! without depending on what sends.

use shardcast_protocols::hls::DateTime;
use std::net::SocketAddr;
use std::time::Duration;

/// How a stream is recorded (see [`crate::output::push_out::record`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecordSpec {
    /// The path template (`{stream}`, `{start}`, `{start:FORMAT}`).
    pub path: String,
    /// Media time per file before the next access point starts another (zero: never).
    pub rotate: Duration,
    /// Files older than this are removed.
    pub max_age: Option<Duration>,
    /// The oldest files are removed while the recording's files hold more than this.
    pub max_bytes: Option<u64>,
}

/// Where a stream is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushTarget {
    /// To files ([`crate::output::push_out::record`]).
    Record(RecordSpec),
    /// Datagrams to a group or a host.
    Udp(UdpTarget),
    /// An SRT caller to a listener (live mode), paced as UDP is.
    Srt(SrtTarget),
    /// Raw TS over a TCP connection to `host:port`.
    Tcp {
        /// Host (a name or an address) and port.
        host: String,
        /// The port.
        port: u16,
    },
    /// An RTMP publisher: FLV remuxed from the TS, to `rtmp://host[:port]/app/key`.
    Rtmp(RtmpTarget),
    /// An HTTP `PUT` of a body that does not end (chunked), as encoders push.
    Http {
        /// Host (a name or an address).
        host: String,
        /// The port.
        port: u16,
        /// The path and query.
        path: String,
    },
}

/// Why a push target is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// Not a scheme a push goes to.
    #[error(
        "push target {0:?}: the scheme is not one of udp://, srt://, tcp://, http://, rtmp://"
    )]
    Scheme(String),
    /// The address does not parse.
    #[error("push target {0:?}: expected host:port")]
    Address(String),
    /// A parameter is unknown or its value out of range.
    #[error("push target {0:?}: {1}")]
    Parameter(String, String),
}

impl PushTarget {
    /// Parse a push target URL.
    pub fn parse(url: &str) -> Result<PushTarget, TargetError> {
        if let Some(rest) = url.strip_prefix("udp://") {
            return parse_udp(url, rest).map(PushTarget::Udp);
        }
        if let Some(rest) = url.strip_prefix("srt://") {
            return parse_srt(url, rest).map(PushTarget::Srt);
        }
        if let Some(rest) = url.strip_prefix("rtmp://") {
            return parse_rtmp(url, rest).map(PushTarget::Rtmp);
        }
        let (rest, http) = match (url.strip_prefix("tcp://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(TargetError::Scheme(url.to_owned())),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let (host, port) = host_port(authority).ok_or(TargetError::Address(url.to_owned()))?;
        if http {
            let path = match path {
                "" => "/".to_owned(),
                p if p.starts_with('?') => format!("/{p}"),
                p => p.to_owned(),
            };
            if path.chars().any(|c| c.is_control() || c == ' ') {
                return Err(TargetError::Parameter(
                    url.to_owned(),
                    "the path has spaces or control characters".into(),
                ));
            }
            Ok(PushTarget::Http { host, port, path })
        } else if !path.is_empty() && path != "/" {
            Err(TargetError::Parameter(
                url.to_owned(),
                "a TCP target has no path or parameters".into(),
            ))
        } else {
            Ok(PushTarget::Tcp { host, port })
        }
    }

    /// Its scheme, for metrics.
    pub fn scheme(&self) -> &'static str {
        match self {
            PushTarget::Udp(u) if u.rtp => "rtp",
            PushTarget::Udp(_) => "udp",
            PushTarget::Tcp { .. } => "tcp",
            PushTarget::Http { .. } => "http",
            PushTarget::Record(_) => "file",
            PushTarget::Srt(_) => "srt",
            PushTarget::Rtmp(_) => "rtmp",
        }
    }
}

/// Where an RTMP push publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtmpTarget {
    /// Host (a name or an address).
    pub host: String,
    /// The port (1935 unless given).
    pub port: u16,
    /// The application (`live2`, `app`).
    pub app: String,
    /// The stream key (the publishing name, with its query: `cam1?key=SECRET`).
    pub key: String,
}

impl RtmpTarget {
    /// The URL of the application (`tcUrl`).
    pub fn tc_url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("rtmp://{host}:{}/{}", self.port, self.app)
    }
}

/// `rtmp://HOST[:PORT]/APP/KEY`.
fn parse_rtmp(url: &str, rest: &str) -> Result<RtmpTarget, TargetError> {
    let bad = |why: &str| TargetError::Parameter(url.to_owned(), why.to_owned());
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("expected rtmp://HOST[:PORT]/APP/KEY"))?;
    let (host, port) = if authority.ends_with(']') || !authority.contains(':') {
        let host = authority.trim_start_matches('[').trim_end_matches(']');
        (host.to_owned(), 1935)
    } else {
        host_port(authority).ok_or(TargetError::Address(url.to_owned()))?
    };
    let valid_host = !host.is_empty()
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    if !valid_host {
        return Err(TargetError::Address(url.to_owned()));
    }
    let (app, key) = path
        .split_once('/')
        .ok_or_else(|| bad("expected rtmp://HOST[:PORT]/APP/KEY"))?;
    if app.is_empty() || key.is_empty() {
        return Err(bad("the application and the stream key must not be empty"));
    }
    if path.chars().any(|c| c.is_control() || c == ' ') || app.len() > 256 || key.len() > 1024 {
        return Err(bad(
            "the application or key has spaces or control characters, or is too long",
        ));
    }
    Ok(RtmpTarget {
        host,
        port,
        app: app.to_owned(),
        key: key.to_owned(),
    })
}

/// `host:port` or `[v6]:port`.
fn host_port(authority: &str) -> Option<(String, u16)> {
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Some((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then(|| (host.to_owned(), port))
}

/// Where and how a UDP push sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpTarget {
    /// The group or host.
    pub addr: SocketAddr,
    /// Hops (`IP_TTL`, or `IP_MULTICAST_TTL` for a group).
    pub ttl: u32,
    /// The interface datagrams to a group leave by.
    pub iface: Option<String>,
    /// Datagrams in RTP.
    pub rtp: bool,
    /// How long after the data arrived it is sent.
    pub delay: Duration,
}

/// `rest` is `url` after `udp://`.
fn parse_udp(url: &str, rest: &str) -> Result<UdpTarget, TargetError> {
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let addr: SocketAddr = authority
        .trim_end_matches('/')
        .parse()
        .map_err(|_| TargetError::Address(url.to_owned()))?;
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(TargetError::Address(url.to_owned()));
    }
    let mut target = UdpTarget {
        addr,
        ttl: if addr.ip().is_multicast() { 1 } else { 64 },
        iface: None,
        rtp: false,
        delay: Duration::from_millis(200),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |why: &str| TargetError::Parameter(url.to_owned(), format!("{pair}: {why}"));
        match key {
            "ttl" => {
                target.ttl = value
                    .parse()
                    .ok()
                    .filter(|t| (1..=255).contains(t))
                    .ok_or_else(|| bad("1 to 255"))?
            }
            "iface" if !value.is_empty() => target.iface = Some(value.to_owned()),
            "rtp" => {
                target.rtp = match value {
                    "1" | "true" | "" => true,
                    "0" | "false" => false,
                    _ => return Err(bad("1 or 0")),
                }
            }
            "delay" => target.delay = delay(value).ok_or_else(|| bad("0 to 10000 (ms)"))?,
            _ => return Err(bad("unknown parameter")),
        }
    }
    Ok(target)
}

/// A pacer's `delay=`: 0 to 10,000 ms.
fn delay(value: &str) -> Option<Duration> {
    let ms: u64 = value.parse().ok().filter(|d| *d <= 10_000)?;
    Some(Duration::from_millis(ms))
}

/// Where and how an SRT push calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrtTarget {
    /// Host (a name or an address) and port.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The stream id sent (`#!::r=NAME,m=publish`, or a plain name).
    pub stream_id: Option<String>,
    /// The passphrase, when encrypted (10 to 79 characters).
    pub passphrase: Option<String>,
    /// The key length when encrypting (16, 24 or 32).
    pub key_length: Option<u8>,
    /// The latency asked of the listener, ms.
    pub latency_ms: u32,
    /// How long after the data arrived it is sent (the pacer's room), as for UDP.
    pub delay: Duration,
}

/// `rest` is `url` after `srt://`: `HOST:PORT?streamid=&passphrase=&pbkeylen=&latency=&delay=`.
fn parse_srt(url: &str, rest: &str) -> Result<SrtTarget, TargetError> {
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (host, port) = host_port(authority.trim_end_matches('/'))
        .ok_or_else(|| TargetError::Address(url.to_owned()))?;
    let mut target = SrtTarget {
        host,
        port,
        stream_id: None,
        passphrase: None,
        key_length: None,
        latency_ms: 120,
        delay: Duration::from_millis(200),
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let bad = |why: &str| TargetError::Parameter(url.to_owned(), format!("{key}: {why}"));
        match &*key {
            "streamid" if !value.is_empty() && value.len() <= 512 => {
                target.stream_id = Some(value.into_owned())
            }
            "passphrase" if (10..=79).contains(&value.len()) => {
                target.passphrase = Some(value.into_owned())
            }
            "passphrase" => return Err(bad("10 to 79 characters")),
            "pbkeylen" => {
                target.key_length = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| [16, 24, 32].contains(n))
                        .ok_or_else(|| bad("16, 24 or 32"))?,
                )
            }
            "latency" => {
                target.latency_ms = value
                    .parse()
                    .ok()
                    .filter(|ms| (20..=10_000).contains(ms))
                    .ok_or_else(|| bad("20 to 10000 (ms)"))?
            }
            "delay" => target.delay = delay(&value).ok_or_else(|| bad("0 to 10000 (ms)"))?,
            _ => return Err(bad("unknown parameter")),
        }
    }
    Ok(target)
}

/// The path `template` names for `stream` starting at `unix_ms`.
pub fn render(template: &str, stream: &str, unix_ms: i64) -> String {
    let date = DateTime::from_unix_millis(unix_ms).to_string();
    let field = |r: std::ops::Range<usize>| date.get(r).unwrap_or("00").to_owned();
    let (y, mo, d) = (field(0..4), field(5..7), field(8..10));
    let (h, mi, s) = (field(11..13), field(14..16), field(17..19));
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let token = &after[..close];
        match token {
            "stream" => out.push_str(stream),
            "start" => out.push_str(&format!("{y}{mo}{d}-{h}{mi}{s}")),
            t if t.starts_with("start:") => {
                let mut chars = t["start:".len()..].chars();
                while let Some(c) = chars.next() {
                    if c != '%' {
                        out.push(c);
                        continue;
                    }
                    match chars.next() {
                        Some('Y') => out.push_str(&y),
                        Some('m') => out.push_str(&mo),
                        Some('d') => out.push_str(&d),
                        Some('H') => out.push_str(&h),
                        Some('M') => out.push_str(&mi),
                        Some('S') => out.push_str(&s),
                        Some('s') => out.push_str(&(unix_ms / 1000).to_string()),
                        Some('%') => out.push('%'),
                        Some(other) => {
                            out.push('%');
                            out.push(other);
                        }
                        None => out.push('%'),
                    }
                }
            }
            other => {
                out.push('{');
                out.push_str(other);
                out.push('}');
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Why a path template is refused.
pub fn check_template(template: &str) -> Result<(), String> {
    if !template.starts_with('/') {
        return Err(format!("record path {template:?} is not absolute"));
    }
    let file = template.rsplit('/').next().unwrap_or("");
    if !file.contains("{start") {
        return Err(format!(
            "record path {template:?}: its file name needs {{start}} (or {{start:FORMAT}}), or every file would have one name"
        ));
    }
    if template.split('/').any(|part| part == "..") {
        return Err(format!("record path {template:?} has .."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_are_refused() {
        assert_eq!(
            PushTarget::parse("tcp://127.0.0.1:9000"),
            Ok(PushTarget::Tcp {
                host: "127.0.0.1".into(),
                port: 9000
            })
        );
        assert_eq!(
            PushTarget::parse("http://origin.example:8080/push/cam?key=x"),
            Ok(PushTarget::Http {
                host: "origin.example".into(),
                port: 8080,
                path: "/push/cam?key=x".into()
            })
        );
        assert_eq!(
            PushTarget::parse("http://[::1]:80"),
            Ok(PushTarget::Http {
                host: "::1".into(),
                port: 80,
                path: "/".into()
            })
        );
        let udp = PushTarget::parse("udp://239.1.2.3:5000?ttl=4&rtp=1&delay=300").unwrap();
        assert_eq!(udp.scheme(), "rtp");
        let Ok(PushTarget::Srt(srt)) = PushTarget::parse(
            "srt://far.example:9000?streamid=%23!::r=cam,m=publish&passphrase=0123456789&latency=200",
        ) else {
            panic!("srt:// does not parse");
        };
        assert_eq!(srt.stream_id.as_deref(), Some("#!::r=cam,m=publish"));
        assert_eq!((srt.port, srt.latency_ms), (9000, 200));
        let Ok(PushTarget::Rtmp(rtmp)) =
            PushTarget::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh")
        else {
            panic!("rtmp:// does not parse");
        };
        assert_eq!(
            (
                rtmp.host.as_str(),
                rtmp.port,
                rtmp.app.as_str(),
                rtmp.key.as_str()
            ),
            ("a.rtmp.youtube.com", 1935, "live2", "abcd-efgh")
        );
        assert_eq!(rtmp.tc_url(), "rtmp://a.rtmp.youtube.com:1935/live2");
        let Ok(PushTarget::Rtmp(rtmp)) = PushTarget::parse("rtmp://[::1]:1936/live/cam1?key=s/x")
        else {
            panic!("rtmp:// with a port does not parse");
        };
        assert_eq!(
            (rtmp.host.as_str(), rtmp.port, rtmp.key.as_str()),
            ("::1", 1936, "cam1?key=s/x")
        );
        for bad in [
            "rtmp://host",
            "rtmp://host/app",
            "rtmp://host/app/",
            "rtmp://host//key",
            "rtmp://host:0/app/key",
            "rtmp://ho st/app/key",
            "rtmp://host/app/a key",
            "ftp://x:1",
            "tcp://x",
            "tcp://x:0",
            "tcp://x:1/path",
            "http://x y:80/",
            "http://x:80/a b",
            "udp://239.1.2.3:5000?ttl=999",
            "udp://239.1.2.3:5000?nope=1",
            "udp://host:5000",
            "udp://239.1.2.3:5000?delay=20000",
            "srt://x:9000?passphrase=short",
            "srt://x:9000?mode=listener",
            "srt://x",
        ] {
            assert!(PushTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_render() {
        // 2026-11-30T22:40:10.123Z
        let ms = 1_796_078_410_123;
        assert_eq!(
            render("/rec/{stream}/{start}.ts", "cam", ms),
            "/rec/cam/20261130-224010.ts"
        );
        assert_eq!(
            render("/rec/{stream}/{start:%Y/%m-%d_%H%M%S_%s%%}.ts", "cam", ms),
            "/rec/cam/2026/11-30_224010_1796078410%.ts"
        );
        assert_eq!(
            render("/rec/{other}/{start", "c", ms),
            "/rec/{other}/{start"
        );
        assert!(check_template("/rec/{stream}/{start}.ts").is_ok());
        assert!(check_template("rec/{start}.ts").is_err());
        assert!(check_template("/rec/{stream}.ts").is_err());
        assert!(check_template("/rec/../{start}.ts").is_err());
    }
}
