//! Viewer sessions as the control plane keeps them: the shards' reports added up, sessions
//! ended after a quiet period (no request and no open connection for `session_timeout`), a
//! JSON line in the access log for each one that ends, and the list the API shows.
//!
//! What it does not do: see requests itself (the shards report), or decide who may watch.

use super::triggers::TriggerSet;
use crate::session::{Protocol, SessionKey, SessionReport};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One session.
#[derive(Clone, Debug, Serialize)]
pub struct Session {
    /// Its identifier (stable for the same stream, address, token and protocol).
    pub id: String,
    /// The stream.
    pub stream: String,
    /// The viewer's address.
    pub ip: Option<String>,
    /// The access token presented (empty when none).
    pub token: String,
    /// `http_ts` or `hls`.
    pub protocol: Protocol,
    /// The first User-Agent seen.
    pub user_agent: Option<String>,
    /// When it started, UNIX milliseconds.
    pub started_at: u64,
    /// When it was last active, UNIX milliseconds.
    pub last_seen_at: u64,
    /// Bytes sent to it.
    pub bytes: u64,
    /// Requests it made.
    pub requests: u64,
    /// Progressive connections it has open.
    pub connections: i64,
    #[serde(skip)]
    key: Option<SessionKey>,
    #[serde(skip)]
    last: Option<Instant>,
}

/// Why a session ended, in the access log.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Nothing from it for the session timeout.
    Quiet,
    /// Stopped through the API.
    Stopped,
    /// The server stopped.
    Shutdown,
}

#[derive(Serialize)]
struct LogLine<'a> {
    #[serde(flatten)]
    session: &'a Session,
    ended_at: u64,
    duration_seconds: f64,
    end: EndReason,
}

/// Every session, by key.
#[derive(Debug)]
pub struct SessionTable {
    sessions: HashMap<SessionKey, Session>,
    timeout: Duration,
    access_log: Option<(PathBuf, Option<std::fs::File>)>,
    /// Sessions that ended, since the start.
    pub ended: u64,
    /// For `USER_END`, `CONN_OPEN` and `CONN_CLOSE`.
    triggers: Option<Arc<TriggerSet>>,
}

fn unix_ms() -> u64 {
    crate::sys::unix_ns() / 1_000_000
}

impl SessionTable {
    /// A table ending sessions after `timeout` of quiet, logging to `access_log`.
    pub fn new(
        timeout: Duration,
        access_log: Option<PathBuf>,
        triggers: Option<Arc<TriggerSet>>,
    ) -> Self {
        Self {
            sessions: HashMap::new(),
            timeout,
            access_log: access_log.map(|p| (p, None)),
            ended: 0,
            triggers,
        }
    }

    /// Add one shard's report.
    pub fn absorb(&mut self, report: SessionReport) {
        let now = unix_ms();
        let session = self
            .sessions
            .entry(report.key.clone())
            .or_insert_with(|| Session {
                id: report.key.id(),
                stream: report.key.stream.to_string(),
                ip: report.key.ip.map(|ip| ip.to_string()),
                token: report.key.token.to_string(),
                protocol: report.key.protocol,
                user_agent: None,
                started_at: now,
                last_seen_at: now,
                bytes: 0,
                requests: 0,
                connections: 0,
                key: Some(report.key.clone()),
                last: None,
            });
        if let Some(t) = &self.triggers {
            // Progressive connections opened and closed since the last report.
            let (name, times) = if report.opened > 0 {
                ("CONN_OPEN", report.opened)
            } else {
                ("CONN_CLOSE", -report.opened)
            };
            let url = format!("/{}.ts", session.stream);
            for _ in 0..times.min(64) {
                t.fire(
                    name,
                    Some(&session.stream),
                    &[
                        &session.stream,
                        session.ip.as_deref().unwrap_or(""),
                        Protocol::HttpTs.connector(),
                        &url,
                    ],
                );
            }
        }
        session.bytes += report.bytes;
        session.requests += report.requests;
        session.connections += report.opened;
        if session.user_agent.is_none() {
            session.user_agent = report.user_agent;
        }
        session.last_seen_at = now;
        session.last = Some(Instant::now());
    }

