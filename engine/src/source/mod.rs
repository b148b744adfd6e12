//! Sources: where a stream's bytes come from. Each way in is a module here and a line in
//! `SCHEMES` (the start of its URL, and how the rest is read into a [`SourceSpec`]); the
//! stream's home shard runs its [`SourceDriver`] and feeds what it gives to the stream's
//! pipeline ([`crate::ingest`]).
//!
//! ```text
//!  udp://[source@]group:port?…  udp.rs    the backend reads the socket (unicast, ASM/SSM
//!                                         multicast, RCVBUF, the kernel's drop counter);
//!                                         raw TS or TS in RTP, told apart per datagram
//!  demo:                        demo.rs   the protocols generator, paced, wall-clock stamps
//!  file:///path.ts?…            file.rs   a file looped at the pace of its PCRs
//!  tcp://addr:port?…            tcp.rs    an encoder connects (listen), or the server
//!                                         connects (mode=connect); a task on the sources'
//!                                         runtime reads, the shard takes it from an inlet
//!  exec:COMMAND ARGS…           exec.rs   an encoder process's stdout (no shell; its
//!                                         process group killed with the stream)
//!  http://host:port/path        pull.rs   a progressive TS body pulled from another server
//!  hls+http://host/x.m3u8       hls_pull.rs  a live HLS stream pulled, segment by segment
//!  proxy://NAME                 hls_pull.rs  the same, from a configured HLS proxy: through
//!                                         its fetcher and cache, one upstream fetch for the
//!                                         proxy's viewers and the stream
//!  push://?key=…&allow=…        push.rs   an encoder PUTs or POSTs the stream to
//!                                         /push/{stream} on the viewers' port
//!  rtmp://addr:port/app?key=…   rtmp.rs   encoders publish FLV over RTMP (one listener per
//!                                         address for all its streams), remuxed into TS
//!  srt://addr:port?passphrase=… srt.rs    encoders call over SRT (one listener per address,
//!  srt://host:port?mode=caller            stream ids naming streams), or the server calls;
//!                                         libsrt, polled by a thread of its own
//!  [URL, URL, …] (a list)       failover.rs  all of them at once; the first live one feeds
//!                                         the stream
//! ```
//!
//! What it does not do yet: `https://` pulls (the sources issue).

mod attempts;
mod demo;
mod driver;
mod exec;
mod failover;
mod file;
mod hls_pull;
mod inlet;
mod pull;
mod push;
pub(crate) mod retry;
mod rtmp;
mod srt;
mod tcp;
pub(crate) mod udp;

pub use demo::DemoSource;
pub use driver::{SourceContext, SourceDriver};
pub use exec::ExecSpec;
pub use failover::{FailoverSpec, FailoverStatus, Selector, SourceState, Switch, Why};
pub use file::FileSpec;
pub use hls_pull::{HlsPullSpec, Variant};
pub use inlet::{Delivery, Inlet, INLET_CAPACITY};
pub use pull::PullSpec;
pub use push::{PushCounts, PushSpec, Pushes};
pub use retry::Retry;
pub use rtmp::{RtmpCounts, RtmpSpec};
pub use srt::{stop_srt_threads, SrtCounts, SrtMode, SrtSpec};
pub use tcp::{TcpMode, TcpSpec};
pub use udp::{DatagramBuffers, UdpDriver, UdpIngest, UdpSpec, DEFAULT_RCVBUF};

/// Where a stream comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// The built-in synthetic stream.
    Demo,
    /// MPEG-TS over UDP.
    Udp(UdpSpec),
    /// A transport stream file, looped in real time.
    File(FileSpec),
    /// MPEG-TS over TCP.
    Tcp(TcpSpec),
    /// An encoder process's standard output.
    Exec(ExecSpec),
    /// A progressive TS body pulled from another server.
    Pull(PullSpec),
    /// A live HLS stream pulled from another server.
    HlsPull(HlsPullSpec),
    /// Pushed by an encoder over HTTP.
    Push(PushSpec),
    /// Published by an encoder over RTMP.
    Rtmp(RtmpSpec),
    /// Over SRT, called by an encoder or calling one.
    Srt(SrtSpec),
    /// A list of sources, the first live one feeding the stream.
    Failover(FailoverSpec),
}

/// Why a source URL was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The scheme is not one shardcast reads.
    #[error("unsupported source scheme in {0:?} (expected {schemes})", schemes = scheme_names())]
    Scheme(String),
    /// The address or port does not parse.
    #[error("bad address {0:?} (expected address:port, e.g. 239.1.1.1:5000 or [ff3e::1]:5000)")]
    Address(String),
    /// A query parameter is unknown or its value does not parse.
    #[error("bad source parameter {0:?}")]
    Parameter(String),
    /// An `exec:` command line that cannot be run.
    #[error("bad command: {0}")]
    Command(String),
    /// `source=` given for an address that is not multicast.
    #[error("source-specific join needs a multicast group, not {0}")]
    SourceWithoutGroup(std::net::IpAddr),
}

