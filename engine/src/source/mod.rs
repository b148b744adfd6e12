//! Sources: where a stream's bytes come from. Each way in is a module here and a line in
//! `SCHEMES` (the start of its URL, and how the rest is read into a [`SourceSpec`]); the
//! stream's home shard runs its [`SourceDriver`] and feeds what it gives to the stream's
//! pipeline ([`crate::ingest`]).
//!
//! ```text
//!  udp://[source@]group:port?…  udp.rs    the backend reads the socket (unicast, ASM/SSM
//!                                         multicast, RCVBUF, the kernel's drop counter)
//!  demo:                        demo.rs   the protocols generator, paced, wall-clock stamps
//!  file:///path.ts?…            file.rs   a file looped at the pace of its PCRs
//! ```
//!
//! What it does not do yet: TCP, HTTP push, encoder processes, pulls (the sources issue).

mod demo;
mod driver;
mod file;
mod udp;

pub use demo::DemoSource;
pub use driver::SourceDriver;
pub use file::FileSpec;
pub use udp::{UdpDriver, UdpIngest, UdpSpec, DEFAULT_RCVBUF};

use std::net::Ipv4Addr;

/// Where a stream comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// The built-in synthetic stream.
    Demo,
    /// MPEG-TS over UDP.
    Udp(UdpSpec),
    /// A transport stream file, looped in real time.
    File(FileSpec),
}

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
pub(crate) const SCHEMES: &[(&str, ParseUrl)] = &[
    ("demo:", parse_demo),
    ("udp://", udp::parse),
    ("file://", file::parse),
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
            SourceSpec::File(file) => Box::new(file::FileSource::open(file)),
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