    /// End the sessions quiet for the timeout (logged); returns how many ended.
    pub fn sweep(&mut self) -> usize {
        let timeout = self.timeout;
        let quiet: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.connections <= 0 && s.last.is_none_or(|l| l.elapsed() > timeout))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &quiet {
            self.end(key, EndReason::Quiet);
        }
        quiet.len()
    }

    /// End session `id` because it was stopped; returns its key.
    pub fn stop(&mut self, id: &str) -> Option<SessionKey> {
        let key = self.sessions.values().find(|s| s.id == id)?.key.clone()?;
        self.end(&key, EndReason::Stopped);
        Some(key)
    }

    /// End every session (the server stops).
    pub fn end_all(&mut self) {
        let keys: Vec<SessionKey> = self.sessions.keys().cloned().collect();
        for key in &keys {
            self.end(key, EndReason::Shutdown);
        }
    }

    fn end(&mut self, key: &SessionKey, reason: EndReason) {
        let Some(session) = self.sessions.remove(key) else {
            return;
        };
        self.ended += 1;
        let ended_at = unix_ms();
        if let Some(t) = &self.triggers {
            let duration = (ended_at.saturating_sub(session.started_at) / 1000).to_string();
            let connector = session.protocol.connector();
            t.fire(
                "USER_END",
                Some(&session.stream),
                &[
                    &session.id,
                    &session.stream,
                    connector,
                    session.ip.as_deref().unwrap_or(""),
                    &duration,
                    "0",
                    &session.bytes.to_string(),
                    &session.token,
                ],
            );
        }
        let Some((path, file)) = &mut self.access_log else {
            return;
        };
        let line = LogLine {
            session: &session,
            ended_at,
            duration_seconds: ended_at.saturating_sub(session.started_at) as f64 / 1000.0,
            end: reason,
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        if file.is_none() {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&*path)
            {
                Ok(f) => *file = Some(f),
                Err(e) => {
                    tracing::error!("cannot open the access log {}: {e}", path.display());
                    return;
                }
            }
        }
        if let Some(f) = file {
            // One write per line (O_APPEND): lines never interleave with another writer's.
            if let Err(e) = f.write_all(text.as_bytes()) {
                tracing::error!("cannot write the access log {}: {e}", path.display());
                *file = None;
            }
        }
    }

    /// Every session, oldest first; only stream `stream`'s when given.
    pub fn list(&self, stream: Option<&str>) -> Vec<Session> {
        let mut out: Vec<Session> = self
            .sessions
            .values()
            .filter(|s| stream.is_none_or(|n| s.stream == n))
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        out
    }

    /// Sessions of `stream` now, by protocol: (HTTP-TS, HLS).
    pub fn viewers(&self, stream: &str) -> (u64, u64) {
        let mut counts = (0, 0);
        for s in self.sessions.values().filter(|s| s.stream == stream) {
            match s.protocol {
                Protocol::HttpTs => counts.0 += 1,
                Protocol::Hls => counts.1 += 1,
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(token: &str, opened: i64, bytes: u64) -> SessionReport {
        SessionReport {
            key: SessionKey {
                stream: Arc::from("cam"),
                ip: Some("192.0.2.1".parse().unwrap()),
                token: Arc::from(token),
                protocol: if opened != 0 {
                    Protocol::HttpTs
                } else {
                    Protocol::Hls
                },
            },
            bytes,
            requests: 1,
            opened,
            user_agent: Some("test".into()),
        }
    }

    #[test]
    fn sessions_add_up_end_when_quiet_and_are_logged() {
        let dir = std::env::temp_dir().join(format!("shardcast-sessions-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let log = dir.join("access.log");
        let _ = std::fs::remove_file(&log);
        let mut t = SessionTable::new(Duration::from_millis(50), Some(log.clone()), None);
        t.absorb(report("a", 0, 100));
        t.absorb(report("a", 0, 50));
        t.absorb(report("b", 1, 10));
        assert_eq!(t.viewers("cam"), (1, 1));
        let a = t.list(None).into_iter().find(|s| s.token == "a").unwrap();
        assert_eq!((a.bytes, a.requests), (150, 2));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(t.sweep(), 1, "the open connection keeps b");
        t.absorb(report("b", -1, 5));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(t.sweep(), 1);
        assert!(t.list(None).is_empty());
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["token"], "a");
        assert_eq!(lines[0]["bytes"], 150);
        assert_eq!(lines[0]["protocol"], "hls");
        assert_eq!(lines[0]["end"], "quiet");
        assert_eq!(lines[1]["bytes"], 15);
        assert_eq!(lines[1]["user_agent"], "test");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
