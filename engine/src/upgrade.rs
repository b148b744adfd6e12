//! Upgrades that drop no viewer: a running server hands its listening sockets, its UDP ingest
//! sockets and its streams' HLS windows to a new process of the binary on disk (the new one,
//! after a package upgrade), which serves before the old one stops accepting and drains.
//!
//! ```text
//!  old: SIGUSR2 (`shardcast upgrade`)          new: same arguments, the channel as its stdin
//!   spawn; channel = a SEQPACKET socket pair ──►  load and check configuration, certificates
//!                                        ◄── Ready (Failed, or it exits: the old one carries on)
//!   pause ingest: shards let go of their UDP sockets (datagrams wait in the kernel's buffers)
//!   Handover + descriptors: listeners (plain and TLS per shard, the API's), ingest sockets,
//!   every stream's segments (sealed memfds) ──►  shards on the same listeners; ingest sockets
//!                                                read again; windows restored: sequence numbers
//!                                                go on, the next segment is a discontinuity
//!                                        ◄── Serving
//!   MAINPID=new (systemd), status file; stop accepting; open responses finish, progressive
//!   viewers get the end of their body (whole packets), idle connections close; exit.
//!   No Serving within the timeout: ingest resumes here and the new process is killed.
//! ```
//!
//! The window is handed over rather than rebuilt: rebuilding would leave players a playlist
//! with no segment for a segment's duration and new sequence numbers, which players take as a
//! jump; handed over, every URL a player holds stays valid and the playlist just goes on.
//! What the old process had of the segment in progress is lost (up to one segment: the new one
//! starts at the next keyframe, marked as a discontinuity, with the right PROGRAM-DATE-TIME).

use crate::hls::{Segment, SegmentBody};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The environment variable that tells a new process it takes over from a running one; its
/// value is the descriptor of the channel (0: standard input).
pub const CHANNEL_ENV: &str = "SHARDCAST_UPGRADE_CHANNEL";

/// Descriptors sent in one message at most (the kernel takes 253).
const FDS_PER_MESSAGE: usize = 200;

/// The largest message (a handover's description of every window).
const MAX_MESSAGE: usize = 4 << 20;

/// The largest frame of a message (well within a socket's default buffer).
const FRAME: usize = 32 * 1024;

/// What one side tells the other.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// The new process has loaded and checked its configuration.
    Ready {
        /// Its process id.
        pid: u32,
    },
    /// The new process cannot take over.
    Failed {
        /// Why.
        reason: String,
    },
    /// What is handed over; the descriptors follow in `fds` messages of at most
    /// [`FDS_PER_MESSAGE`], in this order: plain listeners, TLS listeners, the API's
    /// listener, ingest sockets, then every window's segments.
    Handover(Handover),
    /// The new process serves.
    Serving {
        /// Its process id.
        pid: u32,
    },
}

/// The description of what is handed over.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Handover {
    /// Plain listeners, one per shard, and their address.
    pub plain: usize,
    /// The plain listeners' address.
    pub plain_addr: Option<SocketAddr>,
    /// TLS listeners, one per shard.
    pub tls: usize,
    /// The TLS listeners' address.
    pub tls_addr: Option<SocketAddr>,
    /// The API's listener and its address, if any.
    pub api_addr: Option<SocketAddr>,
    /// Ingest sockets, by [`ingest_key`].
    pub ingest: Vec<String>,
    /// Every stream's HLS window.
    pub windows: Vec<WindowState>,
}

impl Handover {
    fn fds(&self) -> usize {
        self.plain
            + self.tls
            + usize::from(self.api_addr.is_some())
            + self.ingest.len()
            + self.windows.iter().map(|w| w.segments.len()).sum::<usize>()
    }
}

/// A stream's HLS window as handed over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowState {
    /// The stream.
    pub stream: String,
    /// EXT-X-DISCONTINUITY-SEQUENCE of its playlist.
    pub discontinuity_sequence: u64,
    /// EXT-X-TARGETDURATION (it never shrinks).
    pub target_duration: u64,
    /// How many of the segments, the newest, are listed (the rest are in grace).
    pub listed: usize,
    /// The segments, ascending.
    pub segments: Vec<SegmentState>,
}

