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
    /// Ended early: the table was at its bound (`max_sessions`).
    Evicted,
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
///
/// At most `max` sessions are kept: at the bound, the quiet ones are ended as usual, and if
/// that is not enough the quieter half of those with no connection open are ended early
/// (`end: "evicted"` in the access log); a report that still finds no room is dropped and
/// counted.
#[derive(Debug)]
pub struct SessionTable {
    sessions: HashMap<SessionKey, Session>,
    timeout: Duration,
    max: usize,
    access_log: Option<AccessLog>,
    /// Sessions that ended, since the start.
    pub ended: u64,
    /// Sessions ended early to stay within the bound.
    pub evicted: u64,
    /// Reports dropped for want of room.
    pub dropped: u64,
    /// For `USER_END`, `CONN_OPEN` and `CONN_CLOSE`.
    triggers: Option<Arc<TriggerSet>>,
}

/// The access log: a JSON line per ended session, rotated by size so that it cannot fill the
/// disk (`access.log` → `access.log.1` → … → `access.log.N`, the oldest removed).
#[derive(Debug)]
struct AccessLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Its size now (read when it is opened, then counted).
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl AccessLog {
    /// Append `line`, rotating first if it would grow past its size.
    fn append(&mut self, line: &[u8]) {
        if self.file.is_some() && self.size + line.len() as u64 > self.max_bytes {
            self.rotate();
        }
        if self.file.is_none() {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => {
                    self.size = f.metadata().map_or(0, |m| m.len());
                    self.file = Some(f);
                    if self.size + line.len() as u64 > self.max_bytes && self.size > 0 {
                        self.rotate();
                        return self.append(line);
                    }
                }
                Err(e) => {
                    tracing::error!("cannot open the access log {}: {e}", self.path.display());
                    return;
                }
            }
        }
        if let Some(f) = &mut self.file {
            // One write per line (O_APPEND): lines never interleave with another writer's.
            match f.write_all(line) {
                Ok(()) => self.size += line.len() as u64,
                Err(e) => {
                    tracing::error!("cannot write the access log {}: {e}", self.path.display());
                    self.file = None;
                }
            }
        }
    }

    /// Move `access.log.k` to `access.log.k+1` (the last one removed), `access.log` to
    /// `access.log.1` (or remove it when none are kept); the next line starts a new file.
    fn rotate(&mut self) {
        self.file = None;
        let numbered = |k: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{k}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for k in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(k), numbered(k + 1));
            }
            if let Err(e) = std::fs::rename(&self.path, numbered(1)) {
                tracing::error!("cannot rotate the access log {}: {e}", self.path.display());
                let _ = std::fs::remove_file(&self.path);
            }
        }
        self.size = 0;
        tracing::info!("access log {} rotated", self.path.display());
    }
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
        let d = crate::config::ServerLimits::default();
        Self {
            sessions: HashMap::new(),
            timeout,
            max: d.max_sessions,
            access_log: access_log.map(|path| AccessLog {
                path,
                file: None,
                size: 0,
                max_bytes: d.access_log_max_bytes,
                keep: d.access_log_files,
            }),
            ended: 0,
            evicted: 0,
            dropped: 0,
            triggers,
        }
    }

    /// Keep at most `limits.max_sessions` sessions, and rotate the access log as `limits`
    /// say.
    pub fn with_limits(mut self, limits: &crate::config::ServerLimits) -> Self {
        self.max = limits.max_sessions.max(1);
        if let Some(log) = &mut self.access_log {
            log.max_bytes = limits.access_log_max_bytes;
            log.keep = limits.access_log_files;
        }
        self
    }

    /// Sessions kept now.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Make room for one more session: end the quiet ones, then the quieter half of those
    /// with no connection open. Whether there is room now.
    fn make_room(&mut self) -> bool {
        if self.sessions.len() < self.max {
            return true;
        }
        self.sweep();
        if self.sessions.len() < self.max {
            return true;
        }
        let mut quiet: Vec<(Option<Instant>, SessionKey)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.connections <= 0)
            .map(|(k, s)| (s.last, k.clone()))
            .collect();
        if quiet.is_empty() {
            return false;
        }
        let half = quiet.len().div_ceil(2);
        quiet.select_nth_unstable_by(half - 1, |a, b| a.0.cmp(&b.0));
        for (_, key) in quiet.drain(..half) {
            self.end(&key, EndReason::Evicted);
            self.evicted += 1;
        }
        self.sessions.len() < self.max
    }

    /// Add one shard's report.
    pub fn absorb(&mut self, report: SessionReport) {
        let now = unix_ms();
        if !self.sessions.contains_key(&report.key) && !self.make_room() {
            self.dropped += 1;
            return;
        }
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

    /// When the first session ends if nothing more is heard of it (none while every session
    /// has a connection open).
    pub fn next_end(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter(|s| s.connections <= 0)
            .map(|s| s.last.map_or_else(Instant::now, |l| l + self.timeout))
            .min()
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
        let Some(log) = &mut self.access_log else {
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
        log.append(text.as_bytes());
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

    #[test]
    fn the_next_end_is_the_first_quiet_session_s() {
        let mut t = SessionTable::new(Duration::from_secs(30), None, None);
        assert_eq!(t.next_end(), None, "no session: nothing to wake for");
        t.absorb(report("open", 1, 10));
        assert_eq!(
            t.next_end(),
            None,
            "an open connection never ends by itself"
        );
        let before = Instant::now();
        t.absorb(report("a", 0, 10));
        let after = Instant::now();
        let due = t.next_end().unwrap();
        assert!(due >= before + Duration::from_secs(30) && due <= after + Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5));
        t.absorb(report("b", 0, 10));
        assert_eq!(t.next_end(), Some(due), "the earlier of the two");
    }

    #[test]
    fn the_table_and_the_access_log_stay_within_their_bounds() {
        let dir = std::env::temp_dir().join(format!("shardcast-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("access.log");
        let limits = crate::config::ServerLimits {
            max_sessions: 100,
            access_log_max_bytes: 4096,
            access_log_files: 2,
            ..Default::default()
        };
        let mut t = SessionTable::new(Duration::from_secs(60), Some(log.clone()), None)
            .with_limits(&limits);
        let watching = report("watching", 1, 10);
        t.absorb(watching);
        for i in 0..1000 {
            t.absorb(report(&format!("flood{i}"), 0, 10));
            assert!(t.len() <= 100);
        }
        assert!(t.evicted >= 800, "{}", t.evicted);
        assert!(
            t.list(None).iter().any(|s| s.token == "watching"),
            "an open connection keeps it"
        );
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        assert!(size(&log) <= 4096);
        assert!(size(&dir.join("access.log.1")) > 0 && size(&dir.join("access.log.2")) > 0);
        assert!(!dir.join("access.log.3").exists(), "two rotated files kept");
        let line = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
        let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        assert_eq!(first["end"], "evicted");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
