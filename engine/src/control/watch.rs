//! Stream events for the triggers: the control plane looks at every stream's newest HLS
//! window when something may have changed, and fires what did.
//!
//! ```text
//!  (started) ── first segment ──► FULL (+ STREAM_READY) ── source silent ──► DRY
//!                                   ▲                                         │
//!                                   └─────────── segments again: RECOVER ◄────┘
//!  removed or restarted after FULL: EMPTY (+ STREAM_END)
//! ```
//!
//! "Silent" is the player page's rule: no segment ended within two target durations and a
//! second. `LIVE_TRACK_LIST` fires when the tracks (codecs, sizes) change.
//!
//! It looks when it is told ([`crate::session::ShardLink::news`]: a segment sealed, an input
//! failed, the stream table changed) and when a live stream would turn silent if nothing came,
//! never more often than every [`SPACING`]: a server with no live stream never wakes it, one
//! stream of 2 s segments about once per segment, and a hundred streams at most four times a
//! second.
//!
//! Wildcard instances nobody has watched for [`INSTANCE_IDLE`] are ended here too (while
//! there are any, it also looks once a second).
//!
//! What it does not do: look at the data plane itself (it reads what the home shard
//! publishes).

use super::ControlState;
use crate::player::{self, StreamState};
use crate::shard::StreamInfo;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A wildcard instance with no viewer (no connection, no session) for this long ends.
pub const INSTANCE_IDLE: Duration = Duration::from_secs(30);

/// Looks are at least this far apart: news that comes sooner waits for the rest of it.
pub const SPACING: Duration = Duration::from_millis(250);

/// While wildcard instances run, the watcher looks at least this often (their viewers come
/// and go without news).
const INSTANCE_LOOK: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Buffer {
    Empty,
    Full,
    Dry,
}

struct Watched {
    info: Arc<StreamInfo>,
    buffer: Buffer,
    tracks: String,
}

/// Watch the streams until the runtime ends.
pub async fn run(state: Arc<ControlState>) {
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let mut unwatched_since: HashMap<String, Instant> = HashMap::new();
    let news = state.store.streams().news();
    // When to look again without news (the first look is at once).
    let mut look_by = Some(Instant::now());
    let mut looked: Option<Instant> = None;
    loop {
        let told = news.notified();
        match look_by {
            Some(by) => {
                tokio::select! {
                    _ = told => {}
                    _ = tokio::time::sleep_until(by.into()) => {}
                }
            }
            None => told.await,
        }
        if let Some(at) = looked {
            tokio::time::sleep_until((at + SPACING).into()).await;
        }
        looked = Some(Instant::now());
        look_by = None;
        let catalog = state.catalog();
        let now = (crate::sys::unix_ns() / 1_000_000) as i64;
        let t = &state.triggers;
        for link in &state.links.shards {
            while let Some((stream, why)) = link.aborted.pop() {
                t.fire("INPUT_ABORT", Some(&stream), &[&stream, &why]);
            }
        }
        // Streams gone or restarted since the last look.
        watched.retain(|name, w| {
            let same = catalog
                .find(name)
                .is_some_and(|(_, info)| Arc::ptr_eq(info, &w.info));
            if !same && w.buffer != Buffer::Empty {
                t.fire("STREAM_BUFFER", Some(name), &[name, "EMPTY"]);
                t.fire("STREAM_END", Some(name), &[name]);
            }
            same
        });
        for (_, info) in catalog.streams() {
            let w = watched.entry(info.name.clone()).or_insert_with(|| Watched {
                info: info.clone(),
                buffer: Buffer::Empty,
                tracks: String::new(),
            });
            let window = info.hls_window.load_full();
            let name = info.name.as_str();
            let live = player::state(window.as_deref(), now) == StreamState::Live;
            if let Some(until) = player::live_until_ms(window.as_deref()).filter(|_| live) {
                // Look again just after it would turn silent.
                let wait = Duration::from_millis((until - now).max(0) as u64 + 1);
                look_by = earliest(look_by, Instant::now() + wait);
            }
            match (w.buffer, live) {
                (Buffer::Empty, true) => {
                    w.buffer = Buffer::Full;
                    t.fire("STREAM_BUFFER", Some(name), &[name, "FULL"]);
                    let input = info.source.kind();
                    t.fire("STREAM_READY", Some(name), &[name, input]);
                }
                (Buffer::Full, false) => {
                    w.buffer = Buffer::Dry;
                    t.fire("STREAM_BUFFER", Some(name), &[name, "DRY"]);
                }
                (Buffer::Dry, true) => {
                    w.buffer = Buffer::Full;
                    t.fire("STREAM_BUFFER", Some(name), &[name, "RECOVER"]);
                }
                _ => {}
            }
            // A wildcard instance nobody has watched for a while ends.
            if state.store.streams().is_instance(name) {
                look_by = earliest(look_by, Instant::now() + INSTANCE_LOOK);
                let watched_now = info
                    .counters
                    .viewers
                    .load(std::sync::atomic::Ordering::Relaxed)
                    > 0
                    || state.sessions().viewers(name) != (0, 0);
                if watched_now {
                    unwatched_since.remove(name);
                } else {
                    let since = *unwatched_since
                        .entry(name.to_owned())
                        .or_insert_with(Instant::now);
                    if since.elapsed() > INSTANCE_IDLE {
                        unwatched_since.remove(name);
                        let (store, name) = (state.store.clone(), name.to_owned());
                        let _ =
                            tokio::task::spawn_blocking(move || store.end_instance(&name)).await;
                        continue;
                    }
                }
            }
            let tracks = player::tracks(window.as_deref());
            if !tracks.is_empty() {
                let text = serde_json::to_string(&tracks).unwrap_or_default();
                if text != w.tracks {
                    t.fire("LIVE_TRACK_LIST", Some(name), &[name, &text]);
                    w.tracks = text;
                }
            }
        }
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}
