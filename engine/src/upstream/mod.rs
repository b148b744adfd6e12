//! HTTP to upstream servers named by someone outside (the HLS proxy's origins): a client
//! whose every connection goes only where the SSRF [`guard`] allows, redirects included.
//!
//! ```text
//!  URL ─ Guard::check_url (literal addresses) ─ reqwest ─ GuardedResolver (names: resolve,
//!        drop what is refused, connect to what is left) ─ redirect ─ Guard::check_url ─ …
//! ```
//!
//! The HLS proxy ([`crate::proxy`]) fetches through it; what it fetches is cached there.

pub mod guard;

pub use guard::{Guard, GuardedResolver, NameRefused, Refused};

use std::sync::Arc;
use std::time::Duration;

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;

/// How the client behaves.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Connecting, TLS included.
    pub connect_timeout: Duration,
    /// A whole request, body included.
    pub timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
        }
    }
}

/// A client that connects only where `guard` allows: names through [`GuardedResolver`],
/// redirects checked (and at most [`MAX_REDIRECTS`]). Literal addresses of the first URL
/// are the caller's to check with [`Guard::check_url`] (see [`get`]).
pub fn client(guard: Arc<Guard>, settings: &ClientSettings) -> reqwest::Result<reqwest::Client> {
    // The process-wide TLS provider for the HTTP client (ring); a second install is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redirect_guard = guard.clone();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match redirect_guard.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    });
    reqwest::Client::builder()
        .dns_resolver(GuardedResolver::new(guard))
        .redirect(policy)
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        .build()
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The URL, a redirect, or every address of a name is one the guard refuses.
    #[error("refused: {0}")]
    Refused(String),
    /// Anything else: unreachable, timed out, a bad answer.
    #[error(transparent)]
    Http(reqwest::Error),
}

impl UpstreamError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        match refusal(&e) {
            Some(why) => Self::Refused(why),
            None => Self::Http(e),
        }
    }
}

/// The guard's refusal inside `e`, in words, if that is why the request failed (refusals
/// come back wrapped in the client's error).
pub fn refusal(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<Refused>().is_some() || s.downcast_ref::<NameRefused>().is_some() {
            return Some(s.to_string());
        }
        source = s.source();
    }
    None
}

/// GET `url` through `client` (made by [`client`] with `guard`), its literal address checked
/// first.
pub async fn get(
    client: &reqwest::Client,
    guard: &Guard,
    url: &reqwest::Url,
) -> Result<reqwest::Response, UpstreamError> {
    guard
        .check_url(url)
        .map_err(|r| UpstreamError::Refused(r.to_string()))?;
    client
        .get(url.clone())
        .send()
        .await
        .map_err(UpstreamError::from_reqwest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-answer-per-connection HTTP server on `ip`: each request gets `answer(path)`.
    async fn server(ip: &str, answer: fn(u16) -> String) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(answer(addr.port()).as_bytes()).await;
            }
        });
        addr
    }

    fn ok(_: u16) -> String {
        "HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\n#EXTM3U".into()
    }

    #[tokio::test]
    async fn loopback_is_refused_by_address_by_name_and_by_redirect_unless_allowed() {
        let origin = server("127.0.0.1", ok).await;
        let strict = Arc::new(Guard::default());
        let c = client(strict.clone(), &ClientSettings::default()).unwrap();
        for url in [
            format!("http://127.0.0.1:{}/live.m3u8", origin.port()),
            format!("http://2130706433:{}/live.m3u8", origin.port()),
            format!("http://localhost:{}/live.m3u8", origin.port()),
        ] {
            let url = reqwest::Url::parse(&url).unwrap();
            match get(&c, &strict, &url).await {
                Err(UpstreamError::Refused(why)) => assert!(why.contains("loopback"), "{why}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        // A redirect to loopback from an upstream that is allowed (127.0.0.2 here).
        fn to_loopback(port: u16) -> String {
            format!(
                "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{port}/live.m3u8\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
        }
        let redirecting = server("127.0.0.2", to_loopback).await;
        let one = Arc::new(Guard::new(vec!["127.0.0.2/32".parse().unwrap()]));
        let c = client(one.clone(), &ClientSettings::default()).unwrap();
        let url =
            reqwest::Url::parse(&format!("http://127.0.0.2:{}/", redirecting.port())).unwrap();
        match get(&c, &one, &url).await {
            Err(UpstreamError::Refused(why)) => assert!(why.contains("127.0.0.1"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Allowed: served.
        let open = Arc::new(Guard::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]));
        let c = client(open.clone(), &ClientSettings::default()).unwrap();
        for host in ["127.0.0.1", "localhost"] {
            let url =
                reqwest::Url::parse(&format!("http://{host}:{}/live.m3u8", origin.port())).unwrap();
            let response = get(&c, &open, &url).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.unwrap(), "#EXTM3U");
        }
    }
}
