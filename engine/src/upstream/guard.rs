//! The SSRF guard: which addresses the server connects to when someone outside names the
//! upstream (a viewer's proxy URL), so that a request cannot reach the host itself, its
//! private network or a cloud's metadata service.
//!
//! Refused unless an allowed network covers them:
//!
//! | IPv4 | IPv6 |
//! |---|---|
//! | 0.0.0.0/8 (this network, unspecified), 127.0.0.0/8 (loopback) | `::` (unspecified), `::1` (loopback) |
//! | 10/8, 172.16/12, 192.168/16 (private), 100.64/10 (shared, carrier NAT) | fc00::/7 (unique local), fec0::/10 (site local) |
//! | 169.254/16 (link local: cloud metadata at 169.254.169.254) | fe80::/10 (link local) |
//! | 192.0.0.0/24 (protocol assignments), 198.18/15 (benchmarking), 240/4 and 255.255.255.255 (reserved, broadcast) | 2001::/32 (Teredo), 100::/64 (discard) |
//! | 224/4 (multicast) | ff00::/8 (multicast) |
//!
//! IPv6 addresses that carry an IPv4 one (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
//! NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged as the IPv4 address they carry.
//!
//! The check is on addresses, not names: [`GuardedResolver`] resolves a name, drops what is
//! refused and gives the HTTP client only what is left, so the address checked is the
//! address connected to (a name cannot resolve to a public address at the check and to
//! loopback at the connect). Literal addresses in URLs (which the client does not resolve,
//! in whatever form: `http://2130706433/`, `http://0177.1/` are 127.0.0.1 once parsed) are
//! checked by [`Guard::check_url`], on the first URL and on every redirect.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Why an address is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{address} is {kind}: not an address an upstream may have (allow it in the proxy settings)"
)]
pub struct Refused {
    /// The address.
    pub address: IpAddr,
    /// What it is, in words.
    pub kind: &'static str,
}

/// Which addresses may be connected to: the public ones, and those the operator allowed.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allowed: Vec<IpNet>,
}

impl Guard {
    /// Public addresses only, and those in `allowed`.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// Whether `address` may be connected to.
    pub fn check(&self, address: IpAddr) -> Result<(), Refused> {
        let Some(kind) = special(address) else {
            return Ok(());
        };
        // An allowed network covers the address as written, or the IPv4 one it carries.
        let carried = match address {
            IpAddr::V6(v6) => carried_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        if self
            .allowed
            .iter()
            .any(|net| net.contains(&address) || carried.is_some_and(|v4| net.contains(&v4)))
        {
            return Ok(());
        }
        Err(Refused { address, kind })
    }

    /// Whether `url` may be asked for: a literal address in it is checked here; a name is
    /// checked when it is resolved ([`GuardedResolver`]).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        match url.host() {
            Some(url::Host::Ipv4(v4)) => self.check(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.check(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) | None => Ok(()),
        }
    }
}

/// What kind of special address `address` is, or `None` for a public one.
pub fn special(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => match carried_v4(v6) {
            Some(v4) => special_v4(v4).or_else(|| v6_only(v6)),
            None => special_v6(v6),
        },
    }
}

fn special_v4(a: Ipv4Addr) -> Option<&'static str> {
    let [b0, b1, b2, _] = a.octets();
    Some(match (b0, b1, b2) {
        (0, _, _) => "an unspecified address (this network)",
        (127, _, _) => "a loopback address",
        (10, _, _) => "a private address",
        (172, 16..=31, _) => "a private address",
        (192, 168, _) => "a private address",
        (100, 64..=127, _) => "a shared (carrier NAT) address",
        (169, 254, _) => "a link-local address (cloud metadata lives there)",
        (192, 0, 0) => "an IETF protocol assignment",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn special_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    Some(if a.is_unspecified() {
        "an unspecified address"
    } else if a.is_loopback() {
        "a loopback address"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "a unique-local address"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "a link-local address"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "a site-local address"
    } else if s[0] & 0xff00 == 0xff00 {
        "a multicast address"
    } else {
        v6_only(a)?
    })
}

/// Special IPv6 ranges that carry no IPv4 address a check could judge instead.
fn v6_only(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    if s[0] == 0x2001 && s[1] == 0 {
        Some("a Teredo tunnel address")
    } else if s[..4] == [0x100, 0, 0, 0] {
        Some("a discard address")
    } else {
        None
    }
}

/// The IPv4 address an IPv6 address carries: mapped (`::ffff:0:0/96`), compatible
/// (`::/96`, not `::` or `::1`), NAT64 (`64:ff9b::/96`), 6to4 (`2002::/16`).
fn carried_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = a.to_ipv4_mapped() {
        Some(v4)
    } else if (s[..6] == [0; 6] && !a.is_unspecified() && !a.is_loopback())
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        Some(low)
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ))
    } else {
        None
    }
}

/// A DNS resolver for the HTTP client that gives it only the addresses the guard allows; a
/// name all of whose addresses are refused fails with the first refusal.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    guard: Arc<Guard>,
}

impl GuardedResolver {
    /// Resolving through `guard`.
    pub fn new(guard: Arc<Guard>) -> Self {
        Self { guard }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                found.into_iter().partition(|a| guard.check(a.ip()).is_ok());
            if allowed.is_empty() {
                return Err(match refused.first() {
                    Some(a) => Box::new(NameRefused {
                        name: host,
                        refused: guard.check(a.ip()).err().unwrap_or(Refused {
                            address: a.ip(),
                            kind: "refused",
                        }),
                    }) as Box<dyn std::error::Error + Send + Sync>,
                    None => format!("{host} has no address").into(),
                });
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A name that resolved only to refused addresses.
#[derive(Debug, thiserror::Error)]
#[error("{name} resolves to {refused}")]
pub struct NameRefused {
    /// The name.
    pub name: String,
    /// Its first address, and why it is refused.
    pub refused: Refused,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> bool {
        Guard::default().check(text.parse().unwrap()).is_err()
    }

    #[test]
    fn special_addresses_are_refused_in_every_form() {
        for address in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "192.0.0.8",
            "198.18.0.1",
            "224.0.0.1",
            "239.1.1.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:c0a8:101::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
        ] {
            assert!(refused(address), "{address} was allowed");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for address in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.2.1",
            "2606:2800:220:1:248:1893:25c8:1946",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!refused(address), "{address} was refused");
        }
    }

    #[test]
    fn allowed_networks_let_special_addresses_through() {
        let guard = Guard::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        for address in ["127.0.0.1", "::ffff:127.0.0.1", "fd00::5"] {
            assert!(guard.check(address.parse().unwrap()).is_ok(), "{address}");
        }
        let no = guard.check("10.0.0.1".parse().unwrap()).unwrap_err();
        assert_eq!(no.kind, "a private address");
        assert!(no.to_string().starts_with("10.0.0.1 is a private address"));
    }

    #[test]
    fn literal_addresses_in_urls_in_any_spelling() {
        let guard = Guard::default();
        for url in [
            "http://127.0.0.1/a.m3u8",
            "http://2130706433/a.m3u8",
            "http://0177.0.0.1/a.m3u8",
            "http://0x7f.1/a.m3u8",
            "http://127.1/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "https://169.254.169.254/latest/meta-data/",
        ] {
            let parsed = reqwest::Url::parse(url).unwrap();
            assert!(
                guard.check_url(&parsed).is_err(),
                "{url} ({parsed}) was allowed"
            );
        }
        let named = reqwest::Url::parse("http://localhost/").unwrap();
        assert!(
            guard.check_url(&named).is_ok(),
            "names are checked when resolved"
        );
    }
}
