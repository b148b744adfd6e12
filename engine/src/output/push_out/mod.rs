//! Streams sent on ("pushes out", as MistServer calls them): re-emitted over UDP, multicast or
//! unicast, raw TS or RTP, paced by the stream's PCRs; pushed to another server over SRT (a
//! caller, paced the same way), TCP (raw TS) or HTTP (a `PUT` with a chunked body that does
//! not end); published over RTMP (FLV remuxed from the TS: YouTube, Twitch, RTMP servers); or
//! recorded to files.
//!
//! ```text
//!  home shard: publish(chunk) ─► Tap per push (bounded) ─┬─ udp://   the emitter thread, one
//!                                                        │          for all (Pacer, send)
//!                                                        ├─ srt://   a thread each (Pacer, libsrt)
//!                                                        └─ tcp://, http://, rtmp://  a task
//!                                                                   each on the sources' runtime
//! ```
//!
//! A stream's `push = [...]` start with it and end with it; the API starts and stops others
//! while it runs (`POST /api/v1/streams/{name}/pushes`, `DELETE /api/v1/pushes/{id}`).
//! MistServer's `PUSH_OUT_START` is asked before each starts (its answer is the target to use;
//! empty refuses), and `PUSH_END` fires when each ends, with its status.
//!
//! Every push starts at an access point (PAT, PMT, keyframe). A push that cannot keep up (a
//! slow far end) loses what its tap cannot hold, counted, and resumes at the next access
//! point; ingest and viewers never wait for it. A connection that fails is tried again with
//! the sources' backoff (0.25 s doubling to 10 s), counted. At most `max_push_outs` run.
//!
//! Recordings ([`record`]) run the same way, a thread each: a stream's `record` table, or
//! `POST /api/v1/streams/{name}/recording`; `RECORDING_END` fires for each file.
//!
//! Recordings are played back by [`crate::vod`].
//!
//! What it does not do yet: RTMPS targets, H.265 over RTMP (Enhanced RTMP).

mod connect;
pub mod record;
mod rtmp;
mod srt;
mod udp;

use crate::control::triggers::{refuses, TriggerSet};
use crate::stream::tap::{self, Tap, TapSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::output::push_target::{
    PushTarget, RecordSpec, RtmpTarget, SrtTarget, TargetError, UdpTarget,
};

/// Log lines each push keeps for `PUSH_END` and the API.
const LOG_LINES: usize = 10;

/// How a push was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// By the stream's configuration.
    Config,
    /// Through the API.
    Api,
}

/// What one push did, for the API, the metrics and `PUSH_END`.
#[derive(Debug, Default)]
pub struct PushCounters {
    /// Bytes sent (TS, without RTP or HTTP framing).
    pub bytes: AtomicU64,
    /// Datagrams sent (UDP).
    pub datagrams: AtomicU64,
    /// Datagrams sent more than [`LATE_NS`] after they were due (UDP).
    pub late_datagrams: AtomicU64,
    /// Datagrams the socket refused (UDP: its buffer full, or the host unreachable).
    pub send_errors: AtomicU64,
    /// Times the pacer mapped the stream's clock again (a jump in its PCRs) (UDP).
    pub resyncs: AtomicU64,
    /// Connections made after the first (TCP, HTTP).
    pub reconnects: AtomicU64,
    /// Connection attempts that failed (TCP, HTTP).
    pub failures: AtomicU64,
    /// Whether it is connected now (TCP, HTTP; UDP: always; a recording: writing).
    pub connected: AtomicBool,
    /// Files finished (a recording).
    pub files: AtomicU64,
}

/// Datagrams sent later than this after their due time are counted as late.
pub const LATE_NS: u64 = 5_000_000;

/// One push running.
#[derive(Debug)]
pub struct PushOut {
    /// Its number, unique while the server runs.
    pub id: u64,
    /// The stream it sends.
    pub stream: String,
    /// Its target as configured or asked for.
    pub target: String,
    /// The target it sends to (`PUSH_OUT_START` may have rewritten it).
    pub actual: String,
    /// How it was started.
    pub origin: Origin,
    /// When it started, UNIX seconds.
    pub started: u64,
    /// What it did.
    pub counters: PushCounters,
    tap: Arc<Tap>,
    taps: Arc<TapSet>,
    recording: bool,
    stopped: AtomicBool,
    log: Mutex<std::collections::VecDeque<String>>,
}

