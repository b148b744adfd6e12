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

use super::inlet::{Delivery, TaskDriver};
use super::retry::Retry;
use super::{SourceContext, SourceError, SourceSpec};
use crate::stream::StreamCounters;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Start `spec`'s task: the home shard's side of it takes what it delivers.
pub(super) fn start(spec: &PullSpec, context: &SourceContext<'_>) -> TaskDriver {
    let url = spec.url.clone();
    let (stream, counters, idle) = (
        context.stream.to_owned(),
        context.counters.clone(),
        context.idle,
    );
    TaskDriver::start(context, None, move |inlet| async move {
        let client = match reqwest::Client::builder()
            .user_agent(concat!("shardcast/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(stream = %stream, "no HTTP client for {url}: {e}");
                return;
            }
        };
        let mut retry = Retry::new();
        let mut failures = 0u64;
        loop {
            match tokio::time::timeout(ANSWER_TIMEOUT, client.get(&url).send()).await {
                Ok(Ok(mut answer)) if answer.status().is_success() => {
                    retry.up(Instant::now());
                    failures = 0;
                    StreamCounters::add(&counters.source_connections, 1);
                    counters.source_connected.store(1, Ordering::Relaxed);
                    set_error(&counters, None);
                    tracing::info!(stream = %stream, "pulling {url}");
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
                    counters.source_connected.store(0, Ordering::Relaxed);
                    tracing::info!(stream = %stream, "the pull of {url} stopped: {why}");
                }
                failed => {
                    failures += 1;
                    StreamCounters::add(&counters.source_failures, 1);
                    let why = match failed {
                        Ok(Ok(answer)) => format!("answered {}", answer.status()),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("no answer in {ANSWER_TIMEOUT:?}"),
                    };
                    if failures % 10 == 1 {
                        tracing::warn!(stream = %stream, failures, "cannot pull {url}: {why}");
                    }
                    set_error(&counters, Some(why));
                }
            }
            tokio::time::sleep(retry.down(Instant::now())).await;
        }
    })
}

/// Keep (or clear) the source's last error for the API.
fn set_error(counters: &Arc<StreamCounters>, error: Option<String>) {
    if let Ok(mut last) = counters.source_error.lock() {
        *last = error;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
