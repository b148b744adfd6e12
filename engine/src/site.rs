//! How viewers reach this server: the public base URL written into what shardcast hands out
//! (stream info, embed script), and which peers are reverse proxies whose forwarding headers
//! are believed.
//!
//! The base URL of a request is, in order: the configured `public_base_url`; from a trusted
//! proxy, its `X-Mst-Path` (a full base URL, as MistServer's proxies send it) or its
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Prefix`; otherwise `http://` and
//! the request's Host. Forwarding headers from any other peer are ignored, and so are
//! `X-Forwarded-For` and `X-Real-IP` ([`Site::client_ip`]). What it does not do: TLS (a proxy
//! in front terminates it) or the `Forwarded` header of RFC 7239.

use crate::http::RequestHead;
use std::net::IpAddr;

/// An address range (`10.0.0.0/8`, `::1/128`, or one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

/// Not an address range.
#[derive(Debug, thiserror::Error)]
pub enum CidrError {
    /// `ADDR/PREFIX` with a bad address or prefix.
    #[error("{0:?} is not address/prefix (the prefix is 0 to 32 for IPv4, 0 to 128 for IPv6)")]
    BadRange(String),
    /// Not an address.
    #[error("{0:?} is not an address or address/prefix")]
    NotAnAddress(String),
}

impl Cidr {
    /// Parse `ADDR` or `ADDR/PREFIX`.
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let text = text.trim();
        if text.contains('/') {
            text.parse()
                .map(Cidr)
                .map_err(|_| CidrError::BadRange(text.to_owned()))
        } else {
            text.parse::<IpAddr>()
                .map(|a| Cidr(a.into()))
                .map_err(|_| CidrError::NotAnAddress(text.to_owned()))
        }
    }

    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The server's public face.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Site {
    /// `[server] public_base_url`, with a trailing slash.
    pub public_base_url: Option<String>,
    /// `[server] trusted_proxies`.
    pub trusted_proxies: Vec<Cidr>,
}

/// A request's base URL and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// With a trailing slash; `/` when nothing is known.
    pub url: String,
    /// It came from the configuration or a trusted proxy (not from the Host header).
    pub public: bool,
}

impl Site {
    /// Whether the connection's peer is a trusted proxy.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|p| self.trusted_proxies.iter().any(|c| c.contains(p)))
    }

    /// The base URL for URLs written into answers to `head`.
    pub fn base(&self, head: &RequestHead) -> Base {
        if let Some(url) = &self.public_base_url {
            return Base {
                url: url.clone(),
                public: true,
            };
        }
        if self.trusts(head.peer) {
            let f = &head.forwarded;
            if let Some(url) = f
                .mst_path
                .as_deref()
                .and_then(|p| parse_public_base(p).ok())
            {
                return Base { url, public: true };
            }
            if f.proto.is_some() || f.host.is_some() || f.prefix.is_some() {
                let proto = f.proto.as_deref().unwrap_or("http");
                let host = f.host.as_deref().or(head.host.as_deref()).unwrap_or("");
                let prefix = f.prefix.as_deref().unwrap_or("").trim_end_matches('/');
                return Base {
                    url: format!("{proto}://{host}{prefix}/"),
                    public: true,
                };
            }
        }
        let scheme = if head.secure { "https" } else { "http" };
        Base {
            url: head
                .host
                .as_deref()
                .map_or_else(|| "/".to_string(), |h| format!("{scheme}://{h}/")),
            public: false,
        }
    }

    /// The viewer's address: from a trusted proxy, X-Real-IP, else the right-most address of
    /// X-Forwarded-For that is not itself a trusted proxy; otherwise the peer.
    pub fn client_ip(&self, head: &RequestHead) -> Option<IpAddr> {
        if !self.trusts(head.peer) {
            return head.peer;
        }
        let f = &head.forwarded;
        if let Some(ip) = f.real_ip.as_deref().and_then(|v| v.trim().parse().ok()) {
            return Some(ip);
        }
        if let Some(list) = &f.for_list {
            for hop in list.rsplit(',') {
                let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                    break;
                };
                if !self.trusts(Some(ip)) {
                    return Some(ip);
                }
            }
        }
        head.peer
    }
}

fn with_slash(url: &str) -> String {
    if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/")
    }
}

/// Not a public base URL.
#[derive(Debug, thiserror::Error)]
pub enum BaseUrlError {
    /// Neither http:// nor https://.
    #[error("public_base_url {0:?} must start with http:// or https://")]
    Scheme(String),
    /// No host, or characters a URL cannot have.
    #[error("public_base_url {0:?} is not a URL with a host")]
    NoHost(String),
}

/// Check a configured public base URL: `http://` or `https://`, a host, an optional path;
/// returned with a trailing slash.
pub fn parse_public_base(text: &str) -> Result<String, BaseUrlError> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| BaseUrlError::Scheme(text.to_owned()))?;
    if rest.is_empty()
        || rest.starts_with('/')
        || !text
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"'<>\\`".contains(&b))
    {
        return Err(BaseUrlError::NoHost(text.to_owned()));
    }
    Ok(with_slash(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Forwarded;

    fn head(peer: &str, host: Option<&str>, forwarded: Forwarded) -> RequestHead {
        RequestHead {
            peer: peer.parse().ok(),
            host: host.map(String::from),
            forwarded,
            ..RequestHead::default()
        }
    }

    fn site() -> Site {
        Site {
            public_base_url: None,
            trusted_proxies: vec![
                Cidr::parse("127.0.0.1").unwrap(),
                Cidr::parse("10.0.0.0/8").unwrap(),
            ],
        }
    }

    #[test]
    fn ranges_contain_what_they_should() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.200.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("::/129").is_err());
        assert!(Cidr::parse(" 192.0.2.0/24 ").is_ok());
        assert!(Cidr::parse("nowhere").is_err());
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let forwarded = Forwarded {
            proto: Some("https".into()),
            host: Some("tv.example".into()),
            prefix: Some("/live/".into()),
            for_list: Some("203.0.113.9, 10.0.0.5".into()),
            ..Forwarded::default()
        };
        let trusted = head("127.0.0.1", Some("127.0.0.1:8080"), forwarded.clone());
        assert_eq!(site().base(&trusted).url, "https://tv.example/live/");
        assert_eq!(site().client_ip(&trusted), "203.0.113.9".parse().ok());
        let stranger = head("192.0.2.1", Some("127.0.0.1:8080"), forwarded);
        assert_eq!(
            site().base(&stranger),
            Base {
                url: "http://127.0.0.1:8080/".into(),
                public: false
            }
        );
        assert_eq!(site().client_ip(&stranger), "192.0.2.1".parse().ok());
    }

    #[test]
    fn a_full_base_from_the_proxy_or_the_configuration_wins() {
        let mst = head(
            "10.1.1.1",
            Some("h"),
            Forwarded {
                mst_path: Some("https://cdn.example/tv".into()),
                host: Some("ignored".into()),
                ..Forwarded::default()
            },
        );
        assert_eq!(site().base(&mst).url, "https://cdn.example/tv/");
        let configured = Site {
            public_base_url: Some(parse_public_base("https://tv.example/x").unwrap()),
            ..site()
        };
        assert_eq!(configured.base(&mst).url, "https://tv.example/x/");
        assert!(parse_public_base("ftp://x").is_err());
        assert!(parse_public_base("https:///path").is_err());
    }
}
