//! TLS for viewers and the API: rustls in user space (this kernel family may lack kTLS), with
//! certificates chosen by the name the client asks for (SNI) and replaced without dropping a
//! connection.
//!
//! ```text
//!  [server.tls] cert/key files ──load (checked: chain, key matches, not expired)──► CertSet
//!        SIGHUP, POST /api/v1/tls/reload ──► Certificates (ArcSwap<CertSet>): new handshakes
//!                                            take the new set, open connections keep theirs
//!  ServerConfig (TLS 1.3 and 1.2, ALPN http/1.1, stateless tickets) ──► one TlsLink per
//!  connection on a shard (link.rs: sans-IO, rustls's unbuffered API)
//! ```
//!
//! Where kTLS would go: once a link's handshake is done, rustls can hand its traffic secrets
//! to the kernel (`rustls::kernel`, `dangerous_extract_secrets`); the socket would then take
//! plaintext and `sendfile` again. No kernel here has `CONFIG_TLS`, so that path is not built
//! (`shardcast tune check` says whether a host has it).

pub mod link;

pub use link::{TlsFailure, TlsLink};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The largest certificate chain taken (DER bytes): the whole first flight of a handshake must
/// fit a link's output buffer.
pub const MAX_CHAIN_BYTES: usize = 24 * 1024;

/// A certificate chain and its key, as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertFiles {
    /// PEM: the end-entity certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why certificates were refused (the running ones stay).
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("the key {key} does not belong to the certificate {cert}: {reason}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// No certificate configured.
    #[error("no certificate configured")]
    None,
}

fn invalid(path: &Path, reason: impl Into<String>) -> CertError {
    CertError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// One certificate as loaded, and what the API shows of it.
#[derive(Debug)]
pub struct LoadedCert {
    /// Its files.
    pub files: CertFiles,
    /// The names it serves (its DNS subject alternative names, or its common name), lowercase.
    pub names: Vec<String>,
    /// The end of its validity, UNIX seconds.
    pub not_after: i64,
    key: Arc<CertifiedKey>,
}

/// The certificates in use: chosen by exact name, then by wildcard (`*.example.com` serves
/// one label under `example.com`); a client that names no server gets the first.
#[derive(Debug)]
pub struct CertSet {
    certs: Vec<LoadedCert>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
}

impl CertSet {
    /// Load and check `files` at `now_unix`: each chain parses, is at most
    /// [`MAX_CHAIN_BYTES`], has not expired, and its key matches it.
    pub fn load(files: &[CertFiles], now_unix: i64) -> Result<CertSet, CertError> {
        if files.is_empty() {
            return Err(CertError::None);
        }
        let provider = rustls::crypto::ring::default_provider();
        let mut set = CertSet {
            certs: Vec::new(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for f in files {
            let cert = load_one(f, &provider, now_unix)?;
            let index = set.certs.len();
            for name in &cert.names {
                match name.strip_prefix("*.") {
                    Some(parent) => set.wildcard.entry(parent.to_owned()).or_insert(index),
                    None => set.exact.entry(name.clone()).or_insert(index),
                };
            }
            set.certs.push(cert);
        }
        Ok(set)
    }

    /// The certificate for server name `sni` (none: the first).
    pub fn choose(&self, sni: Option<&str>) -> Option<&LoadedCert> {
        let Some(name) = sni else {
            return self.certs.first();
        };
        let name = name.to_ascii_lowercase();
        let index = self.exact.get(&name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        })?;
        self.certs.get(*index)
    }

    /// The certificates, in configured order.
    pub fn certs(&self) -> &[LoadedCert] {
        &self.certs
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

fn load_one(
    f: &CertFiles,
    provider: &rustls::crypto::CryptoProvider,
    now_unix: i64,
) -> Result<LoadedCert, CertError> {
    let pem = read(&f.cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&f.cert, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(&f.cert, "holds no CERTIFICATE block"));
    };
    let chain_bytes: usize = chain.iter().map(|c| c.len()).sum();
    if chain_bytes > MAX_CHAIN_BYTES {
        return Err(invalid(
            &f.cert,
            format!("the chain is {chain_bytes} bytes; at most {MAX_CHAIN_BYTES} are taken"),
        ));
    }
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| {
        invalid(
            &f.cert,
            format!("the first certificate does not parse: {e}"),
        )
    })?;
    let validity = parsed.validity();
    let not_after = validity.not_after.timestamp();
    if not_after < now_unix {
        return Err(invalid(
            &f.cert,
            format!("the certificate expired on {}", validity.not_after),
        ));
    }
    if validity.not_before.timestamp() > now_unix {
        tracing::warn!(cert = %f.cert.display(), "the certificate is not valid before {}: clients will refuse it until then", validity.not_before);
    }
    let mut names: Vec<String> = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => {
            return Err(invalid(
                &f.cert,
                format!("its subject alternative names do not parse: {e}"),
            ))
        }
    };
    if names.is_empty() {
        names.extend(
            parsed
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let key_pem = read(&f.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(&f.key, format!("holds no private key: {e}")))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => CertError::KeyMismatch {
            cert: f.cert.clone(),
            key: f.key.clone(),
            reason: e.to_string(),
        },
        other => invalid(&f.key, format!("the key is not usable: {other}")),
    })?;
    Ok(LoadedCert {
        files: f.clone(),
        names,
        not_after,
        key: Arc::new(certified),
    })
}

/// What TLS did, for the metrics (shared by every shard).
#[derive(Debug, Default)]
pub struct TlsCounters {
    /// Handshakes completed.
    pub handshakes: AtomicU64,
    /// Handshakes refused because no certificate serves the name asked for.
    pub unknown_name: AtomicU64,
    /// Handshakes or records that failed otherwise (bad records, no common version or cipher).
    pub failures: AtomicU64,
    /// TLS connections open now.
    pub connections: AtomicU64,
    /// Certificate reloads that succeeded.
    pub reloads: AtomicU64,
    /// Certificate reloads refused (the running certificates stayed).
    pub reloads_refused: AtomicU64,
}

/// The running certificates, replaced whole by a reload; the rustls resolver.
#[derive(Debug)]
pub struct Certificates {
    set: ArcSwap<CertSet>,
    counters: Arc<TlsCounters>,
}

impl Certificates {
    /// Serve `set`.
    pub fn new(set: CertSet) -> Arc<Self> {
        Arc::new(Self {
            set: ArcSwap::from_pointee(set),
            counters: Arc::new(TlsCounters::default()),
        })
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<TlsCounters> {
        &self.counters
    }

    /// The certificates in use.
    pub fn current(&self) -> Arc<CertSet> {
        self.set.load_full()
    }

    /// Load `files` and, when they pass, serve them to new handshakes; otherwise the running
    /// certificates stay and the reason is returned.
    pub fn reload(&self, files: &[CertFiles], now_unix: i64) -> Result<(), CertError> {
        match CertSet::load(files, now_unix) {
            Ok(set) => {
                self.set.store(Arc::new(set));
                self.counters.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters
                    .reloads_refused
                    .fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.load();
        let chosen = set.choose(hello.server_name()).map(|c| c.key.clone());
        if chosen.is_none() {
            self.counters.unknown_name.fetch_add(1, Ordering::Relaxed);
        }
        chosen
    }
}

/// The rustls configuration of the viewers' (and the API's) TLS: TLS 1.3 and 1.2 with ring's
/// suites, ALPN `http/1.1`, no client certificates, no early data, stateless session tickets
/// (resumption costs the server no memory per client).
pub fn server_config(certs: Arc<Certificates>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.max_early_data_size = 0;
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
