//! Triggers, with MistServer's names and semantics: an event's payload (newline-separated
//! lines) goes to a handler, a URL (HTTP POST with `X-Trigger: NAME`) or an executable (the
//! trigger name as its argument, the payload on stdin, the answer on stdout).
//!
//! Blocking triggers (`ask`) wait for the answer up to their timeout and take
//! their configured default when the handler fails or is too slow; several handlers of one
//! blocking trigger are asked in turn, and the first refusal (or, for rewrites, the first
//! non-empty answer) decides. Non-blocking ones (`fire`) are queued (bounded:
//! a full queue drops the event, counted) and delivered by at most [`IN_FLIGHT`] concurrent
//! deliveries, each retried a bounded number of times, so a dead webhook never grows memory.
//!
//! Everything runs on the triggers' own runtime (two worker threads), so that any thread may
//! ask (the API's edits, SIGHUP, the access checks) and no shard ever waits on a handler.
//!
//! What it does not do: decide what an answer means for the server (the callers do).

use crate::config::{TriggerConfig, TRIGGERS};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Non-blocking events waiting for delivery, at most.
pub const QUEUE: usize = 1024;
/// Deliveries of non-blocking events at once, at most.
pub const IN_FLIGHT: usize = 16;
/// Attempts per non-blocking delivery.
pub const ATTEMPTS: u32 = 3;
/// Seconds a non-blocking delivery may take per attempt.
const FIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts of one trigger, for the metrics.
#[derive(Debug, Default)]
pub struct TriggerStats {
    /// Handler calls made (each attempt).
    pub calls: AtomicU64,
    /// Calls that failed (error status, unreachable, timeout, non-zero exit).
    pub failures: AtomicU64,
    /// Non-blocking events dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Time spent in handler calls.
    pub latency: crate::stream::LatencyHistogram,
}

struct Event {
    trigger: TriggerConfig,
    payload: String,
}

/// The triggers of the running configuration and their delivery machinery.
pub struct Triggers {
    runtime: Option<tokio::runtime::Runtime>,
    inner: Arc<TriggerSet>,
}

/// The configured triggers, the HTTP client and the counts: what the runtime's tasks hold
/// (they never hold the runtime itself).
pub struct TriggerSet {
    configured: ArcSwap<Vec<TriggerConfig>>,
    client: reqwest::Client,
    queue: tokio::sync::mpsc::Sender<Event>,
    stats: Mutex<HashMap<&'static str, Arc<TriggerStats>>>,
    /// Non-blocking events queued or being delivered.
    pending: AtomicU64,
}

impl std::fmt::Debug for TriggerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerSet").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers")
            .field("configured", &self.inner.configured.load().len())
            .finish()
    }
}

