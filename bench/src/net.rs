//! A viewer's connection: plain TCP, or TLS over it (rustls, the test CA given on the command
//! line), both non-blocking under mio.

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// How viewers speak TLS: the trusted CA and the server name they ask for.
#[derive(Clone, Debug)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    /// Trust the PEM certificates in `ca_file`; ask for `name` (a DNS name, or an IP address
    /// when the certificate lists it).
    pub fn new(ca_file: &Path, name: &str) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?
        {
            let cert = cert.map_err(|e| format!("{}: {e}", ca_file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", ca_file.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| format!("TLS server name {name:?}: {e}"))?;
        Ok(Self {
            config: Arc::new(config),
            name,
        })
    }
}

/// A blocking connection (the preflight request).
pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl TlsClient {
    /// TLS over a blocking socket.
    pub fn blocking(
        &self,
        tcp: std::net::TcpStream,
    ) -> io::Result<StreamOwned<ClientConnection, std::net::TcpStream>> {
        let conn = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(io::Error::other)?;
        Ok(StreamOwned::new(conn, tcp))
    }
}

/// A viewer's connection.
#[derive(Debug)]
pub enum Socket {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Socket {
    /// Start connecting to `addr` (non-blocking), over TLS when `tls` says how.
    pub fn connect(addr: SocketAddr, tls: Option<&TlsClient>) -> io::Result<Socket> {
        let tcp = TcpStream::connect(addr)?;
        Ok(match tls {
            None => Socket::Plain(tcp),
            Some(t) => {
                let conn = ClientConnection::new(t.config.clone(), t.name.clone())
                    .map_err(io::Error::other)?;
                Socket::Tls(Box::new(StreamOwned::new(conn, tcp)))
            }
        })
    }

    /// The TCP socket, to register with mio.
    pub fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Socket::Plain(s) => s,
            Socket::Tls(s) => &mut s.sock,
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(s) => s.read(buf),
            Socket::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(s) => s.write(buf),
            Socket::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Plain(s) => s.flush(),
            Socket::Tls(s) => s.flush(),
        }
    }
}
