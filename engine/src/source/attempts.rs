//! A connecting source's attempts as the API, the metrics and the log see them: connections
//! made, failures (counted; logged the first time of a run, then one in ten, so that an
//! origin that stays down is not a flood of lines; the latest reason kept for the API), and
//! the wait before the next attempt ([`Retry`]).

use super::retry::Retry;
use crate::stream::StreamCounters;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// One source's attempts.
pub(super) struct Attempts {
    stream: String,
    counters: Arc<StreamCounters>,
    retry: Retry,
    failures_in_a_row: u64,
}

impl Attempts {
    pub(super) fn new(stream: String, counters: Arc<StreamCounters>) -> Self {
        Self {
            stream,
            counters,
            retry: Retry::new(),
            failures_in_a_row: 0,
        }
    }

    /// Connected to `what` (or started it).
    pub(super) fn up(&mut self, what: &str) {
        self.retry.up(Instant::now());
        self.failures_in_a_row = 0;
        StreamCounters::add(&self.counters.source_connections, 1);
        self.counters.source_connected.store(1, Ordering::Relaxed);
        self.set_error(None);
        tracing::info!(stream = %self.stream, "{what}");
    }

    /// What was up went down.
    pub(super) fn down(&mut self, what: &str) {
        self.counters.source_connected.store(0, Ordering::Relaxed);
        tracing::info!(stream = %self.stream, "{what}");
        // Why it went down stays in the API until it is up again.
        self.set_error(Some(what.to_owned()));
    }

    /// An attempt failed, `why`.
    pub(super) fn failed(&mut self, why: String) {
        self.failures_in_a_row += 1;
        StreamCounters::add(&self.counters.source_failures, 1);
        if self.failures_in_a_row % 10 == 1 {
            tracing::warn!(stream = %self.stream, failures = self.failures_in_a_row, "{why}");
        }
        self.set_error(Some(why));
    }

    /// Wait before the next attempt.
    pub(super) async fn wait(&mut self) {
        tokio::time::sleep(self.retry.down(Instant::now())).await;
    }

    fn set_error(&self, error: Option<String>) {
        if let Ok(mut last) = self.counters.source_error.lock() {
            *last = error;
        }
    }
}