fn starts_with_keyframe() -> bool {
    true
}

/// A sealed segment as handed over (its bytes are a memfd sent beside).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentState {
    /// Sequence number.
    pub sequence: u64,
    /// PTS of its first keyframe, 90 kHz.
    pub start_pts: u64,
    /// Duration, 90 kHz.
    pub duration: u64,
    /// Marked as a discontinuity.
    pub discontinuity: bool,
    /// It starts with a keyframe (a predecessor that does not say: it does).
    #[serde(default = "starts_with_keyframe")]
    pub independent: bool,
    /// PROGRAM-DATE-TIME, UNIX ms.
    pub program_date_time_ms: i64,
    /// Length in bytes.
    pub len: usize,
    /// Entity tag.
    pub etag: String,
    /// Last-Modified.
    pub last_modified: String,
}

/// A window received, for the stream's home shard to restore.
pub type InheritedWindow = crate::hls::Restored;

/// The key an ingest socket is handed over under: its stream and what it receives.
pub fn ingest_key(stream: &str, udp: &crate::source::UdpSpec) -> String {
    format!("{stream}|{}|{:?}|{:?}", udp.addr, udp.source, udp.iface)
}

/// What a server can hand to a successor, and what it was handed: copies of its listening
/// sockets, its ingest sockets by key, the windows received; and the ingest pause.
#[derive(Debug, Default)]
pub struct Handoff {
    listeners: Mutex<Listeners>,
    ingest: Mutex<HashMap<String, OwnedFd>>,
    windows: Mutex<HashMap<String, InheritedWindow>>,
    /// Shards must let go of their ingest sockets (an upgrade is handing them over).
    paused: AtomicBool,
    /// Shards that have let go.
    released: AtomicUsize,
}

#[derive(Debug, Default)]
struct Listeners {
    plain: Vec<OwnedFd>,
    plain_addr: Option<SocketAddr>,
    tls: Vec<OwnedFd>,
    tls_addr: Option<SocketAddr>,
    api: Option<(OwnedFd, SocketAddr)>,
}

impl Handoff {
    /// Keep copies of the listeners (the shards and the control plane own the originals).
    pub fn keep_listeners(
        &self,
        plain: &[std::net::TcpListener],
        tls: &[std::net::TcpListener],
        api: Option<&std::net::TcpListener>,
    ) -> std::io::Result<()> {
        let copy = |ls: &[std::net::TcpListener]| {
            ls.iter()
                .map(|l| l.as_fd().try_clone_to_owned())
                .collect::<std::io::Result<Vec<_>>>()
        };
        let addr = |ls: &[std::net::TcpListener]| ls.first().and_then(|l| l.local_addr().ok());
        let mut l = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        l.plain = copy(plain)?;
        l.plain_addr = addr(plain);
        l.tls = copy(tls)?;
        l.tls_addr = addr(tls);
        l.api = match api {
            Some(a) => Some((a.as_fd().try_clone_to_owned()?, a.local_addr()?)),
            None => None,
        };
        Ok(())
    }

    /// A copy of the ingest socket kept under `key` (one handed over, or one this process
    /// opened and let go of for an upgrade that failed).
    pub fn ingest_socket(&self, key: &str) -> Option<OwnedFd> {
        let ingest = self.ingest.lock().unwrap_or_else(|e| e.into_inner());
        ingest.get(key).and_then(|fd| fd.try_clone().ok())
    }