impl PushOut {
    /// Whether it records to files.
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Whether it was told to stop.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Chunks its tap dropped because it fell behind.
    pub fn dropped_chunks(&self) -> u64 {
        self.tap.dropped()
    }

    /// The last few things it logged, oldest first.
    pub fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Note what happened (kept for `PUSH_END` and the API; logged by the caller).
    fn note(&self, line: String) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }

    /// Its status as `PUSH_END` and the API give it.
    pub fn status(&self) -> serde_json::Value {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "id": self.id,
            "stream": self.stream,
            "target": self.target,
            "actual_target": self.actual,
            "origin": self.origin,
            "started": self.started,
            "connected": c.connected.load(Ordering::Relaxed),
            "bytes": n(&c.bytes),
            "datagrams": n(&c.datagrams),
            "late_datagrams": n(&c.late_datagrams),
            "send_errors": n(&c.send_errors),
            "resyncs": n(&c.resyncs),
            "reconnects": n(&c.reconnects),
            "failures": n(&c.failures),
            "dropped_chunks": self.dropped_chunks(),
            "files": n(&c.files),
            "log": self.log(),
        })
    }
}

/// Why a push does not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The target does not parse.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// `max_push_outs` run already.
    #[error("{0} pushes run already (max_push_outs)")]
    Full(usize),
    /// The stream ended before the push started.
    #[error("the stream ended")]
    Ended,
    /// A recording's path template is refused.
    #[error("{0}")]
    Record(String),
    /// The stream is being recorded already.
    #[error("the stream is being recorded already")]
    Recording,
    /// A recording's (or an SRT push's) thread cannot start.
    #[error("cannot start the push's thread: {0}")]
    RecordThread(std::io::Error),
    /// The UDP pushes' thread cannot start.
    #[error("cannot start the UDP push thread: {0}")]
    Thread(std::io::Error),
}

/// Every push running, and how they run (see the module docs).
#[derive(Debug)]
pub struct PushOuts {
    tasks: tokio::runtime::Handle,
    triggers: Option<Arc<TriggerSet>>,
    max: usize,
    next_id: AtomicU64,
    running: Mutex<Vec<Arc<PushOut>>>,
    emitter: udp::Emitter,
    /// Recordings' and SRT pushes' threads (joined when the server stops: files end whole,
    /// and no thread is inside libsrt when the process exits).
    recorders: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Pushes `PUSH_OUT_START` refused, and pushes refused for `max_push_outs`.
    pub refused: AtomicU64,
}

