use super::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A test CA and the files of the certificates it signs, in a directory of their own.
pub(crate) struct Pki {
    pub dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("shardcast-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Self { dir, ca }
    }

    /// The CA's certificate, DER.
    pub(crate) fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A certificate for `names`, valid from `from` to `to` (UNIX seconds), written as
    /// `{file}.pem` and `{file}.key`.
    pub(crate) fn issue(&self, file: &str, names: &[&str], from: i64, to: i64) -> CertFiles {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, format!("{}{}", cert.pem(), self.ca.pem())).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) const NOW: i64 = 1_800_000_000;
const YEAR: i64 = 365 * 86_400;

#[test]
fn names_choose_the_certificate_and_no_name_gets_the_first() {
    let pki = Pki::new("choose");
    let a = pki.issue(
        "a",
        &["live.example.com", "cdn.example.com"],
        NOW - 10,
        NOW + YEAR,
    );
    let b = pki.issue("b", &["*.example.org"], NOW - 10, NOW + YEAR);
    let set = CertSet::load(&[a.clone(), b.clone()], NOW).unwrap();
    let chosen = |sni| set.choose(sni).map(|c| c.files.clone());
    assert_eq!(chosen(None), Some(a.clone()));
    assert_eq!(chosen(Some("CDN.example.com")), Some(a.clone()));
    assert_eq!(chosen(Some("tv.example.org")), Some(b.clone()));
    // A wildcard serves one label, not the parent nor two labels down.
    assert_eq!(chosen(Some("example.org")), None);
    assert_eq!(chosen(Some("a.tv.example.org")), None);
    assert_eq!(chosen(Some("other.example.net")), None);
    assert_eq!(
        set.certs()[0].names,
        ["live.example.com", "cdn.example.com"]
    );
    assert_eq!(set.certs()[0].not_after, NOW + YEAR);
}

#[test]
fn bad_certificates_are_refused_with_the_file_and_the_reason() {
    let pki = Pki::new("refuse");
    let expired = pki.issue("old", &["live.example.com"], NOW - 2 * YEAR, NOW - YEAR);
    let e = CertSet::load(std::slice::from_ref(&expired), NOW)
        .unwrap_err()
        .to_string();
    assert!(e.contains("old.pem") && e.contains("expired"), "{e}");

    let good = pki.issue("good", &["live.example.com"], NOW - 10, NOW + YEAR);
    let other = pki.issue("other", &["live.example.com"], NOW - 10, NOW + YEAR);
    let crossed = CertFiles {
        cert: good.cert.clone(),
        key: other.key.clone(),
    };
    let e = CertSet::load(&[crossed], NOW).unwrap_err();
    assert!(matches!(e, CertError::KeyMismatch { .. }), "{e}");

    let missing = CertFiles {
        cert: pki.dir.join("nope.pem"),
        key: good.key.clone(),
    };
    let e = CertSet::load(&[missing], NOW).unwrap_err().to_string();
    assert!(e.contains("cannot read") && e.contains("nope.pem"), "{e}");

    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let e = CertSet::load(
        &[CertFiles {
            cert: garbage,
            key: good.key.clone(),
        }],
        NOW,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no CERTIFICATE"), "{e}");

    let key_as_cert = CertFiles {
        cert: good.cert.clone(),
        key: good.cert.clone(),
    };
    let e = CertSet::load(&[key_as_cert], NOW).unwrap_err().to_string();
    assert!(e.contains("no private key"), "{e}");

    assert!(matches!(CertSet::load(&[], NOW), Err(CertError::None)));
}

#[test]
fn a_refused_reload_keeps_the_running_certificates() {
    let pki = Pki::new("reload");
    let first = pki.issue("first", &["live.example.com"], NOW - 10, NOW + YEAR);
    let second = pki.issue("second", &["live.example.com"], NOW - 10, NOW + 2 * YEAR);
    let expired = pki.issue("expired", &["live.example.com"], NOW - 2 * YEAR, NOW - 1);
    let certs = Certificates::new(CertSet::load(std::slice::from_ref(&first), NOW).unwrap());
    assert!(certs.reload(&[expired], NOW).is_err());
    assert_eq!(certs.current().certs()[0].files, first);
    certs.reload(std::slice::from_ref(&second), NOW).unwrap();
    assert_eq!(certs.current().certs()[0].files, second);
    let c = certs.counters();
    assert_eq!(c.reloads.load(Ordering::Relaxed), 1);
    assert_eq!(c.reloads_refused.load(Ordering::Relaxed), 1);
}