    /// Keep a copy of the ingest socket opened under `key`.
    pub fn keep_ingest(&self, key: String, fd: OwnedFd) {
        self.ingest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, fd);
    }

    /// The stream's ingest socket is closed for good.
    pub fn forget_ingest(&self, key: &str) {
        self.ingest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The window handed over for `stream`, once.
    pub fn take_window(&self, stream: &str) -> Option<InheritedWindow> {
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(stream)
    }

    /// The window handed over for `stream`, left for its home shard.
    pub fn peek_window(&self, stream: &str) -> Option<InheritedWindow> {
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .cloned()
    }

    /// Whether shards must let go of their ingest sockets.
    pub fn ingest_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// A shard let go of its ingest sockets (`true`) or took them again.
    pub fn shard_released(&self, released: bool) {
        if released {
            self.released.fetch_add(1, Ordering::AcqRel);
        } else {
            self.released.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    fn released(&self) -> usize {
        self.released.load(Ordering::Acquire)
    }
}

/// Why an upgrade did not happen (the running process carries on).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The channel or the new process could not be made.
    #[error("cannot start the new process: {0}")]
    Spawn(std::io::Error),
    /// The channel broke.
    #[error("the upgrade channel failed: {0}")]
    Channel(std::io::Error),
    /// The new process refused.
    #[error("the new process refused: {0}")]
    Refused(String),
    /// The new process went away or said nothing in time.
    #[error("the new process {0}")]
    Silent(&'static str),
    /// A message did not parse.
    #[error("the upgrade channel carried a bad message: {0}")]
    Protocol(String),
    /// This side is not being upgraded into (no channel).
    #[error("not started by an upgrade")]
    NotUpgrading,
}

/// One end of the upgrade channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair (old's end, new's end).
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = crate::sys::seqpacket_pair()?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// The channel this process was started with, if it is a new process of an upgrade.
    pub fn inherited() -> Option<Channel> {
        let fd: i32 = std::env::var(CHANNEL_ENV).ok()?.parse().ok()?;
        crate::sys::take_inherited_fd(fd).map(|fd| Channel { fd })
    }

    /// Send `message` with `fds` beside: in frames of at most [`FRAME`] bytes (a flag byte,
    /// 1 on the last, then the payload), the descriptors with the first.
    fn send(
        &self,
        message: &Message,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(), UpgradeError> {
        let bytes =
            serde_json::to_vec(message).map_err(|e| UpgradeError::Protocol(e.to_string()))?;
        let mut raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let mut chunks = bytes.chunks(FRAME).peekable();
        while let Some(chunk) = chunks.next() {
            let mut frame = Vec::with_capacity(chunk.len() + 1);
            frame.push(u8::from(chunks.peek().is_none()));
            frame.extend_from_slice(chunk);
            crate::sys::send_with_fds(self.fd.as_fd(), &frame, &raw)
                .map_err(UpgradeError::Channel)?;
            raw.clear();
        }
        Ok(())
    }

    /// Send descriptors in batches, after a message that announced them.
    fn send_fds(&self, fds: &[std::os::fd::BorrowedFd<'_>]) -> Result<(), UpgradeError> {
        for batch in fds.chunks(FDS_PER_MESSAGE) {
            let raw: Vec<i32> = batch.iter().map(|f| f.as_raw_fd()).collect();
            crate::sys::send_with_fds(self.fd.as_fd(), &[1], &raw)
                .map_err(UpgradeError::Channel)?;
        }
        Ok(())
    }

    /// The next message (its frames joined) and the descriptors sent with it, waiting at most
    /// `timeout` for each frame.
    fn receive(&self, timeout: Duration) -> Result<(Vec<u8>, Vec<OwnedFd>), UpgradeError> {
        let mut bytes = Vec::new();
        let mut fds = Vec::new();
        loop {
            let (frame, more_fds) =
                match crate::sys::receive_with_fds(self.fd.as_fd(), FRAME + 1, timeout) {
                    Ok(Some((frame, fds))) if !frame.is_empty() => (frame, fds),
                    Ok(Some(_)) => return Err(UpgradeError::Silent("went away")),
                    Ok(None) => return Err(UpgradeError::Silent("said nothing in time")),
                    Err(e) => return Err(UpgradeError::Channel(e)),
                };
            fds.extend(more_fds);
            bytes.extend_from_slice(&frame[1..]);
            if bytes.len() > MAX_MESSAGE {
                return Err(UpgradeError::Protocol("a message over 4 MiB".into()));
            }
            if frame[0] == 1 {
                return Ok((bytes, fds));
            }
        }
    }

    fn receive_message(&self, timeout: Duration) -> Result<(Message, Vec<OwnedFd>), UpgradeError> {
        let (bytes, fds) = self.receive(timeout)?;
        let message =
            serde_json::from_slice(&bytes).map_err(|e| UpgradeError::Protocol(e.to_string()))?;
        Ok((message, fds))
    }
}

/// What the old process needs to hand over, beside the [`Handoff`].
pub struct OldSide<'a> {
    /// Every stream's HLS window by name, read once ingest has paused.
    pub windows: &'a dyn Fn() -> Vec<(String, Arc<crate::hls::HlsWindow>)>,
    /// Shards (each must let go of its ingest sockets).
    pub shards: usize,
    /// Wakes the shards (they notice the pause on their next turn).
    pub wake: &'a dyn Fn(),
}

impl std::fmt::Debug for OldSide<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OldSide")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

/// How long the new process may take to load its configuration, and to serve once it has
/// what is handed over.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const SERVING_TIMEOUT: Duration = Duration::from_secs(10);

/// The old side: start the new process and hand everything over. `Ok(pid)`: the new process
/// serves; stop accepting and drain. `Err`: it does not, and this process serves as before
/// (ingest resumed, the new process killed).
pub fn hand_over(handoff: &Handoff, old: &OldSide<'_>) -> Result<u32, UpgradeError> {
    let (ours, theirs) = Channel::pair().map_err(UpgradeError::Spawn)?;
    let mut child = spawn_successor(theirs)?;
    let result = hand_over_to(handoff, old, &ours, child.id());
    match result {
        Ok(pid) => {
            // The new process lives on; it is no longer this one's to reap.
            std::mem::forget(child);
            Ok(pid)
        }
        Err(e) => {
            if handoff.ingest_paused() {
                handoff.set_paused(false);
                (old.wake)();
            }
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

fn hand_over_to(
    handoff: &Handoff,
    old: &OldSide<'_>,
    channel: &Channel,
    child: u32,
) -> Result<u32, UpgradeError> {
    match channel.receive_message(READY_TIMEOUT)?.0 {
        Message::Ready { pid } if pid == child => {}
        Message::Ready { pid } => {
            return Err(UpgradeError::Protocol(format!(
                "ready from pid {pid}, not the one started ({child})"
            )))
        }
        Message::Failed { reason } => return Err(UpgradeError::Refused(reason)),
        other => return Err(UpgradeError::Protocol(format!("{other:?} before Ready"))),
    }
    // Ingest stops here: datagrams wait in the sockets' buffers for the new process.
    handoff.set_paused(true);
    (old.wake)();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while handoff.released() < old.shards {
        if std::time::Instant::now() > deadline {
            return Err(UpgradeError::Silent(
                "could not be given the ingest: a shard did not let go",
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (handover, fds) = {
        let listeners = handoff.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let ingest = handoff.ingest.lock().unwrap_or_else(|e| e.into_inner());
        let mut handover = Handover {
            plain: listeners.plain.len(),
            plain_addr: listeners.plain_addr,
            tls: listeners.tls.len(),
            tls_addr: listeners.tls_addr,
            api_addr: listeners.api.as_ref().map(|(_, a)| *a),
            ingest: Vec::new(),
            windows: Vec::new(),
        };
        let mut fds: Vec<OwnedFd> = Vec::new();
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(UpgradeError::Channel);
        for fd in listeners.plain.iter().chain(&listeners.tls) {
            fds.push(dup(fd)?);
        }
        if let Some((fd, _)) = &listeners.api {
            fds.push(dup(fd)?);
        }
        for (key, fd) in ingest.iter() {
            handover.ingest.push(key.clone());
            fds.push(dup(fd)?);
        }
        for (stream, window) in (old.windows)() {
            let mut state = WindowState {
                stream,
                discontinuity_sequence: window.discontinuity_sequence,
                target_duration: window.target_duration,
                listed: window.listed,
                segments: Vec::new(),
            };
            for s in window.segments() {
                let fd = match &s.body {
                    SegmentBody::File { fd, .. } => dup(fd)?,
                    SegmentBody::Memory(bytes) => {
                        crate::sys::sealed_memfd("shardcast-handover", bytes)
                            .map_err(UpgradeError::Channel)?
                    }
                };
                fds.push(fd);
                state.segments.push(SegmentState {
                    sequence: s.sequence,
                    start_pts: s.start_pts.ticks(),
                    duration: s.duration,
                    discontinuity: s.discontinuity,
                    independent: s.independent,
                    program_date_time_ms: s.program_date_time_ms,
                    len: s.len(),
                    etag: s.etag.clone(),
                    last_modified: s.last_modified.clone(),
                });
            }
            handover.windows.push(state);
        }
        (handover, fds)
    };
    if fds.len() != handover.fds() {
        return Err(UpgradeError::Protocol(format!(
            "{} descriptors for {} announced",
            fds.len(),
            handover.fds()
        )));
    }
    channel.send(&Message::Handover(handover), &[])?;
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    channel.send_fds(&borrowed)?;
    drop(borrowed);
    // Our copies close here; the new process has its own.
    drop(fds);
    match channel.receive_message(SERVING_TIMEOUT)?.0 {
        Message::Serving { pid } => Ok(pid),
        Message::Failed { reason } => Err(UpgradeError::Refused(reason)),
        other => Err(UpgradeError::Protocol(format!("{other:?} before Serving"))),
    }
}

/// Start the binary on disk (after a package upgrade, the new one) with this process's
/// arguments, `channel` as its standard input.
///
/// A binary just written may still be open for writing somewhere for a moment (a process
/// forked while its writer had it open holds that descriptor until it execs): `ETXTBSY`
/// is tried again for up to a second.
fn spawn_successor(channel: Channel) -> Result<std::process::Child, UpgradeError> {
    let exe = successor_binary().map_err(UpgradeError::Spawn)?;
    let mut args = std::env::args_os();
    let _ = args.next();
    let mut command = std::process::Command::new(&exe);
    command
        .args(args)
        .env(CHANNEL_ENV, "0")
        .stdin(std::process::Stdio::from(channel.fd));
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => {
                return result.map_err(|e| {
                    UpgradeError::Spawn(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", exe.display()),
                    ))
                })
            }
        }
    }
}

/// The path this process's binary was started from: where the new binary is after an
/// upgrade replaced the file (the kernel says " (deleted)" of the old one's inode).
fn successor_binary() -> std::io::Result<std::path::PathBuf> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => std::path::PathBuf::from(path),
        None => exe,
    })
}

/// What a new process was handed: listeners to serve on (the rest went into the [`Handoff`]).
#[derive(Debug)]
pub struct Inherited {
    /// The plain listeners, one per shard.
    pub plain: Vec<std::net::TcpListener>,
    /// The TLS listeners, one per shard.
    pub tls: Vec<std::net::TcpListener>,
    /// The API's listener.
    pub api: Option<std::net::TcpListener>,
    /// The addresses they listen on.
    pub plain_addr: Option<SocketAddr>,
    /// The TLS listeners' address.
    pub tls_addr: Option<SocketAddr>,
    /// The API's address.
    pub api_addr: Option<SocketAddr>,
    channel: Channel,
}

impl Inherited {
    /// Tell the old process this one serves (it then stops accepting and drains).
    pub fn serving(self) -> Result<(), UpgradeError> {
        self.channel.send(
            &Message::Serving {
                pid: std::process::id(),
            },
            &[],
        )
    }

    /// Tell the old process this one cannot serve (it carries on).
    pub fn failed(self, reason: &str) {
        let _ = self.channel.send(
            &Message::Failed {
                reason: reason.to_owned(),
            },
            &[],
        );
    }
}

/// The new side, once its configuration is loaded and checked: say Ready, and take what is
/// handed over (ingest sockets and windows go into `handoff`).
pub fn take_over(channel: Channel, handoff: &Handoff) -> Result<Inherited, UpgradeError> {
    channel.send(
        &Message::Ready {
            pid: std::process::id(),
        },
        &[],
    )?;
    let handover = match channel.receive_message(SERVING_TIMEOUT)?.0 {
        Message::Handover(h) => h,
        other => {
            return Err(UpgradeError::Protocol(format!(
                "{other:?} instead of Handover"
            )))
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    while fds.len() < handover.fds() {
        let (_, batch) = channel.receive(SERVING_TIMEOUT)?;
        if batch.is_empty() {
            return Err(UpgradeError::Protocol(
                "a descriptor batch without descriptors".into(),
            ));
        }
        fds.extend(batch);
    }
    if fds.len() != handover.fds() {
        return Err(UpgradeError::Protocol(format!(
            "{} descriptors for {} announced",
            fds.len(),
            handover.fds()
        )));
    }
    let mut fds = fds.into_iter();
    let mut next = || {
        fds.next()
            .ok_or_else(|| UpgradeError::Protocol("descriptors missing".into()))
    };
    let listener = |fd: OwnedFd| std::net::TcpListener::from(fd);
    let plain = (0..handover.plain)
        .map(|_| next().map(listener))
        .collect::<Result<Vec<_>, _>>()?;
    let tls = (0..handover.tls)
        .map(|_| next().map(listener))
        .collect::<Result<Vec<_>, _>>()?;
    let api = match handover.api_addr {
        Some(_) => Some(listener(next()?)),
        None => None,
    };
    for key in &handover.ingest {
        handoff.keep_ingest(key.clone(), next()?);
    }
    let mut windows = handoff.windows.lock().unwrap_or_else(|e| e.into_inner());
    for state in handover.windows {
        let mut segments = Vec::with_capacity(state.segments.len());
        for s in &state.segments {
            // The CMAF rendition is not handed over: the new process makes it from its first
            // segment on.
            segments.push(Arc::new(Segment {
                cmaf: None,
                entry: Default::default(),
                sequence: s.sequence,
                start_pts: shardcast_protocols::ts::pes::Timestamp::new(s.start_pts),
                duration: s.duration,
                discontinuity: s.discontinuity,
                independent: s.independent,
                program_date_time_ms: s.program_date_time_ms,
                body: SegmentBody::File {
                    fd: next()?,
                    len: s.len,
                    mapped: std::sync::OnceLock::new(),
                },
                etag: s.etag.clone(),
                last_modified: s.last_modified.clone(),
            }));
        }
        windows.insert(
            state.stream.clone(),
            InheritedWindow {
                segments,
                listed: state.listed,
                discontinuity_sequence: state.discontinuity_sequence,
                target_duration: state.target_duration,
            },
        );
    }
    drop(windows);
    Ok(Inherited {
        plain,
        tls,
        api,
        plain_addr: handover.plain_addr,
        tls_addr: handover.tls_addr,
        api_addr: handover.api_addr,
        channel,
    })
}

/// Where `shardcast upgrade` finds the running server and reads how its upgrade went.
pub fn pid_file(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("shardcast.pid")
}

/// The outcome of the latest upgrade, as the old process writes it.
pub fn status_file(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("upgrade.json")
}

/// How the latest upgrade went.
#[derive(Debug, Serialize, Deserialize)]
pub struct UpgradeStatus {
    /// The process that was asked.
    pub old: u32,
    /// The process that serves now (the old one when it failed).
    pub serving: u32,
    /// Whether it worked.
    pub ok: bool,
    /// Why not.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_state(sequence: u64) -> SegmentState {
        SegmentState {
            sequence,
            start_pts: sequence * 90_000,
            duration: 90_000,
            discontinuity: false,
            independent: true,
            program_date_time_ms: 1_800_000_000_000 + sequence as i64,
            len: 188,
            etag: format!("\"{sequence:x}\""),
            last_modified: "Mon, 30 Nov 2026 04:00:00 GMT".into(),
        }
    }

    #[test]
    fn a_large_handover_and_its_descriptors_cross_the_channel() {
        let (old, new) = Channel::pair().unwrap();
        // More than one frame of description, more than one message of descriptors.
        let windows: Vec<WindowState> = (0..30)
            .map(|w| WindowState {
                stream: format!("stream-{w}"),
                discontinuity_sequence: w,
                target_duration: 2,
                listed: 6,
                segments: (0..10).map(segment_state).collect(),
            })
            .collect();
        let handover = Handover {
            windows,
            ..Handover::default()
        };
        let count = handover.fds();
        assert_eq!(count, 300);
        let memfds: Vec<OwnedFd> = (0..count)
            .map(|i| crate::sys::sealed_memfd("t", &[i as u8; 188]).unwrap())
            .collect();
        let sender = std::thread::spawn(move || {
            old.send(&Message::Handover(handover), &[]).unwrap();
            let borrowed: Vec<_> = memfds.iter().map(|f| f.as_fd()).collect();
            old.send_fds(&borrowed).unwrap();
            old
        });
        let (message, none) = new.receive_message(Duration::from_secs(5)).unwrap();
        assert!(none.is_empty());
        let Message::Handover(received) = message else {
            panic!("{message:?}")
        };
        assert_eq!(received.fds(), 300);
        assert_eq!(received.windows[29].segments[9].sequence, 9);
        let mut fds = Vec::new();
        while fds.len() < 300 {
            let (_, batch) = new.receive(Duration::from_secs(5)).unwrap();
            assert!(!batch.is_empty() && batch.len() <= FDS_PER_MESSAGE);
            fds.extend(batch);
        }
        // The descriptors are the memfds, in order.
        for (i, fd) in fds.iter().enumerate().step_by(37) {
            let map = crate::sys::SealedMapping::map(fd.as_fd(), 188).unwrap();
            assert_eq!(map[0], i as u8);
        }
        // The other side gone: said so, not a hang.
        drop(sender.join().unwrap());
        assert!(matches!(
            new.receive(Duration::from_secs(5)),
            Err(UpgradeError::Silent("went away"))
        ));
    }

    #[test]
    fn silence_is_a_timeout_and_garbage_a_protocol_error() {
        let (old, new) = Channel::pair().unwrap();
        assert!(matches!(
            new.receive(Duration::from_millis(50)),
            Err(UpgradeError::Silent("said nothing in time"))
        ));
        crate::sys::send_with_fds(old.fd.as_fd(), b"\x01not json", &[]).unwrap();
        assert!(matches!(
            new.receive_message(Duration::from_secs(1)),
            Err(UpgradeError::Protocol(_))
        ));
    }

    #[test]
    fn ingest_sockets_are_kept_by_stream_and_what_they_receive() {
        let spec = crate::source::UdpSpec {
            addr: "239.1.1.1:5000".parse().unwrap(),
            source: None,
            iface: Some("eth1".into()),
            program: None,
            rcvbuf: 1 << 20,
        };
        let other = crate::source::UdpSpec {
            iface: Some("eth2".into()),
            ..spec.clone()
        };
        assert_ne!(ingest_key("a", &spec), ingest_key("a", &other));
        assert_ne!(ingest_key("a", &spec), ingest_key("b", &spec));
        let handoff = Handoff::default();
        let fd = crate::sys::sealed_memfd("t", b"x").unwrap();
        handoff.keep_ingest(ingest_key("a", &spec), fd);
        assert!(handoff.ingest_socket(&ingest_key("a", &spec)).is_some());
        assert!(
            handoff.ingest_socket(&ingest_key("a", &spec)).is_some(),
            "a copy each time"
        );
        handoff.forget_ingest(&ingest_key("a", &spec));
        assert!(handoff.ingest_socket(&ingest_key("a", &spec)).is_none());
    }
}