impl PushOuts {
    /// Pushes whose connections run on `tasks`, asking and telling `triggers`; at most `max`.
    pub fn new(
        tasks: tokio::runtime::Handle,
        triggers: Option<Arc<TriggerSet>>,
        max: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            tasks,
            triggers,
            max,
            next_id: AtomicU64::new(1),
            running: Mutex::new(Vec::new()),
            emitter: udp::Emitter::default(),
            recorders: Mutex::new(Vec::new()),
            refused: AtomicU64::new(0),
        })
    }

    /// The pushes running.
    pub fn list(&self) -> Vec<Arc<PushOut>> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stream `stream` started (on its home shard): its configured pushes start, off the
    /// shard (`PUSH_OUT_START` may take a while).
    pub fn stream_started(self: &Arc<Self>, stream: &str, taps: &Arc<TapSet>, targets: &[String]) {
        for target in targets {
            if let Err(e) = self.start(stream, taps, target, Origin::Config) {
                tracing::warn!(stream, "push to {target} not started: {e}");
            }
        }
    }

    /// Stream `stream`, whose taps are `taps`, ended: every push of it ends (and one still
    /// asking `PUSH_OUT_START` does not start).
    pub fn stream_ended(&self, stream: &str, taps: &TapSet) {
        taps.end();
        let ending: Vec<_> = self
            .list()
            .into_iter()
            .filter(|p| p.stream == stream && std::ptr::eq(&*p.taps, taps))
            .collect();
        for push in ending {
            self.stop(push.id);
        }
    }

    /// Start a push of stream `stream` (whose taps are `taps`) to `target`: checked here, then
    /// `PUSH_OUT_START` is asked on the tasks' runtime; returns its id.
    pub fn start(
        self: &Arc<Self>,
        stream: &str,
        taps: &Arc<TapSet>,
        target: &str,
        origin: Origin,
    ) -> Result<u64, StartError> {
        PushTarget::parse(target)?;
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).len();
        if running >= self.max {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(StartError::Full(self.max));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        let (stream, taps, target) = (stream.to_owned(), taps.clone(), target.to_owned());
        self.tasks.spawn(async move {
            let (actual_url, actual) = match this.ask_start(&stream, &target).await {
                Ok(actual) => actual,
                Err(why) => {
                    this.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(stream = %stream, "push to {target} not started: {why}");
                    return;
                }
            };
            if let Err(e) = this.run(id, &stream, &taps, (target, actual_url), actual, origin) {
                tracing::warn!(stream = %stream, "push not started: {e}");
            }
        });
        Ok(id)
    }

    /// Start recording stream `stream` (whose taps are `taps`) as `spec` says; one recording
    /// per stream at a time. Returns its id.
    pub fn start_recording(
        &self,
        stream: &str,
        taps: &Arc<TapSet>,
        spec: RecordSpec,
        origin: Origin,
    ) -> Result<u64, StartError> {
        crate::output::push_target::check_template(&spec.path).map_err(StartError::Record)?;
        if self.recording_of(stream).is_some() {
            return Err(StartError::Recording);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let target = spec.path.clone();
        self.run(
            id,
            stream,
            taps,
            (target.clone(), target),
            PushTarget::Record(spec),
            origin,
        )?;
        Ok(id)
    }

    /// The recording of `stream` that runs, if one does.
    pub fn recording_of(&self, stream: &str) -> Option<Arc<PushOut>> {
        self.list()
            .into_iter()
            .find(|p| p.stream == stream && p.is_recording())
    }

    /// What `PUSH_OUT_START` makes of a push of `stream` to `target`: the target to use.
    async fn ask_start(&self, stream: &str, target: &str) -> Result<(String, PushTarget), String> {
        let Some(triggers) = self
            .triggers
            .as_ref()
            .filter(|t| t.wants("PUSH_OUT_START", Some(stream)))
        else {
            let parsed = PushTarget::parse(target).map_err(|e| e.to_string())?;
            return Ok((target.to_owned(), parsed));
        };
        let answers = triggers
            .ask("PUSH_OUT_START", Some(stream), &[stream, target])
            .await
            .unwrap_or_default();
        if answers.iter().any(|a| refuses(a)) {
            return Err("the PUSH_OUT_START trigger said no".into());
        }
        let answer = answers.first().map_or(target, |a| a.trim());
        // A plain yes keeps the target.
        let answer = match answer {
            "1" | "true" | "yes" => target,
            other => other,
        };
        let parsed = PushTarget::parse(answer)
            .map_err(|e| format!("the PUSH_OUT_START trigger answered a bad target: {e}"))?;
        Ok((answer.to_owned(), parsed))
    }

    fn run(
        &self,
        id: u64,
        stream: &str,
        taps: &Arc<TapSet>,
        (target, actual_url): (String, String),
        actual: PushTarget,
        origin: Origin,
    ) -> Result<(), StartError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if taps.ended() {
            return Err(StartError::Ended);
        }
        if running.len() >= self.max {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(StartError::Full(self.max));
        }
        let notify = Arc::new(tokio::sync::Notify::new());
        // A recording's thread first: its tap wakes it.
        let mut recorder = None;
        let wake = match &actual {
            PushTarget::Udp(_) => self.emitter.wake().map_err(StartError::Thread)?,
            PushTarget::Record(_) | PushTarget::Srt(_) => {
                let (give, take) = std::sync::mpsc::channel::<Arc<PushOut>>();
                let (target, triggers) = (actual.clone(), self.triggers.clone());
                let name = match target {
                    PushTarget::Srt(_) => "push-srt",
                    _ => "record",
                };
                let thread = std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || {
                        let Ok(push) = take.recv() else { return };
                        match target {
                            PushTarget::Record(spec) => record::run(push, spec, triggers),
                            PushTarget::Srt(srt) => srt::run(push, srt),
                            _ => {}
                        }
                    })
                    .map_err(StartError::RecordThread)?;
                let wake = tap::TapWake::Thread(thread.thread().clone());
                let mut recorders = self.recorders.lock().unwrap_or_else(|e| e.into_inner());
                recorders.retain(|t| !t.is_finished());
                recorders.push(thread);
                recorder = Some(give);
                wake
            }
            _ => tap::TapWake::Task(notify.clone()),
        };
        let tap = Arc::new(Tap::new(tap::TAP_CHUNKS, tap::TAP_BYTES, wake));
        let push = Arc::new(PushOut {
            id,
            stream: stream.to_owned(),
            actual: actual_url,
            target,
            origin,
            started: unix_s(),
            counters: PushCounters::default(),
            tap: tap.clone(),
            taps: taps.clone(),
            recording: matches!(actual, PushTarget::Record(_)),
            stopped: AtomicBool::new(false),
            log: Mutex::new(Default::default()),
        });
        running.push(push.clone());
        drop(running);
        taps.attach(&tap);
        tracing::info!(stream, id, target = %redacted(&push.actual), "push started");
        match actual {
            PushTarget::Record(_) | PushTarget::Srt(_) => {
                if let Some(give) = recorder {
                    let _ = give.send(push);
                }
            }
            PushTarget::Udp(udp) => {
                if let Err(e) = self.emitter.add(push.clone(), udp) {
                    push.note(format!("cannot send: {e}"));
                    tracing::warn!(stream, id, "push cannot send: {e}");
                    self.stop(id);
                }
            }
            PushTarget::Rtmp(rtmp) => {
                self.tasks.spawn(rtmp::run(push, rtmp, notify));
            }
            other => {
                self.tasks.spawn(connect::run(push, other, notify));
            }
        }
        Ok(())
    }

    /// Stop push `id`; false when there is none.
    pub fn stop(&self, id: u64) -> bool {
        let push = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let Some(at) = running.iter().position(|p| p.id == id) else {
                return false;
            };
            running.remove(at)
        };
        push.stopped.store(true, Ordering::Relaxed);
        push.taps.detach(&push.tap);
        // Its reader sees it stopped and ends.
        push.tap.wake();
        tracing::info!(stream = %push.stream, id, target = %redacted(&push.actual), "push ended");
        // A recording's thread ends its file and leaves.
        if let Some(t) = self.triggers.as_ref().filter(|_| !push.recording) {
            let log = serde_json::to_string(&push.log()).unwrap_or_default();
            let status = push.status().to_string();
            t.fire(
                "PUSH_END",
                Some(&push.stream),
                &[
                    &id.to_string(),
                    &push.stream,
                    &push.target,
                    &push.actual,
                    &log,
                    &status,
                ],
            );
        }
        true
    }

    /// Stop every push (the server stops): `PUSH_END` fires for each, and the emitter's
    /// thread ends.
    pub fn stop_all(&self) {
        for push in self.list() {
            self.stop(push.id);
        }
        self.emitter.shut_down();
        let recorders =
            std::mem::take(&mut *self.recorders.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in recorders {
            let _ = thread.join();
        }
    }
}

/// `url` with the values of `key=`, `passphrase=` and `token=` left out, and an RTMP
/// target's stream key (for logs and metrics).
pub fn redacted(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("rtmp://") {
        // rtmp://HOST/APP/KEY: the key is a secret.
        let mut parts = rest.splitn(3, '/');
        if let (Some(authority), Some(app), Some(_)) = (parts.next(), parts.next(), parts.next()) {
            return format!("rtmp://{authority}/{app}/…");
        }
    }
    crate::source::redacted(url)
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