impl Drop for Triggers {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::ops::Deref for Triggers {
    type Target = TriggerSet;
    fn deref(&self) -> &TriggerSet {
        &self.inner
    }
}

/// How a handler answered.
type Answer = Result<String, HandlerError>;

/// Why a handler gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// It took longer than the trigger's timeout.
    #[error("no answer within {:.1} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The HTTP request failed.
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    /// The HTTP handler answered with an error status.
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    /// The executable could not be run or waited for.
    #[error("cannot run {handler}: {source}")]
    Run {
        /// The executable.
        handler: String,
        /// Why.
        source: std::io::Error,
    },
    /// The executable failed.
    #[error("{handler} exited with {status}")]
    Exit {
        /// The executable.
        handler: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
}

/// Why the triggers could not start.
#[derive(Debug, thiserror::Error)]
pub enum TriggersError {
    /// Their runtime.
    #[error("cannot start the triggers' runtime: {0}")]
    Runtime(std::io::Error),
    /// The HTTP client (TLS roots, resolver).
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

impl Triggers {
    /// Start the triggers' runtime with `configured`.
    pub fn new(configured: Vec<TriggerConfig>) -> Result<Arc<Self>, TriggersError> {
        // The process-wide TLS provider for the HTTP client (ring); a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Two workers: a task that must wait on a lock (rarely) never stalls every delivery.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("triggers")
            .enable_all()
            .build()
            .map_err(TriggersError::Runtime)?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("shardcast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(TriggersError::Client)?;
        let (queue, mut events) = tokio::sync::mpsc::channel::<Event>(QUEUE);
        let inner = Arc::new(TriggerSet {
            configured: ArcSwap::from_pointee(configured),
            client,
            queue,
            stats: Mutex::new(HashMap::new()),
            pending: AtomicU64::new(0),
        });
        let deliverer = inner.clone();
        runtime.spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            while let Some(event) = events.recv().await {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let inner = deliverer.clone();
                tokio::spawn(async move {
                    let mut delay = Duration::from_millis(250);
                    for attempt in 1..=ATTEMPTS {
                        match inner
                            .call(&event.trigger, &event.payload, FIRE_TIMEOUT)
                            .await
                        {
                            Ok(_) => break,
                            Err(why) if attempt == ATTEMPTS => tracing::warn!(
                                trigger = %event.trigger.on,
                                handler = %event.trigger.handler,
                                "trigger not delivered after {ATTEMPTS} attempts: {why}"
                            ),
                            Err(_) => {
                                tokio::time::sleep(delay).await;
                                delay *= 2;
                            }
                        }
                    }
                    inner.pending.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
        });
        Ok(Arc::new(Self {
            runtime: Some(runtime),
            inner,
        }))
    }

    /// [`TriggerSet::ask`] from a thread outside the triggers' runtime (blocks it).
    pub fn ask_blocking(
        &self,
        name: &str,
        stream: Option<&str>,
        lines: &[&str],
    ) -> Option<Vec<String>> {
        if !self.wants(name, stream) {
            return None;
        }
        let runtime = self.runtime.as_ref()?;
        runtime.block_on(self.inner.ask(name, stream, lines))
    }

    /// Wait (blocking this thread) until the queued events are delivered, at most `timeout`.
    pub fn drain(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.pending.load(Ordering::Relaxed) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run `future` on the triggers' runtime.
    pub fn spawn<F>(&self, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Some(runtime) = &self.runtime {
            runtime.spawn(future);
        }
    }

    /// What the runtime's tasks may hold.
    pub fn shared(&self) -> Arc<TriggerSet> {
        self.inner.clone()
    }
}

impl TriggerSet {
    /// Use `configured` from now on.
    pub fn reconfigure(&self, configured: Vec<TriggerConfig>) {
        self.configured.store(Arc::new(configured));
    }

    /// The triggers called `name` that apply to `stream` (`None`: a global trigger).
    fn matching(&self, name: &str, stream: Option<&str>) -> Vec<TriggerConfig> {
        self.configured
            .load()
            .iter()
            .filter(|t| {
                t.on == name
                    && (t.streams.is_empty()
                        || stream.is_some_and(|s| {
                            t.streams.iter().any(|f| {
                                f == s || s.split_once('+').is_some_and(|(base, _)| f == base)
                            })
                        }))
            })
            .cloned()
            .collect()
    }

    /// Whether any trigger `name` is configured, for whichever streams.
    pub fn configured(&self, name: &str) -> bool {
        self.configured.load().iter().any(|t| t.on == name)
    }

    /// Whether any trigger `name` applies to `stream`.
    pub fn wants(&self, name: &str, stream: Option<&str>) -> bool {
        !self.matching(name, stream).is_empty()
    }

    /// Every trigger's counts, by name.
    pub fn stats(&self) -> Vec<(&'static str, Arc<TriggerStats>)> {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = stats.iter().map(|(k, v)| (*k, v.clone())).collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }

    fn stats_of(&self, name: &str) -> Arc<TriggerStats> {
        let key = TRIGGERS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("OTHER", |(n, _)| *n);
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    /// Queue non-blocking trigger `name` for `stream` with these payload lines.
    pub fn fire(&self, name: &str, stream: Option<&str>, lines: &[&str]) {
        let matching = self.matching(name, stream);
        if matching.is_empty() {
            return;
        }
        let payload = payload(lines);
        for trigger in matching {
            let event = Event {
                trigger,
                payload: payload.clone(),
            };
            self.pending.fetch_add(1, Ordering::Relaxed);
            if self.queue.try_send(event).is_err() {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                self.stats_of(name).dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(trigger = name, "trigger queue full: event dropped");
            }
        }
    }

    /// Ask blocking trigger `name` for `stream` (on the triggers' runtime): `None` when none
    /// is configured; otherwise
    /// every handler's answer (or its default), in order.
    pub async fn ask(
        &self,
        name: &str,
        stream: Option<&str>,
        lines: &[&str],
    ) -> Option<Vec<String>> {
        let matching = self.matching(name, stream);
        if matching.is_empty() {
            return None;
        }
        let payload = payload(lines);
        let mut answers = Vec::new();
        for t in &matching {
            let timeout = Duration::from_secs_f64(t.timeout_s);
            let answer = match self.call(t, &payload, timeout).await {
                Ok(a) => a,
                Err(why) => {
                    tracing::warn!(trigger = name, handler = %t.handler, "trigger failed ({why}): taking its default {:?}", t.default);
                    t.default.clone()
                }
            };
            answers.push(answer);
        }
        Some(answers)
    }

    /// The HTTP client (for the access backend).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    async fn call(&self, t: &TriggerConfig, payload: &str, timeout: Duration) -> Answer {
        let stats = self.stats_of(&t.on);
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let answer = match tokio::time::timeout(timeout, self.deliver(t, payload)).await {
            Ok(a) => a,
            Err(_) => Err(HandlerError::Timeout(timeout)),
        };
        stats.latency.record(started.elapsed().as_nanos() as u64);
        if answer.is_err() {
            stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    async fn deliver(&self, t: &TriggerConfig, payload: &str) -> Answer {
        if t.handler.contains("://") {
            let response = self
                .client
                .post(&t.handler)
                .header("X-Trigger", &t.on)
                .header("Content-Type", "text/plain")
                .body(payload.to_owned())
                .send()
                .await?;
            let status = response.status();
            let body = response.text().await?;
            if !status.is_success() {
                return Err(HandlerError::Status(status));
            }
            Ok(body.trim().to_owned())
        } else {
            let mut child = tokio::process::Command::new(&t.handler)
                .arg(&t.on)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| HandlerError::Run {
                    handler: t.handler.clone(),
                    source,
                })?;
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(payload.as_bytes()).await;
            }
            let output = child
                .wait_with_output()
                .await
                .map_err(|source| HandlerError::Run {
                    handler: t.handler.clone(),
                    source,
                })?;
            if !output.status.success() {
                return Err(HandlerError::Exit {
                    handler: t.handler.clone(),
                    status: output.status,
                });
            }
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        }
    }
}

/// What MistServer's `PUSH_REWRITE` trigger, when `triggers` has one for `stream`, says of a
/// push to `stream` from `peer` at `url`: `None`, feed `stream`; another stream's name; or
/// why it refuses (empty, `0`, `false`, `no`). With several handlers the first refusal wins,
/// else the first one names the stream.
pub async fn push_rewrite(
    triggers: Option<&Arc<TriggerSet>>,
    url: &str,
    peer: &str,
    stream: &str,
) -> Result<Option<String>, String> {
    let Some(triggers) = triggers.filter(|t| t.wants("PUSH_REWRITE", Some(stream))) else {
        return Ok(None);
    };
    let answers = triggers
        .ask("PUSH_REWRITE", Some(stream), &[url, peer, stream])
        .await
        .unwrap_or_default();
    if answers.iter().any(|a| refuses(a)) {
        return Err("the PUSH_REWRITE trigger said no".into());
    }
    let answer = answers.first().map(|a| a.trim()).unwrap_or_default();
    if answer == stream {
        Ok(None)
    } else {
        Ok(Some(answer.to_owned()))
    }
}

/// Whether a blocking trigger's answer refuses (`0`, `false`, `no`, or nothing at all).
pub fn refuses(answer: &str) -> bool {
    let a = answer.trim();
    a.is_empty() || a == "0" || a.eq_ignore_ascii_case("false") || a.eq_ignore_ascii_case("no")
}

/// The payload of a trigger: one value per line. A value never spans lines: control
/// characters in it (a line break in a token or URL a viewer sent) become spaces, so that
/// nobody can add lines of their own to what a handler reads.
fn payload(lines: &[&str]) -> String {
    let mut p = String::new();
    for l in lines {
        p.extend(l.chars().map(|c| if c.is_control() { ' ' } else { c }));
        p.push('\n');
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_cannot_add_lines_to_a_payload() {
        assert_eq!(
            payload(&["cam", "tok\nen\r\ntrue", ""]),
            "cam\ntok en  true\n\n"
        );
    }

    #[test]
    fn answers_that_refuse() {
        for no in ["0", "false", "FALSE", " no\n", ""] {
            assert!(refuses(no), "{no:?}");
        }
        for yes in ["1", "true", "yes", "anything"] {
            assert!(!refuses(yes), "{yes:?}");
        }
    }

    #[test]
    fn an_executable_answers_and_a_slow_one_takes_the_default() {
        let dir = std::env::temp_dir().join(format!("shardcast-triggers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("hook");
        std::fs::write(&script, "#!/bin/sh\nread stream\nif [ \"$stream\" = slow ]; then sleep 5; fi\necho \"$1 $stream\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let t = Triggers::new(vec![TriggerConfig {
            on: "USER_NEW".into(),
            handler: script.display().to_string(),
            streams: vec!["cam".into(), "slow".into()],
            timeout_s: 0.5,
            default: "false".into(),
        }])
        .unwrap();
        assert_eq!(
            t.ask_blocking("USER_NEW", Some("cam"), &["cam", "1.2.3.4"]),
            Some(vec!["USER_NEW cam".to_owned()])
        );
        assert_eq!(
            t.ask_blocking("USER_NEW", Some("cam+user7"), &["cam+user7"]),
            Some(vec!["USER_NEW cam+user7".to_owned()]),
            "a wildcard stream is filtered by its base"
        );
        let started = Instant::now();
        assert_eq!(
            t.ask_blocking("USER_NEW", Some("slow"), &["slow"]),
            Some(vec!["false".to_owned()])
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(t.ask_blocking("USER_NEW", Some("other"), &["other"]), None);
        let stats = t.stats();
        let (_, s) = stats.iter().find(|(n, _)| *n == "USER_NEW").unwrap();
        assert_eq!(s.calls.load(Ordering::Relaxed), 3);
        assert_eq!(s.failures.load(Ordering::Relaxed), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
