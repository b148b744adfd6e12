use super::*;
use crate::tls::tests::{Pki, NOW};
use crate::tls::{server_config, CertSet, Certificates};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::{Read, Write};
use std::sync::atomic::Ordering;

const YEAR: i64 = 365 * 86_400;

struct Pair {
    _pki: Pki,
    /// What the client has read.
    received: Vec<u8>,
    client: ClientConnection,
    link: TlsLink,
    certs: Arc<Certificates>,
}

fn pair(name: &str, sni: &str, versions: &[&'static rustls::SupportedProtocolVersion]) -> Pair {
    let pki = Pki::new(name);
    // Certificates valid around the real clock: the client checks them against it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let files = pki.issue("live", &["live.example.com"], now - 60, now + YEAR);
    let certs = Certificates::new(CertSet::load(&[files], now).unwrap());
    let link = TlsLink::new(server_config(certs.clone()).unwrap()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let client = ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(sni.to_owned()).unwrap(),
    )
    .unwrap();
    Pair {
        _pki: pki,
        received: Vec::new(),
        client,
        link,
        certs,
    }
}

impl Pair {
    /// Move bytes both ways until neither side has any; the server's request bytes are
    /// returned. `step` bytes at most at a time from the client to the link.
    fn exchange(&mut self, step: usize) -> Result<Vec<u8>, TlsFailure> {
        let mut plaintext = Vec::new();
        for _ in 0..10_000 {
            let mut moved = false;
            let mut wire = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut wire).unwrap();
            }
            for chunk in wire.chunks(step.max(1)) {
                moved = true;
                self.link.receive(chunk, &mut plaintext)?;
            }
            let out = self.link.outgoing().to_vec();
            if !out.is_empty() {
                moved = true;
                let n = out.len();
                let mut rd = &out[..];
                while !rd.is_empty() {
                    self.client.read_tls(&mut rd).unwrap();
                    if let Err(e) = self.client.process_new_packets() {
                        self.link.sent(n);
                        // The client refused: its alert goes back to the link.
                        let mut wire = Vec::new();
                        while self.client.wants_write() {
                            self.client.write_tls(&mut wire).unwrap();
                        }
                        let _ = self.link.receive(&wire, &mut plaintext);
                        return Err(TlsFailure::Protocol(format!("client: {e}")));
                    }
                    let mut got = Vec::new();
                    let _ = self.client.reader().read_to_end(&mut got);
                    self.received.extend(got);
                }
                self.link.sent(n);
            }
            if !moved {
                return Ok(plaintext);
            }
        }
        panic!("no end to the exchange");
    }

    fn client_reads(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.received)
    }
}

#[test]
fn a_request_and_its_response_cross_tls_1_3_and_1_2_split_at_every_byte() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        for step in [1, 7, 100, 100_000] {
            let mut p = pair("roundtrip", "live.example.com", &[version]);
            p.client
                .writer()
                .write_all(b"GET /live/index.m3u8 HTTP/1.1\r\n\r\n")
                .unwrap();
            let request = p.exchange(step).unwrap();
            assert_eq!(request, b"GET /live/index.m3u8 HTTP/1.1\r\n\r\n");
            assert!(p.link.is_open());
            assert_eq!(p.client.alpn_protocol(), Some(&b"http/1.1"[..]));
            assert_eq!(p.client.protocol_version(), Some(version.version));

            // A body larger than the output buffer, from several buffers: taken in turns as
            // the buffer drains.
            let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let parts: [&[u8]; 2] = [&head, &body];
            let total = head.len() + body.len();
            let mut taken = 0;
            let mut received = Vec::new();
            while taken < total {
                let mut offset = taken;
                let rest: Vec<&[u8]> = parts
                    .iter()
                    .filter_map(|p| {
                        if offset >= p.len() {
                            offset -= p.len();
                            None
                        } else {
                            let s = &p[offset..];
                            offset = 0;
                            Some(s)
                        }
                    })
                    .collect();
                let n = p.link.seal(&rest).unwrap();
                assert!(n > 0, "the drained buffer takes more");
                assert!(p.link.outgoing().len() <= OUT_CAPACITY);
                taken += n;
                p.exchange(step).unwrap();
                received.extend(p.client_reads());
            }
            assert_eq!(received.len(), total);
            assert_eq!(&received[..head.len()], &head[..]);
            assert_eq!(&received[head.len()..], &body[..]);

            p.link.close();
            p.exchange(step).unwrap();
            assert!(p.link.finished());
            let mut rest = Vec::new();
            // A clean end: the client saw close_notify (EOF, not an error).
            assert_eq!(p.client.reader().read_to_end(&mut rest).unwrap(), 0);
            assert!(p.client_reads().is_empty());
            assert_eq!(p.certs.counters().unknown_name.load(Ordering::Relaxed), 0);
        }
    }
}

