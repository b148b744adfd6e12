//! A pull from another server: `http://host:port/path` is read as one progressive MPEG-TS
//! body (another shardcast's `/{stream}.ts`, or any HTTP server sending live TS), e.g. an edge
//! taking its stream from an origin.
//!
//! A body that ends, fails or sends nothing for the stream's `source_timeout` is asked for
//! again ([`super::Retry`]); so is an answer other than 2xx, which is also kept as the
//! source's last error for the API, so that an origin answering 404 or 5xx is seen, not
//! hammered (at most one request per 10 s once it has failed for a while).
//!
//! What it does not do: `https://` (not tested yet), HLS pulls (`hls+http://`, next).

use super::attempts::Attempts;
use super::inlet::{Delivery, TaskDriver};
use super::{SourceContext, SourceError, SourceSpec};
use std::time::Duration;

/// How long connecting to the origin may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the origin may take to answer a request's head.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest URL taken.
const MAX_URL: usize = 2048;

/// A pull of a progressive TS body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullSpec {
    /// The URL, as configured.
    pub url: String,
}

/// `http://` then the rest of the URL.
pub(super) fn parse(rest: &str) -> Result<SourceSpec, SourceError> {
    let url = format!("http://{rest}");
    let bad = || SourceError::Address(url.clone());
    if url.len() > MAX_URL
        || rest.starts_with('/')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    let parsed = reqwest::Url::parse(&url).map_err(|_| bad())?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(SourceSpec::Pull(PullSpec { url }))
}

/// The HTTP client of a stream's pulls (`None`, and a log line, when none can be made).
pub(super) fn client(stream: &str) -> Option<reqwest::Client> {
    match reqwest::Client::builder()
        .user_agent(concat!("shardcast/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
    {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::error!(stream = %stream, "no HTTP client for pulls: {e}");
            None
        }
    }
}

/// Start `spec`'s task: the home shard's side of it takes what it delivers.
pub(super) fn start(spec: &PullSpec, context: &SourceContext<'_>) -> TaskDriver {
    let url = spec.url.clone();
    let (stream, counters, idle) = (
        context.stream.to_owned(),
        context.counters.clone(),
        context.idle,
    );
    TaskDriver::start(context, None, move |inlet| async move {
        let Some(client) = client(&stream) else {
            return;
        };
        let mut attempts = Attempts::new(stream, counters);
        loop {
            match tokio::time::timeout(ANSWER_TIMEOUT, client.get(&url).send()).await {
                Ok(Ok(mut answer)) if answer.status().is_success() => {
                    attempts.up(&format!("pulling {url}"));
                    inlet.deliver(Delivery::Restart).await;
                    let why = loop {
                        match tokio::time::timeout(idle, answer.chunk()).await {
                            Ok(Ok(Some(bytes))) => {
                                let received = crate::sys::unix_ns();
                                let n = bytes.len();
                                inlet.deliver(Delivery::Bytes(bytes, received)).await;
                                super::inlet::pace(n).await;
                            }
                            Ok(Ok(None)) => break "the body ended".to_owned(),
                            Ok(Err(e)) => break e.to_string(),
                            Err(_) => {
                                break format!("nothing received for {} s", idle.as_secs_f64())
                            }
                        }
                    };
                    attempts.down(&format!("the pull of {url} stopped: {why}"));
                }
                Ok(Ok(answer)) => {
                    attempts.failed(format!("cannot pull {url}: answered {}", answer.status()))
                }
                Ok(Err(e)) => attempts.failed(format!("cannot pull {url}: {e}")),
                Err(_) => attempts.failed(format!(
                    "cannot pull {url}: no answer in {ANSWER_TIMEOUT:?}"
                )),
            }
            attempts.wait().await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An origin that answers 200 and then sends nothing: the pull leaves it once the idle
    /// time has passed, says why, and asks again.
    #[test]
    fn a_silent_origin_is_left_and_asked_again() {
        use crate::stream::StreamCounters;
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        runtime.block_on(async {
            let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = server.local_addr().unwrap();
            let counters = Arc::new(StreamCounters::default());
            let context = SourceContext {
                stream: "silent",
                tasks: Some(&tokio::runtime::Handle::current()),
                waker: Arc::new(crate::wake::Nobody),
                counters: counters.clone(),
                idle: Duration::from_millis(300),
                pushes: None,
                fetcher: None,
            };
            let driver = start(
                &PullSpec {
                    url: format!("http://{addr}/cam.ts"),
                },
                &context,
            );
            let (mut first, _) = server.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = first.read(&mut head).await.unwrap();
            first
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n")
                .await
                .unwrap();
            let answered = std::time::Instant::now();
            // The pull closes it: the read sees the end.
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(3), first.read_to_end(&mut rest))
                .await
                .unwrap()
                .unwrap();
            assert!(answered.elapsed() >= Duration::from_millis(300));
            let _second = tokio::time::timeout(Duration::from_secs(3), server.accept())
                .await
                .unwrap()
                .unwrap();
            let error = counters
                .source_error
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_default();
            assert!(error.contains("nothing received for 0.3 s"), "{error}");
            drop(driver);
        });
    }

    #[test]
    fn parses_http_urls() {
        let SourceSpec::Pull(p) = SourceSpec::parse("http://origin:8080/cam1.ts").unwrap() else {
            panic!()
        };
        assert_eq!(p.url, "http://origin:8080/cam1.ts");
        for bad in [
            "http://",
            "http:///x.ts",
            "http://a b/x.ts",
            "http://[::1/x",
        ] {
            assert!(SourceSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
