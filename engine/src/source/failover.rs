//! Failover: a stream whose `source` is a list (`source = ["udp://239.1.1.1:5000",
//! "tcp://backup:9000?mode=connect"]`). Every source in the list runs at once, so a backup is
//! connected and flowing before it is needed; only the active one's bytes reach the stream.
//!
//! When the active source has sent nothing for `dry` (default 1 s) the first source of the
//! list that is live (has sent within `dry`) takes over. With `back_after` set, an earlier
//! source of the list that has been live again for that long takes over back. Each switch is
//! a restart of the stream's pipeline: one discontinuity in HLS, progressive viewers go on
//! from the next keyframe. It is logged, counted (`source_switches`), shown in the API
//! (`input.failover`) and fires `SOURCE_SWITCH` (stream, from, to, why).
//!
//! The choice is sans-IO ([`Selector`]: time passed in); a task on the sources' runtime
//! takes what each source delivers, asks the selector, and hands the active source's bytes
//! to the home shard through the stream's inlet. UDP sources in a list are read by that
//! runtime too (not by the shard), as a TCP source is.

use super::inlet::{Delivery, Inlet};
use super::{SourceContext, SourceDriver, SourceSpec};
use crate::control::triggers::TriggerSet;
use crate::stream::StreamCounters;
use crate::wake::Wake;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the task looks at the sources when none delivers.
const TICK: Duration = Duration::from_millis(50);

/// A list of sources and when to switch between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverSpec {
    /// The sources, first preferred: (URL, what it parses to).
    pub sources: Vec<(String, SourceSpec)>,
    /// How long the active source may send nothing before another takes over.
    pub dry: Duration,
    /// How long an earlier source must have been live again before it takes over back
    /// (`None`: never).
    pub back_after: Option<Duration>,
}

/// A switch the [`Selector`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    /// The source that was active.
    pub from: usize,
    /// The source that is now.
    pub to: usize,
    /// Why.
    pub why: Why,
}

/// Why the active source changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// It sent nothing for `dry`.
    Dry,
    /// An earlier source has been live for `back_after`.
    Back,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Dry => "dry",
            Why::Back => "back",
        }
    }
}

/// Which source is active, from when each last sent (sans-IO: time is passed in).
#[derive(Debug)]
pub struct Selector {
    active: usize,
    /// Per source: when it last sent, and since when it has sent without a dry spell.
    last: Vec<Option<Instant>>,
    live_since: Vec<Option<Instant>>,
    /// When the active source became active (it has `dry` from then to send).
    since: Instant,
    dry: Duration,
    back_after: Option<Duration>,
}

impl Selector {
    /// `sources` sources, the first active from `now`.
    pub fn new(sources: usize, dry: Duration, back_after: Option<Duration>, now: Instant) -> Self {
        Self {
            active: 0,
            last: vec![None; sources],
            live_since: vec![None; sources],
            since: now,
            dry,
            back_after,
        }
    }

    /// The active source.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Source `i` sent something at `now`.
    pub fn sent(&mut self, i: usize, now: Instant) {
        if !self.live(i, now) {
            self.live_since[i] = Some(now);
        }
        self.last[i] = Some(now);
    }

    /// Whether source `i` has sent within `dry` of `now`.
    pub fn live(&self, i: usize, now: Instant) -> bool {
        self.last[i].is_some_and(|t| now.saturating_duration_since(t) < self.dry)
    }

    /// The switch due at `now`, if any (it is made: [`Selector::active`] is the new one).
    pub fn decide(&mut self, now: Instant) -> Option<Switch> {
        let from = self.active;
        let dry_since = self.last[from].map_or(self.since, |t| t.max(self.since));
        let to = if now.saturating_duration_since(dry_since) >= self.dry {
            // The first live one; none: stay (it may come back).
            let to = (0..self.last.len()).find(|&i| i != from && self.live(i, now))?;
            (to, Why::Dry)
        } else {
            let back_after = self.back_after?;
            let to = (0..from).find(|&i| {
                self.live(i, now)
                    && self.live_since[i]
                        .is_some_and(|t| now.saturating_duration_since(t) >= back_after)
            })?;
            (to, Why::Back)
        };
        self.active = to.0;
        self.since = now;
        Some(Switch {
            from,
            to: to.0,
            why: to.1,
        })
    }
}

/// Wakes the failover task when one of its sources delivered.
#[derive(Debug, Default)]
struct TaskWake(tokio::sync::Notify);

impl Wake for TaskWake {
    fn wake(&self) {
        self.0.notify_one();
    }
}

/// What the API shows of a stream's failover.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FailoverStatus {
    /// The active source's place in the list.
    pub active: usize,
    /// The sources: URL and whether each is live.
    pub sources: Vec<SourceState>,
    /// Switches so far.
    pub switches: u64,
}

/// One source of a failover list, as the API shows it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SourceState {
    /// Its URL.
    pub url: String,
    /// Whether it has sent within `dry`.
    pub live: bool,
}

/// Start the failover task of `spec`: its sources, the selector, and the inlet to the shard.
pub(super) fn start(spec: &FailoverSpec, context: &SourceContext<'_>) -> super::inlet::TaskDriver {
    let spec = spec.clone();
    let stream = context.stream.to_owned();
    let counters = context.counters.clone();
    let triggers = context.pushes.and_then(|p| p.triggers().cloned());
    let wake = Arc::new(TaskWake::default());
    // The sources' own drivers, started now (on this shard's thread), run their tasks and
    // deliver to inlets that wake the failover task.
    let children: Vec<Box<dyn SourceDriver>> = spec
        .sources
        .iter()
        .map(|(_, source)| {
            source.task_driver(&SourceContext {
                stream: context.stream,
                tasks: context.tasks,
                waker: wake.clone(),
                counters: context.counters.clone(),
                idle: context.idle,
                pushes: context.pushes,
                fetcher: context.fetcher,
            })
        })
        .collect();
    super::inlet::TaskDriver::start(context, None, move |inlet| {
        run(spec, stream, counters, triggers, wake, children, inlet)
    })
}