/// How the rest of a URL, after its scheme, is read.
type ParseUrl = fn(&str) -> Result<SourceSpec, SourceError>;

/// Every way in, by the start of its URL, and how the rest of the URL is read. A new source
/// is a line here, a variant of [`SourceSpec`] and its driver.
pub(crate) const SCHEMES: &[(&str, ParseUrl)] = &[
    ("demo:", parse_demo),
    ("udp://", udp::parse),
    ("file://", file::parse),
    ("tcp://", tcp::parse),
    ("exec:", exec::parse),
    ("http://", pull::parse),
    ("hls+http://", hls_pull::parse_url),
    ("proxy://", hls_pull::parse_proxy),
    ("push://", push::parse),
    ("rtmp://", rtmp::parse),
    ("srt://", srt::parse),
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
    pub fn driver(&self, context: &SourceContext<'_>) -> Box<dyn SourceDriver> {
        match self {
            SourceSpec::Tcp(tcp) => Box::new(tcp::start(tcp, context)),
            SourceSpec::Exec(exec) => Box::new(exec::start(exec, context)),
            SourceSpec::Pull(pull) => Box::new(pull::start(pull, context)),
            SourceSpec::HlsPull(pull) => Box::new(hls_pull::start(pull, context)),
            SourceSpec::Push(push) => Box::new(push::start(push, context)),
            SourceSpec::Rtmp(rtmp) => Box::new(rtmp::start(rtmp, context)),
            SourceSpec::Srt(srt) => Box::new(srt::start(srt, context)),
            SourceSpec::Failover(list) => Box::new(failover::start(list, context)),
            SourceSpec::Demo => Box::new(DemoSource::new()),
            SourceSpec::Udp(udp) => Box::new(UdpDriver(udp.clone())),
            SourceSpec::File(file) => Box::new(file::FileSource::open(file)),
        }
    }

    /// Its driver when it is one of a failover list: a UDP source is read by a task of the
    /// sources' runtime too (the failover task picks between them), not by the shard.
    fn task_driver(&self, context: &SourceContext<'_>) -> Box<dyn SourceDriver> {
        match self {
            SourceSpec::Udp(udp) => Box::new(udp::start_task(udp, context)),
            other => other.driver(context),
        }
    }

    /// Sources of a list, for a stream whose `source` is several URLs: the first live one
    /// feeds the stream, switching after `dry` ([`FailoverSpec`]). A list of one is that
    /// source; lists do not nest.
    pub fn parse_list(
        urls: &[String],
        dry: std::time::Duration,
        back_after: Option<std::time::Duration>,
    ) -> Result<SourceSpec, SourceError> {
        let mut sources = Vec::with_capacity(urls.len());
        for url in urls {
            sources.push((url.clone(), SourceSpec::parse(url)?));
        }
        match sources.len() {
            0 => Err(SourceError::Parameter("an empty source list".into())),
            1 => Ok(sources.remove(0).1),
            _ => Ok(SourceSpec::Failover(FailoverSpec {
                sources,
                dry,
                back_after,
            })),
        }
    }

    /// The configured proxies it pulls through (`proxy://NAME`).
    pub fn proxies(&self) -> Vec<&str> {
        match self {
            SourceSpec::Failover(list) => {
                list.sources.iter().flat_map(|(_, s)| s.proxies()).collect()
            }
            SourceSpec::HlsPull(pull) => pull.proxy.as_deref().into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The address it takes RTMP publishers on, for an RTMP source.
    pub fn rtmp_listen(&self) -> Option<std::net::SocketAddr> {
        match self {
            SourceSpec::Failover(list) => list.sources.iter().find_map(|(_, s)| s.rtmp_listen()),
            SourceSpec::Rtmp(rtmp) => Some(rtmp.listen),
            _ => None,
        }
    }

    /// The UDP address it takes SRT callers on, for a listening SRT source.
    pub fn srt_listen(&self) -> Option<std::net::SocketAddr> {
        match self {
            SourceSpec::Failover(list) => list.sources.iter().find_map(|(_, s)| s.srt_listen()),
            SourceSpec::Srt(srt) if srt.mode == SrtMode::Listener => Some(srt.listen),
            _ => None,
        }
    }

    /// The TCP port it listens on, for a listening TCP source.
    pub fn tcp_listen_port(&self) -> Option<u16> {
        match self {
            SourceSpec::Failover(list) => {
                list.sources.iter().find_map(|(_, s)| s.tcp_listen_port())
            }
            SourceSpec::Tcp(tcp) if tcp.mode == TcpMode::Listen => tcp
                .addr
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| a.port()),
            _ => None,
        }
    }

    /// Whether it and `other` would take the same input: one UDP address (an unspecified
    /// address overlaps every other on its port; an SRT listener's too), or one listening TCP
    /// port. SRT listeners of one address share it.
    pub fn shares_input(&self, other: &SourceSpec) -> bool {
        match (self, other) {
            (SourceSpec::Failover(list), _) => {
                list.sources.iter().any(|(_, s)| s.shares_input(other))
            }
            (_, SourceSpec::Failover(list)) => {
                list.sources.iter().any(|(_, s)| self.shares_input(s))
            }
            (SourceSpec::Udp(a), SourceSpec::Udp(b)) => udp_overlap(a.addr, b.addr),
            (SourceSpec::Udp(a), SourceSpec::Srt(b)) | (SourceSpec::Srt(b), SourceSpec::Udp(a))
                if b.mode == SrtMode::Listener =>
            {
                udp_overlap(a.addr, b.listen)
            }
            _ => self
                .tcp_listen_port()
                .is_some_and(|port| other.tcp_listen_port() == Some(port)),
        }
    }

    /// Whether it is a connection (or process) that can be up or down.
    pub fn connects(&self) -> bool {
        matches!(
            self,
            SourceSpec::Tcp(_)
                | SourceSpec::Exec(_)
                | SourceSpec::Pull(_)
                | SourceSpec::HlsPull(_)
                | SourceSpec::Push(_)
                | SourceSpec::Rtmp(_)
                | SourceSpec::Srt(_)
                | SourceSpec::Failover(_)
        )
    }

    /// Its kind, as the API and triggers name it (the URL's scheme).
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Demo => "demo",
            SourceSpec::Udp(_) => "udp",
            SourceSpec::File(_) => "file",
            SourceSpec::Tcp(_) => "tcp",
            SourceSpec::Exec(_) => "exec",
            SourceSpec::Pull(_) => "http",
            SourceSpec::HlsPull(_) => "hls",
            SourceSpec::Push(_) => "push",
            SourceSpec::Rtmp(_) => "rtmp",
            SourceSpec::Srt(_) => "srt",
            SourceSpec::Failover(_) => "failover",
        }
    }
}

