//! Source URLs, one scheme each ([`SCHEMES`]):
//! `udp://[source@]group:port?source=ADDR&iface=NAME|ADDR&program=N&rcvbuf=BYTES`, `demo:`
//! (the built-in generator) and `file:///path.ts` (a file looped in real time). Each parses into a [`SourceSpec`], whose driver the stream's home
//! shard runs ([`super::SourceDriver`]).

use super::{DemoSource, SourceDriver, UdpDriver};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Where a stream comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// The built-in synthetic stream.
    Demo,
    /// MPEG-TS over UDP.
    Udp(UdpSpec),
    /// A transport stream file, looped in real time.
    File(super::FileSpec),
}

/// A UDP source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpSpec {
    /// Address and port to receive on: a multicast group, or a local unicast address.
    pub addr: SocketAddrV4,
    /// Source-specific multicast: only datagrams from this sender.
    pub source: Option<Ipv4Addr>,
    /// The interface to join on, by name or by address.
    pub iface: Option<String>,
    /// The program to take from an MPTS.
    pub program: Option<u16>,
    /// SO_RCVBUF to ask for.
    pub rcvbuf: usize,
}

/// Default receive buffer: about 4 s of a 16 Mbit/s stream.
pub const DEFAULT_RCVBUF: usize = 8 << 20;

/// Why a source URL was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The scheme is not one shardcast reads.
    #[error("unsupported source scheme in {0:?} (expected {schemes})", schemes = scheme_names())]
    Scheme(String),
    /// The address or port does not parse.
    #[error("bad address {0:?} (expected IPv4:port, e.g. 239.1.1.1:5000)")]
    Address(String),
    /// A query parameter is unknown or its value does not parse.
    #[error("bad source parameter {0:?}")]
    Parameter(String),
    /// `source=` given for an address that is not multicast.
    #[error("source-specific join needs a multicast group, not {0}")]
    SourceWithoutGroup(Ipv4Addr),
}

/// How the rest of a URL, after its scheme, is read.
type ParseUrl = fn(&str) -> Result<SourceSpec, SourceError>;

/// Every way in, by the start of its URL, and how the rest of the URL is read. A new source
/// is a line here, a variant of [`SourceSpec`] and its driver.
const SCHEMES: &[(&str, ParseUrl)] = &[
    ("demo:", parse_demo),
    ("udp://", parse_udp),
    ("file://", super::file::parse),
];

/// The schemes, for an error message.
fn scheme_names() -> String {
    let names: Vec<&str> = SCHEMES.iter().map(|(scheme, _)| *scheme).collect();
    names.join(", ")
}

impl SourceSpec {
    /// Parse a source URL.
    pub fn parse(url: &str) -> Result<SourceSpec, SourceError> {
        if url == "demo" {
            return Ok(SourceSpec::Demo);
        }
        SCHEMES
            .iter()
            .find_map(|(scheme, parse)| url.strip_prefix(scheme).map(parse))
            .unwrap_or_else(|| Err(SourceError::Scheme(url.to_owned())))
    }

    /// The driver the stream's home shard runs for it.
    pub fn driver(&self) -> Box<dyn SourceDriver> {
        match self {
            SourceSpec::Demo => Box::new(DemoSource::new()),
            SourceSpec::Udp(udp) => Box::new(UdpDriver(udp.clone())),
            SourceSpec::File(file) => Box::new(super::file::FileSource::open(file)),
        }
    }

    /// Its kind, as the API and triggers name it (the URL's scheme).
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Demo => "demo",
            SourceSpec::Udp(_) => "udp",
            SourceSpec::File(_) => "file",
        }
    }
}

/// `demo:`, which takes nothing after the scheme.
fn parse_demo(rest: &str) -> Result<SourceSpec, SourceError> {
    if rest.is_empty() {
        Ok(SourceSpec::Demo)
    } else {
        Err(SourceError::Parameter(rest.to_owned()))
    }
}

/// `udp://[source@]addr:port?…`, after the scheme.
fn parse_udp(rest: &str) -> Result<SourceSpec, SourceError> {
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (userinfo_source, hostport) = match authority.split_once('@') {
        Some((src, hp)) => (Some(src), hp),
        None => (None, authority),
    };
    let hostport = hostport.trim_end_matches('/');
    let addr: SocketAddrV4 = hostport
        .parse()
        .map_err(|_| SourceError::Address(hostport.to_owned()))?;
    let mut spec = UdpSpec {
        addr,
        source: None,
        iface: None,
        program: None,
        rcvbuf: DEFAULT_RCVBUF,
    };
    if let Some(src) = userinfo_source {
        spec.source = Some(
            src.parse()
                .map_err(|_| SourceError::Address(src.to_owned()))?,
        );
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || SourceError::Parameter(pair.to_owned());
        match key {
            "source" => spec.source = Some(value.parse().map_err(|_| bad())?),
            "iface" if !value.is_empty() => spec.iface = Some(value.to_owned()),
            "program" => spec.program = Some(value.parse().map_err(|_| bad())?),
            "rcvbuf" => spec.rcvbuf = value.parse().map_err(|_| bad())?,
            _ => return Err(bad()),
        }
    }
    if let Some(src) = spec.source {
        if !addr.ip().is_multicast() {
            return Err(SourceError::SourceWithoutGroup(*addr.ip()));
        }
        let _ = src;
    }
    Ok(SourceSpec::Udp(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_udp_urls() {
        let s =
            SourceSpec::parse("udp://239.1.1.1:5000?source=10.0.0.7&iface=eth1&program=2").unwrap();
        let SourceSpec::Udp(u) = s else { panic!() };
        assert_eq!(u.addr, "239.1.1.1:5000".parse().unwrap());
        assert_eq!(u.source, Some(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(u.iface.as_deref(), Some("eth1"));
        assert_eq!(u.program, Some(2));
        let SourceSpec::Udp(u) = SourceSpec::parse("udp://10.0.0.9@232.0.0.1:1234").unwrap() else {
            panic!()
        };
        assert_eq!(u.source, Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(SourceSpec::parse("demo:").unwrap(), SourceSpec::Demo);
    }

    #[test]
    fn refuses_bad_urls_with_a_reason() {
        assert!(matches!(
            SourceSpec::parse("rtmp://x"),
            Err(SourceError::Scheme(_))
        ));
        assert!(matches!(
            SourceSpec::parse("udp://239.1.1.1"),
            Err(SourceError::Address(_))
        ));
        assert!(matches!(
            SourceSpec::parse("udp://239.1.1.1:5000?colour=red"),
            Err(SourceError::Parameter(_))
        ));
        assert!(matches!(
            SourceSpec::parse("udp://239.1.1.1:5000?program=x"),
            Err(SourceError::Parameter(_))
        ));
        assert!(matches!(
            SourceSpec::parse("udp://127.0.0.1:5000?source=1.2.3.4"),
            Err(SourceError::SourceWithoutGroup(_))
        ));
    }
}