async fn run(
    spec: FailoverSpec,
    stream: String,
    counters: Arc<StreamCounters>,
    triggers: Option<Arc<TriggerSet>>,
    wake: Arc<TaskWake>,
    mut children: Vec<Box<dyn SourceDriver>>,
    inlet: Arc<Inlet>,
) {
    let started = Instant::now();
    let mut selector = Selector::new(children.len(), spec.dry, spec.back_after, started);
    let mut batches: Vec<Vec<Delivery>> = children.iter().map(|_| Vec::new()).collect();
    let mut made = Vec::new();
    let mut status = FailoverStatus {
        active: 0,
        sources: spec
            .sources
            .iter()
            .map(|(url, _)| SourceState {
                url: url.clone(),
                live: false,
            })
            .collect(),
        switches: 0,
    };
    publish(&counters, &status);
    loop {
        tokio::select! {
            () = wake.0.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
        let now = Instant::now();
        let unix_ns = crate::sys::unix_ns();
        for (i, child) in children.iter_mut().enumerate() {
            let batch = &mut batches[i];
            if let Some(child_inlet) = child.inlet() {
                child_inlet.take(|d| batch.push(d));
            } else if child.next_due().is_some() {
                // A source that makes its own bytes (a file, the demo): what is due by now.
                made.clear();
                child.due(now.saturating_duration_since(started), unix_ns, &mut made);
                if !made.is_empty() {
                    batch.push(Delivery::Bytes(
                        bytes::Bytes::copy_from_slice(&made),
                        unix_ns,
                    ));
                }
            }
            if batch
                .iter()
                .any(|d| matches!(d, Delivery::Bytes(b, _) if !b.is_empty()))
            {
                selector.sent(i, now);
            }
        }
        if let Some(switch) = selector.decide(now) {
            status.switches += 1;
            StreamCounters::add(&counters.source_switches, 1);
            let (from, to) = (&spec.sources[switch.from].0, &spec.sources[switch.to].0);
            tracing::warn!(stream = %stream, "source switch ({}): {from} -> {to}", switch.why.as_str());
            if let Some(t) = &triggers {
                t.fire(
                    "SOURCE_SWITCH",
                    Some(&stream),
                    &[&stream, from, to, switch.why.as_str()],
                );
            }
            inlet.deliver(Delivery::Restart).await;
        }
        let active = selector.active();
        let mut changed = status.active != active;
        status.active = active;
        for (i, state) in status.sources.iter_mut().enumerate() {
            let live = selector.live(i, now);
            changed |= state.live != live;
            state.live = live;
        }
        if changed {
            publish(&counters, &status);
        }
        counters
            .source_connected
            .store(u64::from(selector.live(active, now)), Ordering::Relaxed);
        for (i, batch) in batches.iter_mut().enumerate() {
            if i != active {
                batch.clear(); // a standby's bytes: it is live, nothing more
                continue;
            }
            for d in batch.drain(..) {
                inlet.deliver(d).await;
            }
        }
    }
}

fn publish(counters: &StreamCounters, status: &FailoverStatus) {
    if let Ok(mut s) = counters.failover.lock() {
        *s = Some(status.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_live_source_takes_over_when_the_active_one_is_dry() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = Selector::new(3, Duration::from_secs(1), None, t0);
        // Both send; the first is active.
        for t in (0..2000).step_by(10) {
            s.sent(0, ms(t));
            s.sent(1, ms(t));
            assert_eq!(s.decide(ms(t)), None);
        }
        // The first's last bytes came at 1.99 s: at 2.99 s the second takes over, not before.
        for t in (2000..2990).step_by(10) {
            s.sent(1, ms(t));
            assert_eq!(s.decide(ms(t)), None, "at {t} ms");
        }
        s.sent(1, ms(2990));
        assert_eq!(
            s.decide(ms(2990)),
            Some(Switch {
                from: 0,
                to: 1,
                why: Why::Dry
            })
        );
        // The first comes back: without back_after it stays a standby.
        for t in (3000..20_000).step_by(10) {
            s.sent(0, ms(t));
            s.sent(1, ms(t));
            assert_eq!(s.decide(ms(t)), None);
        }
    }

    #[test]
    fn nothing_live_keeps_the_active_one_and_the_first_goes_back_when_stable() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = Selector::new(2, Duration::from_secs(1), Some(Duration::from_secs(5)), t0);
        // The first never sends and neither does the second: no switch.
        assert_eq!(s.decide(ms(5000)), None);
        // The second starts: it takes over at once (the first has been dry since the start).
        s.sent(1, ms(5000));
        assert_eq!(s.decide(ms(5000)).map(|w| w.to), Some(1));
        // The first starts at 6 s, with a break at 8 s: it goes back 5 s after it resumed.
        for t in (5000..20_000).step_by(10) {
            s.sent(1, ms(t));
            if t >= 6000 && !(8000..9500).contains(&t) {
                s.sent(0, ms(t));
            }
            let switch = s.decide(ms(t));
            if t < 14_500 {
                assert_eq!(switch, None, "at {t} ms");
            } else if t == 14_500 {
                assert_eq!(
                    switch,
                    Some(Switch {
                        from: 1,
                        to: 0,
                        why: Why::Back
                    })
                );
            }
        }
        assert_eq!(s.active(), 0);
    }
}