/// A source URL for the log: the values of its secrets (`key=`, `passphrase=`) replaced.
pub fn redacted(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let fields: Vec<String> = query
        .split('&')
        .map(|field| match field.split_once('=') {
            Some((name @ ("key" | "passphrase"), _)) => format!("{name}=…"),
            _ => field.to_owned(),
        })
        .collect();
    format!("{head}?{}", fields.join("&"))
}

/// Whether two UDP addresses would take the same datagrams: one port, and one address or an
/// unspecified one.
fn udp_overlap(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// An `allow=` value: addresses or CIDR ranges, comma-separated (`None`: one does not parse).
fn parse_allow(value: &str) -> Option<Vec<ipnet::IpNet>> {
    value
        .split(',')
        .map(|item| {
            item.parse::<ipnet::IpNet>().ok().or_else(|| {
                item.parse::<std::net::IpAddr>()
                    .ok()
                    .map(ipnet::IpNet::from)
            })
        })
        .collect()
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
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn parses_udp_urls() {
        let s =
            SourceSpec::parse("udp://239.1.1.1:5000?source=10.0.0.7&iface=eth1&program=2").unwrap();
        let SourceSpec::Udp(u) = s else { panic!() };
        assert_eq!(u.addr, "239.1.1.1:5000".parse().unwrap());
        assert_eq!(u.source, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))));
        assert_eq!(u.iface.as_deref(), Some("eth1"));
        assert_eq!(u.program, Some(2));
        let SourceSpec::Udp(u) = SourceSpec::parse("udp://10.0.0.9@232.0.0.1:1234").unwrap() else {
            panic!()
        };
        assert_eq!(u.source, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))));
        assert_eq!(SourceSpec::parse("demo:").unwrap(), SourceSpec::Demo);
        // IPv6 multicast, any-source and source-specific.
        let SourceSpec::Udp(u) =
            SourceSpec::parse("udp://[2001:db8::7]@[ff3e::1]:5000?iface=eth1").unwrap()
        else {
            panic!()
        };
        assert_eq!(u.source, Some("2001:db8::7".parse().unwrap()));
        assert!(u.addr.ip().is_multicast() && u.addr.is_ipv6());
        assert!(SourceSpec::parse("udp://[ff3e::1]:5000").is_ok());
        let SourceSpec::Udp(u) = SourceSpec::parse("udp://[::1]:5000").unwrap() else {
            panic!()
        };
        assert!(u.addr.is_ipv6() && u.source.is_none());
        // A source of the other family is refused.
        assert!(SourceSpec::parse("udp://[2001:db8::7]@239.1.1.1:5000").is_err());
    }

    #[test]
    fn secrets_are_left_out_of_logged_urls() {
        assert_eq!(
            redacted("srt://0.0.0.0:9000?latency=200&passphrase=0123456789&x"),
            "srt://0.0.0.0:9000?latency=200&passphrase=…&x"
        );
        assert_eq!(redacted("rtmp://h/live?key=s"), "rtmp://h/live?key=…");
        assert_eq!(redacted("udp://1.2.3.4:5"), "udp://1.2.3.4:5");
    }

    #[test]
    fn refuses_bad_urls_with_a_reason() {
        assert!(matches!(
            SourceSpec::parse("rist://x"),
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