#[test]
fn an_unknown_name_is_refused_during_the_handshake() {
    let mut p = pair("sni", "other.example.net", &[&rustls::version::TLS13]);
    p.client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    let e = p.exchange(100_000).unwrap_err();
    assert!(e.to_string().contains("no server certificate"), "{e}");
    // The alert goes to the client, which sees the refusal; then nothing is left.
    let alert = p.link.outgoing().to_vec();
    assert!(!alert.is_empty() && alert.len() < 64, "{alert:?}");
    p.link.sent(alert.len());
    assert!(p.link.finished());
    let mut rd = &alert[..];
    p.client.read_tls(&mut rd).unwrap();
    assert!(p.client.process_new_packets().is_err());
    assert_eq!(p.certs.counters().unknown_name.load(Ordering::Relaxed), 1);
    assert_eq!(p.link.seal(&[b"HTTP/1.1 200 OK\r\n\r\n"]).unwrap(), 0);
}

#[test]
fn garbage_fails_the_link_with_an_alert_and_loses_nothing_else() {
    let mut p = pair("garbage", "live.example.com", &[&rustls::version::TLS13]);
    let mut plain = Vec::new();
    let e = p
        .link
        .receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut plain);
    assert!(e.is_err());
    assert!(plain.is_empty());
    assert!(p.link.failure().is_some());
    // An alert is queued for the peer, then the link is finished.
    let n = p.link.outgoing().len();
    assert!(n > 0 && n < 64, "an alert record: {n} bytes");
    p.link.sent(n);
    assert!(p.link.finished());
    // Whatever comes next is refused the same way.
    assert!(p.link.receive(b"more", &mut plain).is_err());
}

#[test]
fn ciphertext_beyond_one_record_is_refused() {
    let mut p = pair("oversized", "live.example.com", &[&rustls::version::TLS13]);
    let mut plain = Vec::new();
    // A handshake record header announcing 16 KiB, then never completing it, then more.
    let mut record = vec![0x16, 0x03, 0x01, 0x40, 0x00];
    record.resize(MAX_INCOMING + 1, 0);
    assert!(p.link.receive(&record, &mut plain).is_err());
}

#[test]
fn a_send_in_flight_keeps_its_bytes_in_place() {
    let mut p = pair("inflight", "live.example.com", &[&rustls::version::TLS13]);
    p.client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    p.exchange(100_000).unwrap();
    let body = vec![7u8; 40_000];
    assert!(p.link.seal(&[&body]).unwrap() > 0);
    let held = p.link.begin_send().to_vec();
    let ptr = p.link.outgoing().as_ptr();
    // Part was sent; more sealed while the rest is "in flight" again.
    p.link.sent(1000);
    let again = p.link.begin_send().to_vec();
    assert_eq!(again, held[1000..]);
    let ptr2 = p.link.outgoing().as_ptr();
    p.link.seal(&[&body]).unwrap();
    assert_eq!(p.link.outgoing().as_ptr(), ptr2, "not moved while held");
    assert_eq!(&p.link.outgoing()[..again.len()], &again[..]);
    assert_eq!(ptr2, ptr.wrapping_add(1000));
    let n = p.link.outgoing().len();
    p.link.sent(n);
    assert!(!p.link.wants_write());
    assert_eq!(p.link.outgoing().len(), 0, "an idle link holds no buffer");
    let _ = NOW;
}
